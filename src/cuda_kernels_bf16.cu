// The CUDA launchers and kernels for bf16 caches (see cuda_kernels_f16.cu).
#define MLKV_CUDA_INSTANTIATE_ONLY_BF16 1
#include <mlkv/cuda/instantiate.cuh>
