#!/usr/bin/env bash
#===- utils/torture/expect-caught.sh - The torture must catch a bug --------===#
#
# Runs dispatch-gen-torture --broken-reclamation (frees without grace
# periods) and passes only if the torture fails for the right reason: a
# call into released code, or a program seen after its release, or a crash
# by a fault signal (a jump into freed code can also land outside a reader's
# call). Any other outcome, a pass included, fails.
#
# usage: expect-caught.sh TORTURE [ARGS...]
#===------------------------------------------------------------------------===#
set -u
torture=$1
shift
out=$("$torture" --broken-reclamation "$@" 2>&1)
status=$?
printf '%s\n' "$out"
if [ "$status" -eq 0 ]; then
  echo "expect-caught: FAIL: broken reclamation went unnoticed" >&2
  exit 1
fi
# 128+N: killed by signal N (SIGILL 4, SIGTRAP 5, SIGBUS 7, SIGSEGV 11).
case $status in
  132|133|135|139)
    echo "expect-caught: ok: the broken mode crashed (status $status)"
    exit 0 ;;
esac
if printf '%s\n' "$out" | grep -Eq 'caught: ([0-9]+ calls into released code|[0-9]+ calls answered by a program released|fault outside a dispatched call)'; then
  echo "expect-caught: ok: the torture caught the broken reclamation"
  exit 0
fi
echo "expect-caught: FAIL: the torture failed (status $status) for another reason" >&2
exit 1
