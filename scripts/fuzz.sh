#!/usr/bin/env bash
# The fuzz targets of fuzz/ (libFuzzer), one after the other.
#   scripts/fuzz.sh            each target for FUZZ_SECONDS (default 60) with
#                              cargo fuzz (coverage-guided), corpus in
#                              target/fuzz-corpus/<target>, seeded from fuzz/seeds
#   scripts/fuzz.sh --smoke    each target's debug build (cargo build -p
#                              berth-fuzz) over its seeds plus FUZZ_RUNS
#                              (default 2000) random inputs: make test's check
# Prints executions and crashes per target; fails when one crashed.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGETS=(layer_unpack image_archive registry_manifest registry_auth agent_proto dns_query runtime_config flags)
mode=${1:-full}
failed=0
printf '%-18s %12s %8s\n' target executions crashes
for t in "${TARGETS[@]}"; do
  corpus=target/fuzz-corpus/$t
  mkdir -p "$corpus"
  cp -n fuzz/seeds/$t/* "$corpus"/ 2>/dev/null || true
  log=target/fuzz-corpus/$t.log
  if [ "$mode" = --smoke ]; then
    set +e
    target/debug/$t -runs="${FUZZ_RUNS:-2000}" -max_len=8192 -artifact_prefix=target/fuzz-corpus/$t- \
      fuzz/seeds/$t >"$log" 2>&1
    rc=$?
    set -e
  else
    set +e
    cargo fuzz run --fuzz-dir fuzz -s none --target-dir target/fuzz "$t" "$corpus" -- \
      -max_total_time="${FUZZ_SECONDS:-60}" -rss_limit_mb=4096 -max_len=65536 \
      -artifact_prefix=target/fuzz-corpus/$t- >"$log" 2>&1
    rc=$?
    set -e
  fi
  runs=$(grep -o 'Done [0-9]* runs' "$log" | awk '{print $2}' | tail -1)
  crashes=$( [ $rc -eq 0 ] && echo 0 || echo 1 )
  printf '%-18s %12s %8s\n' "$t" "${runs:-?}" "$crashes"
  if [ $rc -ne 0 ]; then
    failed=1
    echo "fuzz: $t failed (exit $rc); its log: $log" >&2
    grep -E 'panicked|ERROR|SUMMARY|Test unit written' "$log" | head -5 >&2 || true
  fi
done
exit $failed
