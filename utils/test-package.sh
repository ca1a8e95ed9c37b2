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
# Only the unpacked root: the examples see nothing else.
"$SRC/utils/embed-examples.sh" "$WORK/root/usr" "$SRC" "$WORK"
