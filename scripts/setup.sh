#!/usr/bin/env bash
# Installs what berth's build, tests, demo and benchmarks need on Debian 12.
# Idempotent and quick when everything is already there.
set -euo pipefail

PACKAGES=(
  build-essential pkg-config libseccomp-dev   # building (rusqlite, zstd and libseccomp link C)
  busybox-static                               # fixture images
  crun runc podman containerd docker.io        # peers for side-by-side tests and benchmarks
  docker-registry skopeo apache2-utils openssl # registry tests and the pull benchmark (htpasswd, certificates)
  util-linux bsdutils iproute2 procps          # unshare, script, ip, ps
  nftables curl debootstrap                    # networking (NAT, published ports), the nginx example
  python3                                      # the escape tests' socket peers
  qemu-system-x86 erofs-utils e2fsprogs kmod lz4 # microVMs: QEMU, image disks, the guest kernel's modules
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Rust: the rustup toolchain if present, else Debian's (checked for age).
if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    echo "setup: cargo is in $HOME/.cargo/bin; add it to PATH" >&2
  else
    echo "setup: installing Debian's cargo"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cargo rustc >/dev/null
  fi
fi

# The microVM guest kernel: Debian's cloud kernel, unpacked into berth's VM
# directory (never installed as this host's kernel).
"$(dirname "$0")/install-guest-kernel.sh"
