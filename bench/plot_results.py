#!/usr/bin/env python3
"""Plots the current benchmark results: bench/results.csv -> docs/performance.svg.

Usage: bench/plot_results.py [RESULTS.csv] [OUTPUT.svg|.png]
       bench/plot_results.py --markdown [RESULTS.csv]   (prints the table of docs/performance.md)

One horizontal bar per workload with a ratio (pipeworks / baseline, above 1 is better for
pipeworks), grouped as in the file, a line at 1.0, each ratio goal marked, and the bar
coloured by the verdict column (met, missed, or empty: no goal), which is the verdict of
docs/performance.md and not recomputed here. Needs
matplotlib (Debian: python3-matplotlib). The picture is written without a date, so the same
results give the same file.
"""
import csv
import pathlib
import re
import sys

root = pathlib.Path(__file__).resolve().parent.parent
args = sys.argv[1:]
markdown = bool(args) and args[0] == "--markdown"
if markdown:
    args = args[1:]
src = pathlib.Path(args[0]) if args else root / "bench/results.csv"
dst = pathlib.Path(args[1]) if len(args) > 1 else root / "docs/performance.svg"

with src.open(newline="", encoding="utf-8") as f:
    all_rows = list(csv.DictReader(f))


def number(text):
    """1234567 -> 1,234,567; decimals stay as written."""
    return f"{int(text):,}" if text.isdigit() else text


if markdown:
    print("| workload | unit | baseline | baseline value | pipeworks | ratio | goal | verdict | date | command |")
    print("|---|---|---|---:|---:|---:|---|---|---|---|")
    for r in all_rows:
        print(f"| {r['workload']} | {r['unit']} | {r['baseline']} | {number(r['baseline_value'])} | "
              f"{number(r['pipeworks_value'])} | {r['ratio'] or '-'} | {r['goal'] or '-'} | "
              f"{r['verdict'] or '-'} | {r['date']} | {r['command']} |")
    sys.exit(0)

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

rows = [r for r in all_rows if r["ratio"].strip()]
if not rows:
    sys.exit(f"{src}: no row with a ratio")


def goal_ratio(goal):
    m = re.fullmatch(r">=\s*([0-9.]+)", goal.strip())
    return float(m.group(1)) if m else None


labels = [f"{r['workload']}  [vs {r['baseline']}]" for r in rows]
ratios = [float(r["ratio"]) for r in rows]
goals = [goal_ratio(r["goal"]) for r in rows]
palette = {"met": "#2b7bba", "missed": "#d9812b", "": "#7f7f7f"}
unknown = sorted({r["verdict"] for r in rows} - palette.keys())
if unknown:
    sys.exit(f"{src}: unknown verdict(s) {unknown}: use met, missed or nothing")
colors = [palette[r["verdict"]] for r in rows]

matplotlib.rcParams["svg.hashsalt"] = "pipeworks"
fig, ax = plt.subplots(figsize=(12, 0.34 * len(rows) + 1.8))
y = list(range(len(rows)))[::-1]
ax.barh(y, ratios, color=colors, height=0.7)
for yi, ratio in zip(y, ratios):
    ax.text(ratio + 0.02, yi, f"{ratio:.2f}", va="center", fontsize=8)
for yi, goal in zip(y, goals):
    if goal is not None:
        ax.plot([goal, goal], [yi - 0.42, yi + 0.42], color="black", linewidth=1.5)
ax.axvline(1.0, color="black", linewidth=0.8, linestyle="--")
# A thin line between groups.
for i in range(1, len(rows)):
    if rows[i]["group"] != rows[i - 1]["group"]:
        ax.axhline(y[i] + 0.5, color="#cccccc", linewidth=0.6)
ax.set_yticks(y)
ax.set_yticklabels(labels, fontsize=8)
ax.set_xlabel("pipeworks / baseline (higher is better for pipeworks)\n"
              "dashed: 1.0; black tick: the goal; blue: goal met, orange: missed, grey: no goal")
ax.set_xlim(0, max(ratios + [g for g in goals if g]) * 1.12)
dates = sorted({r["date"] for r in rows})
fig.suptitle(f"pipeworks benchmarks: the current result of each workload "
             f"(measured {dates[0]} to {dates[-1]}; docs/performance.md)", fontsize=10,
             x=0.01, ha="left")
fig.tight_layout()
fig.savefig(dst, metadata={"Date": None} if dst.suffix == ".svg" else None)
print(f"wrote {dst} ({len(rows)} workloads)")
