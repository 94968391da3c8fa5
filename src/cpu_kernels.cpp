// The fast CPU attention kernels, compiled once for this project's own programs (tests, examples,
// benchmarks): the target mlkv_cpu_kernels gives its users MLKV_CPU_EXTERN_KERNELS, so none of
// them instantiates the kernels again (see include/mlkv/cpu/instantiate.hpp). The library itself
// stays header-only; this file is not installed.
#include <mlkv/cpu/instantiate.hpp>
