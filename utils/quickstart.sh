#!/usr/bin/env bash
#===- utils/quickstart.sh - Install, build, demo or test -------------------===#
#
# The README's two commands:
#   utils/quickstart.sh demo   install what is missing, build, run the main job
#   utils/quickstart.sh test   install what is missing, build, run every test
#
# Environment:
#   BUILD_DIR   build directory (default: build)
#   JOBS        parallel build jobs (default: nproc)
#
#===------------------------------------------------------------------------===#
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
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

demo() {
  build
  "$ROOT/examples/aot/run-demo.sh" "$BUILD_DIR/tools/dispatch-gen/dispatch-gen"
}

# Runs ctest (every GoogleTest case, and the lit suite as one entry), then
# prints one closing line that counts GoogleTest cases and lit tests alike.
test_all() {
  build
  step "running the tests"
  local start=$SECONDS status=0
  rm -f "$BUILD_DIR/ctest-results.xml" "$BUILD_DIR/test/lit-results.xml"
  (cd "$BUILD_DIR" && ctest --output-on-failure -j "$JOBS" \
    --output-junit ctest-results.xml) || status=$?
  echo "tests ran in $((SECONDS - start)) s"
  python3 "$ROOT/utils/count-tests.py" "$BUILD_DIR/ctest-results.xml" \
    "$BUILD_DIR/test/lit-results.xml" || status=1
  return "$status"
}

[ $# -eq 1 ] || usage
case "$1" in
  demo) demo ;;
  test) test_all ;;
  *) usage ;;
esac
