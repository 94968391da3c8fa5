#!/usr/bin/env python3
"""Markdown summary of bench/results/cpu_attention.json (issue 3): the bf16 decode table, the
DRAM-bound rows of both 16-bit types against the roofline (run-wide limit and the limit measured
next to the row), and the issue's four targets.

    python3 bench/cpu/report.py [bench/results/cpu_attention.json]
"""
import json
import statistics
import sys

path = sys.argv[1] if len(sys.argv) > 1 else "bench/results/cpu_attention.json"
d = json.load(open(path))
rows = d["rows"]


def kv_bytes(r):
    size = 4 if r["dtype"] == "f32" else 2
    return 2 * r["batch"] * r["kv_heads"] * r["context"] * r["head_dim"] * size


def geo(r):
    return f"{r['q_heads']}:{r['kv_heads']} d{r['head_dim']}"


def find(phase, q, kv, d_, b, c, t):
    for r in rows:
        if (r["phase"], r["q_heads"], r["kv_heads"], r["head_dim"], r["batch"], r["context"], r["dtype"]) == (
                phase, q, kv, d_, b, c, t):
            return r
    return None


print(f"Limits: read {d['read_gbps_limit']:.1f} GB/s, f32 FMA {d['compute_gflops_limit']:.1f} GFLOP/s, "
      f"BF16 dot {d['bf16_dot_gflops_limit']:.1f} GFLOP/s; {d['machine']}\n")
print("| geometry | batch | context | dtype | us/step | KV GB/s | GFLOP/s | % roofline | % roofline, limit next to the row |")
print("|---|---:|---:|---|---:|---:|---:|---:|---:|")
for r in rows:
    if r["phase"] != "decode" or r["dtype"] != "bf16":
        continue
    adj = f"{r['pct_roofline_adjacent']:.0f}% ({r['read_gbps_adjacent']:.1f} GB/s)" if "read_gbps_adjacent" in r else ""
    print(f"| {geo(r)} | {r['batch']} | {r['context']} | {r['dtype']} | {r['us_per_step']:.0f} | {r['kv_gbps']:.1f} | "
          f"{r['gflops']:.0f} | {r['pct_roofline']:.0f}% | {adj} |")

print("\nDRAM-bound decode rows (K/V >= 64 MiB), bf16 and f16:\n")
print("| geometry | batch | context | dtype | us/step | KV GB/s | % compute | % roofline | limit next to the row | % roofline by it |")
print("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|")
dram = [r for r in rows if r["phase"] == "decode" and r["dtype"] != "f32" and kv_bytes(r) >= 64 << 20]
for r in dram:
    print(f"| {geo(r)} | {r['batch']} | {r['context']} | {r['dtype']} | {r['us_per_step']:.0f} | {r['kv_gbps']:.1f} | "
          f"{r['pct_compute']:.0f}% | {r['pct_roofline']:.0f}% | {r.get('read_gbps_adjacent', 0):.1f} GB/s | "
          f"{r.get('pct_roofline_adjacent', 0):.0f}% |")

print("\nTargets:\n")
met = [r for r in dram if r["pct_roofline"] >= 80]
met_adj = [r for r in dram if r.get("pct_roofline_adjacent", 0) >= 80]
for t in ("bf16", "f16"):
    sub = [r["pct_roofline"] for r in dram if r["dtype"] == t]
    sub_adj = [r.get("pct_roofline_adjacent", 0) for r in dram if r["dtype"] == t]
    print(f"- DRAM-bound {t}: {min(sub):.0f}-{max(sub):.0f}% (median {statistics.median(sub):.0f}%) of the run-wide "
          f"roofline; {min(sub_adj):.0f}-{max(sub_adj):.0f}% (median {statistics.median(sub_adj):.0f}%) against the "
          f"limit next to the row")
print(f"- DRAM-bound decode >= 80% of the roofline: {len(met)} of {len(dram)} rows (run-wide limit), "
      f"{len(met_adj)} of {len(dram)} (limit next to the row); target: all")
r = find("decode", 12, 1, 64, 1, 4096, "bf16")
if r:
    print(f"- Cache-resident decode, 12:1 d64, batch 1, 4096, bf16: {r['pct_compute']:.1f}% of the compute peak "
          f"(target 50%)")
r = find("prefill", 12, 1, 64, 1, 4096, "bf16")
if r:
    print(f"- Causal prefill S = 4096, 12:1 d64, bf16: {r['pct_compute']:.1f}% of the compute peak (target 50%)")
ratios = []
for b in (1, 8, 32):
    for c in (512, 4096, 32768):
        mha, mlkv = find("decode", 12, 12, 64, b, c, "bf16"), find("decode", 12, 1, 64, b, c, "bf16")
        if mha and mlkv and kv_bytes(mha) > 32 << 20:
            ratios.append(mha["us_per_step"] / mlkv["us_per_step"])
if ratios:
    print(f"- 12:1 against 12:12 d64 bf16 where the 12:12 cache exceeds the L3: {min(ratios):.1f}-{max(ratios):.1f}x "
          f"faster (target 3x)")
