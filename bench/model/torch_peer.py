#!/usr/bin/env python3
"""The peer of bench/cpu_model: the same decode step in PyTorch eager on the same CPU.

A GPT-NeoX decode step written the way Hugging Face's eager GPTNeoX computes it (bf16 weights and
activations, fused-free Q/K/V linears, rotary on the first rotary_pct of each head, K/V of the
owner layers written into a preallocated cache and shared by the layers of their group, attention
as matmul + softmax over the cached tokens), timed on the rows of the JSON that cpu_model wrote.
It adds `torch_us_per_step` and `speedup` (torch time / mlkv time) to every row it can run and
rewrites the file. Uses Debian's python3-torch (1.13); nothing is downloaded.

    python3 bench/model/torch_peer.py bench/results/cpu_model.json [--threads N] [--f32-batch-max B]

It tries 1 and N threads. The f32 variant is timed only for batches up to B (default 1): on the
Zen 4 VM it was 4-16x slower than bf16 on every row measured, and at batch 16 one f32 step takes
4-15 s.
"""
import json
import math
import sys
import time

import torch

PAPER = {  # name -> (kv_layers, kv_heads)
    "MHA-144": (12, 12), "GQA-48": (12, 4), "MLKV-48": (4, 12), "MQA-12": (12, 1), "MLKV-12": (4, 3),
    "MLKV-6": (6, 1), "MLKV-4": (4, 1), "MLKV-2": (2, 1), "MLKV-1": (1, 1),
}
L, H, HQ, D, V, ROT = 12, 768, 12, 64, 50304, 16


def owners(lkv):
    return [0] + [int((i + 1) * (L / lkv)) for i in range(lkv - 1)]


def intermediate(lkv, hkv):
    # The paper's converter: MLP widened by int(round(params_lost / L / H)) // 2.
    lost = (HQ * L - hkv * lkv) * (H * D * 2 + D * 2)
    return 3072 + int(round((lost // L) / H)) // 2


class Model:
    def __init__(self, lkv, hkv, dt=torch.bfloat16):
        g = torch.Generator().manual_seed(7)
        r = lambda *s: (torch.rand(*s, generator=g) * 2 - 1).mul_(0.02 * math.sqrt(3)).to(dt)
        self.hkv, self.own = hkv, owners(lkv)
        self.src = [max(o for o in self.own if o <= l) for l in range(L)]
        I = intermediate(lkv, hkv)
        self.embed = r(V, H)
        self.layers = []
        for l in range(L):
            kv = l in self.own
            self.layers.append(dict(
                ln1=(torch.ones(H, dtype=dt), torch.zeros(H, dtype=dt)), ln2=(torch.ones(H, dtype=dt), torch.zeros(H, dtype=dt)),
                q=(r(HQ * D, H), r(HQ * D)), k=(r(hkv * D, H), r(hkv * D)) if kv else None,
                v=(r(hkv * D, H), r(hkv * D)) if kv else None, o=(r(H, H), r(H)), i=(r(I, H), r(I)), out=(r(H, I), r(H))))
        self.lnf = (torch.ones(H, dtype=dt), torch.zeros(H, dtype=dt))
        self.head = r(V, H)
        inv = 1.0 / (10000 ** (torch.arange(0, ROT, 2).float() / ROT))
        self.inv_freq = inv

    def to(self, dt):
        """A copy with every tensor in dtype dt."""
        c = Model.__new__(Model)
        cv = lambda t: None if t is None else tuple(x.to(dt) for x in t) if isinstance(t, tuple) else t.to(dt)
        c.hkv, c.own, c.src, c.inv_freq = self.hkv, self.own, self.src, self.inv_freq
        c.embed, c.head, c.lnf = self.embed.to(dt), self.head.to(dt), cv(self.lnf)
        c.layers = [{k: cv(v) for k, v in p.items()} for p in self.layers]
        return c

    def rope(self, x, pos):  # x: [B, h, 1, D]
        f = pos * self.inv_freq
        emb = torch.cat((f, f)).to(x.dtype)
        c, s = emb.cos(), emb.sin()
        xr, xp = x[..., :ROT], x[..., ROT:]
        x1, x2 = xr[..., : ROT // 2], xr[..., ROT // 2:]
        return torch.cat((xr * c + torch.cat((-x2, x1), -1) * s, xp), -1)

    def step(self, tok, caches, pos):
        B = tok.shape[0]
        F = torch.nn.functional
        x = self.embed[tok]  # [B, H]
        for l, p in enumerate(self.layers):
            h = F.layer_norm(x, (H,), *p["ln1"])
            q = F.linear(h, *p["q"]).view(B, HQ, 1, D)
            q = self.rope(q, pos)
            if p["k"] is not None:
                k = self.rope(F.linear(h, *p["k"]).view(B, self.hkv, 1, D), pos)
                v = F.linear(h, *p["v"]).view(B, self.hkv, 1, D)
                kc, vc = caches[l]
                kc[:, :, pos:pos + 1] = k
                vc[:, :, pos:pos + 1] = v
            kc, vc = caches[self.src[l]]
            kk = kc[:, :, : pos + 1].repeat_interleave(HQ // self.hkv, dim=1)
            vv = vc[:, :, : pos + 1].repeat_interleave(HQ // self.hkv, dim=1)
            w = torch.softmax((q @ kk.transpose(-1, -2)).float() / math.sqrt(D), dim=-1).to(q.dtype)
            a = F.linear((w @ vv).reshape(B, H), *p["o"])
            m = F.linear(F.gelu(F.linear(F.layer_norm(x, (H,), *p["ln2"]), *p["i"])), *p["out"])
            x = m + a + x
        return F.linear(F.layer_norm(x, (H,), *self.lnf), self.head)


def main():
    path = sys.argv[1]
    threads = int(sys.argv[sys.argv.index("--threads") + 1]) if "--threads" in sys.argv else 2
    thread_counts = sorted({1, threads})
    f32_batch_max = int(sys.argv[sys.argv.index("--f32-batch-max") + 1]) if "--f32-batch-max" in sys.argv else 1
    doc = json.load(open(path))
    models = {}
    for row in doc["rows"]:
        name, B, ctx = row["config"], row["batch"], row["context"]
        lkv, hkv = PAPER[name]
        if name not in models:
            models = {name: Model(lkv, hkv)}
        m = models[name]
        try:
            caches = {}
            for o in m.own:
                caches[o] = (torch.rand(B, hkv, ctx + 16, D).to(torch.bfloat16), torch.rand(B, hkv, ctx + 16, D).to(torch.bfloat16))
        except RuntimeError as e:
            print(f"{name} batch {B} context {ctx}: skipped ({e})", flush=True)
            continue
        tok = torch.arange(B) * 7919 % V
        variants = [(torch.bfloat16, "torch_bf16_us_per_step")]
        if B <= f32_batch_max:
            variants.append((torch.float32, "torch_f32_us_per_step"))
        for dt, key in variants:
            mm = m if dt == torch.bfloat16 else m.to(dt)
            cc = caches if dt == torch.bfloat16 else {o: (k.float(), v.float()) for o, (k, v) in caches.items()}
            best = math.inf
            for nt in thread_counts:  # the best thread count: OpenMP's 2-thread regions cost ms on a VM
                torch.set_num_threads(nt)
                times = []
                with torch.no_grad():
                    for i in range(7):
                        t0 = time.perf_counter()
                        mm.step(tok, cc, ctx + i)
                        times.append(time.perf_counter() - t0)
                        if times[-1] > 5.0 and len(times) >= 3:
                            break  # very slow rows: three steps are enough for a median
                best = min(best, sorted(times[1:])[len(times[1:]) // 2] * 1e6)
            row[key] = best
            del cc
        us = min(row["torch_bf16_us_per_step"], row.get("torch_f32_us_per_step", math.inf))
        row["torch_us_per_step"] = us
        row["speedup"] = us / row["us_per_step"]
        f32 = "%10.0f us" % row["torch_f32_us_per_step"] if "torch_f32_us_per_step" in row else "  (not run)"
        print(f"{name:8s} {B:6d} {ctx:8d}  torch bf16 {row['torch_bf16_us_per_step']:10.0f} us, f32 "
              f"{f32}  mlkv {row['us_per_step']:10.0f} us  speedup {row['speedup']:.2f}x", flush=True)
        del caches
    doc["peer"] = (f"PyTorch {torch.__version__} eager (Debian python3-torch), best of {thread_counts} threads, bf16, and f32 "
                   f"for batch <= {f32_batch_max}; "
                   "torch_us_per_step is the faster of the two: bench/model/torch_peer.py")
    json.dump(doc, open(path, "w"), indent=1)


if __name__ == "__main__":
    main()
