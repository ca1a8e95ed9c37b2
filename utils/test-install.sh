#!/usr/bin/env bash
#===- utils/test-install.sh - Check the installed CMake package -----------===#
# SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
#
# usage: test-install.sh BUILD_DIR SOURCE_DIR
#
# Installs the build into a scratch prefix, builds examples/embedding out of
# tree against it with find_package(DispatchGen) and DispatchGen::Runtime,
# checks (readelf -d, ldd) that libclang-cpp is not in its link closure,
# and runs the example; then builds examples/embedding-c (C11, the C API,
# pkg-config) against the installed shared library and runs it.
#
#===------------------------------------------------------------------------===#
set -euo pipefail
BUILD=${1:?usage: test-install.sh BUILD_DIR SOURCE_DIR}
SRC=${2:?usage: test-install.sh BUILD_DIR SOURCE_DIR}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

cmake --install "$BUILD" --prefix "$WORK/prefix" >/dev/null
cmake -G Ninja -S "$SRC/examples/embedding" -B "$WORK/embed" \
  -DCMAKE_PREFIX_PATH="$WORK/prefix" -DCMAKE_CXX_COMPILER=clang++-22 >/dev/null
ninja -C "$WORK/embed" >/dev/null
# Linked with DispatchGen::Runtime: Clang must not be in its closure.
if readelf -d "$WORK/embed/dispatch-gen-embed-example" | grep -q 'clang-cpp'; then
  echo "test-install: the example needs libclang-cpp:" >&2
  readelf -d "$WORK/embed/dispatch-gen-embed-example" | grep NEEDED >&2
  exit 1
fi
if ldd "$WORK/embed/dispatch-gen-embed-example" | grep -q 'clang-cpp'; then
  echo "test-install: libclang-cpp is loaded with the example:" >&2
  ldd "$WORK/embed/dispatch-gen-embed-example" >&2
  exit 1
fi
echo "no libclang-cpp in the example's link closure"
"$WORK/embed/dispatch-gen-embed-example" | tail -1

# The C API: examples/embedding-c, C11 with -Wall -Werror, through
# pkg-config against the installed libdispatch-gen.so.
PKG_CONFIG_PATH="$WORK/prefix/lib/pkgconfig" cmake -G Ninja \
  -S "$SRC/examples/embedding-c" -B "$WORK/embed-c" \
  -DCMAKE_C_COMPILER=clang-22 >/dev/null
ninja -C "$WORK/embed-c" >/dev/null
LD_LIBRARY_PATH="$WORK/prefix/lib" "$WORK/embed-c/dispatch-gen-embed-c-example"
