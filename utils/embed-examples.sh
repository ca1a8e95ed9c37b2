#!/usr/bin/env bash
#===- utils/embed-examples.sh - The embedding examples against a prefix ----===#
# SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
#
# usage: embed-examples.sh PREFIX SOURCE_DIR WORK_DIR
#
# Builds examples/embedding (CMake, DispatchGen::Runtime) and
# examples/embedding-c (C11, pkg-config, libdispatch-gen.so) against the
# dispatch-gen installed under PREFIX only, checks that the C++ one found
# PREFIX's package and has no libclang-cpp in its link closure (readelf -d,
# ldd), and runs both. Used by test-install.sh and test-package.sh.
#
#===------------------------------------------------------------------------===#
set -euo pipefail
PREFIX=${1:?usage: embed-examples.sh PREFIX SOURCE_DIR WORK_DIR}
SRC=${2:?usage: embed-examples.sh PREFIX SOURCE_DIR WORK_DIR}
WORK=${3:?usage: embed-examples.sh PREFIX SOURCE_DIR WORK_DIR}

cmake -G Ninja -S "$SRC/examples/embedding" -B "$WORK/embed" \
  -DCMAKE_PREFIX_PATH="$PREFIX" -DCMAKE_CXX_COMPILER=clang++-22 \
  -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF >/dev/null
grep -q "$PREFIX/lib/cmake/DispatchGen" "$WORK/embed/CMakeCache.txt" || {
  echo "embed-examples: the example did not find DispatchGen in $PREFIX" >&2
  exit 1
}
ninja -C "$WORK/embed" >/dev/null
EXE=$WORK/embed/dispatch-gen-embed-example
# Linked with DispatchGen::Runtime: Clang must not be in its closure.
if readelf -d "$EXE" | grep -q 'clang-cpp' || ldd "$EXE" | grep -q 'clang-cpp'; then
  echo "embed-examples: libclang-cpp is in the example's link closure:" >&2
  ldd "$EXE" >&2
  exit 1
fi
echo "no libclang-cpp in the example's link closure"
"$EXE" | tail -1

# The C API: C11 with -Wall -Werror, through pkg-config.
PKG_CONFIG_PATH="$PREFIX/lib/pkgconfig" cmake -G Ninja \
  -S "$SRC/examples/embedding-c" -B "$WORK/embed-c" \
  -DCMAKE_C_COMPILER=clang-22 >/dev/null
ninja -C "$WORK/embed-c" >/dev/null
LD_LIBRARY_PATH="$PREFIX/lib" "$WORK/embed-c/dispatch-gen-embed-c-example"
