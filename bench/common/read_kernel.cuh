#pragma once
// The device's read bandwidth probe shared by the CUDA benchmarks (bench/cuda, bench/cuda_model).

#include <cstddef>
#include <cuda_runtime.h>

namespace mlkv_bench {

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

}  // namespace mlkv_bench
