#pragma once
/// \file cuda/common.cuh
/// Pieces shared by the CUDA kernels: error checks, storage-type traits for the tensor cores,
/// the PTX wrappers (cp.async, ldmatrix, mma.sync), device views of the slot views, and the
/// host-side argument checks every launcher runs before it launches anything.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include "../cache/view.hpp"
#include "../dtype.hpp"
#include "../error.hpp"
#include "batch.hpp"

/// Throws mlkv::error naming the CUDA error and the call when `expr` does not return cudaSuccess.
#define MLKV_CUDA_CHECK(expr)                                                                       \
  do {                                                                                              \
    const cudaError_t mlkv_cuda_err_ = (expr);                                                      \
    if (mlkv_cuda_err_ != cudaSuccess) {                                                            \
      ::mlkv::detail::fail("CUDA error ", cudaGetErrorName(mlkv_cuda_err_), " (",                   \
                           cudaGetErrorString(mlkv_cuda_err_), ") from ", #expr);                   \
    }                                                                                               \
  } while (false)

namespace mlkv::cuda {

/// True for the storage types the CUDA kernels take (the tensor cores' 16-bit inputs).
template <class T>
inline constexpr bool is_cuda_storage_v = std::is_same_v<T, f16> || std::is_same_v<T, bf16>;

namespace detail {

// ---- slot views on the device ---------------------------------------------------------------
// A kernel addresses row (seq, head, token) as kbase(view) + view.offset(seq, head, token), the
// same offset for K and V; this gives the contiguous and the paged view one code path.

template <class T>
__device__ __forceinline__ const T* kbase(const contiguous_slot_view<T>& v) { return v.k; }
template <class T>
__device__ __forceinline__ const T* vbase(const contiguous_slot_view<T>& v) { return v.v; }
template <class T>
__device__ __forceinline__ const T* kbase(const paged_slot_view<T>& v) { return v.pages + v.k_offset; }
template <class T>
__device__ __forceinline__ const T* vbase(const paged_slot_view<T>& v) { return v.pages + v.v_offset; }

/// Tokens sequence `seq` can address, or 0 when its block count is outside [0, max_blocks]
/// (a corrupt table must not make a kernel read past block_table's row).
template <class T>
__device__ __forceinline__ int device_capacity(const contiguous_slot_view<T>& v, int /*seq*/) { return v.capacity; }
template <class T>
__device__ __forceinline__ int device_capacity(const paged_slot_view<T>& v, int seq) {
  const int blocks = v.seq_blocks[seq];
  return blocks < 0 || blocks > v.max_blocks ? 0 : blocks * v.page_tokens;
}

/// The most tokens any sequence of the view can address, known on the host.
template <class T>
inline long long host_capacity(const contiguous_slot_view<T>& v) { return v.capacity; }
template <class T>
inline long long host_capacity(const paged_slot_view<T>& v) {
  return static_cast<long long>(v.max_blocks) * v.page_tokens;
}

inline bool aligned16(const void* p) { return (reinterpret_cast<std::uintptr_t>(p) & 15u) == 0; }

/// Host checks of a slot view: non-null, 16-byte aligned rows, sane sizes.
template <class T>
void check_view(const contiguous_slot_view<T>& v) {
  MLKV_CHECK(v.k != nullptr && v.v != nullptr, "slot view has a null K or V pointer");
  MLKV_CHECK(aligned16(v.k) && aligned16(v.v), "slot view K and V must be 16-byte aligned device pointers");
  MLKV_CHECK(v.batch >= 1 && v.kv_heads >= 1 && v.capacity >= 1, "slot view has batch ", v.batch, ", KV heads ",
             v.kv_heads, " and capacity ", v.capacity, "; each must be at least 1");
}
template <class T>
void check_view(const paged_slot_view<T>& v) {
  MLKV_CHECK(v.pages != nullptr && v.block_table != nullptr && v.seq_blocks != nullptr,
             "paged slot view has a null pages, block table or block count pointer");
  MLKV_CHECK(aligned16(v.pages + v.k_offset) && aligned16(v.pages + v.v_offset) &&
                 (v.page_stride * sizeof(T)) % 16 == 0,
             "paged slot view K and V rows must be 16-byte aligned (pages, offsets and page stride)");
  MLKV_CHECK(v.batch >= 1 && v.kv_heads >= 1 && v.page_tokens >= 1 && v.max_blocks >= 1,
             "paged slot view has batch ", v.batch, ", KV heads ", v.kv_heads, ", page tokens ", v.page_tokens,
             " and max blocks ", v.max_blocks, "; each must be at least 1");
}

/// Checks shared by every attention launcher (the CPU's check_attention, minus what lives on the
/// device: the context lengths and row offsets are checked by the kernels, which write NaN rows
/// for a sequence whose lengths are out of range instead of reading out of bounds).
template <class View, class T>
void check_attention_args(const View& kv, int q_heads, const T* q, const T* out, const attention_batch& ab,
                          float scale) {
  check_view(kv);
  MLKV_CHECK(cuda_head_dim_supported(kv.head_dim), "head dim ", kv.head_dim,
             " has no CUDA kernel; compiled head dims: 64, 80, 96, 128");
  MLKV_CHECK(q_heads >= 1 && q_heads % kv.kv_heads == 0, "query heads (", q_heads,
             ") must be a positive multiple of KV heads (", kv.kv_heads, ")");
  MLKV_CHECK(ab.batch >= 0 && ab.batch <= kv.batch, "attention batch (", ab.batch, ") must be in [0, ", kv.batch,
             "]");
  MLKV_CHECK(std::isfinite(scale), "softmax scale (", scale, ") must be finite");
  if (ab.batch == 0) return;
  MLKV_CHECK(ab.context != nullptr, "context lengths are null");
  MLKV_CHECK(ab.max_context >= 1 && ab.max_context <= host_capacity(kv), "max context (", ab.max_context,
             ") must be in [1, ", host_capacity(kv), "] (the view's capacity)");
  MLKV_CHECK(ab.max_rows >= 0 && ab.max_rows <= ab.max_context, "max rows (", ab.max_rows, ") must be in [0, ",
             ab.max_context, "] (max context)");
  MLKV_CHECK(ab.total_rows >= 0, "total rows (", ab.total_rows, ") must not be negative");
  MLKV_CHECK(q != nullptr && out != nullptr, "query or output pointer is null");
  MLKV_CHECK(aligned16(q) && aligned16(out), "query and output must be 16-byte aligned device pointers");
}

/// The current device's multiprocessor count and compute capability (major * 10 + minor).
inline void device_info(int& sms, int& cc) {
  int dev = 0;
  MLKV_CUDA_CHECK(cudaGetDevice(&dev));
  int major = 0, minor = 0;
  MLKV_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  MLKV_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  MLKV_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
  cc = major * 10 + minor;
}

/// f(dev) for the current device, computed once per device (devices 0-15; others every call).
template <class V, class F>
V per_device_cached(std::atomic<V> (&cache)[16], F&& f) {
  int dev = 0;
  MLKV_CUDA_CHECK(cudaGetDevice(&dev));
  const bool cached = dev >= 0 && dev < 16;
  if (cached) {
    const V c = cache[dev].load(std::memory_order_relaxed);
    if (c != 0) return c;
  }
  const V v = f(dev);
  if (cached) cache[dev].store(v, std::memory_order_relaxed);
  return v;
}

/// The current device's multiprocessor count, cached per device.
inline int device_sms() {
  static std::atomic<int> cache[16];
  return per_device_cached(cache, [](int) {
    int sms = 0, cc = 0;
    device_info(sms, cc);
    return sms;
  });
}

/// The current device's L2 size in bytes, cached per device.
inline long long device_l2_bytes() {
  static std::atomic<long long> cache[16];
  return per_device_cached(cache, [](int dev) {
    int l2 = 0;
    MLKV_CUDA_CHECK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, dev));
    return l2 > 0 ? static_cast<long long>(l2) : (1ll << 20);
  });
}

/// The current device's compute capability (major * 10 + minor), cached per device.
inline int device_cc() {
  static std::atomic<int> cache[16];
  return per_device_cached(cache, [](int) {
    int sms = 0, cc = 0;
    device_info(sms, cc);
    return cc;
  });
}

/// Benchmarking knob (bench/cuda only): 0 turns programmatic dependent launch off.
inline std::atomic<int> pdl_enabled{1};

/// A launch's limit in gridDim.y and gridDim.z.
inline constexpr int max_grid_yz = 65535;

/// Calls f(first, count) over consecutive parts of [0, n) of at most max_grid_yz items each: one
/// launch per part where the items are a grid's y or z dimension (sequences of a batch).
template <class F>
void for_each_grid_part(int n, F&& f) {
  for (int first = 0; first < n; first += max_grid_yz) f(first, n - first < max_grid_yz ? n - first : max_grid_yz);
}

/// Launches `kernel` on `stream`; with `programmatic`, on sm_90 and later, with programmatic
/// dependent launch: the kernel may start while the previous kernel of the stream finishes, so it
/// must call pdl_wait() before its first global memory access (every mlkv kernel does; only L2
/// prefetches of addresses known on the host, prefetch_l2_bulk, come before it).
template <class... Params, class... Args>
void launch_pdl(void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t smem, cudaStream_t stream,
                bool programmatic, Args&&... args) {
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cfg.attrs = attr;
  cfg.numAttrs = programmatic && device_cc() >= 90 && pdl_enabled.load(std::memory_order_relaxed) != 0 ? 1 : 0;
  MLKV_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...));
}

/// Calls f(std::integral_constant<int, D>{}) for the compiled head dim d; throws for any other.
template <class F>
decltype(auto) with_head_dim(int d, F&& f) {
  switch (d) {
    case 64: return f(std::integral_constant<int, 64>{});
    case 80: return f(std::integral_constant<int, 80>{});
    case 96: return f(std::integral_constant<int, 96>{});
    case 128: return f(std::integral_constant<int, 128>{});
    default: ::mlkv::detail::fail("head dim ", d, " has no CUDA kernel; compiled head dims: 64, 80, 96, 128");
  }
}

// ---- storage types on the tensor cores ----------------------------------------------------------

/// Two floats -> two T in one 32-bit register (first in the low half), round to nearest even.
template <class T>
__device__ __forceinline__ std::uint32_t pack2(float lo, float hi) {
  std::uint32_t u;
  if constexpr (std::is_same_v<T, bf16>) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    memcpy(&u, &h, 4);
  } else {
    const __half2 h = __floats2half2_rn(lo, hi);
    memcpy(&u, &h, 4);
  }
  return u;
}

/// The two T of a register, as floats (exact).
template <class T>
__device__ __forceinline__ float2 unpack2(std::uint32_t u) {
  if constexpr (std::is_same_v<T, bf16>) {
    return make_float2(__uint_as_float(u << 16), __uint_as_float(u & 0xffff0000u));
  } else {
    __half2 h;
    memcpy(&h, &u, 4);
    return __half22float2(h);
  }
}

/// One float -> T bits, round to nearest even.
template <class T>
__device__ __forceinline__ std::uint16_t to_bits(float x) {
  if constexpr (std::is_same_v<T, bf16>) {
    return __bfloat16_as_ushort(__float2bfloat16_rn(x));
  } else {
    return __half_as_ushort(__float2half_rn(x));
  }
}

/// T bits -> float (exact).
template <class T>
__device__ __forceinline__ float from_bits(std::uint16_t b) {
  if constexpr (std::is_same_v<T, bf16>) {
    return __uint_as_float(static_cast<std::uint32_t>(b) << 16);
  } else {
    return __half2float(__ushort_as_half(b));
  }
}

/// D = A * B + D on the tensor cores, m16n8k16, f32 accumulators (PTX ISA, "mma.sync"):
/// a: 4 registers of the 16x16 A fragment, b: 2 registers of the 16x8 B fragment.
template <class T>
__device__ __forceinline__ void mma_16816(float (&d)[4], const std::uint32_t (&a)[4], std::uint32_t b0,
                                          std::uint32_t b1) {
  if constexpr (std::is_same_v<T, bf16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

__device__ __forceinline__ std::uint32_t smem_addr(const void* p) {
  return static_cast<std::uint32_t>(__cvta_generic_to_shared(p));
}

/// Four 8x8 b16 matrices from shared memory; lane i gives the row address of matrix i / 8.
__device__ __forceinline__ void ldmatrix_x4(std::uint32_t (&r)[4], std::uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
/// As ldmatrix_x4, each matrix transposed.
__device__ __forceinline__ void ldmatrix_x4_trans(std::uint32_t (&r)[4], std::uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

/// 16 bytes global -> shared without passing through registers (L2 only: streamed data). When
/// `valid` is false nothing is read and the 16 bytes are zero-filled.
__device__ __forceinline__ void cp_async_16(std::uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
/// Waits until at most N committed groups of this thread are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

/// 2^x (ex2.approx: about 2 ulp; exp2(-inf) = 0).
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

/// Programmatic dependent launch (sm_90): let the next kernel of the stream start launching, and
/// wait for the previous one's memory. No-ops before sm_90.
__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}
/// Prefetches `bytes` (a multiple of 16) at p (16-byte aligned) into the L2 with one bulk request
/// (sm_90; nothing before). A hint without data, so legal before pdl_wait(): the L2 is where every
/// SM's writes land (a line the previous kernel writes afterwards is updated there), and the reads
/// after the wait that find it there bypass the L1 (cp.async.cg).
__device__ __forceinline__ void prefetch_l2_bulk(const void* p, unsigned bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" ::"l"(p), "r"(bytes) : "memory");
#endif
}

/// A 16-byte vector of NaN in T (all bits of the quiet NaN pattern).
template <class T>
__device__ __forceinline__ uint4 nan_vec() {
  const std::uint32_t w = std::is_same_v<T, bf16> ? 0x7fc07fc0u : 0x7e007e00u;
  return make_uint4(w, w, w, w);
}

}  // namespace detail
}  // namespace mlkv::cuda
