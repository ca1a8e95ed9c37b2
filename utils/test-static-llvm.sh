#!/usr/bin/env bash
#===- utils/test-static-llvm.sh - A host that links LLVM statically --------===#
# SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
#
# usage: test-static-llvm.sh BUILD_DIR SOURCE_DIR
#
# Configures dispatch-gen with -DDISPATCHGEN_LINK_LLVM_DYLIB=OFF in
# BUILD_DIR/static-llvm (the runtime only, against LLVM's static component
# libraries), builds examples/embedding there, checks that no shared LLVM
# (or Clang) is loaded with it (ldd), and runs it: one LLVM in the process.
#
#===------------------------------------------------------------------------===#
set -euo pipefail
BUILD=${1:?usage: test-static-llvm.sh BUILD_DIR SOURCE_DIR}
SRC=${2:?usage: test-static-llvm.sh BUILD_DIR SOURCE_DIR}
DIR=$BUILD/static-llvm
start=$SECONDS
cmake -G Ninja -S "$SRC" -B "$DIR" -DCMAKE_C_COMPILER=clang-22 \
  -DCMAKE_CXX_COMPILER=clang++-22 -DDISPATCHGEN_LINK_LLVM_DYLIB=OFF >/dev/null
ninja -C "$DIR" dispatch-gen-embed-example >/dev/null
EXE=$DIR/examples/embedding/dispatch-gen-embed-example
if ldd "$EXE" | grep -Eq 'libLLVM|libclang'; then
  echo "test-static-llvm: a shared LLVM or Clang is loaded:" >&2
  ldd "$EXE" >&2
  exit 1
fi
echo "static LLVM: built in $((SECONDS - start)) s, $(du -m "$EXE" | cut -f1) MiB, no shared LLVM loaded"
"$EXE" | tail -1
