#!/usr/bin/env python3
"""mlkv CUDA decode and prefill against PyTorch's scaled_dot_product_attention (enable_gqa=True),
on identical bf16 tensors, in one process, timed the same way; with the device's read bandwidth
measured by a read-only kernel of our own in the same run.

Timing: each measurement captures a CUDA graph of many calls and times its replays with CUDA
events (median of several replays), so launch gaps and host overhead stay out of both sides.
Where the KV of one call is smaller than a few L2 sizes, the calls rotate over enough copies of
the inputs that every call reads from device memory, not from the L2.

Usage: python3 bench/cuda/bench.py --lib build-gpu/bench/cuda/libmlkv_cuda_bench.so \
           --out cuda_attention.json --table cuda_table.md [--quick]
"""
import argparse
import ctypes
import json
import math
import os
import statistics
import sys
import time

# The benchmark library is loaded before torch: a C++ exception thrown (and caught) inside it
# crashed the process once torch's libraries were loaded first (NOTES.md v8).
if "--lib" in sys.argv[:-1]:
    ctypes.CDLL(sys.argv[sys.argv.index("--lib") + 1], mode=ctypes.RTLD_GLOBAL)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

GEOMS = [("12:12 d64", 12, 12, 64), ("12:4 d64", 12, 4, 64), ("12:1 d64", 12, 1, 64),
         ("32:8 d128", 32, 8, 128), ("32:1 d128", 32, 1, 128)]
BATCHES = [1, 16, 64, 256]
CONTEXTS = [1024, 4096, 16384, 32768]
PREFILL_S = 4096
PREFILL_BATCHES = [1, 4]
PREFILL_VARIANTS = [2, 3, 4]  # wgmma prefill variants timed beside the default (0): prefill_sm90.cuh (4: no TMA)


def load_lib(path):
    lib = ctypes.CDLL(path)
    vp, i32, sz, f32 = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t, ctypes.c_float
    lib.mlkv_bench_error.restype = ctypes.c_char_p
    lib.mlkv_bench_read.argtypes = [vp, sz, vp, i32, i32, i32, vp]
    lib.mlkv_bench_decode_workspace.argtypes = [i32] * 7
    lib.mlkv_bench_decode_workspace.restype = ctypes.c_longlong
    lib.mlkv_bench_decode_splits.argtypes = [i32] * 7
    lib.mlkv_bench_decode.argtypes = [i32, vp, vp, i32, i32, i32, i32, i32, vp, vp, vp, i32, f32, vp, sz, vp]
    lib.mlkv_bench_tune.argtypes = [i32, i32, i32, i32]
    lib.mlkv_bench_tune.restype = None
    lib.mlkv_bench_prefill.argtypes = [vp, vp, i32, i32, i32, i32, i32, vp, vp, vp, vp, i32, i32, i32, f32, vp]
    lib.mlkv_bench_decode_paged_workspace.argtypes = [i32] * 8
    lib.mlkv_bench_decode_paged_workspace.restype = ctypes.c_longlong
    lib.mlkv_bench_decode_paged.argtypes = [vp, vp, vp] + [i32] * 8 + [vp, vp, vp, i32, f32, vp, sz, vp]
    lib.mlkv_bench_tune_decode_early.argtypes = [i32]
    lib.mlkv_bench_tune_decode_early.restype = None
    # MLKV_DECODE_EARLY=0: decode's split kernel starts plainly (NOTES.md v8), for A/B runs.
    lib.mlkv_bench_tune_decode_early(int(os.environ.get("MLKV_DECODE_EARLY", "1")))
    # MLKV_PREFILL_BAND=N: the prefill's bands of heads hold at most L2 / N of K/V (NOTES.md v9).
    lib.mlkv_bench_tune_prefill_band.argtypes = [i32]
    lib.mlkv_bench_tune_prefill_band.restype = None
    lib.mlkv_bench_tune_prefill_band(int(os.environ.get("MLKV_PREFILL_BAND", "2")))
    return lib


def check(lib, rc):
    if rc != 0:
        raise RuntimeError(lib.mlkv_bench_error().decode())


def stream_ptr():
    return ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)


def time_calls(fn, n_calls, trials=7):
    """Microseconds per call: a graph of n_calls calls (fn(i) launches call i), replayed."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for i in range(min(n_calls, 3)):
            fn(i)
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    mode = "graph"
    try:
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for i in range(n_calls):
                fn(i)
        run = g.replay
    except Exception as ex:  # noqa: BLE001 - fall back to plain launches, and say so
        mode = "stream (graph capture failed: %s)" % str(ex).splitlines()[0][:120]
        torch.cuda.synchronize()

        def run():
            for i in range(n_calls):
                fn(i)
    run()
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    ts = []
    for _ in range(trials):
        s.record()
        run()
        e.record()
        e.synchronize()
        ts.append(s.elapsed_time(e) * 1e3 / n_calls)
    return statistics.median(ts), min(ts), mode


def matmul_tflops():
    """The tensor cores' dense bf16 rate as cuBLAS reaches it (torch.mm, 8192^3, best of a few
    graph replays): the compute limit that the prefill rows are set against."""
    n = 8192
    a = torch.randn(n, n, dtype=torch.bfloat16, device="cuda")
    b = torch.randn(n, n, dtype=torch.bfloat16, device="cuda")
    c = torch.empty(n, n, dtype=torch.bfloat16, device="cuda")
    _, us_min, _ = time_calls(lambda i: torch.mm(a, b, out=c), 10)
    del a, b, c
    torch.cuda.empty_cache()
    return 2.0 * n ** 3 / us_min / 1e6


def read_bandwidth(lib, sms):
    """Best of a few shapes of the read-only kernel over a 4 GiB buffer (80x the L2)."""
    nbytes = 4 << 30
    buf = torch.empty(nbytes // 2, dtype=torch.bfloat16, device="cuda").normal_()
    sink = torch.zeros(1, dtype=torch.int32, device="cuda")
    results = []
    for unroll in (4, 8, 16):
        for per_sm in (2, 4, 8):
            for threads in (256, 512, 1024):
                if per_sm * threads > 2048:
                    continue

                def fn(i, u=unroll, b=per_sm * sms, t=threads):
                    check(lib, lib.mlkv_bench_read(buf.data_ptr(), nbytes, sink.data_ptr(), b, t, u, stream_ptr()))
                med, best, _ = time_calls(fn, 5, trials=5)
                results.append({"unroll": unroll, "blocks_per_sm": per_sm, "threads": threads,
                                "tbps": nbytes / med / 1e6})
    best = max(results, key=lambda r: r["tbps"])
    # For reference: PyTorch's own reductions and copies on the same buffer.
    torch_sum = nbytes / time_calls(lambda i: buf.sum(), 5, trials=5)[0] / 1e6
    dst = torch.empty_like(buf)
    copy = 2 * nbytes / time_calls(lambda i: dst.copy_(buf), 5, trials=5)[0] / 1e6
    del buf, dst
    torch.cuda.empty_cache()
    return best, results, torch_sum, copy


def calls_for(kv_bytes, read_tbps):
    """Decode calls per timed graph: about 2 ms of work at the read bandwidth, 3 to 2000 calls."""
    est_us = kv_bytes / (read_tbps * 1e6)
    return max(3, min(2000, math.ceil(2000.0 / max(est_us, 1.0))))


def rel_err(a, b):
    a, b = a.float(), b.float()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-6)).item()


def bench_decode(lib, name, hq, hkv, d, batch, ctx, l2, read_tbps, free_bytes, variants=None, with_torch=True,
                 cap_mult=1):
    """cap_mult > 1: the cache holds cap_mult * ctx tokens and the plan is made for that max_context,
    while every sequence attends over ctx (an engine that plans for long contexts and runs short ones)."""
    kv_bytes = 2 * batch * hkv * ctx * d * 2
    cap = ctx * cap_mult
    row = {"geometry": name, "q_heads": hq, "kv_heads": hkv, "head_dim": d, "batch": batch, "context": ctx,
           "kv_bytes": kv_bytes}
    if cap_mult != 1:
        row["max_context"] = cap
    sets = 1 if kv_bytes >= 4 * l2 else min(64, math.ceil(4 * l2 / kv_bytes))
    if sets * kv_bytes * cap_mult * 1.05 > free_bytes:
        row["skipped"] = "KV of %.1f GB does not fit the free device memory (%.1f GB)" % (
            sets * kv_bytes / 1e9, free_bytes / 1e9)
        return row
    ks = [torch.randn(batch, hkv, cap, d, dtype=torch.bfloat16, device="cuda") for _ in range(sets)]
    vs = [torch.randn(batch, hkv, cap, d, dtype=torch.bfloat16, device="cuda") for _ in range(sets)]
    q = torch.randn(batch, hq, d, dtype=torch.bfloat16, device="cuda")
    out = torch.empty_like(q)
    context = torch.full((batch,), ctx, dtype=torch.int32, device="cuda")
    scale = 1.0 / math.sqrt(d)
    state = {}

    def setup(variant):
        ws_bytes = lib.mlkv_bench_decode_workspace(variant, batch, hkv, cap, d, hq, cap)
        if ws_bytes < 0:
            raise RuntimeError(lib.mlkv_bench_error().decode())
        state["ws_bytes"] = ws_bytes
        state["ws"] = torch.zeros(max(ws_bytes, 16), dtype=torch.uint8, device="cuda")
        state["variant"] = variant
        return lib.mlkv_bench_decode_splits(variant, batch, hkv, cap, d, hq, cap)

    def ours(i):
        check(lib, lib.mlkv_bench_decode(state["variant"], ks[i % sets].data_ptr(), vs[i % sets].data_ptr(), batch,
                                         hkv, cap, d, hq, q.data_ptr(), out.data_ptr(), context.data_ptr(), cap,
                                         scale, state["ws"].data_ptr(), state["ws_bytes"], stream_ptr()))
    q4 = q.view(batch, hq, 1, d)
    n_calls = max(sets, calls_for(kv_bytes, read_tbps))
    n_calls = math.ceil(n_calls / sets) * sets
    if variants is not None:  # sweep: kernel shapes x forced splits x PDL
        # A warm-up pass first: the first graphs timed after the inputs are created run slower
        # (seen: +18% on the first two of a row's forced splits, v5 in NOTES.md).
        setup(0)
        time_calls(ours, n_calls)
        row["sweep"] = []
        for variant, force, pdl in variants:
            lib.mlkv_bench_tune(force, pdl, 0, 0)
            try:
                splits = setup(variant)
                us = time_calls(ours, n_calls)[0]
                row["sweep"].append({"variant": variant, "force_splits": force, "pdl": pdl, "splits": splits,
                                     "us": us, "pct_of_read_bw": 100.0 * kv_bytes / us / 1e6 / read_tbps})
            except RuntimeError as ex:
                row["sweep"].append({"variant": variant, "force_splits": force, "pdl": pdl, "error": str(ex)[:200]})
        lib.mlkv_bench_tune(0, 1, 0, 0)
    row["splits"] = setup(0)

    def theirs(i):
        return F.scaled_dot_product_attention(q4, ks[i % sets][:, :, :ctx], vs[i % sets][:, :, :ctx], enable_gqa=True)

    # The same answer first (on the first copy).
    ours(0)
    ref = theirs(0)
    torch.cuda.synchronize()
    row["max_rel_diff_vs_torch"] = rel_err(out.view(batch, hq, 1, d), ref)
    us, us_min, mode = time_calls(ours, n_calls)
    if with_torch:
        tus, tus_min, tmode = time_calls(theirs, n_calls)
    else:
        tus, tmode = float("nan"), "not timed"
    row.update({"us": us, "us_min": us_min, "tbps": kv_bytes / us / 1e6,
                "pct_of_read_bw": 100.0 * kv_bytes / us / 1e6 / read_tbps, "torch_us": tus,
                "torch_tbps": kv_bytes / tus / 1e6, "speedup": tus / us, "timing": mode, "torch_timing": tmode,
                "calls_per_graph": n_calls, "input_copies": sets,
                # PyTorch against the same limit, and the largest speedup any kernel could have over
                # it: one that reads the KV once at the measured read bandwidth.
                "torch_pct_of_read_bw": 100.0 * kv_bytes / tus / 1e6 / read_tbps,
                "speedup_bound": tus / (kv_bytes / read_tbps / 1e6)})
    del ks, vs
    torch.cuda.empty_cache()
    return row


def bench_decode_paged(lib, hq, hkv, d, batch, ctx, page, slots, shuffle, read_tbps):
    """Decode over a paged view (the paged cache's page layout: [slot][K|V][kv_head][page][d], the
    call reading slot 0 of `slots`), pages in sequence order or shuffled over the pool. One copy
    of the inputs: rows meant for this are far larger than the L2."""
    nb = (ctx + page - 1) // page
    n_pages = batch * nb
    half = hkv * page * d
    pool = torch.randn(n_pages * 2 * slots * half, dtype=torch.bfloat16, device="cuda")
    order = torch.randperm(n_pages, device="cuda") if shuffle else torch.arange(n_pages, device="cuda")
    table = order.to(torch.int32).view(batch, nb).contiguous()
    seq_blocks = torch.full((batch,), nb, dtype=torch.int32, device="cuda")
    q = torch.randn(batch, hq, d, dtype=torch.bfloat16, device="cuda")
    out = torch.empty_like(q)
    context = torch.full((batch,), ctx, dtype=torch.int32, device="cuda")
    ws_bytes = lib.mlkv_bench_decode_paged_workspace(batch, hkv, d, page, nb, slots, hq, ctx)
    if ws_bytes < 0:
        raise RuntimeError(lib.mlkv_bench_error().decode())
    ws = torch.zeros(max(ws_bytes, 16), dtype=torch.uint8, device="cuda")

    def ours(i):
        check(lib, lib.mlkv_bench_decode_paged(pool.data_ptr(), table.data_ptr(), seq_blocks.data_ptr(), batch, hkv, d,
                                               page, nb, slots, 0, hq, q.data_ptr(), out.data_ptr(),
                                               context.data_ptr(), ctx, 1.0 / math.sqrt(d), ws.data_ptr(), ws_bytes,
                                               stream_ptr()))
    kv_bytes = 2 * batch * hkv * ctx * d * 2
    us = time_calls(ours, calls_for(kv_bytes, read_tbps))[0]
    del pool
    torch.cuda.empty_cache()
    return us, 100.0 * kv_bytes / us / 1e6 / read_tbps


def bench_prefill(lib, name, hq, hkv, d, batch, s):
    row = {"geometry": name, "q_heads": hq, "kv_heads": hkv, "head_dim": d, "batch": batch, "tokens": s}
    k = torch.randn(batch, hkv, s, d, dtype=torch.bfloat16, device="cuda")
    v = torch.randn_like(k)
    q = torch.randn(batch * s, hq, d, dtype=torch.bfloat16, device="cuda")  # mlkv: [rows, Hq, D]
    out = torch.empty_like(q)
    context = torch.full((batch,), s, dtype=torch.int32, device="cuda")
    offsets = torch.arange(0, (batch + 1) * s, s, dtype=torch.int32, device="cuda")
    scale = 1.0 / math.sqrt(d)
    q_t = q.view(batch, s, hq, d).transpose(1, 2).contiguous()  # PyTorch: [B, Hq, S, D]

    def ours(i):
        check(lib, lib.mlkv_bench_prefill(k.data_ptr(), v.data_ptr(), batch, hkv, s, d, hq, q.data_ptr(),
                                          out.data_ptr(), context.data_ptr(), offsets.data_ptr(), s, s, batch * s,
                                          scale, stream_ptr()))

    def theirs(i):
        return F.scaled_dot_product_attention(q_t, k, v, is_causal=True, enable_gqa=True)

    ours(0)
    ref = theirs(0)
    torch.cuda.synchronize()
    row["max_rel_diff_vs_torch"] = rel_err(out.view(batch, s, hq, d).transpose(1, 2), ref)
    flops = 4.0 * batch * hq * d * s * (s + 1) / 2  # QK^T and PV over the causal half
    n_calls = 10
    us, us_min, mode = time_calls(ours, n_calls)
    tus, tus_min, tmode = time_calls(theirs, n_calls)
    lib.mlkv_bench_tune(0, 1, 1, 0)  # the mma.sync kernel, for comparison
    try:
        ours(0)
        torch.cuda.synchronize()
        row["mma_max_rel_diff_vs_torch"] = rel_err(out.view(batch, s, hq, d).transpose(1, 2), ref)
        row["us_mma_sync"] = time_calls(ours, n_calls)[0]
        if d in (64, 128):
            row["us_wgmma_variants"] = {}
            for var in PREFILL_VARIANTS:  # the wgmma kernel's other shapes (prefill_sm90.cuh)
                lib.mlkv_bench_tune(0, 1, 0, var)
                ours(0)
                torch.cuda.synchronize()
                err = rel_err(out.view(batch, s, hq, d).transpose(1, 2), ref)
                row["us_wgmma_variants"][str(var)] = {"us": time_calls(ours, n_calls)[0], "max_rel_diff_vs_torch": err}
    finally:
        lib.mlkv_bench_tune(0, 1, 0, 0)
    row.update({"us": us, "us_min": us_min, "tflops": flops / us / 1e6, "torch_us": tus,
                "torch_tflops": flops / tus / 1e6, "speedup": tus / us, "timing": mode, "torch_timing": tmode})
    del k, v, q, out
    torch.cuda.empty_cache()
    return row


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--table", default=None)
    ap.add_argument("--quick", action="store_true", help="a few rows only (development)")
    ap.add_argument("--geoms", default=None, help="comma-separated geometry names to run")
    ap.add_argument("--sweep", action="store_true", help="decode kernel shapes x splits x PDL on a few rows")
    ap.add_argument("--rows", default=None,
                    help="decode rows only, 'hq:hkv:d:batch:ctx' separated by ';' (no prefill, no table)")
    ap.add_argument("--variants", default="", help="with --rows: kernel variants to time too, e.g. '1,2,3'")
    ap.add_argument("--forces", default="", help="with --rows: forced split counts to time too, e.g. '64,128'")
    ap.add_argument("--combos", default="", help="with --rows: 'variant:splits' pairs to time too, e.g. '5:64'")
    ap.add_argument("--split-rule", default="", help="'ctas_per_sm:min_tiles' for the split rule (0: default)")
    ap.add_argument("--no-torch", action="store_true", help="with --rows: do not time PyTorch")
    ap.add_argument("--paged", default="",
                    help="with --rows: also time paged views, 'page:slots:shuffle' separated by ',' (e.g. '128:12:1')")
    ap.add_argument("--capacity-mult", type=int, default=1,
                    help="with --rows: cache and plan for this many times the context (max_context), attend over the context")
    ap.add_argument("--label", default="", help="printed in front of every --rows line")
    ap.add_argument("--prefill-only", default="", help="prefill rows only, at these batches, e.g. '1,4'")
    args = ap.parse_args()
    lib = load_lib(args.lib)
    if args.split_rule:
        per_sm, min_tiles = (int(x) for x in args.split_rule.split(":"))
        lib.mlkv_bench_tune_split.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.mlkv_bench_tune_split.restype = None
        lib.mlkv_bench_tune_split(per_sm, min_tiles)
    torch.manual_seed(0)
    prop = torch.cuda.get_device_properties(0)
    l2 = getattr(prop, "L2_cache_size", 50 << 20)
    sms = prop.multi_processor_count
    t0 = time.time()
    best, read_all, torch_sum, copy = read_bandwidth(lib, sms)
    read_tbps = best["tbps"]
    print("device %s, %d SMs, L2 %d MB, torch %s" % (prop.name, sms, l2 >> 20, torch.__version__), flush=True)
    print("read bandwidth (own kernel, best of %d shapes): %.3f TB/s; torch.sum %.3f, copy (r+w) %.3f" % (
        len(read_all), read_tbps, torch_sum, copy), flush=True)
    mm_tflops = matmul_tflops()
    print("dense bf16 matmul (torch.mm 8192^3): %.1f TFLOP/s" % mm_tflops, flush=True)
    result = {"gpu": prop.name, "sms": sms, "l2_bytes": l2, "torch": torch.__version__,
              "cuda": torch.version.cuda, "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
              "read_bw_tbps": read_tbps, "read_bw_kernel": best, "read_bw_all": read_all,
              "torch_sum_tbps": torch_sum, "copy_tbps_read_plus_write": copy, "mm_bf16_tflops": mm_tflops,
              "timing": "CUDA graph of many calls, replayed; median of 7 replays; inputs rotated over copies "
                        "until one graph pass reads at least 4x the L2", "decode": [], "prefill": []}
    if args.rows:
        run_rows(lib, args, result, l2, read_tbps)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
        return 0
    if args.sweep:
        sweep(lib, result, l2, read_tbps)
        if not args.quick:
            with open(args.out, "w") as f:
                json.dump(result, f, indent=1)
            return 0
    if args.prefill_only:
        PREFILL_BATCHES[:] = [int(x) for x in args.prefill_only.split(",")]
        args.quick = False
    geoms = GEOMS if not args.geoms else [g for g in GEOMS if g[0].split()[0] in args.geoms.split(",")]
    batches, contexts = (BATCHES, CONTEXTS) if not args.quick else ([1, 16, 64], [4096, 32768])
    for name, hq, hkv, d in (geoms if not args.prefill_only else []):
        for ctx in contexts:
            for b in batches:
                free, _ = torch.cuda.mem_get_info()
                try:
                    row = bench_decode(lib, name, hq, hkv, d, b, ctx, l2, read_tbps, free - (2 << 30))
                except Exception as ex:  # noqa: BLE001 - record and go on
                    row = {"geometry": name, "batch": b, "context": ctx, "error": str(ex)[:300]}
                    torch.cuda.empty_cache()
                result["decode"].append(row)
                if "us" in row:
                    print("decode %-9s B%-3d ctx%-5d %9.1f us %5.2f TB/s %5.1f%% | torch %9.1f us  x%5.2f  err %.1e"
                          " splits %d" % (name, b, ctx, row["us"], row["tbps"], row["pct_of_read_bw"],
                                          row["torch_us"], row["speedup"], row["max_rel_diff_vs_torch"],
                                          row["splits"]), flush=True)
                else:
                    print("decode %-9s B%-3d ctx%-5d %s" % (name, b, ctx, row.get("skipped", row.get("error"))),
                          flush=True)
    for name, hq, hkv, d in geoms:
        for b in (PREFILL_BATCHES if not args.quick else [1]):
            try:
                row = bench_prefill(lib, name, hq, hkv, d, b, PREFILL_S)
                row["pct_of_mm"] = 100.0 * row["tflops"] / mm_tflops
                row["torch_pct_of_mm"] = 100.0 * row["torch_tflops"] / mm_tflops
            except Exception as ex:  # noqa: BLE001
                row = {"geometry": name, "batch": b, "error": str(ex)[:300]}
            result["prefill"].append(row)
            if "us" in row:
                print("prefill %-9s B%d S%d %9.1f us %6.1f TFLOP/s (%2.0f%% of mm) | torch %9.1f us %6.1f TFLOP/s"
                      " x%5.2f err %.1e | mma.sync %.1f us | %s" % (
                          name, b, PREFILL_S, row["us"], row["tflops"], row["pct_of_mm"], row["torch_us"],
                          row["torch_tflops"],
                          row["speedup"], row["max_rel_diff_vs_torch"], row["us_mma_sync"],
                          " ".join("v%s %.1f us (err %.1e)" % (k, x["us"], x["max_rel_diff_vs_torch"])
                                   for k, x in row.get("us_wgmma_variants", {}).items())), flush=True)
            else:
                print("prefill %-9s B%d %s" % (name, b, row.get("error")), flush=True)
    result["wall_s"] = time.time() - t0
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    if args.table:
        write_table(result, args.table)


SWEEP_ROWS = [("12:12 d64", 12, 12, 64, 64, 4096), ("12:12 d64", 12, 12, 64, 16, 4096),
              ("12:1 d64", 12, 1, 64, 64, 32768), ("12:1 d64", 12, 1, 64, 16, 4096), ("12:1 d64", 12, 1, 64, 1, 32768),
              ("12:4 d64", 12, 4, 64, 16, 32768), ("32:8 d128", 32, 8, 128, 64, 4096),
              ("32:1 d128", 32, 1, 128, 64, 32768), ("32:1 d128", 32, 1, 128, 16, 4096),
              ("32:1 d128", 32, 1, 128, 1, 32768)]


def sweep(lib, result, l2, read_tbps):
    result["sweep"] = []
    for name, hq, hkv, d, b, ctx in SWEEP_ROWS:
        variants = [(0, 0, 1), (0, 0, 0)]
        for pdl in (0, 1):
            for f in (1, 2, 4, 8, 16, 32, 64):
                variants.append((0, f, pdl))
        free, _ = torch.cuda.mem_get_info()
        row = bench_decode(lib, name, hq, hkv, d, b, ctx, l2, read_tbps, free - (2 << 30), variants)
        result["sweep"].append(row)
        print("sweep %-9s B%-3d ctx%-5d torch %8.1f us (%4.1f%%) | auto: %8.1f us %4.1f%% (no PDL %8.1f us)" % (
            name, b, ctx, row["torch_us"], 100.0 * row["kv_bytes"] / row["torch_us"] / 1e6 / read_tbps,
            row["sweep"][0]["us"], row["sweep"][0]["pct_of_read_bw"], row["sweep"][1]["us"]), flush=True)
        for pdl in (0, 1):
            cells = []
            for x in row["sweep"][2:]:
                if x["pdl"] == pdl:
                    cells.append("%d:%.1f" % (x.get("splits", -1), x["us"]) if "us" in x else "err")
            print("   pdl%d %s" % (pdl, "  ".join(cells)), flush=True)


def run_rows(lib, args, result, l2, read_tbps):
    """Chosen decode rows: the default kernel (and PyTorch), then the asked variants and forced splits."""
    variants = [(int(v), 0, 1) for v in args.variants.split(",") if v != ""]
    variants += [(0, int(f), 1) for f in args.forces.split(",") if f != ""]
    variants += [(int(c.split(":")[0]), int(c.split(":")[1]), 1) for c in args.combos.split(",") if c != ""]
    for spec in args.rows.split(";"):
        hq, hkv, d, b, ctx = (int(x) for x in spec.split(":"))
        name = "%d:%d d%d" % (hq, hkv, d)
        free, _ = torch.cuda.mem_get_info()
        try:
            row = bench_decode(lib, name, hq, hkv, d, b, ctx, l2, read_tbps, free - (2 << 30),
                               variants or None, with_torch=not args.no_torch, cap_mult=args.capacity_mult)
        except Exception as ex:  # noqa: BLE001 - record and go on
            row = {"geometry": name, "batch": b, "context": ctx, "error": str(ex)[:300]}
            torch.cuda.empty_cache()
        result["decode"].append(row)
        if "us" not in row:
            print("%s %-9s B%-3d ctx%-5d %s" % (args.label, name, b, ctx, row.get("skipped", row.get("error"))),
                  flush=True)
            continue
        cells = []
        for x in row.get("sweep", []):
            tag = ("v%d" % x["variant"]) if x["force_splits"] == 0 else (
                ("s%d" % x["force_splits"]) if x["variant"] == 0 else ("v%ds%d" % (x["variant"], x["force_splits"])))
            cells.append("%s:%s" % (tag, ("%.1f/%d" % (x["us"], x["splits"])) if "us" in x else "err"))
        for spec_p in (x for x in args.paged.split(",") if x):
            page, slots, shuffle = (int(x) for x in spec_p.split(":"))
            us_p, pct_p = bench_decode_paged(lib, hq, hkv, d, b, ctx, page, slots, shuffle != 0, read_tbps)
            row.setdefault("paged", []).append({"page": page, "slots": slots, "shuffled": shuffle != 0, "us": us_p,
                                                "pct_of_read_bw": pct_p})
            cells.append("paged P%d x%d%s:%.1f/%.1f%%" % (page, slots, " shuffled" if shuffle else "", us_p, pct_p))
        print("%s %-9s B%-3d ctx%-5d %8.1f us %5.1f%% s%-3d torch %8.1f us (%4.1f%%) err %.1e | %s" % (
            args.label, name, b, ctx, row["us"], row["pct_of_read_bw"], row["splits"], row["torch_us"],
            100.0 * row["kv_bytes"] / row["torch_us"] / 1e6 / read_tbps, row["max_rel_diff_vs_torch"],
            "  ".join(cells)), flush=True)


def write_table(r, path):
    lines = ["Device: %s (%d SMs), PyTorch %s (CUDA %s), %s." % (r["gpu"], r["sms"], r["torch"], r["cuda"], r["date"]),
             "Read bandwidth measured in the same run by a read-only kernel: **%.2f TB/s** "
             "(torch.sum %.2f TB/s, copy %.2f TB/s read+write)." % (r["read_bw_tbps"], r["torch_sum_tbps"],
                                                                    r["copy_tbps_read_plus_write"]), "",
             "Decode (bf16, one query row per sequence, KV read once):", "",
             "| geometry | batch | context | KV MB | mlkv us | TB/s | % read BW | PyTorch us | PyTorch % read BW "
             "| speedup | speedup at the read BW |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for x in r["decode"]:
        if "us" in x:
            lines.append("| %s | %d | %d | %.0f | %.1f | %.2f | %.0f%% | %.1f | %.0f%% | %.2fx | %.2fx |" % (
                x["geometry"], x["batch"], x["context"], x["kv_bytes"] / 1e6, x["us"], x["tbps"],
                x["pct_of_read_bw"], x["torch_us"], x["torch_pct_of_read_bw"], x["speedup"], x["speedup_bound"]))
        else:
            lines.append("| %s | %d | %d | | %s | | | | | | |" % (x["geometry"], x["batch"], x["context"],
                                                                x.get("skipped", x.get("error", ""))[:60]))
    lines += ["", "Speedup at the read BW: PyTorch's time over the KV bytes' time at the measured read "
              "bandwidth, the most any kernel that reads the KV once could gain over PyTorch on that row."]
    lines += ["", "Causal prefill (bf16, S = %d new tokens, no cached prefix); %% of mm: of the dense bf16 "
              "matmul rate measured in the same run (%.0f TFLOP/s):" % (PREFILL_S, r["mm_bf16_tflops"]), "",
              "| geometry | batch | mlkv us | TFLOP/s | % of mm | PyTorch us | PyTorch TFLOP/s | speedup |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for x in r["prefill"]:
        if "us" in x:
            lines.append("| %s | %d | %.1f | %.0f | %.0f%% | %.1f | %.0f | %.2fx |" % (
                x["geometry"], x["batch"], x["us"], x["tflops"], x["pct_of_mm"], x["torch_us"], x["torch_tflops"],
                x["speedup"]))
        else:
            lines.append("| %s | %d | %s | | | | | |" % (x["geometry"], x["batch"], x.get("error", "")[:60]))
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
