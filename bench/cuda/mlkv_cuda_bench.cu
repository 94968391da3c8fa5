// The benchmark's side of the mlkv CUDA path, as a C ABI for Python's ctypes: decode and prefill
// over contiguous bf16 caches laid out [batch][kv_head][capacity][head_dim] (PyTorch's
// [B, Hkv, S, D] tensors), and a read-only kernel that measures the device's read bandwidth.
// Every function returns 0 on success, or -1 with the message in mlkv_bench_error().
#include <mlkv/cuda/attention.cuh>

#include <cstddef>
#include <cstdint>
#include <exception>
#include <string>

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

/// Reads n 16-byte vectors, U loads in flight per thread, streaming (evict-first); the XOR of
/// everything is written only if it equals a constant, so the loads cannot be dropped.
template <int U>
__global__ void read_kernel(const uint4* __restrict__ p, std::size_t n, unsigned* sink) {
  unsigned acc = 0;
  const std::size_t stride = static_cast<std::size_t>(gridDim.x) * blockDim.x;
  std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  for (; i + (U - 1) * stride < n; i += U * stride) {
    uint4 v[U];
#pragma unroll
    for (int u = 0; u < U; ++u) v[u] = __ldcs(p + i + u * stride);
#pragma unroll
    for (int u = 0; u < U; ++u) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
  }
  for (; i < n; i += stride) {
    const uint4 v = __ldcs(p + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x9e3779b9u) *sink = acc;
}

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

/// Workspace bytes of mlkv_bench_decode, or -1 (as a signed value) on error.
long long mlkv_bench_decode_workspace(int batch, int kv_heads, int capacity, int head_dim, int q_heads,
                                      int max_context) {
  long long r = -1;
  const int rc = guarded([&] {
    // The plan needs only the shape: any aligned non-null pointers will do here.
    static const uint4 dummy{};
    const auto view = view_of(&dummy, &dummy, batch, kv_heads, capacity, head_dim);
    r = static_cast<long long>(mlkv::cuda::decode_workspace_bytes(
        view, q_heads, mlkv::cuda::attention_batch::decode(batch, nullptr, max_context)));
  });
  return rc == 0 ? r : -1;
}

/// The decode split (splits per sequence x KV head x head block) the plan picks, or -1.
int mlkv_bench_decode_splits(int batch, int kv_heads, int capacity, int head_dim, int q_heads, int max_context) {
  int r = -1;
  guarded([&] {
    static const uint4 dummy{};
    const auto view = view_of(&dummy, &dummy, batch, kv_heads, capacity, head_dim);
    const auto ab = mlkv::cuda::attention_batch::decode(batch, nullptr, max_context);
    r = mlkv::cuda::detail::with_decode_config(view, q_heads, [&](auto d, auto mt) {
      return mlkv::cuda::detail::make_decode_plan<mlkv::bf16, decltype(d)::value, decltype(mt)::value>(view, q_heads, ab)
          .splits;
    });
  });
  return r;
}

int mlkv_bench_decode(const void* k, const void* v, int batch, int kv_heads, int capacity, int head_dim, int q_heads,
                      const void* q, void* out, const std::int32_t* context, int max_context, float scale,
                      void* workspace, std::size_t workspace_bytes, void* stream) {
  return guarded([&] {
    mlkv::cuda::decode_attention(view_of(k, v, batch, kv_heads, capacity, head_dim), q_heads,
                                 static_cast<const mlkv::bf16*>(q), static_cast<mlkv::bf16*>(out),
                                 mlkv::cuda::attention_batch::decode(batch, context, max_context), scale, workspace,
                                 workspace_bytes, static_cast<cudaStream_t>(stream));
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
