#!/usr/bin/env python3
"""Fidelity of mlkv's models to Hugging Face (issue 7), on the GPU machine.

For the MHA configuration of Pythia-160M's shape: random weights (Hugging Face's initialisation,
then every bias and LayerNorm parameter perturbed so none is trivial) are written as a checkpoint
(config.json + model.safetensors, Hugging Face's tensor names); Hugging Face's GPTNeoXForCausalLM
(eager attention, f32) prefills a random prompt and decodes 16 greedy tokens. mlkv then runs the
same tokens teacher-forced (`mlkv-cuda-model run`): the CUDA model with f32 weights (f16 cache),
with bf16 weights and cache, and the CPU model (f32). Checks: f32 logits within 1e-3 of the
logits' scale (max |logit| of the reference) with the same greedy tokens, bf16 within 3e-2, the
CPU and GPU models within 1e-3 of each other.

GQA and MLKV have no Hugging Face model: for them the script writes the paper's converter format
(separate query / key / value, K/V only on owner layers, num_key_value_heads/layers in
config.json) and compares against `Reference`, a float64 PyTorch model of the same semantics
written here (each layer reads the K/V of the nearest owner layer at or below it, the owners
placed by the paper's formula). `Reference` is itself checked against Hugging Face on MHA.

    python3 bench/cuda_model/fidelity.py --exe build/bench/cuda_model/mlkv-cuda-model --out DIR
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time

import torch
from safetensors.torch import save_file

VOCAB, HIDDEN, LAYERS, HEADS, INTER = 50304, 768, 12, 12, 3072
ROT_PCT, BASE, EPS = 0.25, 10000.0, 1e-5


def owners_of(L, Lkv):
    """The paper's owner layers ([0] + int((i+1) * (L / Lkv))) and each layer's owner."""
    owners = [0] + [int((i + 1) * (L / Lkv)) for i in range(Lkv - 1)]
    src = [max(o for o in owners if o <= l) for l in range(L)]
    return owners, src


def mlkv_config(kvh, kvl):
    return {
        "architectures": ["GPTNeoXForCausalLM"], "model_type": "gpt_neox", "vocab_size": VOCAB,
        "hidden_size": HIDDEN, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
        "intermediate_size": INTER, "max_position_embeddings": 2048, "rotary_pct": ROT_PCT,
        "rotary_emb_base": BASE, "use_parallel_residual": True, "hidden_act": "gelu",
        "layer_norm_eps": EPS, "tie_word_embeddings": False, "attention_bias": True,
        "bos_token_id": 0, "eos_token_id": 0, "num_key_value_heads": kvh, "num_key_value_layers": kvl,
        "torch_dtype": "float32",
    }


def write_checkpoint(d, tensors, cfg):
    os.makedirs(d, exist_ok=True)
    save_file({k: v.detach().float().contiguous().cpu() for k, v in tensors.items()},
              os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)


def perturb_(sd, gen):
    """Biases and LayerNorm parameters away from 0 and 1 (Hugging Face initialises them so)."""
    for k, v in sd.items():
        if k.endswith(".bias") or "layernorm" in k or "layer_norm" in k:
            noise = torch.randn(v.shape, generator=gen, dtype=torch.float32).to(v.device)
            with torch.no_grad():
                v.add_(noise * (0.1 if (k.endswith(".weight")) else 0.02))


def hf_model(seed):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM
    torch.manual_seed(seed)
    kw = dict(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
              intermediate_size=INTER, hidden_act="gelu", rotary_pct=ROT_PCT, rotary_emb_base=BASE,
              max_position_embeddings=2048, layer_norm_eps=EPS, use_parallel_residual=True,
              tie_word_embeddings=False, attention_bias=True, bos_token_id=0, eos_token_id=0)
    try:  # transformers 5 names the rotary settings in rope_parameters
        cfg = GPTNeoXConfig(**kw, rope_parameters={"rope_type": "default", "rope_theta": BASE,
                                                    "partial_rotary_factor": ROT_PCT})
    except TypeError:
        cfg = GPTNeoXConfig(**kw)
    cfg._attn_implementation = "eager"
    model = GPTNeoXForCausalLM(cfg).float().cuda().eval()
    try:
        model.set_attn_implementation("eager")
    except Exception:
        pass
    gen = torch.Generator().manual_seed(seed + 1)
    sd = dict(model.named_parameters())
    perturb_(sd, gen)
    try:
        print("HF rotary inv_freq:", tuple(model.gpt_neox.rotary_emb.inv_freq.shape), flush=True)
    except Exception:
        pass
    return model, cfg


def hf_tensors(model):
    """The model's parameters under Hugging Face's GPT-NeoX checkpoint names, read off the modules
    (so a renamed state_dict key in some transformers release does not matter), as f32 copies."""
    base = model.gpt_neox if hasattr(model, "gpt_neox") else model.base_model
    c = lambda p: p.detach().float().clone()
    t = {"gpt_neox.embed_in.weight": c(model.get_input_embeddings().weight),
         "embed_out.weight": c(model.get_output_embeddings().weight),
         "gpt_neox.final_layer_norm.weight": c(base.final_layer_norm.weight),
         "gpt_neox.final_layer_norm.bias": c(base.final_layer_norm.bias)}
    for l, layer in enumerate(base.layers):
        p = "gpt_neox.layers.%d." % l
        for name, mod in (("input_layernorm", layer.input_layernorm),
                          ("post_attention_layernorm", layer.post_attention_layernorm),
                          ("attention.query_key_value", layer.attention.query_key_value),
                          ("attention.dense", layer.attention.dense),
                          ("mlp.dense_h_to_4h", layer.mlp.dense_h_to_4h),
                          ("mlp.dense_4h_to_h", layer.mlp.dense_4h_to_h)):
            t[p + name + ".weight"], t[p + name + ".bias"] = c(mod.weight), c(mod.bias)
    return t


@torch.no_grad()
def hf_greedy(model, prompt, steps):
    """Prefill + greedy steps with Hugging Face's cache: logits [P + steps, V] (f32, CPU), tokens."""
    out = model(input_ids=prompt[None].cuda(), use_cache=True)
    rows = [out.logits[0].float()]
    pkv = out.past_key_values
    toks = [int(rows[-1][-1].argmax())]
    for _ in range(steps):
        out = model(input_ids=torch.tensor([[toks[-1]]], device="cuda"), past_key_values=pkv, use_cache=True)
        pkv = out.past_key_values
        rows.append(out.logits[0].float())
        toks.append(int(rows[-1][-1].argmax()))
    return torch.cat(rows).cpu(), toks


@torch.no_grad()
def hf_forced(model, tokens, prompt_len):
    out = model(input_ids=tokens[None, :prompt_len].cuda(), use_cache=True)
    rows = [out.logits[0].float()]
    pkv = out.past_key_values
    for i in range(prompt_len, len(tokens)):
        out = model(input_ids=tokens[None, i:i + 1].cuda(), past_key_values=pkv, use_cache=True)
        pkv = out.past_key_values
        rows.append(out.logits[0].float())
    return torch.cat(rows).cpu()


class Reference:
    """GPT-NeoX with MLKV sharing in float64, from the tensors of a checkpoint (either format)."""

    def __init__(self, t, kvh, kvl):
        self.kvh, self.kvl = kvh, kvl
        self.D = HIDDEN // HEADS
        self.owners, self.src = owners_of(LAYERS, kvl)
        g = lambda k: t[k].to(torch.float64).cuda()
        self.E, self.Wout = g("gpt_neox.embed_in.weight"), g("embed_out.weight")
        self.lnf = (g("gpt_neox.final_layer_norm.weight"), g("gpt_neox.final_layer_norm.bias"))
        self.layers = []
        for l in range(LAYERS):
            p = lambda s: g("gpt_neox.layers.%d.%s" % (l, s))
            L = {"ln1": (p("input_layernorm.weight"), p("input_layernorm.bias")),
                 "ln2": (p("post_attention_layernorm.weight"), p("post_attention_layernorm.bias")),
                 "dense": (p("attention.dense.weight"), p("attention.dense.bias")),
                 "in": (p("mlp.dense_h_to_4h.weight"), p("mlp.dense_h_to_4h.bias")),
                 "out": (p("mlp.dense_4h_to_h.weight"), p("mlp.dense_4h_to_h.bias"))}
            fused = "gpt_neox.layers.%d.attention.query_key_value.weight" % l
            if fused in t:  # [heads, 3, D] rows
                w = g(fused).view(HEADS, 3, self.D, HIDDEN)
                b = g(fused.replace("weight", "bias")).view(HEADS, 3, self.D)
                for i, name in enumerate(("q", "k", "v")):
                    L[name] = (w[:, i].reshape(HEADS * self.D, HIDDEN), b[:, i].reshape(HEADS * self.D))
            else:
                L["q"] = (p("attention.query.weight"), p("attention.query.bias"))
                if l in self.owners:
                    L["k"] = (p("attention.key.weight"), p("attention.key.bias"))
                    L["v"] = (p("attention.value.weight"), p("attention.value.bias"))
            self.layers.append(L)
        rot = int(self.D * ROT_PCT)
        self.rot = rot
        self.inv_freq = 1.0 / (BASE ** (torch.arange(0, rot, 2, dtype=torch.float64, device="cuda") / rot))

    @staticmethod
    def ln(x, p):
        return torch.nn.functional.layer_norm(x, (x.shape[-1],), p[0], p[1], EPS)

    def rope(self, x, pos):  # x [n, h, D]
        ang = pos[:, None].double() * self.inv_freq[None]
        cos, sin = torch.cat([ang.cos(), ang.cos()], -1)[:, None], torch.cat([ang.sin(), ang.sin()], -1)[:, None]
        r, rest = x[..., :self.rot], x[..., self.rot:]
        half = self.rot // 2
        rh = torch.cat([-r[..., half:], r[..., :half]], -1)
        return torch.cat([r * cos + rh * sin, rest], -1)

    def forward(self, tokens, cache):
        """New tokens (1-D) after what `cache` holds (dict owner -> (K, V) [T, Hkv, D]); logits [n, V]."""
        n = tokens.numel()
        start = 0 if not cache else next(iter(cache.values()))[0].shape[0]
        pos = torch.arange(start, start + n, device="cuda")
        x = self.E[tokens.cuda()]
        D, grp = self.D, HEADS // self.kvh
        for l, L in enumerate(self.layers):
            h = self.ln(x, L["ln1"])
            q = self.rope((h @ L["q"][0].T + L["q"][1]).view(n, HEADS, D), pos)
            if l in self.owners:
                k = self.rope((h @ L["k"][0].T + L["k"][1]).view(n, self.kvh, D), pos)
                v = (h @ L["v"][0].T + L["v"][1]).view(n, self.kvh, D)
                if l in cache:
                    k, v = torch.cat([cache[l][0], k]), torch.cat([cache[l][1], v])
                cache[l] = (k, v)
            K, V = cache[self.src[l]]
            K, V = K.repeat_interleave(grp, dim=1), V.repeat_interleave(grp, dim=1)  # [T, Hq, D]
            s = torch.einsum("nhd,thd->hnt", q, K) / math.sqrt(D)
            T = K.shape[0]
            mask = torch.arange(T, device="cuda")[None, :] > pos[:, None]
            s = s.masked_fill(mask[None], float("-inf"))
            a = torch.einsum("hnt,thd->nhd", s.softmax(-1), V).reshape(n, HEADS * D)
            a = a @ L["dense"][0].T + L["dense"][1]
            m = self.ln(x, L["ln2"]) @ L["in"][0].T + L["in"][1]
            m = torch.nn.functional.gelu(m) @ L["out"][0].T + L["out"][1]
            x = m + a + x
        return self.ln(x, self.lnf) @ self.Wout.T

    @torch.no_grad()
    def greedy(self, prompt, steps):
        cache = {}
        rows = [self.forward(prompt, cache)]
        toks = [int(rows[-1][-1].argmax())]
        for _ in range(steps):
            rows.append(self.forward(torch.tensor([toks[-1]]), cache))
            toks.append(int(rows[-1][-1].argmax()))
        return torch.cat(rows).float().cpu(), toks

    @torch.no_grad()
    def forced(self, tokens, prompt_len):
        cache = {}
        rows = [self.forward(tokens[:prompt_len], cache)]
        for i in range(prompt_len, len(tokens)):
            rows.append(self.forward(tokens[i:i + 1], cache))
        return torch.cat(rows).float().cpu()


def random_converter_tensors(kvh, kvl, seed):
    """Random weights in the paper's converter format for geometry (kvh, kvl)."""
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s, std=0.02: torch.randn(*s, generator=gen) * std
    D = HIDDEN // HEADS
    owners, _ = owners_of(LAYERS, kvl)
    t = {"gpt_neox.embed_in.weight": r(VOCAB, HIDDEN), "embed_out.weight": r(VOCAB, HIDDEN),
         "gpt_neox.final_layer_norm.weight": 1 + r(HIDDEN, std=0.1), "gpt_neox.final_layer_norm.bias": r(HIDDEN)}
    for l in range(LAYERS):
        p = "gpt_neox.layers.%d." % l
        for ln in ("input_layernorm", "post_attention_layernorm"):
            t[p + ln + ".weight"], t[p + ln + ".bias"] = 1 + r(HIDDEN, std=0.1), r(HIDDEN)
        parts = [("query", HEADS * D)] + ([("key", kvh * D), ("value", kvh * D)] if l in owners else [])
        for name, rows in parts:
            t[p + "attention.%s.weight" % name], t[p + "attention.%s.bias" % name] = r(rows, HIDDEN), r(rows)
        t[p + "attention.dense.weight"], t[p + "attention.dense.bias"] = r(HIDDEN, HIDDEN), r(HIDDEN)
        t[p + "mlp.dense_h_to_4h.weight"], t[p + "mlp.dense_h_to_4h.bias"] = r(INTER, HIDDEN), r(INTER)
        t[p + "mlp.dense_4h_to_h.weight"], t[p + "mlp.dense_4h_to_h.bias"] = r(HIDDEN, INTER), r(HIDDEN)
    return t


def run_mlkv(exe, d, tokens, prompt_len, dtype, work):
    tf = os.path.join(work, "tokens.bin")
    tokens.to(torch.int32).numpy().tofile(tf)
    prefix = os.path.join(work, "out_" + dtype)
    t0 = time.time()
    subprocess.run([exe, "run", "--model", d, "--tokens", tf, "--prompt", str(prompt_len), "--dtype", dtype,
                    "--out", prefix], check=True)
    logits = torch.from_file(prefix + ".logits", size=len(tokens) * VOCAB, dtype=torch.float32).view(len(tokens), VOCAB)
    argmax = torch.from_file(prefix + ".argmax", size=len(tokens), dtype=torch.int32)
    return logits, [int(x) for x in argmax], time.time() - t0


def err(a, ref):
    """max |a - ref| / max |ref| (NaN counts as infinite)."""
    d = (a.double() - ref.double()).abs()
    if torch.isnan(d).any():
        return float("inf")
    return float(d.max() / ref.double().abs().max())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--exe", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--configs", default="MHA-144,GQA-48,MLKV-12,MLKV-2")
    a = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    os.makedirs(a.out, exist_ok=True)
    work = os.path.join(a.out, "work")
    os.makedirs(work, exist_ok=True)
    geoms = {"MHA-144": (12, 12), "GQA-48": (4, 12), "MQA-12": (1, 12), "MLKV-48": (12, 4), "MLKV-12": (3, 4),
             "MLKV-6": (1, 6), "MLKV-4": (1, 4), "MLKV-2": (1, 2), "MLKV-1": (1, 1)}
    gen = torch.Generator().manual_seed(a.seed)
    prompt = torch.randint(0, VOCAB, (a.prompt,), generator=gen)
    P, S = a.prompt, a.steps
    results = {"prompt_tokens": P, "decode_steps": S, "gpu": torch.cuda.get_device_name(),
               "torch": torch.__version__, "configs": []}
    try:
        import transformers
        results["transformers"] = transformers.__version__
    except Exception:
        pass
    ok_all = True
    for name in a.configs.split(","):
        kvh, kvl = geoms[name]
        d = os.path.join(work, name)
        row = {"config": name, "kv_heads": kvh, "kv_layers": kvl}
        if name == "MHA-144":
            model, _ = hf_model(a.seed)
            tensors = hf_tensors(model)
            write_checkpoint(d, tensors, mlkv_config(12, 12))
            ref_logits, ref_toks = hf_greedy(model, prompt, S)
            row["reference"] = "Hugging Face GPTNeoXForCausalLM, eager, f32"
            model_bf16 = model.to(torch.bfloat16)
            forced = torch.cat([prompt, torch.tensor(ref_toks[:S])])
            hf_bf16 = hf_forced(model_bf16, forced, P)
            row["hf_bf16_vs_hf_f32"] = err(hf_bf16, ref_logits)
            del model, model_bf16
            ref64 = Reference(tensors, 12, 12).forced(forced, P)
            row["python_reference_vs_hf_f32"] = err(ref64, ref_logits)
        else:
            tensors = random_converter_tensors(kvh, kvl, a.seed + kvh * 100 + kvl)
            write_checkpoint(d, tensors, mlkv_config(kvh, kvl))
            ref = Reference(tensors, kvh, kvl)
            ref_logits, ref_toks = ref.greedy(prompt, S)
            forced = torch.cat([prompt, torch.tensor(ref_toks[:S])])
            row["reference"] = "Reference (this script), float64"
            del ref
        torch.cuda.empty_cache()
        # The greedy choices compared: the last prompt row and every decode row.
        want = ref_toks
        scale = float(ref_logits.abs().max())
        row["logit_scale"] = scale
        outs = {}
        for dtype in ("f32", "bf16", "cpu"):
            lg, am, secs = run_mlkv(a.exe, d, forced, P, dtype, work)
            got = am[P - 1:]
            outs[dtype] = lg
            row[dtype] = {"err": err(lg, ref_logits), "err_prefill": err(lg[:P], ref_logits[:P]),
                          "err_decode": err(lg[P:], ref_logits[P:]),
                          "tokens_identical": got == want, "token_mismatches": sum(x != y for x, y in zip(got, want)),
                          "seconds": round(secs, 2)}
        row["cpu_vs_gpu_f32"] = err(outs["f32"], outs["cpu"])
        row["pass"] = {
            "f32": row["f32"]["err"] <= 1e-3 and row["f32"]["tokens_identical"],
            "bf16": row["bf16"]["err"] <= 3e-2,
            "cpu_f32": row["cpu"]["err"] <= 1e-3 and row["cpu"]["tokens_identical"],
            "cpu_vs_gpu": row["cpu_vs_gpu_f32"] <= 1e-3,
        }
        if "python_reference_vs_hf_f32" in row:
            row["pass"]["python_reference"] = row["python_reference_vs_hf_f32"] <= 1e-4
        ok_all &= all(row["pass"].values())
        results["configs"].append(row)
        print("%-8s scale %.3f | GPU f32 err %.2e tokens %s | GPU bf16 err %.2e | CPU f32 err %.2e tokens %s | "
              "CPU vs GPU %.2e%s | pass %s" % (
                  name, scale, row["f32"]["err"], "same" if row["f32"]["tokens_identical"] else
                  "%d differ" % row["f32"]["token_mismatches"], row["bf16"]["err"], row["cpu"]["err"],
                  "same" if row["cpu"]["tokens_identical"] else "%d differ" % row["cpu"]["token_mismatches"],
                  row["cpu_vs_gpu_f32"],
                  (" | HF bf16 %.2e, ref vs HF %.2e" % (row["hf_bf16_vs_hf_f32"], row["python_reference_vs_hf_f32"]))
                  if "hf_bf16_vs_hf_f32" in row else "", all(row["pass"].values())), flush=True)
    results["all_pass"] = ok_all
    with open(os.path.join(a.out, "cuda_model_fidelity.json"), "w") as f:
        json.dump(results, f, indent=2)
    print("fidelity: %s" % ("all checks pass" if ok_all else "SOME CHECKS FAIL"))
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
