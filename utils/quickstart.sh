#!/usr/bin/env bash
#===- utils/quickstart.sh - Install, build, demo or test -------------------===#
# SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
#
# The README's two commands:
#   utils/quickstart.sh demo   install what is missing, build, run the main job
#   utils/quickstart.sh test   install what is missing, build, run every test,
#                              then the concurrency tests under ThreadSanitizer,
#                              every unit test under ASan+UBSan and a short
#                              run of each libFuzzer target
#
# Environment:
#   BUILD_DIR        build directory (default: build)
#   TSAN_BUILD_DIR   ThreadSanitizer build directory (default: $BUILD_DIR-tsan)
#   ASAN_BUILD_DIR   ASan+UBSan and fuzzer build directory
#                    (default: $BUILD_DIR-asan)
#   FUZZ_SECONDS     how long each fuzzer runs (default: 30)
#   JOBS             parallel build jobs (default: nproc)
#
#===------------------------------------------------------------------------===#
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
TSAN_BUILD_DIR=${TSAN_BUILD_DIR:-$BUILD_DIR-tsan}
ASAN_BUILD_DIR=${ASAN_BUILD_DIR:-$BUILD_DIR-asan}
FUZZ_SECONDS=${FUZZ_SECONDS:-30}
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
# single-threaded, about memory, and a minute long when instrumented. The
# torture's normal, --sync and --adaptive runs too (5 s each; its broken
# mode is a deliberate use-after-free, labelled apart and left to the ASan
# stage).
TSAN_BINARIES=(ReclaimerTests TrampolineTests NearArenaTests DispatcherTests AdaptiveTests
  CostCalibrationTests
  dispatch-gen-torture)
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

# The ASan+UBSan stage: a third build, with -fsanitize=address,undefined, of
# every unit-test binary, the torture test, examples/embedding and the
# fuzzers (the fuzzers need
# coverage on the same libraries, so they share this build instead of a
# fourth). Every case runs but TenThousandUpdatesKeepMemoryFlat, as under
# TSan: single-threaded, about memory ASan's quarantine distorts, and
# minutes long when instrumented.
ASAN_BINARIES=(ProgramSetTests DispatchLayoutTests DispatchIRBuilderTests CodeEmitterTests
  CodeInspectorTests ReclaimerTests ReaderRegistrationTests TrampolineTests
  NearArenaTests DispatcherTests AdaptiveTests CostCalibrationTests X86ImageEmitterTests
  FrontendTests
  dispatch-gen-torture dispatch-gen-embed-example)
# The torture's broken mode is not run here: instrumented, the updater
# regenerates about 20 times a second, too few frees in a short run for the
# catch to be certain (one 5 s run missed it); the normal build runs it.
ASAN_LABELS=("${ASAN_BINARIES[@]}")
ASAN_EXCLUDED='TenThousandUpdatesKeepMemoryFlat'
FUZZERS=(signature dispatcher frontend options)
# detect_container_overflow=0: libLLVM and libclang-cpp are uninstrumented,
# so a std::vector grown in their inline code and read in ours (or the
# reverse) trips container-overflow annotations that only half the code
# keeps: false positives, not bugs. Every other check stays on.
# allow_user_poisoning=0, for the same reason: a JITLink LinkGraph built in
# instrumented code (laid-out images were, before the code arena took them
# over from ORC) allocates from a BumpPtrAllocator whose inline code,
# instrumented in our objects, poisons each new slab;
# libLLVM's uninstrumented copy then carves blocks out of it without
# unpoisoning them, and our link passes reading those blocks would be
# reported as use-after-poison.
ASAN_OPTIONS_CI="halt_on_error=1:detect_container_overflow=0"
ASAN_OPTIONS_CI+=":allow_user_poisoning=0:detect_stack_use_after_return=0"
UBSAN_OPTIONS_CI="halt_on_error=1:print_stacktrace=1"

asan_build() {
  step "configuring with ASan+UBSan and the fuzzers ($ASAN_BUILD_DIR)"
  cmake -G Ninja -S "$ROOT" -B "$ASAN_BUILD_DIR" \
    -DCMAKE_C_COMPILER=clang-22 -DCMAKE_CXX_COMPILER=clang++-22 \
    -DLLVM_EXTERNAL_LIT="$LLVM_BIN/lit" \
    -DDISPATCHGEN_SANITIZER="address;undefined" \
    -DDISPATCHGEN_BUILD_FUZZERS=ON >/dev/null
  step "building the unit tests, torture and fuzzers with ASan+UBSan"
  ninja -C "$ASAN_BUILD_DIR" -j "$JOBS" "${ASAN_BINARIES[@]}" \
    "${FUZZERS[@]/#/dispatch-gen-fuzz-}"
}

asan_run() {
  local labels
  labels=$(IFS='|'; echo "${ASAN_LABELS[*]}")
  step "running the unit tests under ASan+UBSan"
  rm -f "$ASAN_BUILD_DIR/ctest-results.xml"
  (cd "$ASAN_BUILD_DIR" && ASAN_OPTIONS=$ASAN_OPTIONS_CI \
    UBSAN_OPTIONS=$UBSAN_OPTIONS_CI \
    ctest --output-on-failure -j "$JOBS" -L "^($labels)\$" \
    -E "$ASAN_EXCLUDED" --output-junit ctest-results.xml)
}

# Each fuzzer for FUZZ_SECONDS from its committed seeds
# (test/fuzz/corpus/<target>); new inputs go to the build directory, crash
# reproducers too (fuzz-<target>/crash-*). The frontend runs without leak
# checks: libclang-cpp and libLLVM create process-wide state lazily, the
# first time an input takes a new path, which libFuzzer's per-input check
# blames on that input (its reproducer alone does not leak). Leaks of
# compileC itself are checked by the ASan stage's FrontendTests (which found
# the backend's -disable-free burying a TargetMachine per compile). Crashes
# and memory errors still count.
fuzz_run() {
  local status=0 target dir log execs extra asan
  for target in "${FUZZERS[@]}"; do
    extra=()
    asan=$ASAN_OPTIONS_CI
    if [ "$target" = frontend ]; then
      extra=(-detect_leaks=0)
      asan+=":detect_leaks=0"
    fi
    dir=$ASAN_BUILD_DIR/fuzz-$target
    log=$dir/fuzz.log
    mkdir -p "$dir/corpus"
    step "fuzzing $target for $FUZZ_SECONDS s"
    if ASAN_OPTIONS=$asan UBSAN_OPTIONS=$UBSAN_OPTIONS_CI \
      "$ASAN_BUILD_DIR/tools/fuzzers/dispatch-gen-fuzz-$target" \
      -max_total_time="$FUZZ_SECONDS" -print_final_stats=1 "${extra[@]}" \
      -artifact_prefix="$dir/" "$dir/corpus" \
      "$ROOT/test/fuzz/corpus/$target" >"$log" 2>&1; then
      execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" |
        tail -n 1)
      echo "fuzz $target: ${execs:-?} executions, no crash"
    else
      tail -n 40 "$log"
      echo "fuzz $target: FAILED (reproducer in $dir/)"
      status=1
    fi
  done
  return "$status"
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
  # A smoke test of the benchmark suite: it must run, its figures are not
  # checked (tests never assert timings).
  step "dispatch-gen bench --quick"
  "$BUILD_DIR/tools/dispatch-gen/dispatch-gen" bench --quick || status=$?
  start=$SECONDS
  tsan_build
  tsan_run || status=$?
  echo "ThreadSanitizer stage took $((SECONDS - start)) s"
  start=$SECONDS
  asan_build
  asan_run || status=$?
  echo "ASan+UBSan stage took $((SECONDS - start)) s"
  start=$SECONDS
  fuzz_run || status=$?
  echo "fuzzing took $((SECONDS - start)) s"
  python3 "$ROOT/utils/count-tests.py" "$BUILD_DIR/ctest-results.xml" \
    "$BUILD_DIR/test/lit-results.xml" "$TSAN_BUILD_DIR/ctest-results.xml" \
    "$ASAN_BUILD_DIR/ctest-results.xml" ||
    status=1
  return "$status"
}

[ $# -eq 1 ] || usage
case "$1" in
  demo) demo ;;
  test) test_all ;;
  *) usage ;;
esac
