#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
"""Counts the tests of one run: every GoogleTest case from ctest's JUnit
reports (the lit suite's single ctest entry excluded) plus every lit test from
lit's xunit report, across any number of reports (the normal build's, the
ThreadSanitizer build's and the ASan+UBSan build's; the torture test's ctest
entries count as cases). Prints one closing line, 'tests: N passed, N failed,
N skipped', and exits non-zero when a test failed or a report is missing."""
import sys
import xml.etree.ElementTree as ET

LIT_ENTRY = "lit-suite"


def count(path):
    passed = failed = skipped = 0
    for case in ET.parse(path).getroot().iter("testcase"):
        # ctest's one entry for the whole lit suite: lit's own report counts
        # its tests.
        if case.get("name") == LIT_ENTRY:
            continue
        if case.find("failure") is not None or case.find("error") is not None:
            failed += 1
        elif case.find("skipped") is not None or case.get("status") in (
                "notrun", "disabled"):
            skipped += 1
        else:
            passed += 1
    return passed, failed, skipped


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: count-tests.py REPORT...  (ctest JUnit or lit xunit)")
    totals = [0, 0, 0]
    missing = False
    for path in sys.argv[1:]:
        try:
            for i, n in enumerate(count(path)):
                totals[i] += n
        except (OSError, ET.ParseError) as err:
            print(f"count-tests: cannot read {path}: {err}", file=sys.stderr)
            missing = True
    print(f"tests: {totals[0]} passed, {totals[1]} failed, {totals[2]} skipped")
    sys.exit(1 if missing or totals[1] else 0)


if __name__ == "__main__":
    main()
