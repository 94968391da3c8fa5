#pragma once
/// \file cuda/attention.cuh
/// Everything of the CUDA path: append with fused rotary, decode and causal prefill attention,
/// over contiguous and paged slot views (include under nvcc only).

#include "append.cuh"
#include "batch.hpp"
#include "common.cuh"
#include "decode.cuh"
#include "prefill.cuh"

/// The launchers' instantiations, one list per storage type over both view types: for `extern
/// template` (MLKV_CUDA_EXTERN_KERNELS) and for cuda/instantiate.cuh. `prefix` is `extern` or
/// empty. Each instantiation compiles every kernel shape its launcher may pick (head dims 64, 80,
/// 96, 128; both tile heights; the wgmma and mma.sync prefills), tens of seconds per storage type.
#define MLKV_CUDA_KERNELS_VIEW_(prefix, T, View)                                                                      \
  prefix template void decode_attention<View<T>>(const View<T>&, int, const T*, T*, const attention_batch&, float,    \
                                                 void*, std::size_t, cudaStream_t);                                  \
  prefix template std::size_t decode_workspace_bytes<View<T>>(const View<T>&, int, const attention_batch&);          \
  prefix template void detail::decode_attention_qkv<View<T>>(const View<T>&, int, const detail::decode_fused_qkv&,   \
                                                             T*, const attention_batch&, float, void*, std::size_t,  \
                                                             cudaStream_t, const detail::decode_walk&);              \
  prefix template void prefill_attention<View<T>>(const View<T>&, int, const T*, T*, const attention_batch&, float,  \
                                                  cudaStream_t);                                                     \
  prefix template void append_kv<View<T>, float>(const View<T>&, const float*, const float*, const attention_batch&, \
                                                 const rotary*, cudaStream_t);                                       \
  prefix template void append_kv<View<T>, T>(const View<T>&, const T*, const T*, const attention_batch&,             \
                                             const rotary*, cudaStream_t);
#define MLKV_CUDA_KERNELS_OF_(prefix, T)                         \
  MLKV_CUDA_KERNELS_VIEW_(prefix, T, ::mlkv::contiguous_slot_view) \
  MLKV_CUDA_KERNELS_VIEW_(prefix, T, ::mlkv::paged_slot_view)

/// A program with several translation units that call the CUDA launchers can compile the kernels
/// once: define MLKV_CUDA_EXTERN_KERNELS in all of them and include <mlkv/cuda/instantiate.cuh>
/// in exactly one (same nvcc flags and architectures).
#if defined(MLKV_CUDA_EXTERN_KERNELS)
namespace mlkv::cuda {
MLKV_CUDA_KERNELS_OF_(extern, ::mlkv::f16)
MLKV_CUDA_KERNELS_OF_(extern, ::mlkv::bf16)
}  // namespace mlkv::cuda
#endif
