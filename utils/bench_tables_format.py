# SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
"""Cells and tables of utils/bench-tables.py: figures of several runs in one
cell, Markdown tables, verdicts of goals. Standard library only."""


def cell(values, fmt, unit=""):
    """The first run's figure, then the range over every run; without the
    first run's, those of the runs that have one."""
    known = [v for v in values if v is not None]
    if not known:
        return "-"
    first, lo, hi = fmt(known[0]), fmt(min(known)), fmt(max(known))
    if len(known) == 1 or lo == hi:
        return first + unit
    return f"{first}{unit} ({lo}-{hi}{unit})"


def f2(v):
    return f"{v:.2f}"


def latency(values):
    """Microseconds, as us below 1 ms and as ms from it."""
    known = [v for v in values if v is not None]
    if known and max(known) >= 1000:
        return cell([None if v is None else v / 1000 for v in values], f2,
                    " ms")
    return cell(values, lambda v: f"{v:.0f}", " us")


def memory(values):
    if max(values) >= 1 << 20:
        return cell([v / (1 << 20) for v in values], lambda v: f"{v:.1f}",
                    " MiB")
    return cell([v / 1024 for v in values], lambda v: f"{v:.0f}", " KiB")


def table(header, rows):
    out = ["| " + " | ".join(header) + " |",
           "|" + "---|" * len(header)]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out


def ordered(items):
    return list(dict.fromkeys(items))


def measured(rows, keys):
    """The rows with a figure after their first keys cells: a pattern no run
    measured at some N says nothing there."""
    return [row for row in rows if any(c != "-" for c in row[keys:])]


def met(values, test):
    known = [v for v in values if v is not None]
    hits = sum(1 for v in known if test(v))
    if not known:
        return "not measured"
    if hits == len(known):
        return "yes"
    if hits == 0:
        return "no"
    return f"in {hits} of {len(known)} runs"
