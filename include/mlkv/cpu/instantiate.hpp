#pragma once
/// \file cpu/instantiate.hpp
/// Instantiates the fast CPU attention kernels (every compiled ISA path x f32/f16/bf16 x
/// contiguous/paged views) in the translation unit that includes it. With
/// MLKV_CPU_EXTERN_KERNELS defined in every other translation unit of the program, the kernels
/// are compiled once instead of once per translation unit that calls cpu::attention:
///
///     // mlkv_kernels.cpp, the one file that instantiates them (same compiler flags as the rest)
///     #include <mlkv/cpu/instantiate.hpp>
///
///     # CMake
///     target_compile_definitions(engine PRIVATE MLKV_CPU_EXTERN_KERNELS)
///     target_sources(engine PRIVATE mlkv_kernels.cpp)
///
/// Include it in exactly one translation unit of a program: a second one defines every kernel
/// twice (a link error).

#include "attention.hpp"

namespace mlkv::cpu::detail {
MLKV_CPU_KERNELS_()
}  // namespace mlkv::cpu::detail
