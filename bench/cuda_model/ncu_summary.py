#!/usr/bin/env python3
"""Summarises an `ncu --csv --metrics gpu__time_duration.sum` log of one decode step (issue 7):
per kernel family (count, total us), and the kernels of the first layer in launch order.

    python3 bench/cuda_model/ncu_summary.py LOG.csv [label]
"""
import csv
import re
import sys
from collections import OrderedDict


def short(name):
    n = re.sub(r"\(.*", "", name)
    n = re.sub(r"<.*", "", n)
    n = n.replace("void ", "").replace("mlkv::cuda::", "").replace("model_detail::", "").replace("detail::", "")
    if n.startswith("nvjet") or "gemm" in n.lower() or "splitK" in n or "reduce" in n.lower():
        n = name.split("(")[0][:60]
    return n.strip()


def main():
    path = sys.argv[1]
    label = sys.argv[2] if len(sys.argv) > 2 else path
    rows = []
    with open(path) as f:
        lines = [l for l in f if l.startswith('"')]
    for r in csv.DictReader(lines):
        if r.get("Metric Name") != "gpu__time_duration.sum":
            continue
        v = float(r["Metric Value"].replace(",", ""))
        unit = r.get("Metric Unit", "ns")
        us = v / 1000.0 if unit in ("ns", "nsecond") else (v if unit in ("us", "usecond") else v * 1e6)
        rows.append((short(r["Kernel Name"]), us, r.get("Grid Size", ""), r.get("Block Size", "")))
    # One step: from an embedding kernel to the next one; the second step when there are three
    # (the first is the uncaptured run, which also times the GEMM candidates).
    starts = [i for i, r in enumerate(rows) if r[0].startswith("embed_kernel")]
    if len(starts) >= 3:
        rows = rows[starts[1]:starts[2]]
    elif starts:
        rows = rows[starts[0]:starts[1]] if len(starts) > 1 else rows[starts[0]:]
    fam = OrderedDict()
    for n, us, g, b in rows:
        c, t = fam.get(n, (0, 0.0))
        fam[n] = (c + 1, t + us)
    total = sum(us for _, us, _, _ in rows)
    print(f"== {label}: {len(rows)} kernels, {total:.1f} us summed (isolated, serialised)")
    for n, (c, t) in sorted(fam.items(), key=lambda kv: -kv[1][1]):
        print(f"  {t:8.1f} us  {c:4d} x {t / c:7.2f}  {n}")
    # first layer: from the first LayerNorm after the embedding to the next LayerNorm
    print("  -- launch order (first 16 kernels):")
    for n, us, g, b in rows[:16]:
        print(f"    {us:7.2f} us  grid {g:>14} block {b:>12}  {n}")


if __name__ == "__main__":
    main()
