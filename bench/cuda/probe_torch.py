"""First look at the GPU machine: PyTorch SDPA (enable_gqa=True) on the issue's shapes, which
backend it picks, and a rough read bandwidth, before the kernels exist. Not part of the results."""
import sys, time, json
import torch
import torch.nn.functional as F

dev = torch.device("cuda")
p = torch.cuda.get_device_properties(dev)
print("gpu", p.name, "sms", p.multi_processor_count, "L2", getattr(p, "L2_cache_size", None), "torch", torch.__version__)

def bench(fn, iters=20):
    fn(); torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    ts = []
    for _ in range(5):
        s.record()
        for _ in range(iters):
            fn()
        e.record(); torch.cuda.synchronize()
        ts.append(s.elapsed_time(e) * 1e3 / iters)
    ts.sort()
    return ts[len(ts) // 2]

# read bandwidth, torch.sum over 4 GB
x = torch.empty(2 * 1024**3, dtype=torch.bfloat16, device=dev).uniform_()
t = bench(lambda: x.sum(), 10)
print(f"torch.sum 4GB: {t:.1f} us, {x.numel()*2/t/1e6:.3f} TB/s")
y = torch.empty_like(x)
t = bench(lambda: y.copy_(x), 10)
print(f"copy 4GB: {t:.1f} us, {2*x.numel()*2/t/1e6:.3f} TB/s (r+w)")
del x, y

def backend(fn):
    from torch.profiler import profile, ProfilerActivity
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn(); torch.cuda.synchronize()
    names = [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    return sorted(set(n[:60] for n in names))

geoms = [(12, 12, 64), (12, 4, 64), (12, 1, 64), (32, 8, 128), (32, 1, 128)]
for hq, hkv, d in geoms:
    for B, ctx in [(1, 32768), (16, 4096), (64, 4096), (256, 4096), (64, 32768)]:
        kvb = 2 * B * hkv * ctx * d * 2
        if kvb > 40e9:
            continue
        q = torch.randn(B, hq, 1, d, dtype=torch.bfloat16, device=dev)
        k = torch.randn(B, hkv, ctx, d, dtype=torch.bfloat16, device=dev)
        v = torch.randn_like(k)
        f = lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
        try:
            t = bench(f)
            print(f"decode {hq}:{hkv} d{d} B{B} ctx{ctx}: {t:.1f} us {kvb/t/1e6:.3f} TB/s  {backend(f)}")
        except Exception as ex:
            print(f"decode {hq}:{hkv} d{d} B{B} ctx{ctx}: FAILED {str(ex)[:200]}")
        del q, k, v
    S = 4096
    for B in (1, 4):
        q = torch.randn(B, hq, S, d, dtype=torch.bfloat16, device=dev)
        k = torch.randn(B, hkv, S, d, dtype=torch.bfloat16, device=dev)
        v = torch.randn_like(k)
        f = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        t = bench(f)
        flops = 4 * B * hq * S * S / 2 * d
        print(f"prefill {hq}:{hkv} d{d} B{B} S{S}: {t:.1f} us {flops/t/1e6:.1f} TFLOP/s  {backend(f)}")
        del q, k, v
torch.cuda.synchronize()
