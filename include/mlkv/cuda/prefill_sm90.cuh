#pragma once
/// \file cuda/prefill_sm90.cuh
/// Causal prefill on Hopper's warpgroup tensor cores (wgmma, PTX sm_90a), for head dims 64 and
/// 128: the same contract, packing and masking as the mma.sync kernel of prefill.cuh, which
/// prefill_attention falls back to elsewhere (other head dims, other GPUs, builds without
/// MLKV_CUDA_SM90A).
///
/// Two kernels. prefill_ws_kernel (the default) is warp-specialised after FlashAttention-3 (Shah
/// et al. 2024): a producer warpgroup streams K/V tiles through a ring of mbarrier-guarded
/// buffers (TMA for the whole tiles of contiguous caches, cp.async for paged ones and tail tiles)
/// while two or three consumer warpgroups of 64 packed query rows each compute
/// S = Q K^T and O += P V with wgmma, overlapping one tile's softmax with the previous tile's
/// P V and taking turns on the tensor cores (see its comment). prefill_sm90_kernel is the simpler
/// kernel without producer: two warpgroups that load and compute in turn, 64-token tiles, two
/// CTAs per SM; it serves softmax scales <= 0. Both keep S in registers as the A operand of P V
/// (the accumulator layout of S is the A-operand register layout of the next product), read V
/// N-major through the descriptor (no transpose) and store tiles in the canonical 128-byte-swizzled
/// layouts (PTX ISA, "Shared Memory Matrix Layout"): rows of 64 values (128 B) in 8-row atoms of
/// 1 KB, 16-byte chunk c of row r stored at chunk c ^ (r % 8).

#include <cuda.h>  // CUtensorMap and its enums (types only: the encoder comes through the runtime)
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdint>

#include "common.cuh"
#include "prefill_common.cuh"

namespace mlkv::cuda {
namespace detail {

/// Benchmarking and test knobs: 1 sends every prefill to the mma.sync kernel; variant 2 picks the
/// wgmma kernel without producer, 3 the warp-specialised one without ping-pong, 4 the
/// warp-specialised one with cp.async for every tile (no TMA) (launch_prefill_sm90).
inline std::atomic<int> prefill_force_mma{0};
inline std::atomic<int> prefill_sm90_variant{0};
/// The warp-specialised kernel's bands of (sequence, KV head) pairs hold at most L2 / this of K/V.
inline std::atomic<int> prefill_band_divisor{2};

inline constexpr int prefill_sm90_threads = 256;  // two warpgroups of 64 query rows

template <int D, int BN>
__host__ __device__ constexpr std::size_t prefill_sm90_smem_bytes() {
  // Q (128 rows) and two stages of K and V (BN rows each), D values per row; 1 KB to align the
  // base to a swizzle atom.
  return static_cast<std::size_t>(prefill_bm + 2 * 2 * BN) * D * 2u + 1024u;
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define MLKV_WGMMA_ENABLED 1
#endif

__device__ __forceinline__ void wgmma_fence() {
#if defined(MLKV_WGMMA_ENABLED)
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void wgmma_commit() {
#if defined(MLKV_WGMMA_ENABLED)
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
/// Waits until at most N of this warpgroup's committed wgmma groups are still running.
template <int N>
__device__ __forceinline__ void wgmma_wait() {
#if defined(MLKV_WGMMA_ENABLED)
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#endif
}
/// Orders this thread's earlier shared-memory writes (cp.async included) before the tensor cores'
/// reads through the async proxy.
__device__ __forceinline__ void fence_proxy_async() {
#if defined(MLKV_WGMMA_ENABLED)
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

/// A wgmma shared-memory matrix descriptor with the 128-byte swizzle: start address, leading and
/// stride byte offsets (PTX ISA, "Matrix Descriptor Format").
__device__ __forceinline__ std::uint64_t gmma_desc(std::uint32_t addr, std::uint32_t lbo, std::uint32_t sbo) {
  return static_cast<std::uint64_t>((addr & 0x3FFFFu) >> 4) | (static_cast<std::uint64_t>(lbo >> 4) << 16) |
         (static_cast<std::uint64_t>(sbo >> 4) << 32) | (1ull << 62);
}
/// Byte offset of 16-byte chunk c (0..7) of row r in a [rows][64 values] block, 128-byte swizzle.
__device__ __forceinline__ std::uint32_t sw128(int r, int c) {
  return static_cast<std::uint32_t>(r * 128 + ((c ^ (r & 7)) << 4));
}

#if defined(MLKV_WGMMA_ENABLED)
/// D[64 x 64] (+)= A[64 x 16] (shared, K-major) * B[16 x 64] (shared, K-major); bf16.
__device__ __forceinline__ void wgmma_ss_n64(float (&d)[32], std::uint64_t da, std::uint64_t db, int accumulate, bf16) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "l"(da), "l"(db), "r"(accumulate));
}
/// D[64 x 64] (+)= A[64 x 16] (registers) * B[16 x 64] (shared, MN-major); bf16.
__device__ __forceinline__ void wgmma_rs_n64(float (&d)[32], const std::uint32_t (&a)[4], std::uint64_t db, int accumulate, bf16) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(accumulate));
}
/// D[64 x 128] (+)= A[64 x 16] (shared, K-major) * B[16 x 128] (shared, K-major); bf16.
__device__ __forceinline__ void wgmma_ss_n128(float (&d)[64], std::uint64_t da, std::uint64_t db, int accumulate, bf16) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(da), "l"(db), "r"(accumulate));
}
/// D[64 x 128] (+)= A[64 x 16] (registers) * B[16 x 128] (shared, MN-major); bf16.
__device__ __forceinline__ void wgmma_rs_n128(float (&d)[64], const std::uint32_t (&a)[4], std::uint64_t db, int accumulate, bf16) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(accumulate));
}
/// D[64 x 64] (+)= A[64 x 16] (shared, K-major) * B[16 x 64] (shared, K-major); f16.
__device__ __forceinline__ void wgmma_ss_n64(float (&d)[32], std::uint64_t da, std::uint64_t db, int accumulate, f16) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "l"(da), "l"(db), "r"(accumulate));
}
/// D[64 x 64] (+)= A[64 x 16] (registers) * B[16 x 64] (shared, MN-major); f16.
__device__ __forceinline__ void wgmma_rs_n64(float (&d)[32], const std::uint32_t (&a)[4], std::uint64_t db, int accumulate, f16) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(accumulate));
}
/// D[64 x 128] (+)= A[64 x 16] (shared, K-major) * B[16 x 128] (shared, K-major); f16.
__device__ __forceinline__ void wgmma_ss_n128(float (&d)[64], std::uint64_t da, std::uint64_t db, int accumulate, f16) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(da), "l"(db), "r"(accumulate));
}
/// D[64 x 128] (+)= A[64 x 16] (registers) * B[16 x 128] (shared, MN-major); f16.
__device__ __forceinline__ void wgmma_rs_n128(float (&d)[64], const std::uint32_t (&a)[4], std::uint64_t db, int accumulate, f16) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(accumulate));
}
#endif

/// The maximum of a row of the wgmma accumulator layout over a tile of BN tokens: this thread's
/// values of row h (s[4 n + 2 h], s[4 n + 2 h + 1]), then across the quad of lanes that share it.
template <int BN>
__device__ __forceinline__ float quad_row_max(const float (&s)[BN / 2], int h) {
  float mx = -INFINITY;
#pragma unroll
  for (int n = 0; n < BN / 8; ++n) mx = fmaxf(mx, fmaxf(s[4 * n + 2 * h], s[4 * n + 2 * h + 1]));
  mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
  return fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
}

/// The end of a warpgroup's rows: O / l in the storage type. This thread holds packed rows r and
/// r + 8 (h = 0, 1) of the wgmma accumulator layout: o[4 n + 2 h + e] is column 8 n + 2 tq + e; l
/// is the thread's part of the row sum (the quad of lanes sharing a row adds its parts).
template <class T, int D, class View>
__device__ __forceinline__ void store_wgmma_rows(const prefill_params<T, View>& p, const float (&o)[D / 2],
                                                 const float (&l)[2], int first, int hk, int r, int R, int tq) {
  const int g = p.group;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    float lt = l[h];
    lt += __shfl_xor_sync(0xffffffffu, lt, 1);
    lt += __shfl_xor_sync(0xffffffffu, lt, 2);
    const int pr = r + h * 8;
    if (pr >= R) continue;
    const float inv = 1.f / lt;
    const int i = pr / g, jh = pr - i * g;
    T* const dst = p.out + ((static_cast<std::size_t>(first) + i) * p.q_heads + hk * g + jh) * D + 2 * tq;
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
      *reinterpret_cast<std::uint32_t*>(dst + 8 * n) = pack2<T>(o[4 * n + 2 * h] * inv, o[4 * n + 2 * h + 1] * inv);
    }
  }
}

/// One CTA per (sequence, KV head, block of 128 packed rows), heaviest blocks first.
template <class T, int D, int BN, int MinBlocks, class View>
__global__ void __launch_bounds__(prefill_sm90_threads, MinBlocks) prefill_sm90_kernel(const prefill_params<T, View> p) {
#if defined(MLKV_WGMMA_ENABLED)
  static_assert(D == 64 || D == 128, "mlkv: the wgmma prefill takes head dim 64 or 128");
  static_assert(BN == 64 || BN == 128, "mlkv: the wgmma prefill takes 64 or 128 tokens per tile");
  constexpr int BM = prefill_bm, CH = D / 8, DB = D / 64, NT = prefill_sm90_threads;
  constexpr std::uint32_t QB = BM * 128u, KB = BN * 128u;  // bytes of one 64-value column block
  extern __shared__ unsigned char smem_raw[];
  const std::uint32_t sQ = (smem_addr(smem_raw) + 1023u) & ~1023u;  // DB blocks of QB
  const std::uint32_t sKV = sQ + DB * QB;  // stage s: K at sKV + s * 2 * DB * KB, V after it

  pdl_wait();
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int wg = tid >> 7, wl = warp & 3, gq = lane >> 2, tq = lane & 3;
  const int b = blockIdx.x, hk = blockIdx.y;
  const int mb = gridDim.z - 1 - blockIdx.z;
  const int g = p.group;
  const seq_rows sr = read_seq_rows(p.kv, p.ab, b);
  const int r0 = mb * BM;
  if (!sr.ok) {
    prefill_nan_rows(p, sr, hk, r0, BM, D);
    return;
  }
  const int R = sr.rows * g;
  if (r0 >= R) return;
  const int pos0 = sr.ctx - sr.rows;

  for (int e = tid; e < BM * CH; e += NT) {
    const int r = e / CH, c = e - r * CH;
    const int pr = r0 + r;
    const bool ok = pr < R;
    const int i = ok ? pr / g : 0, j = ok ? pr - i * g : 0;
    const T* src = p.q + ((static_cast<std::size_t>(sr.first) + i) * p.q_heads + hk * g + j) * D + c * 8;
    cp_async_16(sQ + (c >> 3) * QB + sw128(r, c & 7), src, ok);
  }
  cp_async_commit();

  const int last_row = min(R, r0 + BM) - 1;
  const int pos_last = pos0 + last_row / g;
  const int n_tiles = pos_last / BN + 1;
  const int wr0 = r0 + wg * 64;  // this warpgroup's first packed row
  const int wg_min_pos = wr0 < R ? pos0 + wr0 / g : INT_MAX;
  const int wg_max_pos = wr0 < R ? pos0 + min(R - 1, wr0 + 63) / g : -1;
  int my_pos[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int pr = wr0 + wl * 16 + gq + h * 8;
    my_pos[h] = pr < R ? pos0 + pr / g : -1;
  }

  const T* const kb = kbase(p.kv);
  const T* const vb = vbase(p.kv);
  auto load_tile = [&](int tile, int stage) {
    const std::uint32_t k_s = sKV + stage * 2 * DB * KB, v_s = k_s + DB * KB;
#pragma unroll
    for (int it = 0; it < BN * CH / NT; ++it) {
      const int e = tid + it * NT;
      const int r = e / CH, c = e - r * CH;
      const int tok = tile * BN + r;
      const bool ok = tok <= pos_last;
      const std::size_t off = p.kv.offset(b, hk, ok ? tok : 0) + static_cast<std::size_t>(c * 8);
      const std::uint32_t dst = (c >> 3) * KB + sw128(r, c & 7);
      cp_async_16(k_s + dst, kb + off, ok);
      cp_async_16(v_s + dst, vb + off, ok);
    }
  };

  float o[D / 2];
#pragma unroll
  for (int i = 0; i < D / 2; ++i) o[i] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  float s[BN / 2];
#pragma unroll
  for (int i = 0; i < BN / 2; ++i) s[i] = 0.f;

  load_tile(0, 0);
  cp_async_commit();
  for (int jt = 0; jt < n_tiles; ++jt) {
    const int stage = jt & 1;
    if (jt + 1 < n_tiles) load_tile(jt + 1, stage ^ 1);
    cp_async_commit();
    cp_async_wait<1>();
    fence_proxy_async();  // cp.async wrote through the generic proxy; wgmma reads through the async one
    __syncthreads();
    if (jt * BN <= wg_max_pos) {  // some row of this warpgroup sees a token of the tile
      const std::uint32_t k_s = sKV + stage * 2 * DB * KB, v_s = k_s + DB * KB;
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        const std::uint64_t da = gmma_desc(sQ + (kk >> 2) * QB + wg * 64 * 128 + (kk & 3) * 32, 16, 1024);
        const std::uint64_t db = gmma_desc(k_s + (kk >> 2) * KB + (kk & 3) * 32, 16, 1024);
        if constexpr (BN == 128) {
          wgmma_ss_n128(s, da, db, kk > 0 ? 1 : 0, T{});
        } else {
          wgmma_ss_n64(s, da, db, kk > 0 ? 1 : 0, T{});
        }
      }
      wgmma_commit();
      wgmma_wait<0>();

      // s[4 n + e]: row gq + 8 (e / 2), token 8 n + 2 tq + e % 2 of the tile.
      const bool masked = (jt + 1) * BN - 1 > wg_min_pos;
#pragma unroll
      for (int i = 0; i < BN / 2; ++i) {
        float x = s[i] * p.scale_log2;
        if (masked && jt * BN + 8 * (i >> 2) + 2 * tq + (i & 1) > my_pos[(i >> 1) & 1]) x = -INFINITY;
        s[i] = x;
      }
      std::uint32_t pa[BN / 16][4];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const float m_new = fmaxf(m[h], quad_row_max<BN>(s, h));
        const float base = m_new == -INFINITY ? 0.f : m_new;
        const float corr = fast_exp2(m[h] - base);
        m[h] = m_new;
        float rs = 0.f;
#pragma unroll
        for (int kt = 0; kt < BN / 16; ++kt) {
          const std::uint32_t p0 = pack2<T>(fast_exp2(s[8 * kt + 2 * h] - base), fast_exp2(s[8 * kt + 2 * h + 1] - base));
          const std::uint32_t p1 =
              pack2<T>(fast_exp2(s[8 * kt + 4 + 2 * h] - base), fast_exp2(s[8 * kt + 4 + 2 * h + 1] - base));
          pa[kt][h] = p0;      // rows gq / gq + 8, tokens 16 kt + 2 tq, +1
          pa[kt][2 + h] = p1;  // tokens 16 kt + 8 + 2 tq, +1
          const float2 f0 = unpack2<T>(p0), f1 = unpack2<T>(p1);
          rs += (f0.x + f0.y) + (f1.x + f1.y);
        }
        l[h] = l[h] * corr + rs;
#pragma unroll
        for (int n = 0; n < D / 8; ++n) {
          o[4 * n + 2 * h] *= corr;
          o[4 * n + 2 * h + 1] *= corr;
        }
      }
      wgmma_fence();
#pragma unroll
      for (int kt = 0; kt < BN / 16; ++kt) {
        // V as B[tokens x D], N-major: 64-value column blocks KB apart, 8-token groups 1 KB apart.
        const std::uint64_t db = gmma_desc(v_s + kt * 2048, KB, 1024);
        if constexpr (D == 128) {
          wgmma_rs_n128(o, pa[kt], db, 1, T{});
        } else {
          wgmma_rs_n64(o, pa[kt], db, 1, T{});
        }
      }
      wgmma_commit();
      wgmma_wait<0>();
    }
    __syncthreads();  // both warpgroups are done with this stage before it is refilled
  }

  store_wgmma_rows<T, D>(p, o, l, sr.first, hk, wr0 + wl * 16 + gq, R, tq);
#else
  __trap();  // compiled for a target without wgmma: the launcher never picks this kernel there
#endif
}

/// mbarrier and register-allocation helpers of the warp-specialised kernel (PTX ISA: "mbarrier",
/// "cp.async.mbarrier.arrive", "setmaxnreg").
__device__ __forceinline__ void mbar_init(std::uint32_t bar, unsigned count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_init_fence() {
#if defined(MLKV_WGMMA_ENABLED)
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#endif
}
/// Waits until the phase of `bar` with this parity has completed (acquire).
__device__ __forceinline__ void mbar_wait(std::uint32_t bar, unsigned parity) {
  std::uint32_t done = 0;
  do {
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  } while (done == 0);
}
__device__ __forceinline__ void mbar_arrive(std::uint32_t bar) {
  asm volatile("{\n.reg .b64 st;\nmbarrier.arrive.shared::cta.b64 st, [%0];\n}\n" ::"r"(bar) : "memory");
}
/// One arrival on `bar` once every cp.async this thread issued so far has landed.
__device__ __forceinline__ void cp_async_mbar_arrive(std::uint32_t bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
}
/// Adds `bytes` to the transactions the current phase of `bar` waits for (no arrival).
__device__ __forceinline__ void mbar_expect_tx(std::uint32_t bar, std::uint32_t bytes) {
#if defined(MLKV_WGMMA_ENABLED)
  asm volatile("mbarrier.expect_tx.relaxed.cta.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
#endif
}
/// TMA: the box of `map` at coordinates (x, y, z) into shared memory at dst; its bytes count as
/// transactions of `bar`.
__device__ __forceinline__ void tma_load_3d(std::uint32_t dst, const CUtensorMap* map, int x, int y, int z,
                                            std::uint32_t bar) {
#if defined(MLKV_WGMMA_ENABLED)
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], [%5];\n" ::"r"(
          dst),
      "l"(reinterpret_cast<std::uint64_t>(map)), "r"(x), "r"(y), "r"(z), "r"(bar)
      : "memory");
#endif
}
template <int N>
__device__ __forceinline__ void setmaxnreg_inc() {
#if defined(MLKV_WGMMA_ENABLED)
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N));
#endif
}
template <int N>
__device__ __forceinline__ void setmaxnreg_dec() {
#if defined(MLKV_WGMMA_ENABLED)
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N));
#endif
}
/// Named barriers (ids 1..15; 0 is __syncthreads): wait for `count` threads / arrive without waiting.
__device__ __forceinline__ void named_bar_sync(int id, int count) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(count) : "memory");
}
__device__ __forceinline__ void named_bar_arrive(int id, int count) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(count) : "memory");
}
/// Keeps registers that an asynchronous wgmma reads or writes where they are, and orders later uses
/// after the wgmma.wait_group before it: the compiler sees a read and a write of each at this point.
template <int N>
__device__ __forceinline__ void reg_fence(float (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i])::"memory");
}
template <int N>
__device__ __forceinline__ void reg_fence(std::uint32_t (&r)[N][4]) {
#pragma unroll
  for (int i = 0; i < N; ++i) {
#pragma unroll
    for (int j = 0; j < 4; ++j) asm volatile("" : "+r"(r[i][j])::"memory");
  }
}

/// Tensor maps of a contiguous cache's K and V for the warp-specialised kernel's TMA loads: each
/// is [batch x kv_heads][capacity][head_dim] with boxes of 64 values x BN tokens, 128-byte
/// swizzle (the layout the consumers' descriptors read). on == 0: the producer loads every tile
/// with cp.async (paged views; no encoder in the driver; an address TMA does not take).
struct kv_tensor_maps {
  CUtensorMap k, v;
  int on;
};

/// Shared memory of the warp-specialised kernel: Q (Cons x 64 rows), a ring of Stages (K, V)
/// buffer pairs of BN rows, then 2 x Stages + 1 mbarriers (full, empty, Q); 1 KB to align the base
/// to a swizzle atom.
template <int D, int BN, int Stages, int Cons>
__host__ __device__ constexpr std::size_t prefill_ws_smem_bytes() {
  return static_cast<std::size_t>(64 * Cons + Stages * 2 * BN) * D * 2u + 16u * Stages + 8u + 1024u;
}

/// The warp-specialised wgmma prefill (FlashAttention-3's structure, Shah et al. 2024).
/// Persistent: one CTA per SM walks work items (blocks of 64 x Cons packed rows of one (sequence,
/// KV head) pair). Warpgroup 0 is the producer: it gives most of its registers away (setmaxnreg)
/// and streams each item's Q and K/V tiles into a ring of Stages buffers: whole tiles of a
/// contiguous cache with TMA (tm; one thread issues the copies, their bytes complete the buffer's
/// "full" mbarrier), tail tiles, paged caches and Q with cp.async (each thread's copies of a
/// tile signal the buffer's "full" mbarrier when they land). An item's Q waits until the
/// consumers are done with the previous one's (bar_q). Warpgroups 1..Cons are consumers of 64
/// packed rows each. A consumer issues S = Q K_j^T and O += P_{j-1} V_{j-1} back to back, waits
/// for S only, runs the online softmax of tile j while the tensor cores do P V, then waits for
/// P V, frees buffer j - 1 (its "empty" mbarrier, one arrival per consumer warp), rescales O and
/// packs P_j. With PingPong the consumers take turns to issue their products. Items of the same
/// band of heads run close in time (see locate), and the producer loads the next item's tiles
/// while the consumers finish the current one.
template <class T, int D, int BN, int Stages, int Cons, int ProdRegs, int ConsRegs, bool PingPong, class View>
__global__ void __launch_bounds__((Cons + 1) * 128, 1)
    prefill_ws_kernel(const prefill_params<T, View> p, const __grid_constant__ kv_tensor_maps tm) {
#if defined(MLKV_WGMMA_ENABLED)
  static_assert(D == 64 || D == 128, "mlkv: the wgmma prefill takes head dim 64 or 128");
  static_assert(BN == 64 || BN == 128, "mlkv: the wgmma prefill takes 64 or 128 tokens per tile");
  static_assert(ProdRegs * 128 + ConsRegs * 128 * Cons <= 65536, "mlkv: register split over the CTA's share");
  constexpr int BM = 64 * Cons, CH = D / 8, DB = D / 64, NP = 128;
  constexpr std::uint32_t QB = BM * 128u, KB = BN * 128u;  // bytes of one 64-value column block
  extern __shared__ unsigned char smem_raw[];
  const std::uint32_t sQ = (smem_addr(smem_raw) + 1023u) & ~1023u;  // DB blocks of QB
  const std::uint32_t sK = sQ + DB * QB, sV = sK + Stages * DB * KB;  // buffer s at + s * DB * KB
  const std::uint32_t bar_full = sV + Stages * DB * KB, bar_empty = bar_full + 8u * Stages;  // Stages each
  const std::uint32_t bar_q = bar_empty + 8u * Stages;  // the consumers are done with Q

  pdl_wait();
  const int tid = threadIdx.x;
  if (tid == 0) {
#pragma unroll
    for (int s = 0; s < Stages; ++s) {
      mbar_init(bar_full + 8u * s, NP);        // one arrival per producer thread
      mbar_init(bar_empty + 8u * s, 4 * Cons);  // one arrival per consumer warp
    }
    mbar_init(bar_q, 4 * Cons);
    mbar_init_fence();
  }
  __syncthreads();

  // Persistent: CTA c takes work items c, c + gridDim.x, ... An item is a block of BM packed rows
  // of one (sequence, KV head) pair. Items come in bands of pairs whose K/V fit in half the L2,
  // one band after the other; inside a band, heaviest row blocks first (every pair's block Z - 1,
  // then Z - 2, ...), so the CTAs read few pairs' K/V at a time and each band ends light.
  const int Z = p.z_blocks, n_items = p.heads * Z, g = p.group;
  struct work {
    int b, hk, r0;
  };
  auto locate = [&](int item) {
    const int band = item / (p.band_heads * Z);
    const int band_first = band * p.band_heads;
    const int in_band = item - band_first * Z;
    const int hb = min(p.band_heads, p.heads - band_first);
    const int zi = in_band / hb;
    const long long pair = p.head0 + band_first + (in_band - zi * hb);
    work w;
    w.b = static_cast<int>(pair / p.kv.kv_heads);
    w.hk = static_cast<int>(pair - static_cast<long long>(w.b) * p.kv.kv_heads);
    w.r0 = (Z - 1 - zi) * BM;
    return w;
  };

  // Round k of CTA c: item k G + c on even rounds, k G + G - 1 - c on odd ones (G CTAs). Items get
  // lighter along the order, so the zig-zag evens out the CTAs' sums of work.
  auto next_item = [&](int k) {
    const int G = static_cast<int>(gridDim.x), c = static_cast<int>(blockIdx.x);
    return k * G + ((k & 1) ? G - 1 - c : c);
  };

  // Tile jt of an item whose last visible position is pos_last comes by TMA when the view is
  // contiguous, the maps are on and every token of the tile is in the context; otherwise (the tail
  // tile, paged views, no maps) by cp.async. The producer issues the copies by this test and the
  // consumers fence the async proxy by it, so the two sides cannot disagree.
  constexpr bool is_contiguous = std::is_same_v<View, contiguous_slot_view<T>>;
  const bool tma = is_contiguous && tm.on != 0;
  auto tile_by_tma = [&](int jt, int pos_last) { return tma && (jt + 1) * BN - 1 <= pos_last; };

  if (tid < NP) {  // ---- producer warpgroup
    setmaxnreg_dec<ProdRegs>();
    const T* const kb = kbase(p.kv);
    const T* const vb = vbase(p.kv);
    const int c = tid % CH, r_first = tid / CH;  // this thread's 16-byte column; rows NP / CH apart
    int ring = 0, loaded = 0;  // tiles streamed, items whose Q was loaded
    for (int k = 0; k * static_cast<int>(gridDim.x) < n_items; ++k) {
      const int item = next_item(k);
      if (item >= n_items) continue;
      const work w = locate(item);
      const seq_rows sr = read_seq_rows(p.kv, p.ab, w.b);
      const int R = sr.rows * g;
      if (!sr.ok || w.r0 >= R) continue;  // the consumers write NaN rows / nothing
      const int pos_last = sr.ctx - sr.rows + (min(R, w.r0 + BM) - 1) / g;
      const int n_tiles = pos_last / BN + 1;
      if (loaded > 0) mbar_wait(bar_q, (loaded - 1) & 1);
      ++loaded;
      for (int e = tid; e < BM * CH; e += NP) {
        const int r = e / CH, cq = e - r * CH;
        const int pr = w.r0 + r;
        const bool ok = pr < R;
        const int i = ok ? pr / g : 0, j = ok ? pr - i * g : 0;
        const T* src = p.q + ((static_cast<std::size_t>(sr.first) + i) * p.q_heads + w.hk * g + j) * D + cq * 8;
        cp_async_16(sQ + (cq >> 3) * QB + sw128(r, cq & 7), src, ok);
      }
      const std::size_t row0 = is_contiguous ? p.kv.offset(w.b, w.hk, 0) + static_cast<std::size_t>(c * 8) : 0;
      const int pair = w.b * p.kv.kv_heads + w.hk;
      for (int jt = 0; jt < n_tiles; ++jt, ++ring) {
        const int stage = ring % Stages;
        if (ring >= Stages) mbar_wait(bar_empty + 8u * stage, ((ring / Stages) - 1) & 1);
        const std::uint32_t bar = bar_full + 8u * stage;
        if (tile_by_tma(jt, pos_last)) {
          // Every token of the tile is in the context: TMA copies of K and V (one thread issues
          // them; their bytes complete the phase). A tail tile takes cp.async, whose zero fill keeps
          // P V finite over the tokens past the context.
          if (tid == 0) {
            mbar_expect_tx(bar, 2u * DB * KB);
#pragma unroll
            for (int cb = 0; cb < DB; ++cb) {
              tma_load_3d(sK + stage * DB * KB + cb * KB, &tm.k, cb * 64, jt * BN, pair, bar);
              tma_load_3d(sV + stage * DB * KB + cb * KB, &tm.v, cb * 64, jt * BN, pair, bar);
            }
          }
          cp_async_mbar_arrive(bar);  // also covers the item's Q on its first tile
          continue;
        }
        const std::uint32_t dk = sK + stage * DB * KB + (c >> 3) * KB, dv = sV + stage * DB * KB + (c >> 3) * KB;
#pragma unroll 2  // few registers: the producer runs on ProdRegs
        for (int r = r_first; r < BN; r += NP / CH) {
          const int tok = jt * BN + r;
          const bool ok = tok <= pos_last;
          std::size_t off;
          if constexpr (is_contiguous) {
            off = row0 + static_cast<std::size_t>(ok ? tok : 0) * D;  // one multiply-add per row
          } else {
            off = p.kv.offset(w.b, w.hk, ok ? tok : 0) + static_cast<std::size_t>(c * 8);
          }
          cp_async_16(dk + sw128(r, c & 7), kb + off, ok);
          cp_async_16(dv + sw128(r, c & 7), vb + off, ok);
        }
        cp_async_mbar_arrive(bar);  // an item's first tile's arrival covers its Q as well
      }
    }
    asm volatile("cp.async.wait_all;\n" ::: "memory");
    return;
  }

  // ---- consumer warpgroups
  setmaxnreg_inc<ConsRegs>();
  // Consumer index, through a shuffle so that the compiler knows it is warp-uniform (descriptors
  // and barrier ids then stay in uniform registers).
  const int cw = __shfl_sync(0xffffffffu, (tid - NP) >> 7, 0);
  const int lt = tid & 127, wl = lt >> 5, lane = tid & 31, gq = lane >> 2, tq = lane & 3;
  int wg_min_pos = 0, my_pos[2] = {0, 0};
  float o[D / 2];
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f}, corr[2] = {1.f, 1.f};
  bool rescale = true;  // warp-uniform: this tile moved the running maximum
  float s[BN / 2];
  std::uint32_t pa[BN / 16][4];

  // Descriptors are built once: a byte offset off within shared memory adds off / 16 to the start
  // address field (14 bits of addr / 16; every address here is below 256 KB, so it never carries).
  const std::uint64_t dq0 = gmma_desc(sQ + cw * 64 * 128, 16, 1024);
  const std::uint64_t dk0 = gmma_desc(sK, 16, 1024), dv0 = gmma_desc(sV, KB, 1024);
  auto issue_qk = [&](int stage) {
    const std::uint64_t dk = dk0 + ((stage * DB * KB) >> 4);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      const std::uint64_t da = dq0 + (((kk >> 2) * QB + (kk & 3) * 32) >> 4);
      const std::uint64_t db = dk + (((kk >> 2) * KB + (kk & 3) * 32) >> 4);
      if constexpr (BN == 128) {
        wgmma_ss_n128(s, da, db, kk > 0 ? 1 : 0, T{});
      } else {
        wgmma_ss_n64(s, da, db, kk > 0 ? 1 : 0, T{});
      }
    }
    wgmma_commit();
  };
  auto issue_pv = [&](int stage) {
    const std::uint64_t dv = dv0 + ((stage * DB * KB) >> 4);
    wgmma_fence();
#pragma unroll
    for (int kt = 0; kt < BN / 16; ++kt) {
      // V as B[tokens x D], N-major: 64-value column blocks KB apart, 8-token groups 1 KB apart.
      const std::uint64_t db = dv + ((kt * 2048) >> 4);
      if constexpr (D == 128) {
        wgmma_rs_n128(o, pa[kt], db, 1, T{});
      } else {
        wgmma_rs_n64(o, pa[kt], db, 1, T{});
      }
    }
    wgmma_commit();
  };
  // Online softmax of tile jt in place: s becomes exp2(s * scale - m_new), m (scaled), l and corr
  // updated. The scale is positive here (the launcher sends other scales to the kernel without
  // producer), so the maximum of the raw scores gives the scaled one and the scale folds into the
  // exponent's FMA. s[4 n + e]: row gq + 8 (e / 2), token 8 n + 2 tq + e % 2 of the tile.
  auto softmax = [&](int jt) {
    if ((jt + 1) * BN - 1 > wg_min_pos) {  // the diagonal: mask tokens past each row's position
#pragma unroll
      for (int i = 0; i < BN / 2; ++i) {
        if (jt * BN + 8 * (i >> 2) + 2 * tq + (i & 1) > my_pos[(i >> 1) & 1]) s[i] = -INFINITY;
      }
    }
    const float sc = p.scale_log2;
    const float mx[2] = {quad_row_max<BN>(s, 0) * sc, quad_row_max<BN>(s, 1) * sc};
    // Lazy rescaling (as FlashAttention-4 does): the running maximum moves, and O and l are
    // rescaled, only when some row of the warp grew by more than 8 (log2 units); otherwise the
    // stale maximum stays, the weights are at most 2^8 and O, l keep their scale.
    rescale = __any_sync(0xffffffffu, mx[0] > m[0] + 8.f || mx[1] > m[1] + 8.f);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      if (rescale) {
        const float m_new = fmaxf(m[h], mx[h]);
        corr[h] = fast_exp2(m[h] - (m_new == -INFINITY ? 0.f : m_new));
        m[h] = m_new;
      } else {
        corr[h] = 1.f;
      }
      const float base = m[h] == -INFINITY ? 0.f : m[h];
      float rs = 0.f;
#pragma unroll
      for (int n = 0; n < BN / 8; ++n) {
        s[4 * n + 2 * h] = fast_exp2(fmaf(s[4 * n + 2 * h], sc, -base));
        s[4 * n + 2 * h + 1] = fast_exp2(fmaf(s[4 * n + 2 * h + 1], sc, -base));
        rs += s[4 * n + 2 * h] + s[4 * n + 2 * h + 1];
      }
      l[h] = l[h] * corr[h] + rs;
    }
  };
  // After P V of the previous tile has finished: O *= corr, P = bf16/f16(s) as the A fragments.
  auto rescale_and_pack = [&]() {
    if (rescale) {
#pragma unroll
      for (int n = 0; n < D / 8; ++n) {
        o[4 * n] *= corr[0];
        o[4 * n + 1] *= corr[0];
        o[4 * n + 2] *= corr[1];
        o[4 * n + 3] *= corr[1];
      }
    }
#pragma unroll
    for (int kt = 0; kt < BN / 16; ++kt) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        pa[kt][h] = pack2<T>(s[8 * kt + 2 * h], s[8 * kt + 2 * h + 1]);          // tokens 16 kt + 2 tq, +1
        pa[kt][2 + h] = pack2<T>(s[8 * kt + 4 + 2 * h], s[8 * kt + 4 + 2 * h + 1]);  // tokens 16 kt + 8 + 2 tq, +1
      }
    }
  };
  // t: position in the ring of buffers (tiles streamed since the kernel started). generic: the
  // tile (or the item's Q, loaded with its first tile) came through cp.async, which writes through
  // the generic proxy while wgmma reads through the async one; TMA writes through the async proxy.
  auto wait_full = [&](int t, bool generic) {
    mbar_wait(bar_full + 8u * (t % Stages), (t / Stages) & 1);
    if (generic) fence_proxy_async();
  };
  auto release = [&](int t) {
    if (lane == 0) mbar_arrive(bar_empty + 8u * (t % Stages));
  };
  auto release_q = [&]() {
    if (lane == 0) mbar_arrive(bar_q);
  };
  // PingPong: the consumers take turns to issue their products (named barrier 1 + c is consumer
  // c's turn; FlashAttention-3's inter-warpgroup schedule), so one's softmax runs while the
  // tensor cores do another's products. Every consumer takes a turn per tile of every item;
  // consumer 0 goes first.
  auto turn_begin = [&]() {
    if constexpr (PingPong) named_bar_sync(1 + cw, 256);
  };
  auto turn_end = [&]() {
    if constexpr (PingPong) named_bar_arrive(1 + (cw + 1) % Cons, 256);
  };
  if (PingPong && cw == Cons - 1) named_bar_arrive(1, 256);

  int ring = 0;
  for (int k = 0; k * static_cast<int>(gridDim.x) < n_items; ++k) {
    const int item = next_item(k);
    if (item >= n_items) continue;
    const work w = locate(item);
    const seq_rows sr = read_seq_rows(p.kv, p.ab, w.b);
    if (!sr.ok) {
      prefill_nan_rows(p, sr, w.hk, w.r0, BM, D, tid - NP, Cons * 128);
      continue;
    }
    const int R = sr.rows * g;
    if (w.r0 >= R) continue;
    const int pos0 = sr.ctx - sr.rows;
    const int pos_last = pos0 + (min(R, w.r0 + BM) - 1) / g;
    const int n_tiles = pos_last / BN + 1;
    const int wr0 = w.r0 + cw * 64;  // this warpgroup's first packed row
    wg_min_pos = wr0 < R ? pos0 + wr0 / g : INT_MAX;
    const int wg_max_pos = wr0 < R ? pos0 + min(R - 1, wr0 + 63) / g : -1;
    const int my_tiles = wr0 < R ? min(n_tiles, wg_max_pos / BN + 1) : 0;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int pr = wr0 + wl * 16 + gq + h * 8;
      my_pos[h] = pr < R ? pos0 + pr / g : -1;
      m[h] = -INFINITY;
      l[h] = 0.f;
    }
#pragma unroll
    for (int i = 0; i < D / 2; ++i) o[i] = 0.f;

    // Tiles written through the generic proxy: those not by TMA, and the first (its Q came by cp.async).
    auto generic = [&](int jt) { return jt == 0 || !tile_by_tma(jt, pos_last); };
    if (my_tiles > 0) {
      wait_full(ring, true);
      turn_begin();
      issue_qk(ring % Stages);
      turn_end();
      wgmma_wait<0>();
      reg_fence(s);
      if (my_tiles == 1) release_q();
      softmax(0);
      rescale_and_pack();
      for (int jt = 1; jt < my_tiles; ++jt) {
        wait_full(ring + jt, generic(jt));
        turn_begin();
        issue_qk((ring + jt) % Stages);
        issue_pv((ring + jt - 1) % Stages);
        turn_end();
        wgmma_wait<1>();  // S of tile jt is ready; P V of tile jt - 1 may still run
        reg_fence(s);
        if (jt == my_tiles - 1) release_q();  // this item's last Q K^T is done
        softmax(jt);
        wgmma_wait<0>();
        reg_fence(o);
        reg_fence(pa);
        release(ring + jt - 1);
        rescale_and_pack();
      }
      issue_pv((ring + my_tiles - 1) % Stages);
      wgmma_wait<0>();
      reg_fence(o);
      reg_fence(pa);
      release(ring + my_tiles - 1);
    } else {
      release_q();
    }
    for (int jt = my_tiles; jt < n_tiles; ++jt) {  // tiles past this warpgroup's rows: pass them on
      mbar_wait(bar_full + 8u * ((ring + jt) % Stages), ((ring + jt) / Stages) & 1);
      release(ring + jt);
      turn_begin();
      turn_end();
    }
    ring += n_tiles;

    store_wgmma_rows<T, D>(p, o, l, sr.first, w.hk, wr0 + wl * 16 + gq, R, tq);
  }
  if (PingPong && cw == 0) turn_begin();  // the last consumer's last turn ends at consumer 0
#else
  __trap();  // compiled for a target without wgmma: the launcher never picks this kernel there
#endif
}

/// True when this build and the current device run the wgmma prefill for head dim d.
inline bool prefill_sm90_available(int d) {
#if defined(MLKV_CUDA_SM90A)
  return (d == 64 || d == 128) && device_cc() == 90 && prefill_force_mma.load(std::memory_order_relaxed) == 0;
#else
  (void)d;
  return false;
#endif
}

template <class T, int D, int BN, int MinBlocks, class View>
void launch_prefill_sm90_shape(const prefill_params<T, View>& p, cudaStream_t stream) {
  const long long packed = static_cast<long long>(p.ab.max_rows) * p.group;
  const dim3 grid(static_cast<unsigned>(p.ab.batch), static_cast<unsigned>(p.kv.kv_heads),
                  static_cast<unsigned>((packed + prefill_bm - 1) / prefill_bm));
  constexpr std::size_t smem = prefill_sm90_smem_bytes<D, BN>();
  const auto kernel = prefill_sm90_kernel<T, D, BN, MinBlocks, View>;
  MLKV_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  launch_pdl(kernel, grid, dim3(prefill_sm90_threads), smem, stream, /*programmatic=*/false, p);
}

/// cuTensorMapEncodeTiled, through the runtime (no link to the driver library); null where the
/// driver has none.
using tensor_map_encoder = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*,
                                        const cuuint64_t*, const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave,
                                        CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);
inline tensor_map_encoder tensor_map_encode_fn() {
  static const tensor_map_encoder fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult found{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &found) != cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      (void)cudaGetLastError();
      return static_cast<tensor_map_encoder>(nullptr);
    }
    return reinterpret_cast<tensor_map_encoder>(f);
  }();
  return fn;
}

/// The K and V tensor maps of a contiguous view (on = 0 for other views, when `want` is false or
/// when the driver declines the view, e.g. a base address that is not 16-byte aligned: the kernel
/// then loads with cp.async).
template <class T, int D, int BN, class View>
kv_tensor_maps make_kv_tensor_maps(const View& kv, bool want) {
  kv_tensor_maps m{};
  m.on = 0;
  if constexpr (std::is_same_v<View, contiguous_slot_view<T>>) {
    const tensor_map_encoder encode = want ? tensor_map_encode_fn() : nullptr;
    if (encode == nullptr || kv.capacity <= 0 || kv.batch <= 0 || kv.kv_heads <= 0) return m;
    const CUtensorMapDataType type =
        std::is_same_v<T, bf16> ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
    const cuuint64_t dims[3] = {static_cast<cuuint64_t>(D), static_cast<cuuint64_t>(kv.capacity),
                                static_cast<cuuint64_t>(kv.batch) * static_cast<cuuint64_t>(kv.kv_heads)};
    const cuuint64_t strides[2] = {static_cast<cuuint64_t>(D) * sizeof(T),
                                   static_cast<cuuint64_t>(kv.capacity) * D * sizeof(T)};
    const cuuint32_t box[3] = {64u, static_cast<cuuint32_t>(BN), 1u};
    const cuuint32_t unit[3] = {1u, 1u, 1u};
    auto one = [&](CUtensorMap* map, const T* base) {
      return encode(map, type, 3, const_cast<T*>(base), dims, strides, box, unit, CU_TENSOR_MAP_INTERLEAVE_NONE,
                    CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                    CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
    };
    if (one(&m.k, kv.k) && one(&m.v, kv.v)) m.on = 1;
  } else {
    (void)kv;
    (void)want;
  }
  return m;
}

template <class T, int D, int BN, int Stages, int Cons, int ProdRegs, int ConsRegs, bool PingPong, class View>
void launch_prefill_ws(const prefill_params<T, View>& p, cudaStream_t stream, bool use_tma) {
  constexpr int BM = 64 * Cons;
  const long long packed = static_cast<long long>(p.ab.max_rows) * p.group;
  constexpr std::size_t smem = prefill_ws_smem_bytes<D, BN, Stages, Cons>();
  const auto kernel = prefill_ws_kernel<T, D, BN, Stages, Cons, ProdRegs, ConsRegs, PingPong, View>;
  MLKV_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  // Bands: at most as many (sequence, KV head) pairs as half the L2 holds at the longest context
  // (prefill_band_divisor; L2 / 4 and / 8 were no better on the benchmark's rows).
  const int Z = static_cast<int>((packed + BM - 1) / BM);
  const long long pair_bytes = static_cast<long long>(p.ab.max_context) * D * 2 * static_cast<long long>(sizeof(T));
  const long long pairs = static_cast<long long>(p.ab.batch) * p.kv.kv_heads;
  const long long fit =
      device_l2_bytes() / std::max(1, prefill_band_divisor.load(std::memory_order_relaxed)) / (pair_bytes > 0 ? pair_bytes : 1);
  // Bands of equal size: a small last band would leave SMs idle (NOTES.md v9).
  const long long cap = std::clamp<long long>(fit, 1, std::min<long long>(pairs, INT_MAX / Z));
  const long long n_bands = (pairs + cap - 1) / cap;
  const int band = static_cast<int>((pairs + n_bands - 1) / n_bands);
  const kv_tensor_maps maps = make_kv_tensor_maps<T, D, BN>(p.kv, use_tma);
  // One launch covers whole bands and at most INT_MAX CTAs.
  const long long per_launch = static_cast<long long>(INT_MAX / Z / band) * band;
  for (long long first = 0; first < pairs; first += per_launch) {
    prefill_params<T, View> part = p;
    part.head0 = first;
    part.heads = static_cast<int>(std::min(per_launch, pairs - first));
    part.band_heads = band;
    part.z_blocks = Z;
    const long long items = static_cast<long long>(part.heads) * Z;
    const dim3 grid(static_cast<unsigned>(std::min<long long>(items, device_sms())));  // persistent: a CTA per SM
    launch_pdl(kernel, grid, dim3((Cons + 1) * 128), smem, stream, /*programmatic=*/false, part, maps);
  }
}

/// The wgmma prefill: the warp-specialised kernel with 128-token tiles and ping-pong consumers;
/// head dim 64 with three consumer warpgroups (192 packed rows: the exponentials cost as much as
/// the products, so a third warpgroup hides more of them) and 4 buffers, head dim 128 with two
/// consumers (128 rows) and 3 buffers (230 KB of shared memory). A softmax scale <= 0 (which the
/// warp-specialised kernel does not fold into its exponentials) and variant 2 take the kernel
/// without producer (64-token tiles, two CTAs per SM); variant 3 (bench/cuda) is the
/// warp-specialised kernel without ping-pong, variant 4 the warp-specialised kernel without TMA.
template <class T, int D, class View>
void launch_prefill_sm90(const prefill_params<T, View>& p, cudaStream_t stream) {
  constexpr int cons = D == 64 ? 3 : 2, stages = D == 64 ? 4 : 3, prod_regs = D == 64 ? 32 : 40,
                cons_regs = D == 64 ? 160 : 232;
  const int variant = p.scale_log2 > 0.f ? prefill_sm90_variant.load(std::memory_order_relaxed) : 2;
  if (variant == 2) {
    launch_prefill_sm90_shape<T, D, 64, 2>(p, stream);
  } else if (variant == 3) {
    launch_prefill_ws<T, D, 128, stages, cons, prod_regs, cons_regs, false>(p, stream, true);
  } else {
    launch_prefill_ws<T, D, 128, stages, cons, prod_regs, cons_regs, true>(p, stream, variant != 4);
  }
}

}  // namespace detail
}  // namespace mlkv::cuda
