#!/usr/bin/env python3
"""Counts the tests of one run: every GoogleTest case from ctest's JUnit
report (the lit suite's single ctest entry excluded) plus every lit test from
lit's xunit report. Prints one closing line, 'tests: N passed, N failed, N
skipped', and exits non-zero when a test failed or a report is missing."""
import sys
import xml.etree.ElementTree as ET

LIT_ENTRY = "lit-suite"


def count(path, skip_name=None):
    passed = failed = skipped = 0
    for case in ET.parse(path).getroot().iter("testcase"):
        if case.get("name") == skip_name:
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
    if len(sys.argv) != 3:
        sys.exit("usage: count-tests.py CTEST_JUNIT LIT_XUNIT")
    totals = [0, 0, 0]
    missing = False
    for path, skip in ((sys.argv[1], LIT_ENTRY), (sys.argv[2], None)):
        try:
            for i, n in enumerate(count(path, skip)):
                totals[i] += n
        except (OSError, ET.ParseError) as err:
            print(f"count-tests: cannot read {path}: {err}", file=sys.stderr)
            missing = True
    print(f"tests: {totals[0]} passed, {totals[1]} failed, {totals[2]} skipped")
    sys.exit(1 if missing or totals[1] else 0)


if __name__ == "__main__":
    main()
