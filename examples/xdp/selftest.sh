#!/usr/bin/env bash
#===- examples/xdp/selftest.sh - Build and run the selftest twice ---------===#
# SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
#
# usage: selftest.sh [WORK_DIR]
#
# Checks that selftest.c lists the programs filters.c defines, compiles
# filters.c as the contract requires (-std=c11 -O2 -Wall -Wextra, no
# warnings), and runs the selftest optimised, then with AddressSanitizer and
# UndefinedBehaviorSanitizer. CC defaults to clang-22.
#
#===------------------------------------------------------------------------===#
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
WORK=${1:-$(mktemp -d)}
mkdir -p "$WORK"
CC=${CC:-clang-22}
FLAGS=(-std=c11 -Wall -Wextra -Werror -I"$HERE/../../include" -I"$HERE")

programs=$(sed -n 's/^DISPATCHGEN_PROGRAM unsigned int \([a-z0-9_]*\)(.*/\1/p' \
  "$HERE/filters.c")
listed=$(sed -n 's/^  X(\([a-z0-9_]*\)).*/\1/p' "$HERE/selftest.c")
if [[ "$programs" != "$listed" ]]; then
  echo "selftest.c's PROGRAMS differ from filters.c's:" >&2
  diff <(echo "$programs") <(echo "$listed") >&2 || true
  exit 1
fi

echo "==> $CC -O2 (the contract's flags)"
"$CC" "${FLAGS[@]}" -O2 -c "$HERE/filters.c" -o "$WORK/filters.o"
"$CC" "${FLAGS[@]}" -O2 "$HERE/filters.c" "$HERE/selftest.c" \
  -o "$WORK/selftest"
"$WORK/selftest"

echo "==> $CC -fsanitize=address,undefined"
"$CC" "${FLAGS[@]}" -O1 -g -fno-omit-frame-pointer \
  -fsanitize=address,undefined -fno-sanitize-recover=all \
  "$HERE/filters.c" "$HERE/selftest.c" -o "$WORK/selftest-asan"
"$WORK/selftest-asan" --quiet
