#!/usr/bin/env python3
"""Merges bench/cuda_model's outputs into bench/results/cuda_model.json, a markdown table and a
plot of tokens/s against batch for the nine configurations (issue 7).

    python3 bench/cuda_model/report.py --bench B.json --hf HF.json [--fidelity F.json] --out DIR
"""
import argparse
import json
import os

ORDER = ["MHA-144", "GQA-48", "MLKV-48", "MQA-12", "MLKV-12", "MLKV-6", "MLKV-4", "MLKV-2", "MLKV-1"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", required=True)
    ap.add_argument("--hf", required=True)
    ap.add_argument("--fidelity")
    ap.add_argument("--out", required=True)
    ap.add_argument("--note", action="append", default=[], help="a line printed under the run line (repeatable)")
    a = ap.parse_args()
    b = json.load(open(a.bench))
    hf = json.load(open(a.hf)) if os.path.exists(a.hf) else {"eager": [], "compiled": []}
    fid = json.load(open(a.fidelity)) if a.fidelity and os.path.exists(a.fidelity) else None
    rows = b["rows"]
    by = {}
    for r in rows:
        by.setdefault(r["config"], []).append(r)
    hf_eager = {e["batch"]: e for e in hf.get("eager", []) if "tokens_per_s" in e}
    hf_comp = {e["batch"]: e for e in hf.get("compiled", []) if "tokens_per_s" in e}

    def mlkv_at(cfg, batch):
        for r in by.get(cfg, []):
            if r["batch"] == batch:
                return r
        return None

    # Targets.
    t = {}
    for batch, need in ((1, 100.0), (128, 10.0)):
        m, h = mlkv_at("MHA-144", batch), hf_eager.get(batch)
        if m and h:
            sp = m["tokens_per_s"] / h["tokens_per_s"]
            # The most any implementation could reach: the batch over the step's bandwidth floor.
            at_floor = batch / (m["floor_us"] * 1e-6)
            t["speedup_vs_hf_eager_batch_%d" % batch] = {"mlkv": m["tokens_per_s"], "hf_eager": h["tokens_per_s"],
                                                        "speedup": sp, "target": need, "met": sp >= need,
                                                        "speedup_at_bandwidth_floor": at_floor / h["tokens_per_s"]}
        hc = hf_comp.get(batch)
        if m and hc:
            t["speedup_vs_hf_compiled_batch_%d" % batch] = {"speedup": m["tokens_per_s"] / hc["tokens_per_s"]}
    over = [(r["config"], r["batch"], r["step_us"] / r["floor_us"]) for r in rows if r["batch"] >= 64]
    worst = max(over, key=lambda x: x[2]) if over else None
    t["step_over_floor_batch_ge_64"] = {
        "worst": {"config": worst[0], "batch": worst[1], "ratio": worst[2]} if worst else None,
        "met_rows": sum(1 for o in over if o[2] <= 1.5), "rows": len(over), "target": 1.5,
        "met": all(o[2] <= 1.5 for o in over)}
    big2 = [r for r in by.get("MLKV-2", []) if r["largest"]]
    big12 = [r for r in by.get("MQA-12", []) if r["largest"]]
    if big2 and big12:
        best12 = max(r["tokens_per_s"] for r in by["MQA-12"])
        t["largest_batch_mlkv2_vs_mqa12"] = {
            "mlkv2_batch": big2[0]["batch"], "mqa12_batch": big12[0]["batch"],
            "ratio": big2[0]["batch"] / big12[0]["batch"], "target_ratio": 5.0,
            "mlkv2_tokens_per_s": big2[0]["tokens_per_s"], "mqa12_best_tokens_per_s": best12,
            "met": big2[0]["batch"] >= 5 * big12[0]["batch"] and big2[0]["tokens_per_s"] > best12}
    merged = dict(b)
    merged["hf"] = hf
    merged["targets"] = t
    if fid:
        merged["fidelity"] = fid
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "cuda_model.json"), "w") as f:
        json.dump(merged, f, indent=2)

    # Table.
    bw = b["read_bw_bytes_per_s"] / 1e12
    L = []
    L.append("# CUDA model: decode tokens/s of the paper's nine configurations (issue 7)\n")
    L.append("Run: `bash bench/cuda_model/run_on_gpu.sh` (one call: tests, fidelity, benchmark, Hugging Face).")
    for n in a.note:
        L.append(n)
    L.append("GPU: **%s** (%d SMs, %.0f GiB); read bandwidth measured in the same run by a read-only kernel: "
             "**%.2f TB/s** (%s)." % (b["gpu"], b["sms"], b["memory_bytes"] / 2 ** 30, bw, b["read_bw_kernel"]))
    L.append("Pythia-160M shape, random bf16 weights (MLP widened as the paper's converter does), bf16 paged cache "
             "(pages of %d tokens), every sequence at %d tokens, one token per sequence per step through the "
             "step's CUDA graph, greedy argmax on the GPU; time per step = CUDA events around many steps. "
             "Largest batch: what fits in %.0f%% of the GPU's memory with weights, cache, activations and the logits "
             "chunk. Floor = (weights + K/V read by every layer) / read bandwidth; the unique-bytes floor counts each "
             "owner slot once (only reachable if consumer layers hit in L2).\n"
             % (b["page_tokens"], b["context"], 100 * b["memory_budget_bytes"] / b["memory_bytes"]))
    batches = sorted({r["batch"] for r in rows if not r["largest"]} | {1, 16, 128, 512})
    L.append("| config | " + " | ".join("batch %d" % x for x in batches) + " | largest batch | tokens/s there |")
    L.append("|---|" + "---:|" * (len(batches) + 2))
    for c in ORDER:
        if c not in by:
            continue
        cells = []
        for x in batches:
            r = mlkv_at(c, x)
            cells.append("%.0f" % r["tokens_per_s"] if r else "-")
        big = [r for r in by[c] if r["largest"]]
        L.append("| %s | %s | %s | %s |" % (c, " | ".join(cells), big[0]["batch"] if big else "-",
                                          "%.0f" % big[0]["tokens_per_s"] if big else "-"))
    L.append("\nStep time against its floor (us; x = step / floor):\n")
    L.append("| config | batch | step us | floor us | x | unique-bytes floor us |")
    L.append("|---|---:|---:|---:|---:|---:|")
    for c in ORDER:
        for r in sorted(by.get(c, []), key=lambda r: r["batch"]):
            L.append("| %s | %d | %.1f | %.1f | %.2f | %.1f |" % (c, r["batch"], r["step_us"], r["floor_us"],
                                                                 r["step_us"] / r["floor_us"], r["floor_unique_us"]))
    L.append("\nHugging Face `GPTNeoXForCausalLM` on the same GPU in the same call (MHA, bf16, eager attention, "
             "DynamicCache at %d tokens; transformers %s, torch %s):\n" % (hf.get("context", 0),
                                                                          hf.get("transformers", "?"),
                                                                          hf.get("torch", "?")))
    L.append("| batch | HF eager tokens/s | HF torch.compile tokens/s | mlkv MHA-144 tokens/s | vs eager | vs compile |")
    L.append("|---:|---:|---:|---:|---:|---:|")
    for e in hf.get("eager", []):
        x = e["batch"]
        m = mlkv_at("MHA-144", x)
        hc = hf_comp.get(x)
        if "tokens_per_s" not in e:
            L.append("| %d | %s | | | | |" % (x, e.get("skipped", "-")))
            continue
        L.append("| %d | %.0f | %s | %s | %s | %s |" % (
            x, e["tokens_per_s"], "%.0f" % hc["tokens_per_s"] if hc else "-",
            "%.0f" % m["tokens_per_s"] if m else "-", "%.1fx" % (m["tokens_per_s"] / e["tokens_per_s"]) if m else "-",
            "%.1fx" % (m["tokens_per_s"] / hc["tokens_per_s"]) if (m and hc) else "-"))
    fails = [c for c in hf.get("compiled", []) if "failed" in c]
    if fails:
        L.append("\ntorch.compile: %s" % "; ".join(("batch %s: " % c["batch"] if "batch" in c else "") + c["failed"]
                                                 for c in fails))
    L.append("\nTargets:\n")
    for k, v in t.items():
        L.append("- `%s`: %s" % (k, json.dumps(v)))
    if fid:
        L.append("\nFidelity (`bench/cuda_model/fidelity.py`; prefill of %d tokens + %d greedy decode steps, error = "
                 "max |diff| / max |reference logit|):\n" % (fid["prompt_tokens"], fid["decode_steps"]))
        L.append("| config | reference | GPU f32 (f16 cache) | tokens | GPU bf16 | CPU f32 | tokens | CPU vs GPU f32 |")
        L.append("|---|---|---:|---|---:|---:|---|---:|")
        for r in fid["configs"]:
            L.append("| %s | %s | %.2e | %s | %.2e | %.2e | %s | %.2e |" % (
                r["config"], r["reference"], r["f32"]["err"], "same" if r["f32"]["tokens_identical"] else
                "%d differ" % r["f32"]["token_mismatches"], r["bf16"]["err"], r["cpu"]["err"],
                "same" if r["cpu"]["tokens_identical"] else "%d differ" % r["cpu"]["token_mismatches"],
                r["cpu_vs_gpu_f32"]))
        L.append("\nTargets: f32 <= 1e-3 with identical greedy tokens, bf16 <= 3e-2. All pass: %s." % fid["all_pass"])
    with open(os.path.join(a.out, "cuda_model.md"), "w") as f:
        f.write("\n".join(L) + "\n")

    # Plot.
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(8, 5.5))
        for c in ORDER:
            if c not in by:
                continue
            rs = sorted(by[c], key=lambda r: r["batch"])
            ax.plot([r["batch"] for r in rs], [r["tokens_per_s"] for r in rs], marker="o", label=c)
            big = [r for r in rs if r["largest"]]
            if big:
                ax.scatter([big[0]["batch"]], [big[0]["tokens_per_s"]], marker="*", s=160, zorder=5)
        if hf_eager:
            xs = sorted(hf_eager)
            ax.plot(xs, [hf_eager[x]["tokens_per_s"] for x in xs], "k--", marker="x", label="HF eager (MHA)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch (sequences decoding together)")
        ax.set_ylabel("tokens / s")
        ax.set_title("Pythia-160M decode at %d tokens, %s (star: largest batch in %.0f%% of memory)" % (
            b["context"], b["gpu"], 100 * b["memory_budget_bytes"] / b["memory_bytes"]), fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, ncol=2)
        fig.tight_layout()
        fig.savefig(os.path.join(a.out, "cuda_model.png"), dpi=110)
    except Exception as e:  # the table and JSON still stand
        print("plot failed: %s" % e)
    print("\n".join(L[:0]))
    print(open(os.path.join(a.out, "cuda_model.md")).read())


if __name__ == "__main__":
    main()
