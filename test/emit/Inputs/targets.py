"""Writes a response file of N dispatch-gen targets: prog_0 .. prog_{N-1},
with addresses 0x10000 apart when --addresses is given."""
import sys

n = int(sys.argv[1])
addresses = "--addresses" in sys.argv
for i in range(n):
    print(f"prog_{i}@{0x10000 * (i + 1):#x}" if addresses else f"prog_{i}")
