#!/usr/bin/env python3
"""Hugging Face's GPTNeoXForCausalLM on the same GPU, for bench/cuda_model (issue 7).

Pythia-160M's shape (MHA), random bf16 weights, eager attention; every sequence of the batch has
`context` tokens cached (random K/V put straight into a DynamicCache, as a prefill would leave
it), then decode steps of one token per sequence are timed (CUDA events around each step, the
median reported). That is Hugging Face's own decode path: the cache grows by concatenation each
step. `torch.compile` is tried on the same step where it works (a failure or a time-out is
recorded, not fatal).

    python3 bench/cuda_model/hf_peer.py --out hf.json [--batches 1,16,128,512] [--context 2048]
"""
import argparse
import json
import signal
import statistics
import sys
import time
import traceback

import torch

VOCAB, HIDDEN, LAYERS, HEADS, INTER = 50304, 768, 12, 12, 3072


def build():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM
    kw = dict(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
              intermediate_size=INTER, hidden_act="gelu", rotary_pct=0.25, rotary_emb_base=10000.0,
              max_position_embeddings=4096, layer_norm_eps=1e-5, use_parallel_residual=True,
              tie_word_embeddings=False, bos_token_id=0, eos_token_id=0)
    try:
        cfg = GPTNeoXConfig(**kw, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                    "partial_rotary_factor": 0.25})
    except TypeError:
        cfg = GPTNeoXConfig(**kw)
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    m = GPTNeoXForCausalLM(cfg).to(torch.bfloat16).cuda().eval()
    try:
        m.set_attn_implementation("eager")
    except Exception:
        pass
    return m


def make_cache(batch, context):
    from transformers import DynamicCache
    c = DynamicCache()
    D = HIDDEN // HEADS
    for l in range(LAYERS):
        k = torch.randn(batch, HEADS, context, D, dtype=torch.bfloat16, device="cuda")
        v = torch.randn(batch, HEADS, context, D, dtype=torch.bfloat16, device="cuda")
        c.update(k, v, l)
    return c


class Timeout(Exception):
    pass


def time_steps(fn, batch, context, steps, warm):
    cache = make_cache(batch, context - 1)
    tok = torch.randint(0, VOCAB, (batch, 1), device="cuda")
    times = []
    with torch.no_grad():
        for i in range(warm + steps):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            out = fn(tok, cache)
            tok = out.logits[:, -1:].argmax(-1)
            e.record()
            e.synchronize()
            if i >= warm:
                times.append(s.elapsed_time(e))
            cache = out.past_key_values
    del cache
    torch.cuda.empty_cache()
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--batches", default="1,16,128,512")
    ap.add_argument("--context", type=int, default=2048)
    ap.add_argument("--compile", default="1,128")
    ap.add_argument("--compile-timeout", type=int, default=150)
    a = ap.parse_args()
    import transformers
    m = build()
    res = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "transformers": transformers.__version__,
           "context": a.context, "dtype": "bf16", "attention": "eager", "eager": [], "compiled": []}
    eager = lambda tok, cache: m(input_ids=tok, past_key_values=cache, use_cache=True)
    for b in [int(x) for x in a.batches.split(",")]:
        need = 2 * LAYERS * HEADS * 64 * 2 * (a.context + 16) * b * 2.2  # cache, and its copy while it grows
        free = torch.cuda.mem_get_info()[0]
        if need > free * 0.9:
            res["eager"].append({"batch": b, "skipped": "needs %.1f GB, %.1f GB free" % (need / 1e9, free / 1e9)})
            continue
        steps = 20 if b <= 16 else 8
        ms = time_steps(eager, b, a.context, steps, 3)
        res["eager"].append({"batch": b, "step_ms": ms, "tokens_per_s": b / ms * 1e3})
        print("HF eager   batch %4d: %8.2f ms/step  %10.0f tokens/s" % (b, ms, b / ms * 1e3), flush=True)
    # torch.compile of the same step (dynamic shapes: the cache grows every step).
    def on_alarm(*_):
        raise Timeout()
    signal.signal(signal.SIGALRM, on_alarm)
    try:
        compiled = torch.compile(m, dynamic=True)
        fn = lambda tok, cache: compiled(input_ids=tok, past_key_values=cache, use_cache=True)
        for b in [int(x) for x in a.compile.split(",")]:
            signal.alarm(a.compile_timeout)
            try:
                t0 = time.time()
                ms = time_steps(fn, b, a.context, 10, 4)
                signal.alarm(0)
                res["compiled"].append({"batch": b, "step_ms": ms, "tokens_per_s": b / ms * 1e3,
                                        "warmup_s": time.time() - t0})
                print("HF compile batch %4d: %8.2f ms/step  %10.0f tokens/s" % (b, ms, b / ms * 1e3), flush=True)
            except Timeout:
                res["compiled"].append({"batch": b, "failed": "timed out after %d s" % a.compile_timeout})
                print("HF compile batch %d: timed out" % b, flush=True)
                break
    except Exception as e:
        signal.alarm(0)
        res["compiled"].append({"failed": "%s: %s" % (type(e).__name__, str(e)[:300])})
        print("HF compile failed: %s" % e, flush=True)
        traceback.print_exc(limit=3)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
