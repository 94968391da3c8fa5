// The benchmark's side of the mlkv CUDA path, as a C ABI for Python's ctypes: decode and prefill
// over contiguous bf16 caches laid out [batch][kv_head][capacity][head_dim] (PyTorch's
// [B, Hkv, S, D] tensors), and a read-only kernel that measures the device's read bandwidth.
// Every function returns 0 on success, or -1 with the message in mlkv_bench_error().
#include <mlkv/cuda/attention.cuh>
#include "../common/read_kernel.cuh"

#include <cstddef>
#include <cstdint>
#include <exception>
#include <string>
#include <type_traits>

namespace {

thread_local std::string last_error;

template <class F>
int guarded(F&& f) {
  try {
    f();
    return 0;
  } catch (const std::exception& e) {
    last_error = e.what();
    return -1;
  }
}

mlkv::contiguous_slot_view<mlkv::bf16> view_of(const void* k, const void* v, int batch, int kv_heads, int capacity,
                                               int head_dim) {
  mlkv::contiguous_slot_view<mlkv::bf16> s;
  s.k = static_cast<const mlkv::bf16*>(k);
  s.v = static_cast<const mlkv::bf16*>(v);
  s.batch = batch;
  s.kv_heads = kv_heads;
  s.head_dim = head_dim;
  s.capacity = capacity;
  return s;
}

using mlkv_bench::read_kernel;

}  // namespace

extern "C" {

const char* mlkv_bench_error() { return last_error.c_str(); }

int mlkv_bench_read(const void* buf, std::size_t bytes, unsigned* sink, int blocks, int threads, int unroll,
                    void* stream) {
  return guarded([&] {
    const auto* p = static_cast<const uint4*>(buf);
    const std::size_t n = bytes / 16;
    const auto s = static_cast<cudaStream_t>(stream);
    switch (unroll) {
      case 4: read_kernel<4><<<blocks, threads, 0, s>>>(p, n, sink); break;
      case 8: read_kernel<8><<<blocks, threads, 0, s>>>(p, n, sink); break;
      case 16: read_kernel<16><<<blocks, threads, 0, s>>>(p, n, sink); break;
      default: mlkv::detail::fail("unroll ", unroll, " is not 4, 8 or 16");
    }
    MLKV_CUDA_CHECK(cudaGetLastError());
  });
}

/// Benchmarking knobs: force the decode split (0: the plan's), programmatic dependent launch on
/// or off, the mma.sync prefill instead of the wgmma one, and the wgmma prefill's tile variant.
void mlkv_bench_tune_decode_early(int on) { mlkv::cuda::detail::decode_early_start.store(on); }
/// The warp-specialised prefill's band of (sequence, KV head) pairs: K/V of at most L2 / divisor.
void mlkv_bench_tune_prefill_band(int divisor) { mlkv::cuda::detail::prefill_band_divisor.store(divisor); }

void mlkv_bench_tune(int force_splits, int pdl, int prefill_mma, int prefill_variant) {
  mlkv::cuda::detail::decode_force_splits.store(force_splits);
  mlkv::cuda::detail::pdl_enabled.store(pdl);
  mlkv::cuda::detail::prefill_force_mma.store(prefill_mma);
  mlkv::cuda::detail::prefill_sm90_variant.store(prefill_variant);
}

}  // extern "C"

namespace {

/// Decode kernel shapes the benchmark can compare: variant 0 is the library's default (L2::256B
/// prefetch hint on the K/V copies); 1-3 other warps x stages with the hint; variant 4 the default
/// shape without the hint; variant 5 a deep pipeline (5-6 stages, one CTA per SM); d64 only: 6-9
/// small and deep CTAs (4 warps x 2 and x 3 stages, 8 x 4, 2 x 4) for the batch-128/512 one-KV-head
/// slots of the CUDA model (issue 7). Variants other than 0 are compiled only with the CMake option
/// MLKV_BENCH_DECODE_VARIANTS (the GPU scripts turn it on; the test command leaves it off: they
/// took 44 of this file's 62 s of nvcc on the 2-core CI machine).
template <int D, class F>
void with_variant(int variant, F&& f) {
  using namespace mlkv::cuda::detail;
  if (variant == 0) return f(decode_default_cfg<D>{});
#if MLKV_BENCH_DECODE_VARIANTS
  if constexpr (D == 64) {
    switch (variant) {
      case 1: return f(decode_cfg<4, 4, true>{});
      case 2: return f(decode_cfg<8, 3, true>{});
      case 3: return f(decode_cfg<8, 2, true>{});
      case 4: return f(decode_cfg<8, 2, false>{});
      case 5: return f(decode_cfg<8, 5, true>{});
      case 6: return f(decode_cfg<4, 2, true>{});
      case 7: return f(decode_cfg<4, 3, true>{});
      case 8: return f(decode_cfg<8, 4, true>{});
      case 9: return f(decode_cfg<2, 4, true>{});
      default: break;
    }
  } else if constexpr (D == 128) {
    switch (variant) {
      case 1: return f(decode_cfg<4, 2, true>{});
      case 2: return f(decode_cfg<8, 2, true>{});
      case 3: return f(decode_cfg<4, 4, true>{});
      case 4: return f(decode_cfg<4, 3, false>{});
      case 5: return f(decode_cfg<4, 6, true>{});
      default: break;
    }
  }
#else
  if ((D == 64 && variant >= 1 && variant <= 9) || (D == 128 && variant >= 1 && variant <= 5))
    mlkv::detail::fail("decode variant ", variant, " is not compiled in: configure with -DMLKV_BENCH_DECODE_VARIANTS=ON");
#endif
  mlkv::detail::fail("decode variant ", variant, " does not exist for head dim ", D);
}

/// Calls f(D, MT, Cfg) for a decode call's shape and the variant.
template <class F>
void with_decode(int head_dim, int kv_heads, int q_heads, int variant, F&& f) {
  const int group = q_heads / kv_heads;
  mlkv::cuda::detail::with_head_dim(head_dim, [&](auto d) {
    constexpr int D = decltype(d)::value;
    with_variant<D>(variant, [&](auto cfg) {
      if (group <= 16) {
        f(d, std::integral_constant<int, 1>{}, cfg);
      } else {
        f(d, std::integral_constant<int, 2>{}, cfg);
      }
    });
  });
}

}  // namespace

extern "C" {

/// Workspace bytes of mlkv_bench_decode, or -1 on error.
long long mlkv_bench_decode_workspace(int variant, int batch, int kv_heads, int capacity, int head_dim, int q_heads,
                                      int max_context) {
  long long r = -1;
  const int rc = guarded([&] {
    static const uint4 dummy{};  // the plan needs only the shape and aligned non-null pointers
    const auto view = view_of(&dummy, &dummy, batch, kv_heads, capacity, head_dim);
    const auto ab = mlkv::cuda::attention_batch::decode(batch, nullptr, max_context);
    mlkv::cuda::detail::check_workspace_args(view, q_heads, ab);
    with_decode(head_dim, kv_heads, q_heads, variant, [&](auto d, auto mt, auto cfg) {
      r = static_cast<long long>(mlkv::cuda::detail::make_decode_plan<mlkv::bf16, decltype(d)::value, decltype(mt)::value,
                                                                      decltype(cfg)>(view, q_heads, ab)
                                     .workspace);
    });
  });
  return rc == 0 ? r : -1;
}

/// The decode split (splits per sequence x KV head x head block) the plan picks, or -1.
int mlkv_bench_decode_splits(int variant, int batch, int kv_heads, int capacity, int head_dim, int q_heads,
                             int max_context) {
  int r = -1;
  guarded([&] {
    static const uint4 dummy{};
    const auto view = view_of(&dummy, &dummy, batch, kv_heads, capacity, head_dim);
    const auto ab = mlkv::cuda::attention_batch::decode(batch, nullptr, max_context);
    with_decode(head_dim, kv_heads, q_heads, variant, [&](auto d, auto mt, auto cfg) {
      r = mlkv::cuda::detail::make_decode_plan<mlkv::bf16, decltype(d)::value, decltype(mt)::value, decltype(cfg)>(
              view, q_heads, ab)
              .splits;
    });
  });
  return r;
}

/// Workspace bytes of a paged decode call through the public launcher, or -1.
long long mlkv_bench_decode_paged_workspace(int batch, int kv_heads, int head_dim, int page_tokens, int max_blocks,
                                            int slots, int q_heads, int max_context) {
  long long r = -1;
  guarded([&] {
    static const uint4 dummy{};
    static const std::int32_t zero = 0;
    const auto view = mlkv::paged_slot_view<mlkv::bf16>::over_pool(reinterpret_cast<const mlkv::bf16*>(&dummy), &zero, &zero, batch,
                                                                    kv_heads, head_dim, page_tokens, max_blocks, slots, 0);
    r = static_cast<long long>(
        mlkv::cuda::decode_workspace_bytes(view, q_heads, mlkv::cuda::attention_batch::decode(batch, nullptr, max_context)));
  });
  return r;
}

/// Decode over a paged view through the public launcher.
int mlkv_bench_decode_paged(const void* pages, const std::int32_t* block_table, const std::int32_t* seq_blocks,
                            int batch, int kv_heads, int head_dim, int page_tokens, int max_blocks, int slots, int slot,
                            int q_heads, const void* q, void* out, const std::int32_t* context, int max_context,
                            float scale, void* workspace, std::size_t workspace_bytes, void* stream) {
  return guarded([&] {
    mlkv::cuda::decode_attention(
        mlkv::paged_slot_view<mlkv::bf16>::over_pool(static_cast<const mlkv::bf16*>(pages), block_table, seq_blocks,
                                                     batch, kv_heads, head_dim, page_tokens, max_blocks, slots, slot),
        q_heads, static_cast<const mlkv::bf16*>(q), static_cast<mlkv::bf16*>(out),
        mlkv::cuda::attention_batch::decode(batch, context, max_context), scale, workspace, workspace_bytes,
        static_cast<cudaStream_t>(stream));
  });
}

/// Decode through the public launcher (variant 0) or another kernel shape.
int mlkv_bench_decode(int variant, const void* k, const void* v, int batch, int kv_heads, int capacity, int head_dim,
                      int q_heads, const void* q, void* out, const std::int32_t* context, int max_context, float scale,
                      void* workspace, std::size_t workspace_bytes, void* stream) {
  return guarded([&] {
    const auto view = view_of(k, v, batch, kv_heads, capacity, head_dim);
    const auto ab = mlkv::cuda::attention_batch::decode(batch, context, max_context);
    const auto* qq = static_cast<const mlkv::bf16*>(q);
    auto* oo = static_cast<mlkv::bf16*>(out);
    const auto s = static_cast<cudaStream_t>(stream);
    if (variant == 0) {
      mlkv::cuda::decode_attention(view, q_heads, qq, oo, ab, scale, workspace, workspace_bytes, s);
      return;
    }
    mlkv::cuda::detail::check_decode_args(view, q_heads, qq, oo, ab, scale);
    with_decode(head_dim, kv_heads, q_heads, variant, [&](auto d, auto mt, auto cfg) {
      mlkv::cuda::detail::decode_launch<mlkv::bf16, decltype(d)::value, decltype(mt)::value, decltype(cfg)>(
          view, q_heads, qq, oo, ab, scale, workspace, workspace_bytes, s);
    });
  });
}

int mlkv_bench_prefill(const void* k, const void* v, int batch, int kv_heads, int capacity, int head_dim, int q_heads,
                       const void* q, void* out, const std::int32_t* context, const std::int32_t* q_offsets,
                       int max_context, int max_rows, int total_rows, float scale, void* stream) {
  return guarded([&] {
    mlkv::cuda::prefill_attention(
        view_of(k, v, batch, kv_heads, capacity, head_dim), q_heads, static_cast<const mlkv::bf16*>(q),
        static_cast<mlkv::bf16*>(out),
        mlkv::cuda::attention_batch::chunks(batch, context, q_offsets, max_context, max_rows, total_rows), scale,
        static_cast<cudaStream_t>(stream));
  });
}

}  // extern "C"
