#!/usr/bin/env bash
#===- examples/aot/run-demo.sh - The ahead-of-time dispatcher demo --------===#
# SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
#
# usage: run-demo.sh PATH/TO/dispatch-gen [WORK_DIR]
#
# Generates an XDP-style dispatcher for the programs in filters.c, shows its
# IR and x86-64 assembly, links it with filters.c and host.c, and runs it.
#
#===------------------------------------------------------------------------===#
set -euo pipefail
DG=${1:?usage: run-demo.sh PATH/TO/dispatch-gen [WORK_DIR]}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
WORK=${2:-$(mktemp -d)}
mkdir -p "$WORK"
CC=${CC:-clang-22}
PROGS=(pass_all drop_tcp drop_dns ipv6_only)
ARGS=(--signature='i32 (ptr, ptr)' --name=xdp_dispatch "${PROGS[@]}")

echo "==> dispatch-gen emit ${ARGS[*]}"
echo "--- LLVM IR:"
"$DG" emit "${ARGS[@]}" --emit=llvm | sed -n '/^define/,/^}/p'
echo "--- x86-64 assembly (every program a direct je; the fallback the only indirect jmp):"
"$DG" emit "${ARGS[@]}" --emit=asm --target-triple=x86_64-pc-linux-gnu |
  grep -vE '^\s*\.(cfi|p2align|type|globl|file|text|section|size|Lfunc)'
"$DG" emit "${ARGS[@]}" --emit=obj -o "$WORK/xdp_dispatch.o"

echo "==> linking filters.c host.c xdp_dispatch.o with $CC"
"$CC" -O2 -o "$WORK/host" "$HERE/host.c" "$HERE/filters.c" \
  "$WORK/xdp_dispatch.o"
echo "==> running"
"$WORK/host"
