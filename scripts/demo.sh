#!/usr/bin/env bash
# `make demo`: build a busybox image from Debian's busybox-static, import it,
# and run containers with it, showing each command as a user would type it.
set -euo pipefail
cd "$(dirname "$0")/.."
# The demo runs in a network namespace of its own, so its bridge, nft rules
# and published ports leave the host's network as they found it
# (DEMO_HOST_NETWORK=1 runs it on the host's).
if [ -z "${DEMO_HOST_NETWORK:-}" ] && [ -z "${BERTH_DEMO_NETNS:-}" ]; then
  exec env BERTH_DEMO_NETNS=1 unshare --net bash -c 'ip link set lo up && exec "$0" "$@"' "$0" "$@"
fi
BERTH=${BERTH:-$PWD/target/release/berth}
FIXTURE=$PWD/target/release/berth-fixture
DEMO=$PWD/target/demo
mkdir -p "$DEMO"

show() {
  local line="" a
  for a in "$@"; do
    case "$a" in *[\ \"\$\;\>\'\(]*) line+=" '${a//\'/\'\\\'\'}'" ;; *) line+=" $a" ;; esac
  done
  printf '\n\033[1m$%s\033[0m\n' "$line"
  "$@"
}
berth() { "$BERTH" "$@"; }

echo "berth demo (state in ${BERTH_ROOT:-/var/lib/berth})"
show "$FIXTURE" busybox --out "$DEMO/busybox.tar" --name busybox:latest
show berth image import "$DEMO/busybox.tar"
show berth images
show berth run --rm busybox sh -c 'echo "Hello from a berth container"; echo "hostname: $(hostname)"; id; echo "processes:"; ps'
set +e
show berth run --rm busybox sh -c 'exit 3'; echo "exit code: $?"
show berth run --rm busybox no-such-command; echo "exit code: $?"
show berth run --rm --memory 16m busybox dd if=/dev/zero of=/dev/null bs=64M count=1; echo "exit code: $? (out of memory at the 16m limit)"
set -e
berth rm -f demo >/dev/null 2>&1 || true
show berth run --name demo busybox sh -c 'echo written-inside > /hello.txt'
show berth ps -a
rootfs=$(berth inspect demo | grep '"UpperDir"' | cut -d'"' -f4)
show cat "$rootfs/hello.txt"
show berth rm demo
berth rm -f ticker >/dev/null 2>&1 || true
show berth run -d --name ticker --restart on-failure busybox sh -c 'i=0; while :; do i=$((i+1)); echo "tick $i"; sleep 0.2; done'
sleep 1
show berth logs --tail 3 ticker
show berth exec ticker sh -c 'echo "hostname $(hostname), exec sees:"; ps -o pid,comm'
show berth top ticker
show berth stop -t 1 ticker
show berth ps -a --format '{{.Names}}: {{.Status}}'
show berth rm ticker
source scripts/demo-net.sh
source scripts/demo-vm.sh
printf '\n\033[1mTiming: berth run --rm busybox /bin/true (5 runs)\033[0m\n'
for i in 1 2 3 4 5; do
  s=$(date +%s%N); berth run --rm busybox /bin/true; e=$(date +%s%N)
  echo "  run $i: $(( (e - s) / 1000 )) us"
done
echo
echo "Done. Try: $BERTH run --rm -it busybox sh"
