// The CUDA launchers and kernels for f16 caches, compiled once for this project's own programs
// (tests, benchmarks): the target mlkv_cuda_kernels gives its users MLKV_CUDA_EXTERN_KERNELS, so
// none of them compiles the kernels again (see include/mlkv/cuda/instantiate.cuh). The library
// itself stays header-only; this file is not installed.
#define MLKV_CUDA_INSTANTIATE_ONLY_F16 1
#include <mlkv/cuda/instantiate.cuh>
