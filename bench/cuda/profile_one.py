"""Runs one decode or prefill shape a few times, mlkv then PyTorch, for ncu to profile.
python3 bench/cuda/profile_one.py LIB decode|prefill HQ HKV D BATCH CTX"""
import math
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import bench  # noqa: E402

lib = bench.load_lib(sys.argv[1])
kind = sys.argv[2]
hq, hkv, d, b, ctx = (int(x) for x in sys.argv[3:8])
k = torch.randn(b, hkv, ctx, d, dtype=torch.bfloat16, device="cuda")
v = torch.randn_like(k)
scale = 1.0 / math.sqrt(d)
sp = bench.stream_ptr
if kind == "decode":
    q = torch.randn(b, hq, d, dtype=torch.bfloat16, device="cuda")
    out = torch.empty_like(q)
    c = torch.full((b,), ctx, dtype=torch.int32, device="cuda")
    variant = int(sys.argv[8]) if len(sys.argv) > 8 else 0
    ws_bytes = lib.mlkv_bench_decode_workspace(variant, b, hkv, ctx, d, hq, ctx)
    ws = torch.empty(max(ws_bytes, 16), dtype=torch.uint8, device="cuda")
    for _ in range(2):
        bench.check(lib, lib.mlkv_bench_decode(variant, k.data_ptr(), v.data_ptr(), b, hkv, ctx, d, hq, q.data_ptr(),
                                               out.data_ptr(), c.data_ptr(), ctx, scale, ws.data_ptr(), ws_bytes, sp()))
        F.scaled_dot_product_attention(q.view(b, hq, 1, d), k, v, enable_gqa=True)
else:
    q = torch.randn(b * ctx, hq, d, dtype=torch.bfloat16, device="cuda")
    out = torch.empty_like(q)
    c = torch.full((b,), ctx, dtype=torch.int32, device="cuda")
    off = torch.arange(0, (b + 1) * ctx, ctx, dtype=torch.int32, device="cuda")
    qt = q.view(b, ctx, hq, d).transpose(1, 2).contiguous()
    for _ in range(2):
        bench.check(lib, lib.mlkv_bench_prefill(k.data_ptr(), v.data_ptr(), b, hkv, ctx, d, hq, q.data_ptr(),
                                                out.data_ptr(), c.data_ptr(), off.data_ptr(), ctx, ctx, b * ctx,
                                                scale, sp()))
        F.scaled_dot_product_attention(qt, k, v, is_causal=True, enable_gqa=True)
torch.cuda.synchronize()
