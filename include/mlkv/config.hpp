#pragma once
/// \file config.hpp
/// Version, and the few macros that let the same header serve host and device code.

#define MLKV_VERSION_MAJOR 0
#define MLKV_VERSION_MINOR 1
#define MLKV_VERSION_PATCH 0

#if defined(__CUDACC__)
#define MLKV_HOST_DEVICE __host__ __device__
#define MLKV_DEVICE __device__
#else
#define MLKV_HOST_DEVICE
#define MLKV_DEVICE
#endif

#if defined(__GNUC__) || defined(__clang__)
#define MLKV_ALWAYS_INLINE inline __attribute__((always_inline))
#define MLKV_RESTRICT __restrict__
#else
#define MLKV_ALWAYS_INLINE inline
#define MLKV_RESTRICT
#endif

namespace mlkv {
/// The library version as "major.minor.patch".
inline constexpr const char* version_string = "0.1.0";
}  // namespace mlkv
