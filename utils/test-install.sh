#!/usr/bin/env bash
#===- utils/test-install.sh - Check the installed CMake package -----------===#
# SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
#
# usage: test-install.sh BUILD_DIR SOURCE_DIR
#
# Installs the build into a scratch prefix, then builds and runs
# examples/embedding and examples/embedding-c against it alone
# (embed-examples.sh).
#
#===------------------------------------------------------------------------===#
set -euo pipefail
BUILD=${1:?usage: test-install.sh BUILD_DIR SOURCE_DIR}
SRC=${2:?usage: test-install.sh BUILD_DIR SOURCE_DIR}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

cmake --install "$BUILD" --prefix "$WORK/prefix" >/dev/null
"$SRC/utils/embed-examples.sh" "$WORK/prefix" "$SRC" "$WORK"
