#!/usr/bin/env bash
# The microVM part of `make demo` (sourced by demo.sh: uses its `show`,
# `berth`, $DEMO): the same image and flags with `--isolation vm`.
printf '\n\033[1mMicroVMs (--isolation vm)\033[0m\n'
berth info | grep '^MicroVM' || true
if ! berth info | grep -q '^MicroVM accelerator'; then
  echo "(microVMs are unavailable here: see the lines above)"
  return 0
fi
show berth run --rm busybox uname -r
show berth run --rm --isolation vm busybox sh -c 'echo "kernel $(uname -r)"; ps -o pid,comm; ip -4 -o addr show eth0'
mkdir -p "$DEMO/shared" && echo "a file from the host" > "$DEMO/shared/host.txt"
show berth run --rm --isolation vm -v "$DEMO/shared:/shared" busybox sh -c 'cat /shared/host.txt; echo "written by the guest" > /shared/guest.txt'
show cat "$DEMO/shared/guest.txt"
berth rm -f vmweb >/dev/null 2>&1 || true
show berth run -d --isolation vm --name vmweb -p 8081:80 busybox sh -c 'mkdir -p /www; echo "<h1>busybox httpd in a berth microVM ($(uname -r))</h1>" > /www/index.html; exec httpd -f -p 80 -h /www'
for _ in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:8081/ && break; sleep 0.1; done
show curl -s http://127.0.0.1:8081/
show berth top vmweb
show berth ps --format '{{.Names}} {{.Isolation}} {{.Ports}}'
show berth rm -f vmweb
