#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
"""Checks that every source file of the project carries the licence's SPDX
line near its top (in its banner).

  check-spdx.py [SOURCE_DIR]

Source files: C, C++, Python, shell, CMake (as git lists them), except the
inputs of the lit tests under test/, whose line numbers the tests check.
Exits 1 and names each file without the line.
"""

import os
import subprocess
import sys

SPDX = "SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception"
SUFFIXES = (".c", ".h", ".cpp", ".py", ".sh", ".cmake", ".cmake.in",
            "CMakeLists.txt")


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.getcwd()
    files = subprocess.check_output(["git", "-C", root, "ls-files"],
                                    text=True).split()
    missing = []
    for name in files:
        if name.startswith("test/") or not (
                name.endswith(SUFFIXES) or name == ".ci/run"):
            continue
        with open(os.path.join(root, name), errors="replace") as f:
            head = "".join(f.readline() for _ in range(6))
        if SPDX not in head:
            missing.append(name)
    for name in missing:
        print(f"{name}: no '{SPDX}' in its first lines")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
