#pragma once
/// \file cuda/instantiate.cuh
/// Instantiates the CUDA launchers and their kernels (append, decode, fused decode, prefill; f16
/// and bf16 storage; contiguous and paged views) in the translation unit that includes it. With
/// MLKV_CUDA_EXTERN_KERNELS defined in every other translation unit of the program, the kernels
/// are compiled once instead of once per translation unit that calls them:
///
///     // mlkv_cuda_kernels.cu, the one file that instantiates them (same nvcc flags as the rest)
///     #include <mlkv/cuda/instantiate.cuh>
///
///     # CMake
///     target_compile_definitions(engine PRIVATE MLKV_CUDA_EXTERN_KERNELS)
///     target_sources(engine PRIVATE mlkv_cuda_kernels.cu)
///
/// Include it in exactly one translation unit of a program: a second one defines every launcher
/// twice (a link error). MLKV_CUDA_INSTANTIATE_ONLY_F16 or _BF16 limits it to one storage type, so
/// that two files can compile the two types in parallel.

#include "attention.cuh"

namespace mlkv::cuda {
#if !defined(MLKV_CUDA_INSTANTIATE_ONLY_BF16)
MLKV_CUDA_KERNELS_OF_(, ::mlkv::f16)
#endif
#if !defined(MLKV_CUDA_INSTANTIATE_ONLY_F16)
MLKV_CUDA_KERNELS_OF_(, ::mlkv::bf16)
#endif
}  // namespace mlkv::cuda
