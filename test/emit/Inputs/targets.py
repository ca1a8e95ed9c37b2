"""Writes a response file of N dispatch-gen targets: prog_0 .. prog_{N-1},
with addresses 0x10000 apart when --addresses is given, each of weight W
with --weight=W."""
import sys

n = int(sys.argv[1])
addresses = "--addresses" in sys.argv
weight = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--weight=")), None)
for i in range(n):
    target = f"prog_{i}@{0x10000 * (i + 1):#x}" if addresses else f"prog_{i}"
    print(target + (f":{weight}" if weight else ""))
