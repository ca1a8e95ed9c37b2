#!/usr/bin/env bash
#===- utils/mutate.sh - Do the tests catch these bugs? ---------------------===#
# SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
#
# Applies a fixed list of single-line mutations, one at a time, to a scratch
# copy of the committed tree, rebuilds only what each one touches, runs the
# tests that should catch it and prints, for each:
#
#   mutation K (NAME): caught by TEST[, TEST...]
#   mutation K (NAME): SURVIVED
#
# It exits 1 if any mutation survived (or could not be applied). Each
# mutation states the bug it stands for; the first four are the ones a
# mutation audit found surviving the whole test suite once (issue 10).
#
# usage: utils/mutate.sh [--keep] [K ...]     (K: run only these numbers)
#
# Environment: MUTATE_DIR (scratch copy, default /tmp/dispatch-gen-mutate),
# MUTATE_REV (the commit to mutate, default HEAD), JOBS (build jobs, default
# nproc). About 2 minutes per mutation after a
# first build of 3 on two cores.
#===------------------------------------------------------------------------===#
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCRATCH=${MUTATE_DIR:-/tmp/dispatch-gen-mutate}
JOBS=${JOBS:-$(nproc)}
KEEP=0
ONLY=()
for arg in "$@"; do
  case $arg in
    --keep) KEEP=1 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) ONLY+=("$arg") ;;
  esac
done

NAMES=() FILES=() OLDS=() NEWS=() TESTS=()
# mutation NAME FILE LINE-AS-IT-IS LINE-MUTATED CTEST-REGEX
mutation() {
  NAMES+=("$1") FILES+=("$2") OLDS+=("$3") NEWS+=("$4") TESTS+=("$5")
}
SKIP_LINE='  SkippedGracePeriod Skip = Config.SkipGracePeriodForTesting;'
mutation "image freed before its grace period" lib/Dispatcher/Dispatcher.cpp \
  "$SKIP_LINE" '  SkippedGracePeriod Skip = SkippedGracePeriod::Images;' \
  'torture|DispatcherTest'
mutation "resident area rewritten before its grace period" \
  lib/Dispatcher/Dispatcher.cpp \
  "$SKIP_LINE" '  SkippedGracePeriod Skip = SkippedGracePeriod::Resident;' \
  'torture|DispatcherTest'
mutation "8-bit compare immediates taken as unsigned" \
  lib/Dispatcher/X86ImageEmitter.cpp \
  '    if (isUInt<7>(Imm)) { // a sign-extended imm8' \
  '    if (isUInt<8>(Imm)) { // a sign-extended imm8' 'DispatcherTest|torture'
mutation "prototype check reduced to return type and arity" \
  lib/Frontend/ProgramFinder.cpp \
  '    if (!Ctx.hasSameType(C.FD->getType(), Reference))' \
  '    if (!Ctx.hasSameType(C.FD->getReturnType(), Reference->castAs<FunctionType>()->getReturnType()) || C.FD->getNumParams() != Reference->castAs<FunctionProtoType>()->getNumParams())' \
  'FrontendTest'
mutation "programs released before their grace period" \
  lib/Dispatcher/Dispatcher.cpp \
  "$SKIP_LINE" '  SkippedGracePeriod Skip = SkippedGracePeriod::Programs;' \
  'torture|DispatcherTest'
mutation "binary search splits with ja instead of jae" \
  lib/Dispatcher/X86ImageEmitter.cpp \
  '    A.jump(CondAE, Right);' \
  '    A.jump(uint8_t(0x7), Right);' 'DispatcherTest|torture'
mutation "image and resident copy relocated one byte off" \
  lib/Dispatcher/X86ImageEmitter.cpp \
  '    int64_t Disp = static_cast<int64_t>(Target - (Base + Offset + 4));' \
  '    int64_t Disp = static_cast<int64_t>(Target - (Base + Offset + 5));' \
  'DispatcherTest|torture|X86ImageEmitterTest'
mutation "synchronous reclamation without a grace period" \
  lib/Reclamation/Reclaimer.cpp \
  '    synchronize();' '    (void)0;' 'ReclaimerTest|torture|DispatcherTest'
mutation "weighted chains not sorted hottest first (layout, not routing)" \
  lib/DispatchLayout/DispatchLayout.cpp \
  '    return Cases[L].Weight > Cases[R].Weight;' \
  '    return Cases[L].Weight < Cases[R].Weight;' \
  'DispatchLayoutTest|X86ImageEmitterTest|DispatcherTest'

say() { printf '%s\n' "$*"; }

prepare() {
  say "==> scratch copy of HEAD in $SCRATCH"
  # Files whose content changed are copied (new mtime), others left alone:
  # an interrupted run may have left a mutated object behind, which a
  # fresh extraction with old mtimes would not rebuild.
  rm -rf "$SCRATCH/new"
  mkdir -p "$SCRATCH/new" "$SCRATCH/src"
  git -C "$ROOT" archive "${MUTATE_REV:-HEAD}" | tar -x -C "$SCRATCH/new"
  (cd "$SCRATCH/new" && find . -type f) | while read -r f; do
    if ! cmp -s "$SCRATCH/new/$f" "$SCRATCH/src/$f"; then
      mkdir -p "$(dirname "$SCRATCH/src/$f")"
      cp "$SCRATCH/new/$f" "$SCRATCH/src/$f"
    fi
  done
  find "$SCRATCH/src" -name '*.orig' -delete
  rm -rf "$SCRATCH/new"
  cmake -G Ninja -S "$SCRATCH/src" -B "$SCRATCH/build" \
    -DCMAKE_C_COMPILER=clang-22 -DCMAKE_CXX_COMPILER=clang++-22 \
    -DLLVM_EXTERNAL_LIT=/usr/lib/llvm-22/bin/lit >/dev/null || exit 1
  say "==> building the unmutated tree"
  ninja -C "$SCRATCH/build" -j "$JOBS" >/dev/null || {
    say "mutate: the unmutated tree does not build"; exit 1; }
}

# replace FILE OLD NEW: exactly one line equal to OLD becomes NEW.
replace() {
  python3 - "$1" "$2" "$3" <<'EOF'
import sys
path, old, new = sys.argv[1:]
lines = open(path).read().split('\n')
hits = [i for i, l in enumerate(lines) if l == old]
if len(hits) != 1:
    sys.exit(f"{path}: {len(hits)} lines match {old!r}")
lines[hits[0]] = new
open(path, 'w').write('\n'.join(lines))
EOF
}

run_one() {
  local k=$1 i=$(($1 - 1))
  local name=${NAMES[$i]} file=${FILES[$i]} old=${OLDS[$i]} new=${NEWS[$i]}
  local tests=${TESTS[$i]}
  local src="$SCRATCH/src/$file"
  cp "$src" "$src.orig"
  if ! replace "$src" "$old" "$new"; then
    say "mutation $k ($name): NOT APPLIED (the line is gone; update the list)"
    mv "$src.orig" "$src"
    return 1
  fi
  local caught=""
  if ! ninja -C "$SCRATCH/build" -j "$JOBS" >"$SCRATCH/build-$k.log" 2>&1; then
    caught="the build"
  else
    (cd "$SCRATCH/build" &&
      ctest -R "$tests" --output-on-failure >"$SCRATCH/ctest-$k.log" 2>&1)
    # ctest lists failures as "<TAB>NNN - NAME[ # PARAM] (Failed)".
    caught=$(sed -n '/tests FAILED:/,$p' "$SCRATCH/ctest-$k.log" |
      sed -nE 's/^[[:space:]]*[0-9]+ - ([^ ]+).*\((Failed|SEGFAULT|Subprocess aborted|Timeout|Child aborted|Exception|ILLEGAL|BUS|OTHER_FAULT|[A-Za-z_ ]+)\)[[:space:]]*$/\1/p' |
      head -6 | paste -sd, - | sed 's/,/, /g')
  fi
  mv "$src.orig" "$src"
  touch "$src"
  if [ -n "$caught" ]; then
    say "mutation $k ($name): caught by $caught"
    return 0
  fi
  say "mutation $k ($name): SURVIVED"
  return 1
}

prepare
survived=0
for i in "${!NAMES[@]}"; do
  k=$((i + 1))
  if [ ${#ONLY[@]} -gt 0 ] && [[ ! " ${ONLY[*]} " =~ " $k " ]]; then
    continue
  fi
  run_one "$k" || survived=$((survived + 1))
done
# Leave the scratch build as the unmutated tree for the next run.
ninja -C "$SCRATCH/build" -j "$JOBS" >/dev/null 2>&1
[ "$KEEP" = 1 ] || rm -f "$SCRATCH"/ctest-*.log "$SCRATCH"/build-*.log
if [ "$survived" -gt 0 ]; then
  say "mutate: $survived mutation(s) survived or could not be applied"
  exit 1
fi
say "mutate: every mutation was caught"
