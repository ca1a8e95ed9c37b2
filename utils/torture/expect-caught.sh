#!/usr/bin/env bash
#===- utils/torture/expect-caught.sh - The torture must catch a bug --------===#
# SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
#
# Runs dispatch-gen-torture --broken-reclamation=MODE, which skips one grace
# period, and passes only if the torture fails and reports a non-zero count
# of the event that grace period exists to prevent:
#
#   programs   calls into released programs (or answered by one)
#   images     calls into released images
#   resident   calls into a rewritten resident area
#
# A pass, a crash, or a failure for any other reason fails this check.
#
# usage: expect-caught.sh TORTURE MODE [ARGS...]
#===------------------------------------------------------------------------===#
set -u
torture=$1
mode=$2
shift 2
case $mode in
  programs) want='caught: [1-9][0-9]* calls (into released programs|answered by a program released)' ;;
  images) want='caught: [1-9][0-9]* calls into released images' ;;
  resident) want='caught: [1-9][0-9]* calls into a rewritten resident area' ;;
  *) echo "expect-caught: unknown mode '$mode' (programs, images, resident)" >&2
     exit 2 ;;
esac
out=$("$torture" --broken-reclamation="$mode" "$@" 2>&1)
status=$?
printf '%s\n' "$out"
if [ "$status" -eq 0 ]; then
  echo "expect-caught: FAIL: --broken-reclamation=$mode went unnoticed" >&2
  exit 1
fi
if [ "$status" -ne 1 ]; then
  echo "expect-caught: FAIL: the torture died (status $status) instead of" \
       "counting what it caught" >&2
  exit 1
fi
if printf '%s\n' "$out" | grep -Eq "$want"; then
  echo "expect-caught: ok: --broken-reclamation=$mode was caught by its count"
  exit 0
fi
echo "expect-caught: FAIL: the torture failed, but not by the count for" \
     "--broken-reclamation=$mode" >&2
exit 1
