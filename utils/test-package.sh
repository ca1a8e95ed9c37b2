#!/usr/bin/env bash
#===- utils/test-package.sh - Check the Debian package ---------------------===#
# SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
#
# usage: test-package.sh BUILD_DIR SOURCE_DIR
#
# Builds the Debian package (cpack -G DEB), unpacks it into a scratch root
# (dpkg-deb -x), checks what it holds, then builds examples/embedding and
# examples/embedding-c against that root only and runs them, and runs the
# packaged CLI.
#
#===------------------------------------------------------------------------===#
set -euo pipefail
BUILD=${1:?usage: test-package.sh BUILD_DIR SOURCE_DIR}
SRC=${2:?usage: test-package.sh BUILD_DIR SOURCE_DIR}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

(cd "$BUILD" && cpack -G DEB -B "$WORK/pkg" >/dev/null)
DEB=$(ls "$WORK"/pkg/*.deb)
echo "package: $(basename "$DEB"), $(du -k "$DEB" | cut -f1) KiB"
dpkg-deb -x "$DEB" "$WORK/root"
for f in usr/bin/dispatch-gen \
         usr/include/dispatch-gen/Dispatcher.h \
         usr/include/dispatch-gen/TypedDispatcher.h \
         usr/lib/cmake/DispatchGen/DispatchGenConfig.cmake \
         usr/include/dispatch-gen-c/Dispatcher.h \
         usr/lib/libdispatch-gen.so.0.1 \
         usr/lib/pkgconfig/dispatch-gen.pc \
         usr/share/doc/dispatch-gen/LICENSE.TXT; do
  [ -e "$WORK/root/$f" ] || { echo "test-package: no $f in the package" >&2; exit 1; }
done
dpkg-deb -f "$DEB" Package Version Depends
"$WORK/root/usr/bin/dispatch-gen" --version
# Only the unpacked root: CMAKE_PREFIX_PATH names it, nothing else.
cmake -G Ninja -S "$SRC/examples/embedding" -B "$WORK/embed" \
  -DCMAKE_PREFIX_PATH="$WORK/root/usr" -DCMAKE_CXX_COMPILER=clang++-22 \
  -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF >/dev/null
grep -q "$WORK/root/usr/lib/cmake/DispatchGen" "$WORK/embed/CMakeCache.txt" || {
  echo "test-package: the example did not find the packaged DispatchGen" >&2
  exit 1
}
ninja -C "$WORK/embed" >/dev/null
"$WORK/embed/dispatch-gen-embed-example" | tail -1
# And the C API, through the packaged pkg-config file.
PKG_CONFIG_PATH="$WORK/root/usr/lib/pkgconfig" cmake -G Ninja \
  -S "$SRC/examples/embedding-c" -B "$WORK/embed-c" \
  -DCMAKE_C_COMPILER=clang-22 >/dev/null
ninja -C "$WORK/embed-c" >/dev/null
LD_LIBRARY_PATH="$WORK/root/usr/lib" "$WORK/embed-c/dispatch-gen-embed-c-example"
