#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
"""Markdown tables of the benchmark runs kept in bench/results/.

Reads every bench/results/run-K.json (`dispatch-gen bench --json=...`), in the
order of K, and prints a line naming the machine and the runs, then tables of
the call cost (ns per call, and the ratio to the direct call), the project's
goals, weights against the address-sorted tree, update latency, read-side
scaling and memory. Then, from every bench/results/many-K.json
(`dispatch-gen bench --only-many --json=...`), the many-dispatchers table,
with its own machine line. A cell gives the first run's figure, then in
parentheses the range over all runs (left out where every run rounds to the
same figure). Patterns and N measured by some runs only (older runs lack the
`unregistered` and `phase` patterns) take their figures from those runs; a
variant no run measured (older runs lack `adaptive`) has no column, and a
goal no run measured no row. Runs with the adaptive variant add the table
of the layouts it learned.

  bench-tables.py                     print the tables
  bench-tables.py --update README.md  rewrite the README's generated block
  bench-tables.py --check README.md   exit 1 if that block is not what this
                                      prints now, or if a figure of the
                                      README's "## Why" or "### Measured"
                                      text outside the block is not in it

The block lies between the lines <!-- bench-tables:begin --> and
<!-- bench-tables:end -->. A figure is a number with a decimal point and a
unit (ns, us, ms, x, KiB, MiB); a range "1.31-1.44x" is two figures.
Standard library only.
"""

import argparse
import difflib
import json
import os
import re
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from bench_tables_format import (cell, f2, latency, measured, memory, met,
                                 ordered, table)

BEGIN = "<!-- bench-tables:begin -->"
END = "<!-- bench-tables:end -->"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = ["direct", "indirect", "retpoline", "dispatcher",
            "dispatcher+weights", "sorted-tree", "adaptive"]
# The patterns whose programs are all registered: the goals are about them
# (`unregistered` and `phase` calls take the fallback).
REGISTERED_PATTERNS = ["one-hot", "round-robin", "uniform", "zipf"]

P99_SAMPLES = 200  # MinP99Samples of include/dispatch-gen/Benchmark.h


def load_runs(results, prefix="run", required=True):
    runs = []
    for name in os.listdir(results):
        m = re.fullmatch(prefix + r"-(\d+)\.json", name)
        if m:
            with open(os.path.join(results, name)) as f:
                runs.append((int(m.group(1)), name, json.load(f)))
    if not runs and required:
        sys.exit(f"bench-tables.py: no {prefix}-K.json in {results}")
    runs.sort()
    return [(name, data) for _, name, data in runs]


# --- The runs' figures -----------------------------------------------------


class Runs:
    def __init__(self, runs):
        self.names = [name for name, _ in runs]
        self.data = [data for _, data in runs]
        self.calls = [{(c["pattern"], c["n"], c["variant"]): c["ns_per_call"]
                       for c in d.get("calls", [])} for d in self.data]
        # Patterns in the order measured, the first run's first; N sorted.
        every = [c for d in self.data for c in d.get("calls", [])]
        self.patterns = ordered(c["pattern"] for c in every)
        self.ns = sorted(set(c["n"] for c in every))
        # The variants some run measured, in VARIANTS' order.
        self.variants = [v for v in VARIANTS
                         if any(c["variant"] == v for c in every)]
        self.learned = [{(c["pattern"], c["n"]): c for c in d.get("calls", [])
                         if "layout" in c} for d in self.data]

    def ns_per_call(self, pattern, n, variant):
        return [c.get((pattern, n, variant)) for c in self.calls]

    def ratio(self, pattern, n, num, den):
        """num's ns over den's, per run."""
        return [None if c.get((pattern, n, num)) is None
                or not c.get((pattern, n, den))
                else c[(pattern, n, num)] / c[(pattern, n, den)]
                for c in self.calls]

    def update(self, mode, n):
        return [next((u for u in d.get("updates", [])
                      if u["mode"] == mode and u["n"] == n), None)
                for d in self.data]

    def scaling(self, threads, rate):
        return [next((s for s in d.get("scaling", [])
                      if s["threads"] == threads
                      and s["updates_per_second"] == rate), None)
                for d in self.data]

    def cpus(self):
        return min(d.get("machine", {}).get("cpus", 1) for d in self.data)


def field(records, key, scale=1.0):
    return [None if r is None or key not in r else r[key] * scale
            for r in records]


# --- The tables ------------------------------------------------------------


def header(r):
    def distinct(key, fmt=str):
        return " / ".join(ordered(fmt(d.get("machine", {}).get(key, "unknown"))
                                  for d in r.data))
    loads = [d.get("machine", {}).get("load_average") for d in r.data]
    loads = [v for v in loads if v is not None]
    load = (f"; 1-minute load average {min(loads):.2f}-{max(loads):.2f} "
            "before a run" if loads else "")
    loops = ordered((d.get("call_loops"), d.get("calls_per_loop"),
                     d.get("phase_calls_per_loop")) for d in r.data)
    count = len(r.names)
    runs = (f"{count} runs, `bench/results/{r.names[0]}` to "
            f"`{r.names[-1]}`" if count > 1
            else f"one run, `bench/results/{r.names[0]}`")
    lines = [
        f"Machine: {distinct('cpu_model')}, {distinct('cpus')} CPUs (nproc); "
        f"LLVM {distinct('llvm_version')}, {distinct('build_type')} build"
        f"{load}.",
        "",
        f"From {runs}: each figure is the first run's, then in parentheses "
        "the range over all of them (left out where they agree). A call "
        "cost is the median of "
        + " / ".join(f"{a} timed loops of {b} calls"
                     + (f" ({c} for `phase`: one move of the hot target in "
                        "each)" if c else "")
                     for a, b, c in loops)
        + ".",
    ]
    return lines


def call_tables(r):
    rows_ns, rows_ratio = [], []
    for p in r.patterns:
        for n in r.ns:
            rows_ns.append([p, str(n)] + [cell(r.ns_per_call(p, n, v), f2)
                                          for v in r.variants])
            rows_ratio.append([p, str(n)] + [
                cell(r.ratio(p, n, v, "direct"), f2, "x")
                for v in r.variants[1:]])
    return (["**Call cost**, ns per call:", ""]
            + table(["pattern", "N"] + r.variants, measured(rows_ns, 2))
            + ["", "**Call cost**, ratio to the direct call:", ""]
            + table(["pattern", "N"] + r.variants[1:],
                    measured(rows_ratio, 2)))


def learned_table(r):
    """The adaptive variant's learned layouts next to its cost; nothing
    when no run measured it."""
    rows = []
    for p in r.patterns:
        for n in r.ns:
            ls = [d.get((p, n)) for d in r.learned]
            if not any(ls):
                continue
            layouts = " / ".join(ordered(l["layout"] for l in ls if l))
            rows.append([p, str(n), layouts,
                         cell(field(ls, "predicted_cost"), f2),
                         cell(r.ns_per_call(p, n, "adaptive"), f2),
                         cell(r.ratio(p, n, "retpoline", "adaptive"), f2,
                              "x"),
                         cell(field(ls, "learning_ns_per_call"), f2)])
    if not rows:
        return []
    return (["**Adaptive**: the layout each adaptive dispatcher learned, "
             "the cost model's cost per call (a retpoline is 20; the "
             "calibrated constants below) and what was measured; "
             "\"learning\" is a call's "
             "cost while a window is open (the counting image; not timed "
             "where the background learner learns, `phase`):", ""]
            + table(["pattern", "N", "layout", "predicted", "ns per call",
                     "x faster than the retpoline", "learning"], rows))


def worst(r, pattern, num, den, largest, include=lambda n: True):
    """Per run, the largest (or smallest) num/den over the Ns include
    admits."""
    out = []
    for k in range(len(r.calls)):
        vs = [r.ratio(pattern, n, num, den)[k] for n in r.ns if include(n)]
        vs = [v for v in vs if v is not None]
        out.append((max(vs) if largest else min(vs)) if vs else None)
    return out


def goal_rows(r):
    """The project's goals, each with its figures and whether it was met."""
    rows = []

    def add(goal, values, unit_cell, test, verdict=None):
        rows.append([goal, unit_cell(values), verdict or met(values, test)])

    ratio = lambda v: cell(v, f2, "x")
    add("one-hot, N = 48: dispatcher <= 1.15x direct",
        r.ratio("one-hot", 48, "dispatcher", "direct"), ratio,
        lambda v: v <= 1.15)
    add("one-hot, N = 48: dispatcher >= 3x faster than the retpoline",
        r.ratio("one-hot", 48, "retpoline", "dispatcher"), ratio,
        lambda v: v >= 3)
    for p in (p for p in r.patterns if p in REGISTERED_PATTERNS):
        add(f"{p}, N = 1024: dispatcher <= 1.5x direct",
            r.ratio(p, 1024, "dispatcher", "direct"), ratio,
            lambda v: v <= 1.5)
    for n in (48, 256, 1024, 4096):
        add(f"zipf, N = {n}: dispatcher+weights >= 1.2x faster than the "
            "sorted tree",
            r.ratio("zipf", n, "sorted-tree", "dispatcher+weights"), ratio,
            lambda v: v >= 1.2)
    # Adaptive dispatch, standing in for the retpoline: never slower than
    # it nor than the plain dispatcher where that one beats it, and faster
    # where counts help; each row the worst N of the pattern.
    for p in r.patterns:
        add(f"{p}, every N: adaptive <= 1.05x the retpoline",
            worst(r, p, "adaptive", "retpoline", True), ratio,
            lambda v: v <= 1.05)
        beats = [[n for n in r.ns
                  if (c.get((p, n, "dispatcher")) or 0) > 0
                  and c.get((p, n, "retpoline")) is not None
                  and c[(p, n, "dispatcher")] < c[(p, n, "retpoline")]]
                 for c in r.calls]
        per_run = [worst(r, p, "adaptive", "dispatcher", True,
                         lambda n, b=b: n in b)[k]
                   for k, b in enumerate(beats)]
        add(f"{p}, N where the dispatcher beats the retpoline: adaptive "
            "<= 1.05x the dispatcher", per_run, ratio, lambda v: v <= 1.05)
    for p in ("uniform", "zipf"):
        add(f"{p}, N <= 8: adaptive >= 1.1x faster than the retpoline",
            worst(r, p, "retpoline", "adaptive", False, lambda n: n <= 8),
            ratio, lambda v: v >= 1.1)
    for p, limit in (("unregistered", 3), ("phase", 2)):
        add(f"{p}, every N: adaptive >= {limit}x faster than the retpoline",
            worst(r, p, "retpoline", "adaptive", False), ratio,
            lambda v, limit=limit: v >= limit)
    # A call while a window is open, against the dispatcher's, at the
    # worst pattern and N of each run.
    window = []
    for k, d in enumerate(r.learned):
        vs = [l["learning_ns_per_call"] / r.calls[k][(p, n, "dispatcher")]
              for (p, n), l in d.items()
              if l.get("learning_ns_per_call")
              and r.calls[k].get((p, n, "dispatcher"))]
        window.append(max(vs) if vs else None)
    add("while a window is open, every pattern and N: adaptive <= 2x the "
        "dispatcher", window, ratio, lambda v: v <= 2)
    for n, limit, text in ((48, 300, "300 us"), (1024, 5000, "5 ms")):
        for mode in ("async", "sync"):
            add(f"update, N = {n}, {mode}: median <= {text}",
                field(r.update(mode, n), "median_us"), latency,
                lambda v, limit=limit: v <= limit)
    # Read-side scaling is measurable only with a CPU for each reader and
    # one more for the updater and the rest of the machine.
    cpus = r.cpus()
    for rate in (0, 100, 1000):
        one = field(r.scaling(1, rate), "calls_per_second")
        two = field(r.scaling(2, rate), "calls_per_second")
        ratios = [None if a is None or b is None else b / a
                  for a, b in zip(one, two)]
        verdict = None
        if cpus < 2 + 1:
            verdict = (f"not measurable here: 2 readers and the updater on "
                       f"{cpus} CPUs")
        add(f"2 threads, {rate} updates/s: >= 1.9x the calls/s of one",
            ratios, ratio, lambda v: v >= 1.9, verdict)
    # Rows without any figure (an N or pattern not measured) say nothing.
    rows = [row for row in rows if row[1] != "-"]
    return (["**Goals**: the figure behind each, from the tables, and "
             "whether every run met it:", ""]
            + table(["goal", "measured", "met"], rows))


def weights_table(r):
    ns = [n for n in r.ns if n > 1]
    rows = [[p] + [cell(r.ratio(p, n, "sorted-tree", "dispatcher+weights"),
                        f2, "x") for n in ns]
            for p in r.patterns]
    return (["**Weights**: the sorted tree's ns per call over the weighted "
             "dispatcher's (above 1.00x the weighted dispatcher is "
             "faster):", ""]
            + table(["pattern"] + [f"N = {n}" for n in ns],
                    measured(rows, 1)))


def update_table(r):
    keys = ordered((u["mode"], u["n"]) for u in r.data[0].get("updates", []))
    rows = []
    for mode, n in keys:
        us = r.update(mode, n)
        counts = ordered(str(u["updates"]) for u in us if u is not None)
        p99 = field(us, "p99_us")
        rows.append([mode, str(n), " / ".join(counts),
                     latency(field(us, "median_us")),
                     latency(p99) if all(v is not None for v in p99)
                     else "- (too few)",
                     latency(field(us, "max_us"))])
    return ([f"**Update latency**: one `change()`; p99 only from "
             f"{P99_SAMPLES} updates or more per run:", ""]
            + table(["mode", "N", "updates per run", "median", "p99", "max"],
                    rows))


def scaling_table(r):
    keys = ordered((s["threads"], s["updates_per_second"])
                   for s in r.data[0].get("scaling", []))
    rows = []
    for threads, rate in keys:
        ss = r.scaling(threads, rate)
        one = field(r.scaling(1, rate), "calls_per_second")
        calls = field(ss, "calls_per_second")
        rel = [None if a is None or b is None else b / a
               for a, b in zip(one, calls)]
        rows.append([str(threads), str(rate),
                     cell(field(ss, "achieved_updates_per_second"),
                          lambda v: f"{v:.0f}"),
                     cell(field(ss, "calls_per_second", 1e-6),
                          lambda v: f"{v:.1f}"),
                     cell(rel, f2, "x")])
    seconds = [s["seconds"] for d in r.data for s in d.get("scaling", [])
               if "seconds" in s]
    span = f" of {min(seconds):.1f} s" if seconds else ""
    cpus = r.cpus()
    threads = max((t for t, _ in keys), default=1)
    caveat = ""
    if cpus < threads + 1:
        caveat = (f" The {cpus} CPUs hold {threads} readers and the updater "
                  "(and the rest of the machine): the ratio to one thread "
                  "is not a scaling figure here.")
    return ([f"**Read-side scaling**: calls through a 48-program dispatcher "
             f"while an updater asks for 0, 100 or 1000 updates/s; one "
             f"sample{span} per row and run.{caveat}", ""]
            + table(["threads", "updates/s asked", "updates/s done",
                     "M calls/s", "x one thread"], rows))


def memory_table(r):
    ns = ordered(m["n"] for m in r.data[0].get("memory", []))
    rows = [[str(n), memory([next(m["resident_bytes"]
                                  for m in d.get("memory", [])
                                  if m["n"] == n) for d in r.data])]
            for n in ns]
    return (["**Memory**: resident-set growth from one dispatcher:", ""]
            + table(["N", "resident"], rows))


def many_table(runs):
    """Thousands of dispatchers in one process, from many-K.json."""
    if not runs:
        return []
    names = [name for name, _ in runs]
    many = [d.get("many_dispatchers", {}) for _, d in runs]
    machines = " / ".join(ordered(
        f"{d.get('machine', {}).get('cpu_model', 'unknown')}, "
        f"{d.get('machine', {}).get('cpus', '?')} CPUs" for _, d in runs))
    first = many[0]
    count = len(names)
    src = (f"{count} runs, `bench/results/{names[0]}` to `{names[-1]}`"
           if count > 1 else f"one run, `bench/results/{names[0]}`")

    def us(key):
        return cell(field(many, key), lambda v: f"{v:.1f}", " us")

    def churn(key, fmt):
        return cell([m["churn"][-1][key] - m["churn"][0][key]
                     for m in many], fmt)

    rows = [
        ["create() median", us("create_median_us")],
        ["create() p99", us("create_p99_us")],
        [f"add {first.get('programs_each', 4)} programs (one batch), median",
         us("register_median_us")],
        ["resident set per dispatcher",
         cell(field(many, "resident_bytes_each", 1 / 1024),
              lambda v: f"{v:.2f}", " KiB")],
        ["mappings added by all of them",
         cell(field(many, "mappings_added"), lambda v: f"{v:.0f}")],
        ["every program reached directly",
         " / ".join(ordered("yes" if m.get("all_direct") else "NO"
                            for m in many))],
        ["destroy, each", us("destroy_each_us")],
        [f"{first.get('cycles', 0)} create/destroy cycles: resident set, "
         "last sample minus first",
         churn("resident_bytes", lambda v: f"{v / 1024:.0f} KiB")],
        ["... mappings, last minus first", churn("mappings", str)],
        ["... file descriptors, last minus first",
         churn("file_descriptors", str)],
    ]
    adaptive = [m.get("adaptive") for m in many]
    if any(adaptive):
        rows += [
            ["as many adaptive ones (default AdaptiveConfig, no calls): "
             "create() and add, median",
             cell(field(adaptive, "create_median_us"), lambda v: f"{v:.1f}",
                  " us")],
            ["... resident set per dispatcher",
             cell(field(adaptive, "resident_bytes_each", 1 / 1024),
                  lambda v: f"{v:.2f}", " KiB")],
            ["... mappings added by all of them",
             cell(field(adaptive, "mappings_added"), lambda v: f"{v:.0f}")],
            ["... the learner thread's CPU (share of one)",
             cell(field(adaptive, "learner_cpu_share", 100),
                  lambda v: f"{v:.0f}", "%")],
            ["... learning windows closed per second",
             cell(field(adaptive, "windows_per_second"),
                  lambda v: f"{v:.0f}")],
        ]
    return ([f"**Many dispatchers**: {first.get('dispatchers', 0)} "
             f"dispatchers of {first.get('programs_each', 0)} programs alive "
             f"at once in one process, then one at a time created, used and "
             f"destroyed. Machine: {machines}; from {src}.", ""]
            + table(["measure", "figure"], rows))


def cost_model_table(r):
    """The LayoutCostModel constants each run's call costs give, and those
    each run's process calibrated at its start."""
    fits = [d.get("cost_model") for d in r.data]
    cals = [d.get("calibration") for d in r.data]
    cals = [c if c and c.get("calibrated") else None for c in cals]
    if not any(fits) and not any(cals):
        return []
    f1 = lambda v: f"{v:.1f}"
    rows = []
    for name, key, fmt, default in [
            ("Compare", "compare", f2, "0.25"),
            ("Mispredict", "mispredict", f1, "20"),
            ("IndirectMispredict", "indirect_mispredict", f1, "16")]:
        rows.append([name, cell(field(cals, key), fmt),
                     cell(field(fits, key), fmt), default])
    return (["**Cost model**: the `LayoutCostModel` constants (a retpoline "
             "= 20) each run's process calibrated at its start "
             "(`CostCalibration.h`; the weighted and adaptive columns chose "
             "their layouts by them), those its call costs give "
             "(`fitCostModel`), and the defaults:", ""]
            + table(["constant", "calibrated", "fitted", "default"], rows))


def generate(results):
    r = Runs(load_runs(results))
    learned = learned_table(r)
    model = cost_model_table(r)
    parts = [header(r), call_tables(r)] + ([learned] if learned else []) + (
             [model] if model else []) + [
             goal_rows(r), weights_table(r),
             update_table(r), scaling_table(r), memory_table(r),
             many_table(load_runs(results, "many", required=False))]
    lines = ["<!-- Generated by utils/bench-tables.py from "
             "bench/results/run-*.json and many-*.json: rerun it with "
             "--update, do not edit. -->", ""]
    for part in parts:
        lines += part + [""]
    return "\n".join(lines)


# --- The README's block ----------------------------------------------------


def split_readme(text, path):
    begin, end = text.find(BEGIN + "\n"), text.find(END)
    if begin < 0 or end < begin:
        sys.exit(f"bench-tables.py: {path} has no {BEGIN} ... {END} block")
    start = begin + len(BEGIN) + 1
    return text[:start], text[start:end], text[end:]


FIGURE = re.compile(r"(\d+\.\d+)(?:-(\d+\.\d+))?\s?(?:ns|us|ms|x|KiB|MiB)\b")


def stray_figures(text, block, path):
    """Figures of "## Why" and "### Measured" that the block does not hold."""
    problems = []
    checked = in_block = in_code = False
    for number, line in enumerate(text.split("\n"), 1):
        if line.startswith("```"):
            in_code = not in_code
        elif line in (BEGIN, END):
            in_block = line == BEGIN
        elif re.match(r"#{1,6} ", line) and not in_code:
            checked = line.startswith(("## Why", "### Measured"))
        if not checked or in_block:
            continue
        for m in FIGURE.finditer(line):
            for figure in filter(None, m.groups()):
                if not re.search(r"(?<![\d.])" + re.escape(figure)
                                 + r"(?!\d)", block):
                    problems.append(f"{path}:{number}: '{m.group(0)}' is "
                                    "not in the generated tables")
    return problems


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", default=os.path.join(ROOT, "bench",
                                                      "results"),
                    help="directory of run-K.json (default: bench/results)")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--update", metavar="README",
                      help="rewrite the README's generated block")
    mode.add_argument("--check", metavar="README",
                      help="exit 1 if the README's block is out of date")
    args = ap.parse_args()

    block = generate(args.results)
    path = args.update or args.check
    if not path:
        sys.stdout.write(block)
        return 0
    with open(path) as f:
        text = f.read()
    before, old, after = split_readme(text, path)
    if args.update:
        if old != block:
            with open(path, "w") as f:
                f.write(before + block + after)
        return 0
    status = 0
    if old != block:
        sys.stdout.writelines(difflib.unified_diff(
            old.splitlines(True), block.splitlines(True),
            f"{path} (the block)", "utils/bench-tables.py (now)"))
        print(f"{path}: the tables are not those of {args.results}; run "
              f"utils/bench-tables.py --update {path}")
        status = 1
    for problem in stray_figures(text, old, path):
        print(problem)
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
