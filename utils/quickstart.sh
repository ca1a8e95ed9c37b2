#!/usr/bin/env bash
#===- utils/quickstart.sh - Install, build, demo or test -------------------===#
#
# The README's two commands:
#   utils/quickstart.sh demo   install what is missing, build, run the main job
#   utils/quickstart.sh test   install what is missing, build, run every test,
#                              then the concurrency tests under ThreadSanitizer
#
# Environment:
#   BUILD_DIR        build directory (default: build)
#   TSAN_BUILD_DIR   ThreadSanitizer build directory (default: $BUILD_DIR-tsan)
#   JOBS             parallel build jobs (default: nproc)
#
#===------------------------------------------------------------------------===#
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
TSAN_BUILD_DIR=${TSAN_BUILD_DIR:-$BUILD_DIR-tsan}
JOBS=${JOBS:-$(nproc)}
LLVM_BIN=/usr/lib/llvm-22/bin

usage() {
  echo "usage: $0 demo|test" >&2
  exit 2
}

step() { printf '\n==> %s\n' "$*"; }

build() {
  step "installing missing packages"
  "$ROOT/utils/install-deps.sh"
  step "configuring ($BUILD_DIR)"
  cmake -G Ninja -S "$ROOT" -B "$BUILD_DIR" \
    -DCMAKE_C_COMPILER=clang-22 -DCMAKE_CXX_COMPILER=clang++-22 \
    -DLLVM_EXTERNAL_LIT="$LLVM_BIN/lit" >/dev/null
  step "building with $JOBS jobs"
  local start=$SECONDS
  ninja -C "$BUILD_DIR" -j "$JOBS"
  echo "built in $((SECONDS - start)) s"
}

# The ThreadSanitizer stage: a second build, with -fsanitize=thread, of the
# concurrency tests' binaries only; every case of each runs (ctest labels a
# case with its binary's name) but TenThousandUpdatesKeepMemoryFlat:
# single-threaded, about memory, and a minute long when instrumented.
TSAN_BINARIES=(ReclaimerTests TrampolineTests DispatcherTests)
TSAN_EXCLUDED='TenThousandUpdatesKeepMemoryFlat'
# Any report fails its test case. utils/tsan.supp holds liburcu's internals
# only; where the project relies on liburcu's ordering, its code says so.
TSAN_OPTIONS_CI="halt_on_error=1 second_deadlock_stack=1"
TSAN_OPTIONS_CI+=" suppressions=$ROOT/utils/tsan.supp"

tsan_build() {
  step "configuring with ThreadSanitizer ($TSAN_BUILD_DIR)"
  cmake -G Ninja -S "$ROOT" -B "$TSAN_BUILD_DIR" \
    -DCMAKE_C_COMPILER=clang-22 -DCMAKE_CXX_COMPILER=clang++-22 \
    -DLLVM_EXTERNAL_LIT="$LLVM_BIN/lit" -DDISPATCHGEN_SANITIZER=thread \
    >/dev/null
  step "building the concurrency tests with ThreadSanitizer"
  ninja -C "$TSAN_BUILD_DIR" -j "$JOBS" "${TSAN_BINARIES[@]}"
}

tsan_run() {
  local labels
  labels=$(IFS='|'; echo "${TSAN_BINARIES[*]}")
  step "running the concurrency tests under ThreadSanitizer"
  rm -f "$TSAN_BUILD_DIR/ctest-results.xml"
  # One case at a time: the churn cases keep every core busy, and two of
  # them sharing the cores under TSan take four times as long.
  (cd "$TSAN_BUILD_DIR" && TSAN_OPTIONS=$TSAN_OPTIONS_CI \
    ctest --output-on-failure -j 1 -L "^($labels)\$" \
    -E "$TSAN_EXCLUDED" --output-junit ctest-results.xml)
}

# The main job: 14 XDP-style packet filters, JIT-compiled, called through a
# live dispatcher from two threads while programs are swapped.
demo() {
  build
  step "dispatch-gen run examples/xdp/filters.c"
  "$BUILD_DIR/tools/dispatch-gen/dispatch-gen" run "$ROOT/examples/xdp/filters.c"
}

# Runs ctest (every GoogleTest case, and the lit suite as one entry), then the
# ThreadSanitizer stage, then prints one closing line that counts GoogleTest
# cases (of both builds) and lit tests alike.
test_all() {
  build
  step "running the tests"
  local start=$SECONDS status=0
  rm -f "$BUILD_DIR/ctest-results.xml" "$BUILD_DIR/test/lit-results.xml"
  (cd "$BUILD_DIR" && ctest --output-on-failure -j "$JOBS" \
    --output-junit ctest-results.xml) || status=$?
  echo "tests ran in $((SECONDS - start)) s"
  start=$SECONDS
  tsan_build
  tsan_run || status=$?
  echo "ThreadSanitizer stage took $((SECONDS - start)) s"
  python3 "$ROOT/utils/count-tests.py" "$BUILD_DIR/ctest-results.xml" \
    "$BUILD_DIR/test/lit-results.xml" "$TSAN_BUILD_DIR/ctest-results.xml" ||
    status=1
  return "$status"
}

[ $# -eq 1 ] || usage
case "$1" in
  demo) demo ;;
  test) test_all ;;
  *) usage ;;
esac
