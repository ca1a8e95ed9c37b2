#!/usr/bin/env bash
#===- utils/test-install.sh - Check the installed CMake package -----------===#
#
# usage: test-install.sh BUILD_DIR SOURCE_DIR
#
# Installs the build into a scratch prefix, builds examples/embedding out of
# tree against it with find_package(DispatchGen), and runs the example.
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
"$WORK/embed/dispatch-gen-embed-example" | tail -1
