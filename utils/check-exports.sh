#!/usr/bin/env bash
#===- utils/check-exports.sh - What libdispatch-gen.so exports -------------===#
# SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
#
# usage: check-exports.sh LIBRARY [C-API-HEADER]
#
# Fails when the shared library exports a defined symbol outside the C API
# (DispatchGen*) and the project's namespace (dispatchgen::): LLVM's inline
# code and the standard library's instantiations stay hidden; and, given the
# C API's header, when a function it declares is not exported. Prints the
# library's size and the number of exported symbols.
#
#===------------------------------------------------------------------------===#
set -euo pipefail
LIB=${1:?usage: check-exports.sh LIBRARY}
SYMS=$(nm -D --defined-only "$LIB" | awk '{print $3}')
COUNT=$(printf '%s\n' "$SYMS" | grep -c .)
BAD=$(printf '%s\n' "$SYMS" |
  grep -Ev '^(DispatchGen|_ZN11dispatchgen|_ZNK11dispatchgen|_ZT[VIS]N11dispatchgen)' || true)
C_API=$(printf '%s\n' "$SYMS" | grep -c '^DispatchGen' || true)
echo "$(basename "$LIB"): $(du -k "$(readlink -f "$LIB")" | cut -f1) KiB, $COUNT exported symbols ($C_API of the C API)"
if [ -n "$BAD" ]; then
  echo "check-exports: symbols outside DispatchGen* and dispatchgen:: :" >&2
  printf '%s\n' "$BAD" | head -20 >&2
  exit 1
fi
if [ $# -ge 2 ]; then
  MISSING=$(comm -23 <(grep -o 'DispatchGen[A-Za-z]*(' "$2" | tr -d '(' | sort -u) \
                     <(printf '%s\n' "$SYMS" | grep '^DispatchGen' | sort -u))
  if [ -n "$MISSING" ]; then
    echo "check-exports: declared in $2 but not exported:" >&2
    printf '%s\n' "$MISSING" >&2
    exit 1
  fi
fi
objdump -p "$LIB" | grep -q 'SONAME *libdispatch-gen.so.0.1' || {
  echo "check-exports: no SONAME libdispatch-gen.so.0.1" >&2; exit 1; }
