// The fast CPU attention kernels, compiled once for the whole suite: the test libraries define
// MLKV_CPU_EXTERN_KERNELS for every test, so no other test translation unit instantiates them.
#include <mlkv/cpu/instantiate.hpp>
