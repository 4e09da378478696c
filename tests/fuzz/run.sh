#!/bin/sh
# Builds the fuzz targets (build-fuzz/, clang-14, -DEDGECACHE_FUZZ=ON) and runs
# each fuzz_* target for SECONDS (default 30), one after the other, on a
# copy of its seed corpus tests/fuzz/corpus/<target>/ (the tree is never
# written: new inputs stay in the copy). Prints one line per target and exits
# non-zero if any target crashed, leaked, timed out or ran out of memory.
#
#   tests/fuzz/run.sh              30 s per target
#   tests/fuzz/run.sh 3600         an hour per target
#   tests/fuzz/run.sh 60 fuzz_route     only the targets named
#
# A failing input is kept in build-fuzz/fuzz-out/<target>/ (crash-*, leak-*,
# timeout-*, oom-*) with the whole log beside it; reproduce it with
#   build-fuzz/tests/fuzz/<target> <that file>
# Each target may name its -max_len in its header comment ("run.sh:
# -max_len=N"); the default is 4096. FUZZ_FLAGS adds libFuzzer flags.
set -eu
cd "$(dirname "$0")/../.."

seconds="${1:-30}"
[ $# -gt 0 ] && shift
case "$seconds" in
  ''|*[!0-9]*) echo "usage: $0 [SECONDS] [TARGET...]" >&2; exit 2 ;;
esac

build="build-fuzz"
if [ ! -f "$build/CMakeCache.txt" ]; then
  if ! command -v clang-14 >/dev/null 2>&1; then
    echo "$0: clang-14 is missing: ./docker/install-deps.sh test installs it" >&2
    exit 2
  fi
  CC=clang-14 cmake -S . -B "$build" -DEDGECACHE_FUZZ=ON -DEDGECACHE_TESTS=OFF >/dev/null
else
  cmake -S . -B "$build" -DEDGECACHE_FUZZ=ON -DEDGECACHE_TESTS=OFF >/dev/null
fi
cmake --build "$build" -j"$(nproc)" >"$build/fuzz-build.log" 2>&1 || {
  cat "$build/fuzz-build.log" >&2
  echo "$0: the fuzz build failed" >&2
  exit 1
}

if [ $# -gt 0 ]; then
  targets="$*"
else
  targets=""
  for src in tests/fuzz/fuzz_*.c; do
    [ -f "$src" ] && targets="$targets $(basename "$src" .c)"
  done
fi
[ -n "$targets" ] || { echo "$0: no tests/fuzz/fuzz_*.c" >&2; exit 1; }

export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"
work=$(mktemp -d "${TMPDIR:-/tmp}/edgecache-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM

failed=0
for t in $targets; do
  bin="$build/tests/fuzz/$t"
  out="$build/fuzz-out/$t"
  if [ ! -x "$bin" ]; then
    printf '%-16s FAIL  not built (%s)\n' "$t" "$bin"
    failed=1
    continue
  fi
  rm -rf "$out" "${work:?}/$t"
  mkdir -p "$out" "$work/$t"
  [ -d "tests/fuzz/corpus/$t" ] && cp -R "tests/fuzz/corpus/$t/." "$work/$t/"
  seeds=$(find "$work/$t" -type f | wc -l)
  max_len=$(sed -n 's/.*run\.sh: -max_len=\([0-9][0-9]*\).*/\1/p' "tests/fuzz/$t.c" | head -n 1)
  rc=0
  # The outer timeout only guards against a fuzzer that never stops.
  # shellcheck disable=SC2086
  timeout -k 10 $((seconds + 120)) "$bin" -max_total_time="$seconds" -timeout=10 \
    -rss_limit_mb=2048 -max_len="${max_len:-4096}" -print_final_stats=1 \
    -artifact_prefix="$out/" ${FUZZ_FLAGS:-} "$work/$t" >"$out/log" 2>&1 || rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/log" | tail -n 1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$out/log" | tail -n 1)
  corpus=$(find "$work/$t" -type f | wc -l)
  if [ "$rc" = 0 ]; then
    printf '%-16s ok    %s runs in %s s (%s/s), corpus %s -> %s\n' "$t" "${runs:-?}" \
      "$seconds" "${rate:-?}" "$seeds" "$corpus"
    rm -rf "$out"
    continue
  fi
  failed=1
  what=$(grep -m 1 -o -E 'ERROR: libFuzzer: [a-z-]+|ERROR: [A-Za-z]+Sanitizer: [A-Za-z-]+|runtime error: .*|invariant failed: .*' \
    "$out/log" || true)
  artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$out/log" | head -n 1)
  [ "$rc" = 124 ] && what="killed after $((seconds + 120)) s"
  printf '%-16s FAIL  exit %s after %s runs: %s\n' "$t" "$rc" "${runs:-?}" "${what:-see log}"
  printf '%-16s       input %s, log %s\n' "" "${artifact:-none}" "$out/log"
  tail -n 40 "$out/log" | sed 's/^/    /'
done
exit "$failed"
