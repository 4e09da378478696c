#!/bin/sh
# Installs what is missing, builds edgecache and runs every test (unit tests
# with cmocka, integration tests with pytest against the real binary and a
# real nginx origin), all through ctest.
#
#   tests/run.sh              release build in build/, then the benchmark's
#                             smoke run against it (tests/bench/run --smoke:
#                             about a minute; it prints, nothing is asserted
#                             on its numbers, but it must run)
#   tests/run.sh --sanitize   AddressSanitizer + UBSan build in build-asan/,
#                             then 20 s of each fuzz target (tests/fuzz/run.sh)
set -eu
cd "$(dirname "$0")/.."

dir=build
flags=""
if [ "${1:-}" = "--sanitize" ]; then
  dir=build-asan
  flags="-DEDGECACHE_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug"
fi

./docker/install-deps.sh test
# shellcheck disable=SC2086
cmake -S . -B "$dir" -DEDGECACHE_TESTS=ON $flags >/dev/null
cmake --build "$dir" -j"$(nproc)"
if [ "$dir" = build-asan ]; then
  export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:halt_on_error=1"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
fi
ctest --test-dir "$dir" --output-on-failure --no-tests=error -j2
if [ "$dir" = build-asan ]; then
  # Fuzz smoke run: every tests/fuzz target for 20 s on its seed corpus
  # (clang-14 build in build-fuzz/).
  ./tests/fuzz/run.sh 20
fi
if [ "$dir" = build ]; then
  EDGECACHE_BIN="$dir/edgecache" ./tests/bench/run --smoke
fi
