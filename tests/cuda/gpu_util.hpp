#pragma once
// Helpers of the GPU tests: checked CUDA calls, device buffers, a stream, host-side storage-type
// conversions, the error bounds of the tensor-core kernels, and device caches (contiguous and
// paged) laid out as the library lays them out.

#include <cuda_runtime_api.h>

#include <mlkv/cache/contiguous.hpp>
#include <mlkv/cache/view.hpp>
#include <mlkv/dtype.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace mlkv_cuda_test {

/// Throws (the test fails with the message) when a CUDA call does not return cudaSuccess.
inline void cuda_ok(cudaError_t e, const char* what, const char* file, int line) {
  if (e != cudaSuccess) {
    throw std::runtime_error(std::string("CUDA error ") + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) +
                             ") from " + what + " at " + file + ":" + std::to_string(line));
  }
}
#define CUDA_OK(expr) ::mlkv_cuda_test::cuda_ok((expr), #expr, __FILE__, __LINE__)

/// A device array of n values of T.
template <class T>
struct dbuf {
  T* p = nullptr;
  std::size_t n = 0;
  dbuf() = default;
  explicit dbuf(std::size_t count) : n(count) {
    if (n != 0) CUDA_OK(cudaMalloc(reinterpret_cast<void**>(&p), n * sizeof(T)));
  }
  dbuf(const dbuf&) = delete;
  dbuf& operator=(const dbuf&) = delete;
  dbuf(dbuf&& o) noexcept : p(std::exchange(o.p, nullptr)), n(std::exchange(o.n, 0)) {}
  dbuf& operator=(dbuf&& o) noexcept {
    std::swap(p, o.p);
    std::swap(n, o.n);
    return *this;
  }
  ~dbuf() {
    if (p != nullptr) cudaFree(p);
  }
  std::size_t bytes() const { return n * sizeof(T); }
  void upload(const std::vector<T>& h) {
    if (h.size() != n) throw std::runtime_error("upload of " + std::to_string(h.size()) + " values into " + std::to_string(n));
    if (n != 0) CUDA_OK(cudaMemcpy(p, h.data(), bytes(), cudaMemcpyHostToDevice));
  }
  std::vector<T> download() const {
    std::vector<T> h(n);
    if (n != 0) CUDA_OK(cudaMemcpy(h.data(), p, bytes(), cudaMemcpyDeviceToHost));
    return h;
  }
  /// Every byte 0xff: NaN in f16, bf16 and f32, so an unwritten value fails any comparison.
  void poison() {
    if (n != 0) CUDA_OK(cudaMemset(p, 0xff, bytes()));
  }
};

/// A non-default stream (blocking with respect to the legacy stream the copies use).
struct stream {
  cudaStream_t s = nullptr;
  stream() { CUDA_OK(cudaStreamCreate(&s)); }
  ~stream() { cudaStreamDestroy(s); }
  stream(const stream&) = delete;
  stream& operator=(const stream&) = delete;
  void sync() const {
    CUDA_OK(cudaGetLastError());
    CUDA_OK(cudaStreamSynchronize(s));
  }
};

template <class T>
std::vector<T> quantize(const std::vector<float>& x) {
  std::vector<T> y(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) y[i] = mlkv::from_float<T>(x[i]);
  return y;
}
template <class T>
std::vector<double> widen(const std::vector<T>& x) {
  std::vector<double> y(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) y[i] = static_cast<double>(mlkv::to_float(x[i]));
  return y;
}
inline bool is_poison(std::uint16_t bits) { return bits == 0xffffu; }

/// Error bounds of the tensor-core kernels, relative to the largest |output| (as rel_err):
/// the inputs of the two matrix products are in the storage type (q, K and V as given; the
/// softmax weights P rounded to it, with the normaliser summed from the rounded weights) and the
/// output is rounded to it, so against the oracle on the stored values (q as the kernel received
/// it) the error is that of rounding P and the output: each at most half an ulp of T, 2^-8
/// relative for bf16 and 2^-11 for f16. The bounds leave about 2x over that sum.
template <class T>
inline constexpr double stored_bound = std::is_same_v<T, mlkv::f16> ? 2e-3 : 1.6e-2;
/// Against the exact inputs (unrounded q, K, V, double rotary): add the rounding of q, K and V.
template <class T>
inline constexpr double exact_bound = std::is_same_v<T, mlkv::f16> ? 4e-3 : 3e-2;

/// Largest errors seen (stored, exact) per storage type; printed with MLKV_TEST_VERBOSE=1.
template <class T>
std::pair<double, double>& worst() {
  static std::pair<double, double> w{0.0, 0.0};
  static const struct reporter {
    ~reporter() {
      if (std::getenv("MLKV_TEST_VERBOSE") != nullptr) {
        std::printf("cuda worst error %s: %.3g vs stored values (bound %.3g), %.3g vs exact inputs (bound %.3g)\n",
                    std::string(mlkv::name_of(mlkv::dtype_of<T>)).c_str(), w.first, stored_bound<T>, w.second,
                    exact_bound<T>);
      }
    }
  } r;
  return w;
}

/// A device cache of geometry S in both layouts: the contiguous cache (the library's own class
/// over device memory, for its slot views) and a paged pool whose pages are handed out in a
/// random order, page_tokens tokens each. Both start poisoned.
template <mlkv::model_shape S, class T>
struct device_cache {
  static constexpr int slots = S.kv_layers, Hkv = S.kv_heads, D = S.head_dim;
  int batch, capacity, page_tokens, blocks;
  std::size_t page_stride;
  int num_pages;
  dbuf<T> contig;
  mlkv::kv_cache<S, T> layout;  // addresses only; lengths are tracked by the test
  dbuf<T> pages;
  std::vector<std::int32_t> table;  // [batch, blocks]
  dbuf<std::int32_t> d_table, d_seq_blocks;

  device_cache(int b, int cap, int pt, std::uint64_t seed)
      : batch(b),
        capacity(cap),
        page_tokens(pt),
        blocks((cap + pt - 1) / pt),
        page_stride(2u * slots * static_cast<std::size_t>(Hkv) * pt * D),
        num_pages(b * ((cap + pt - 1) / pt) + 2),
        contig(mlkv::kv_cache<S, T>::elements(b, cap)),
        layout(std::span<T>(contig.p, contig.n), b, cap),
        pages(static_cast<std::size_t>(num_pages) * page_stride),
        table(static_cast<std::size_t>(b) * blocks),
        d_table(table.size()),
        d_seq_blocks(static_cast<std::size_t>(b)) {
    contig.poison();
    pages.poison();
    std::vector<std::int32_t> perm(static_cast<std::size_t>(num_pages));
    std::iota(perm.begin(), perm.end(), 0);
    std::mt19937_64 g(seed);
    std::shuffle(perm.begin(), perm.end(), g);
    std::copy(perm.begin(), perm.begin() + static_cast<std::ptrdiff_t>(table.size()), table.begin());
    d_table.upload(table);
    set_tokens(std::vector<int>(static_cast<std::size_t>(b), 0));
  }
  /// Maps just enough blocks for each sequence's token count.
  void set_tokens(const std::vector<int>& tokens) {
    std::vector<std::int32_t> sb(tokens.size());
    for (std::size_t i = 0; i < tokens.size(); ++i) sb[i] = (tokens[i] + page_tokens - 1) / page_tokens;
    d_seq_blocks.upload(sb);
  }
  mlkv::contiguous_slot_view<T> contiguous(int slot) const { return layout.slot_view(slot); }
  /// (Pages of a power-of-two size address by shifts, the others by division, as in a paged cache.)
  mlkv::paged_slot_view<T> paged(int slot) const {
    return mlkv::paged_slot_view<T>::over_pool(pages.p, d_table.p, d_seq_blocks.p, batch, Hkv, D, page_tokens, blocks,
                                               slots, slot);
  }
  /// Host copies of one slot: [batch, Hkv, capacity, D] for K and V, read from the contiguous
  /// cache, and the same rows gathered from the paged pool.
  struct slot_rows {
    std::vector<T> k, v;
  };
  slot_rows download_contiguous(int slot) const {
    const std::size_t slab = static_cast<std::size_t>(batch) * Hkv * capacity * D;
    slot_rows r{std::vector<T>(slab), std::vector<T>(slab)};
    CUDA_OK(cudaMemcpy(r.k.data(), contig.p + 2 * slot * slab, slab * sizeof(T), cudaMemcpyDeviceToHost));
    CUDA_OK(cudaMemcpy(r.v.data(), contig.p + (2 * slot + 1) * slab, slab * sizeof(T), cudaMemcpyDeviceToHost));
    return r;
  }
  slot_rows gather_paged(int slot, const std::vector<T>& all_pages) const {
    const std::size_t slab = static_cast<std::size_t>(batch) * Hkv * capacity * D;
    slot_rows r{std::vector<T>(slab), std::vector<T>(slab)};
    const auto v = paged(slot);
    for (int b = 0; b < batch; ++b) {
      for (int h = 0; h < Hkv; ++h) {
        for (int t = 0; t < capacity; ++t) {
          const std::size_t page = static_cast<std::size_t>(table[static_cast<std::size_t>(b) * blocks + t / page_tokens]);
          const std::size_t src = page * page_stride + (static_cast<std::size_t>(h) * page_tokens + t % page_tokens) * D;
          const std::size_t dst = ((static_cast<std::size_t>(b) * Hkv + h) * capacity + t) * D;
          for (int d = 0; d < D; ++d) {
            r.k[dst + d] = all_pages[v.k_offset + src + d];
            r.v[dst + d] = all_pages[v.v_offset + src + d];
          }
        }
      }
    }
    return r;
  }
  /// Index of (b, h, t, d) in a downloaded slot.
  std::size_t at(int b, int h, int t, int d) const {
    return ((static_cast<std::size_t>(b) * Hkv + h) * capacity + t) * D + d;
  }
};

}  // namespace mlkv_cuda_test
