#!/usr/bin/env bash
# Builds berth-agent, the init of berth's microVM guests, as a static binary:
# glibc with crt-static, libseccomp from libseccomp-dev's static archive.
#
#   scripts/build-agent.sh [cargo build options, e.g. --release, --target-dir DIR]
#
# The result is target/x86_64-unknown-linux-gnu/<profile>/berth-agent, where
# target/<profile>/berth finds it (or set BERTH_AGENT).
set -euo pipefail
cd "$(dirname "$0")/.."
lib=$(gcc -print-file-name=libseccomp.a 2>/dev/null || true)
if [ ! -f "$lib" ]; then
  lib=$(ls /usr/lib/*/libseccomp.a /usr/lib/libseccomp.a 2>/dev/null | head -1 || true)
fi
[ -f "$lib" ] || { echo "build-agent: libseccomp.a is missing (apt-get install libseccomp-dev)" >&2; exit 1; }
export LIBSECCOMP_LINK_TYPE=static LIBSECCOMP_LIB_PATH=$(dirname "$lib")
# With --target, RUSTFLAGS reach only the target's crates, not build scripts.
export RUSTFLAGS="-C target-feature=+crt-static"
unset CARGO_ENCODED_RUSTFLAGS
exec "${CARGO:-cargo}" build -q -p berth-agent --target x86_64-unknown-linux-gnu "$@"
