#!/usr/bin/env bash
# run.sh — fuzz cqat's file loaders with libFuzzer (docs/RELIABILITY.md).
#
#   tests/fuzz/run.sh                      every target for 30 s (CI smoke run)
#   tests/fuzz/run.sh --time 600 idx cifar  chosen targets, 10 minutes each
#   tests/fuzz/run.sh --runs 1000000        the long run: a million executions each
#
# Needs clang and its runtimes (Debian 12: clang libclang-rt-14-dev libomp-dev). Sets
# up a clang build with AddressSanitizer + UndefinedBehaviorSanitizer and coverage
# instrumentation of every library in $CQAT_FUZZ_BUILD (default build-fuzz), then runs
# each target on a working corpus in $CQAT_FUZZ_BUILD/fuzz-work/<target>/corpus, seeded
# from tests/fuzz/corpus/<target> and tests/fuzz/regressions/<target> (kept between
# runs, so a long run continues where the last one stopped). A crash, leak, timeout or
# sanitizer report stops the target and leaves the input in
# $CQAT_FUZZ_BUILD/fuzz-work/<target>/artifacts/: minimize it (fuzz_<target>
# -minimize_crash=1 FILE), fix the bug, and add the input to
# tests/fuzz/regressions/<target>/ so the replay tests keep it fixed.
#
# Environment: CQAT_FUZZ_RAW=1 also fuzzes raw HDF5 bytes (libhdf5's own parser; see
# fuzz_util.h), with libhdf5's known leaks suppressed. Exit status non-zero if any target
# had a finding; the last line is "N passed, N failed" (one per target).
set -euo pipefail
cd "$(dirname "$0")/../.."

ALL_TARGETS=(idx cifar h5_data state_dict checkpoint q8_model)
TIME=30
RUNS=-1
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --time) TIME="$2"; shift 2 ;;
    --runs) RUNS="$2"; TIME=0; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "run.sh: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=("${ALL_TARGETS[@]}")

BUILD="${CQAT_FUZZ_BUILD:-build-fuzz}"
if [ ! -f "$BUILD/build.ninja" ]; then
  CC=clang meson setup "$BUILD" -Db_sanitize=address,undefined -Db_lundef=false \
    -Dbuildtype=debugoptimized \
    "-Dc_args=-fsanitize=fuzzer-no-link -fno-sanitize-recover=undefined"
fi
ninja -C "$BUILD" $(printf 'tests/fuzz/fuzz_%s ' "${targets[@]}")

# The largest input a target is given (the HDF5 ones hold whole small checkpoints).
max_len() {
  case "$1" in
    idx) echo 8192 ;;
    cifar) echo 16384 ;;
    q8_model) echo 131072 ;;
    *) echo 65536 ;;
  esac
}

export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
export ASAN_OPTIONS="detect_leaks=1"
if [ "${CQAT_FUZZ_RAW:-0}" = "1" ]; then
  export LSAN_OPTIONS="suppressions=$PWD/tests/fuzz/lsan-libhdf5.supp"
fi

passed=0
failed=0
for t in "${targets[@]}"; do
  work="$BUILD/fuzz-work/$t"
  mkdir -p "$work/corpus" "$work/artifacts"
  for seeds in "tests/fuzz/corpus/$t" "tests/fuzz/regressions/$t"; do
    [ -d "$seeds" ] && cp -n "$seeds"/* "$work/corpus/" 2>/dev/null || true
  done
  log="$work/last-run.log"
  echo "== fuzz_$t ($( [ "$TIME" -gt 0 ] && echo "$TIME s" || echo "$RUNS runs"))"
  set +e
  "$BUILD/tests/fuzz/fuzz_$t" -max_total_time="$TIME" -runs="$RUNS" \
    -max_len="$(max_len "$t")" -rss_limit_mb=2048 -timeout=30 -print_final_stats=1 \
    -artifact_prefix="$work/artifacts/" "$work/corpus" >"$log" 2>&1
  rc=$?
  set -e
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  cov=$(grep -E '^#[0-9]+' "$log" | tail -1 | sed -n 's/.*cov: \([0-9]*\).*/\1/p')
  if [ $rc -eq 0 ]; then
    passed=$((passed + 1))
    echo "ok   fuzz_$t: ${execs:-?} executions, coverage ${cov:-?}, no finding"
  else
    failed=$((failed + 1))
    echo "FAIL fuzz_$t: exit $rc after ${execs:-?} executions; log $log, input in $work/artifacts/"
    grep -E 'ERROR|SUMMARY|runtime error|fuzz:' "$log" | head -5 || true
  fi
done
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
