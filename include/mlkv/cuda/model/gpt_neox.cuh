#pragma once
/// \file cuda/model/gpt_neox.cuh
/// The GPT-NeoX / Pythia decoder with MLKV sharing on the GPU: the same model as the CPU one
/// (model/gpt_neox.hpp), over a paged KV cache in device memory.
///
///   - linear layers on cuBLAS (bf16 or f32 weights and inputs, f32 outputs and accumulation;
///     f32 runs plain f32 arithmetic, no TF32), the residual stream in f32: decode steps through
///     cuBLASLt with an algorithm timed per GEMM shape when the step's graph is made
///     (cuda_model_options::gemm_algos), forward() through cublasGemmEx; decode steps of at most
///     cuda_model_options::gemv_rows sequences (4) through mlkv's matrix-vector kernel instead
///     (model_detail::gemv_kernel: its weight reads start under the previous kernel);
///   - small fused kernels (cuda/model/kernels.cuh): residual add + one or both LayerNorms of a
///     row, Q/K/V split with bias and the queries' rotary (forward()), bias + activation, argmax;
///   - the library's CUDA kernels: append_kv (owner layers of forward(), keys rotated on the way
///     in), prefill_attention for chunks of rows, and for decode steps the decode kernel in its
///     fused form (detail::decode_attention_qkv): it takes the queries from the f32 Q/K/V
///     projection (bias, rotary) and on owner layers writes the new token's K (rotated) and V
///     into the cache itself, so a decode step has no split kernel;
///   - in decode steps the K/V copies carry an L2 evict-first policy: the K/V of a layer is read
///     once, and the activations and weights of the kernels around the decode kernel stay in the
///     L2 instead (NOTES.md v7 of bench/cuda_model: -40 to -57 us per step at batch 512);
///   - with the parallel residual, a decode step's MLP runs on a second stream of the model's,
///     beside the attention branch (both read the layer's LayerNorms; the next layer waits for
///     both), so the MLP's GEMMs hide under the attention's latency; its GEMMs are planned for
///     half of the SMs (cuda_model_options::branch_sms) and, at batches of 64 rows or more, the
///     graph runs the attention branch at a higher stream priority than the MLP, so the decode
///     kernel's CTAs are placed first and the MLP's fill in around them;
///   - `decode()` runs a decode step as a CUDA graph captured once per batch size and replayed:
///     sequences may join (after a `forward()` of their prompt) and leave between steps, since a
///     step only changes the contents of the device buffers the graph reads (tokens, context
///     lengths, block tables), never the graph itself;
///   - logits are computed in chunks of `logits_chunk` rows, so neither they nor the activations
///     (a few tens of KB per row) cap the batch; the KV cache does.
///
/// Host functions take a cudaStream_t, allocate nothing per step (a graph, its decode workspace
/// and the scratch are made on the first step of a batch size or at construction; timing the
/// GEMM algorithms of a new batch size takes a buffer of twice the L2 until its graph is made,
/// and synchronises the model's streams then), and do not synchronise the device: the only host
/// waits are on an event that says the previous call's staging copy has left pinned memory, and
/// on copies of logits into pageable host memory (pass device or pinned memory to keep those
/// asynchronous).
///
/// The cache stores f16 or bf16 (the CUDA attention kernels' types): an f32 model with an f16
/// cache is the fidelity configuration (only the cached K/V, the queries and the attention
/// output pass through f16), bf16 weights with a bf16 cache the fast one. Keys are cached after
/// rotation (key_rope::cached_rotated); key_rope::rotate_on_read is refused (the CUDA kernels
/// read keys as stored).
///
/// Failure: every argument is checked before anything is launched; a forward or decode that
/// throws leaves every sequence of the cache as it was (its reserved pages are released).

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <tuple>
#include <type_traits>
#include <typeinfo>
#include <vector>

#include "../../cache/paged.hpp"
#include "../../error.hpp"
#include "../../model/modes.hpp"
#include "../../model/weights.hpp"
#include "../../rope.hpp"
#include "../attention.cuh"
#include "kernels.cuh"

/// Throws mlkv::error naming the cuBLAS status and the call when `expr` fails.
#define MLKV_CUBLAS_CHECK(expr)                                                                     \
  do {                                                                                              \
    const cublasStatus_t mlkv_cublas_st_ = (expr);                                                  \
    if (mlkv_cublas_st_ != CUBLAS_STATUS_SUCCESS) {                                                 \
      ::mlkv::detail::fail("cuBLAS error ", cublasGetStatusName(mlkv_cublas_st_), " (",             \
                           cublasGetStatusString(mlkv_cublas_st_), ") from ", #expr);               \
    }                                                                                               \
  } while (false)

namespace mlkv::cuda {

namespace model_detail {
/// Benchmark knob (bench/cuda_model only; NOTES.md v5): whether a decode graph runs its attention
/// branch at the device's greatest stream priority and the MLP branch at the least (node
/// priorities); -1: when the batch has at least priority_min_batch rows, 0: never, 1: always.
inline std::atomic<int> branch_priority{-1};
inline constexpr int priority_min_batch = 64;
/// Benchmark knob (NOTES.md v7): decode steps stream the K/V with an L2 evict-first policy, so that
/// the activations and weights of the step stay in the L2; -1 or 1: yes, 0: no. Read when a graph
/// is made.
inline std::atomic<int> kv_evict_first{-1};
}  // namespace model_detail

/// Device memory owned by one object (cudaFree on destruction; never throws there).
class device_memory {
 public:
  device_memory() = default;
  explicit device_memory(std::size_t bytes) : bytes_(bytes) {
    if (bytes != 0) MLKV_CUDA_CHECK(cudaMalloc(&p_, bytes));
  }
  device_memory(device_memory&& o) noexcept : p_(o.p_), bytes_(o.bytes_) { o.p_ = nullptr, o.bytes_ = 0; }
  device_memory& operator=(device_memory&& o) noexcept {
    if (this != &o) {
      reset();
      p_ = o.p_, bytes_ = o.bytes_;
      o.p_ = nullptr, o.bytes_ = 0;
    }
    return *this;
  }
  device_memory(const device_memory&) = delete;
  device_memory& operator=(const device_memory&) = delete;
  ~device_memory() { reset(); }
  void reset() {
    if (p_ != nullptr) cudaFree(p_);
    p_ = nullptr, bytes_ = 0;
  }
  void* get() const { return p_; }
  template <class U>
  U* as(std::size_t byte_offset = 0) const {
    return reinterpret_cast<U*>(static_cast<char*>(p_) + byte_offset);
  }
  std::size_t bytes() const { return bytes_; }

 private:
  void* p_ = nullptr;
  std::size_t bytes_ = 0;
};

/// A paged KV cache (cache/paged.hpp) whose pages live in device memory it owns; copy-on-write
/// copies go through cudaMemcpyAsync on `stream`.
template <class Cache>
class device_paged_cache {
 public:
  using cache_type = Cache;
  using value_type = typename Cache::value_type;

  device_paged_cache(int pages, cudaStream_t stream)
      : mem_(Cache::bytes(pages)),
        cache_(std::span<value_type>(mem_.as<value_type>(), Cache::elements(pages)), pages, memory_kind::device,
               [stream](value_type* dst, const value_type* src, std::size_t n) {
                 MLKV_CUDA_CHECK(cudaMemcpyAsync(dst, src, n * sizeof(value_type), cudaMemcpyDeviceToDevice, stream));
               }) {}

  Cache& cache() { return cache_; }
  const Cache& cache() const { return cache_; }
  value_type* data() { return mem_.as<value_type>(); }
  std::size_t bytes() const { return mem_.bytes(); }

 private:
  device_memory mem_;
  Cache cache_;
};

/// Sizes of a CUDA model's scratch and graphs.
struct cuda_model_options {
  int max_batch = 64;         ///< most sequences in one decode() step
  int max_rows = 2048;        ///< most new tokens in one forward() call (a prefill chunk), >= 1
  int max_context = 4096;     ///< most tokens a sequence holds (sizes block tables and the decode split)
  int logits_chunk = 256;     ///< rows of logits computed at once
  model::key_rope keys = model::key_rope::cached_rotated;
  std::size_t cublas_workspace = 32u << 20;  ///< bytes given to cuBLAS (graph capture needs its own)
  /// Linear layers of decode steps (those gemv_rows does not take): cuBLASLt algorithms timed per
  /// GEMM shape when the step's graph is made (the heuristic's first `gemm_algos`, each on a cold
  /// L2, the fastest kept); 1: the heuristic's first, untimed; 0: cublasGemmEx (cuBLAS's own
  /// choice, as forward() always uses).
  int gemm_algos = 8;
  /// Decode steps with the parallel residual (their MLP branch beside the attention branch, on a
  /// second stream): the SMs the MLP's GEMMs are planned for (cuBLASLt's SM count target), so
  /// that the decode kernel beside them keeps the others; -1: half of the device's, 0: all.
  int branch_sms = -1;
  /// Linear layers of decode steps of at most this many rows (sequences; 0 to
  /// model_detail::gemv_max_rows): mlkv's matrix-vector kernel (model_detail::gemv_kernel) instead
  /// of cuBLASLt. Its weights' DRAM reads start before the previous kernel of the step ends
  /// (programmatic dependent launch with an L2 prefetch), where a cuBLAS GEMM starts after it;
  /// 0: cuBLAS (as gemm_algos says) at every batch. Default 4: 9-16% faster steps at batch 1-4 on
  /// an H100, level or slower at 8 (bench/cuda_model/NOTES.md v10).
  int gemv_rows = 4;
};

/// The CUDA model over weights of type W (float or mlkv::bf16, converted from the host model's
/// weights at construction) with a cache of storage type T (mlkv::f16 or mlkv::bf16).
template <class W, class T>
class cuda_model {
  static_assert(std::is_same_v<W, float> || std::is_same_v<W, bf16>, "mlkv: CUDA model weights are float or bf16");
  static_assert(is_cuda_storage_v<T>, "mlkv: the CUDA model's cache stores mlkv::f16 or mlkv::bf16");
  using A = W;  // activations fed to the linear layers

 public:
  using weight_type = W;
  using cache_value_type = T;

  /// Uploads `w` (which may be freed afterwards) on `stream` and sizes the scratch.
  cuda_model(const model::gpt_neox_weights<W>& w, cuda_model_options opt, cudaStream_t stream)
      : opt_(opt), stream_(stream), shape_(w.shape), cfg_(w.config), rope_(w.config.rope()) {
    MLKV_CHECK(!w.layers.empty() && w.hidden > 0 && w.vocab > 0, "model weights are empty");
    MLKV_CHECK(opt.keys == model::key_rope::cached_rotated,
               "the CUDA model caches keys rotated (key_rope::cached_rotated); key_rope::rotate_on_read runs on the "
               "CPU model only");
    MLKV_CHECK(opt.max_batch >= 1 && opt.max_batch <= (1 << 24), "max batch (", opt.max_batch, ") must be in [1, ",
               1 << 24, "]");
    MLKV_CHECK(opt.max_rows >= 1 && opt.max_rows <= (1 << 24), "max rows (", opt.max_rows, ") must be in [1, ",
               1 << 24, "]");
    MLKV_CHECK(opt.max_context >= 1, "max context (", opt.max_context, ") must be at least 1");
    MLKV_CHECK(opt.gemv_rows >= 0 && opt.gemv_rows <= model_detail::gemv_max_rows, "gemv rows (", opt.gemv_rows,
               ") must be in [0, ", model_detail::gemv_max_rows, "]");
    MLKV_CHECK(opt.logits_chunk >= 1 && opt.logits_chunk <= 65535, "logits chunk (", opt.logits_chunk,
               ") must be in [1, 65535]");
    MLKV_CHECK(opt.gemm_algos >= 0 && opt.gemm_algos <= max_gemm_algos, "gemm algos (", opt.gemm_algos,
               ") must be in [0, ", max_gemm_algos, "]");
    MLKV_CHECK(opt.branch_sms >= -1, "branch SMs (", opt.branch_sms, ") must be -1 (half), 0 (all) or a count");
    MLKV_CHECK(w.hidden <= model_detail::max_hidden, "hidden size (", w.hidden, ") must be at most ",
               model_detail::max_hidden, " for the CUDA LayerNorm kernel");
    MLKV_CHECK(cuda_head_dim_supported(w.shape.head_dim), "head dim ", w.shape.head_dim,
               " has no CUDA kernel; compiled head dims: 64, 80, 96, 128");
    MLKV_CHECK(w.q_dim % 8 == 0 && w.kv_dim % 8 == 0 && w.hidden % 8 == 0,
               "hidden, query and KV widths must be multiples of 8");
    H_ = w.hidden, V_ = w.vocab, qd_ = w.q_dim, kvd_ = w.kv_dim;
    // The MLP width padded to a multiple of 64 with zero weights and biases (act(0) = 0 for every
    // supported activation, so the result is the same): the paper's converter makes widths like
    // 3329, on which cuBLAS falls back to unaligned kernels several times slower.
    I_ = (w.intermediate + 63) / 64 * 64;
    rows_cap_ = std::max(opt.max_rows, opt.max_batch);
    upload(w);
    alloc_scratch();
    MLKV_CUBLAS_CHECK(cublasCreate(&blas_));
    MLKV_CUBLAS_CHECK(cublasSetWorkspace(blas_, blas_ws_.get(), blas_ws_.bytes()));
    MLKV_CUBLAS_CHECK(cublasSetPointerMode(blas_, CUBLAS_POINTER_MODE_HOST));
    MLKV_CUBLAS_CHECK(cublasSetMathMode(blas_, CUBLAS_DEFAULT_MATH));  // no TF32 for f32
    MLKV_CUBLAS_CHECK(cublasLtCreate(&lt_));
    int least = 0, greatest = 0;
    MLKV_CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
    MLKV_CUDA_CHECK(cudaStreamCreateWithPriority(&side_, cudaStreamNonBlocking, least));
    MLKV_CUDA_CHECK(cudaStreamCreateWithPriority(&hi_, cudaStreamNonBlocking, greatest));
    for (cudaEvent_t* e : {&fork_, &join_, &hi_in_, &hi_out_}) {
      MLKV_CUDA_CHECK(cudaEventCreateWithFlags(e, cudaEventDisableTiming));
    }
    MLKV_CUDA_CHECK(cudaEventCreateWithFlags(&staged_, cudaEventDisableTiming));
    MLKV_CUDA_CHECK(cudaEventRecord(staged_, stream_));
    rt_.rotary_dims = rope_.rotary_dims();
    for (int i = 0; i < rt_.rotary_dims / 2; ++i) rt_.inv_freq[i] = rope_.inv_freq()[static_cast<std::size_t>(i)];
  }

  cuda_model(const cuda_model&) = delete;
  cuda_model& operator=(const cuda_model&) = delete;

  ~cuda_model() {
    // Nothing may be running when the model goes: wait for the stream (a destructor, not a step).
    cudaStreamSynchronize(stream_);
    if (side_ != nullptr) cudaStreamSynchronize(side_);
    if (hi_ != nullptr) cudaStreamSynchronize(hi_);
    for (auto& [b, g] : graphs_) cudaGraphExecDestroy(g);
    plans_.clear();
    for (cudaEvent_t e : {fork_, join_, hi_in_, hi_out_}) {
      if (e != nullptr) cudaEventDestroy(e);
    }
    if (side_ != nullptr) cudaStreamDestroy(side_);
    if (hi_ != nullptr) cudaStreamDestroy(hi_);
    if (staged_ != nullptr) cudaEventDestroy(staged_);
    if (blas_ != nullptr) cublasDestroy(blas_);
    if (lt_ != nullptr) cublasLtDestroy(lt_);
    if (pinned_ != nullptr) cudaFreeHost(pinned_);
  }

  const cuda_model_options& options() const { return opt_; }
  int vocab() const { return V_; }
  int hidden() const { return H_; }
  cudaStream_t stream() const { return stream_; }
  /// Bytes of the uploaded weights (what a decode step reads in full).
  std::size_t weight_bytes() const { return weight_bytes_; }
  /// Bytes of device scratch (activations, logits chunk, metadata, cuBLAS and decode workspace).
  std::size_t scratch_bytes() const {
    return scratch_.bytes() + meta_.bytes() + blas_ws_.bytes() + dec_ws_.bytes();
  }
  /// Scratch bytes a model with these options needs per row of max(max_rows, max_batch), and in
  /// all (for capacity planning before constructing one).
  static std::size_t scratch_bytes_per_row(const model::gpt_neox_weights<W>& w) {
    return layout(w.hidden, w.q_dim, w.kv_dim, w.intermediate, w.vocab, 1, 0).per_row;
  }
  /// Greedy tokens of the last decode() (device [batch]); valid until the next call.
  const std::int32_t* next_tokens() const { return next_; }
  /// Graphs captured so far (one per decode batch size).
  std::size_t graphs() const { return graphs_.size(); }

  /// Runs new tokens of `seqs` through the model (prefill, chunked prefill or mixed steps),
  /// appending their K/V to `cache` and committing them, as cpu_model::forward does.
  /// tokens (host): the new tokens of sequence b are tokens[offsets[b] .. offsets[b+1]).
  /// logits: [batch, vocab] (logits_rows::last) or [rows, vocab] (all), f32, device, pinned or
  /// host memory; null for logits_rows::none. Not a graph: prompts vary in length.
  template <class Cache>
  void forward(Cache& cache, std::span<const seq_id> seqs, std::span<const std::int32_t> offsets,
               std::span<const std::int32_t> tokens, model::logits_rows which, float* logits) {
    check_cache<Cache>();
    const int B = static_cast<int>(seqs.size());
    MLKV_CHECK(B >= 1 && B <= opt_.max_batch, "forward batch (", B, ") must be in [1, ", opt_.max_batch,
               "] (cuda_model_options::max_batch)");
    MLKV_CHECK(offsets.size() == seqs.size() + 1, "token offsets have ", offsets.size(), " entries; ", B,
               " sequences need ", B + 1);
    MLKV_CHECK(offsets[0] == 0, "token offsets must start at 0, not ", offsets[0]);
    int max_rows = 0;
    for (int b = 0; b < B; ++b) {
      MLKV_CHECK(offsets[b + 1] >= offsets[b], "token offsets must not decrease (sequence ", b, ": ", offsets[b],
                 " then ", offsets[b + 1], ")");
      max_rows = std::max(max_rows, offsets[b + 1] - offsets[b]);
    }
    const int R = offsets[B];
    MLKV_CHECK(static_cast<std::size_t>(R) == tokens.size(), "token offsets end at ", R, " but ", tokens.size(),
               " tokens were given");
    MLKV_CHECK(R <= opt_.max_rows, "forward of ", R, " tokens exceeds max rows (", opt_.max_rows,
               "); split the prompt into chunks");
    check_tokens(tokens);
    MLKV_CHECK(which == model::logits_rows::none || logits != nullptr, "logits output is null");
    int max_ctx = 1;
    for (int b = 0; b < B; ++b) {
      const int ctx = cache.length(seqs[b]) + offsets[b + 1] - offsets[b];
      MLKV_CHECK(ctx <= opt_.max_context, "sequence ", b, " would hold ", ctx, " tokens; max context is ",
                 opt_.max_context, " (cuda_model_options::max_context)");
      max_ctx = std::max(max_ctx, ctx);
    }
    if (R == 0) return;
    model::reserve_rows(cache, seqs, offsets);
    try {
      cache.fill_batch(seqs, batch_host_<Cache>());
      stage_general(cache, seqs, offsets, tokens, which);
      const attention_batch ab = attention_batch::chunks(B, d_context(), d_qoff(), max_ctx, max_rows, R);
      run_body(cache, B, R, ab, /*decode=*/false, d_tokens(), d_pos());
      if (which != model::logits_rows::none && !dest_.empty()) {
        // Picked rows (logits_rows::last skips sequences without new tokens, whose output rows
        // are left untouched, as on the CPU); dest_[i] is the output row of pick i.
        const int n = static_cast<int>(dest_.size());
        final_norm(n, d_pick());
        for (int c0 = 0; c0 < n; c0 += opt_.logits_chunk) {
          const int m = std::min(opt_.logits_chunk, n - c0);
          logits_gemm(c0, m, false);
          if (dest_[static_cast<std::size_t>(c0 + m - 1)] - dest_[static_cast<std::size_t>(c0)] == m - 1) {
            MLKV_CUDA_CHECK(cudaMemcpyAsync(logits + static_cast<std::size_t>(dest_[static_cast<std::size_t>(c0)]) * V_,
                                            logits_, static_cast<std::size_t>(m) * V_ * sizeof(float),
                                            cudaMemcpyDefault, stream_));
          } else {
            for (int i = 0; i < m; ++i) {
              MLKV_CUDA_CHECK(cudaMemcpyAsync(
                  logits + static_cast<std::size_t>(dest_[static_cast<std::size_t>(c0 + i)]) * V_,
                  logits_ + static_cast<std::size_t>(i) * V_, static_cast<std::size_t>(V_) * sizeof(float),
                  cudaMemcpyDefault, stream_));
            }
          }
        }
      }
    } catch (...) {
      for (int b = 0; b < B; ++b) cache.truncate(seqs[b], cache.length(seqs[b]));
      throw;
    }
    for (int b = 0; b < B; ++b) {
      const int n = offsets[b + 1] - offsets[b];
      if (n > 0) cache.commit(seqs[b], n);
    }
  }

  /// One decode step: token b (host memory, or device memory with `tokens_on_device`) is the new
  /// token of sequence seqs[b]. Runs the step's CUDA graph for this batch size (capturing it on
  /// the first step of that size), commits one token per sequence and leaves the greedy next
  /// tokens in next_tokens() (device [batch]); logits [batch, vocab] go to `logits` when given
  /// (device, pinned or host memory). The sequences must be distinct.
  template <class Cache>
  void decode(Cache& cache, std::span<const seq_id> seqs, const std::int32_t* tokens, bool tokens_on_device,
              float* logits = nullptr) {
    check_cache<Cache>();
    const int B = static_cast<int>(seqs.size());
    MLKV_CHECK(B >= 1 && B <= opt_.max_batch, "decode batch (", B, ") must be in [1, ", opt_.max_batch,
               "] (cuda_model_options::max_batch)");
    MLKV_CHECK(tokens != nullptr, "decode tokens are null");
    if (!tokens_on_device) check_tokens(std::span<const std::int32_t>(tokens, static_cast<std::size_t>(B)));
    for (int b = 0; b < B; ++b) {
      const int ctx = cache.length(seqs[b]) + 1;
      MLKV_CHECK(ctx <= opt_.max_context, "sequence ", b, " would hold ", ctx, " tokens; max context is ",
                 opt_.max_context, " (cuda_model_options::max_context)");
    }
    check_distinct(seqs);
    // One reserve per sequence (the batch form checks duplicates in O(batch^2)), all or nothing.
    const std::vector<std::int32_t>& ones = ones_for(B);
    model::reserve_rows(cache, seqs, std::span<const std::int32_t>(ones.data(), static_cast<std::size_t>(B) + 1));
    try {
      cache.fill_batch(seqs, batch_host_<Cache>());
      stage_decode(cache, B, tokens_on_device ? nullptr : tokens);
      if (tokens_on_device) {
        MLKV_CUDA_CHECK(cudaMemcpyAsync(d_tokens(), tokens, static_cast<std::size_t>(B) * sizeof(std::int32_t),
                                        cudaMemcpyDeviceToDevice, stream_));
      }
      MLKV_CUDA_CHECK(cudaGraphLaunch(graph_for(cache, B), stream_));
      if (logits != nullptr) {
        logits_src_ = sp<A>(sl_.hf);
        if (B <= opt_.logits_chunk) {
          MLKV_CUDA_CHECK(cudaMemcpyAsync(logits, logits_, static_cast<std::size_t>(B) * V_ * sizeof(float),
                                          cudaMemcpyDefault, stream_));
        } else {
          for (int c0 = 0; c0 < B; c0 += opt_.logits_chunk) {  // the graph kept only the last chunk
            const int m = std::min(opt_.logits_chunk, B - c0);
            logits_gemm(c0, m, true);
            MLKV_CUDA_CHECK(cudaMemcpyAsync(logits + static_cast<std::size_t>(c0) * V_, logits_,
                                            static_cast<std::size_t>(m) * V_ * sizeof(float), cudaMemcpyDefault,
                                            stream_));
          }
        }
      }
    } catch (...) {
      for (int b = 0; b < B; ++b) cache.truncate(seqs[b], cache.length(seqs[b]));
      throw;
    }
    for (const seq_id id : seqs) cache.commit(id, 1);
  }

  /// Drops every captured graph (they are captured again on the next step of each size).
  void clear_graphs() {
    for (auto& [b, g] : graphs_) cudaGraphExecDestroy(g);
    graphs_.clear();
  }

 private:
  // ---- layout of the scratch -------------------------------------------------------------------
  struct scratch_layout {
    std::size_t x, h1, h2, big, big2, q, k, v, att, atta, proj, mo, mida, hf, per_row, rows_total, logits, total;
  };
  static std::size_t up(std::size_t n) { return (n + 255) & ~std::size_t{255}; }
  static scratch_layout layout(int H, int qd, int kvd, int I, int V, int rows, int chunk) {
    scratch_layout s{};
    const std::size_t r = static_cast<std::size_t>(rows);
    std::size_t off = 0;
    auto take = [&](std::size_t bytes) {
      const std::size_t o = off;
      off += up(bytes);
      return o;
    };
    s.x = take(r * H * 4);
    s.h1 = take(r * H * sizeof(A));
    s.h2 = take(r * H * sizeof(A));
    s.big = take(r * static_cast<std::size_t>(qd + 2 * kvd) * 4);  // the fused QKV projection
    s.big2 = take(r * static_cast<std::size_t>(I) * 4);            // the MLP's first projection
    s.q = take(r * qd * sizeof(T));
    s.k = take(r * kvd * 4);
    s.v = take(r * kvd * 4);
    s.att = take(r * qd * sizeof(T));
    s.atta = std::is_same_v<A, T> ? s.att : take(r * qd * sizeof(A));
    s.proj = take(r * H * 4);
    s.mo = take(r * H * 4);
    s.mida = take(r * static_cast<std::size_t>(I) * sizeof(A));
    s.hf = take(r * H * sizeof(A));
    s.rows_total = off;
    s.per_row = rows > 0 ? off / r : 0;
    s.logits = take(static_cast<std::size_t>(chunk) * V * 4);
    s.total = off;
    return s;
  }

  // ---- metadata on the device: [tokens | pos | pick | context | qoff | seq_blocks | table] --------
  int maxb() const { return (opt_.max_context + page_tokens_ - 1) / page_tokens_ + 1; }
  std::size_t meta_ints() const {
    const std::size_t r = static_cast<std::size_t>(rows_cap_), b = static_cast<std::size_t>(opt_.max_batch);
    return 3 * r + 3 * b + 1 + b * static_cast<std::size_t>(maxb_);
  }
  std::int32_t* meta_at(std::int32_t* base, int what) const {
    const std::size_t r = static_cast<std::size_t>(rows_cap_), b = static_cast<std::size_t>(opt_.max_batch);
    const std::size_t offs[] = {0, r, 2 * r, 3 * r, 3 * r + b, 3 * r + 2 * b + 1, 3 * r + 3 * b + 1};
    return base + offs[what];
  }
  std::int32_t* d_tokens() const { return meta_at(meta_.as<std::int32_t>(), 0); }
  std::int32_t* d_pos() const { return meta_at(meta_.as<std::int32_t>(), 1); }
  std::int32_t* d_pick() const { return meta_at(meta_.as<std::int32_t>(), 2); }
  std::int32_t* d_context() const { return meta_at(meta_.as<std::int32_t>(), 3); }
  std::int32_t* d_qoff() const { return meta_at(meta_.as<std::int32_t>(), 4); }
  std::int32_t* d_blocks() const { return meta_at(meta_.as<std::int32_t>(), 5); }
  std::int32_t* d_table() const { return meta_at(meta_.as<std::int32_t>(), 6); }

  void alloc_scratch() {
    sl_ = layout(H_, qd_, kvd_, I_, V_, rows_cap_, opt_.logits_chunk);
    scratch_ = device_memory(sl_.total);
    logits_ = scratch_.as<float>(sl_.logits);
    blas_ws_ = device_memory(opt_.cublas_workspace);
    next_buf_ = device_memory(static_cast<std::size_t>(opt_.max_batch) * sizeof(std::int32_t));
    next_ = next_buf_.as<std::int32_t>();
  }

  void ensure_meta(int page_tokens) {
    if (page_tokens_ == page_tokens && meta_.get() != nullptr) return;
    MLKV_CHECK(page_tokens_ == 0 || page_tokens_ == page_tokens, "a CUDA model serves caches of one page size (",
               page_tokens_, " tokens), not ", page_tokens);
    page_tokens_ = page_tokens;
    maxb_ = maxb();
    meta_ = device_memory(meta_ints() * sizeof(std::int32_t));
    MLKV_CUDA_CHECK(cudaMallocHost(&pinned_, meta_ints() * sizeof(std::int32_t)));
    MLKV_CUDA_CHECK(cudaMemsetAsync(meta_.get(), 0, meta_.bytes(), stream_));
  }

  template <class U>
  U* sp(std::size_t off) const {
    return scratch_.as<U>(off);
  }

  // ---- weights ----------------------------------------------------------------------------------
  struct layer_ptrs {
    bool owner = false;
    int slot = 0;
    int qkv_rows = 0;
    const W *qkv = nullptr, *dense = nullptr, *mlp_in = nullptr, *mlp_out = nullptr;
    const float *ln1w = nullptr, *ln1b = nullptr, *ln2w = nullptr, *ln2b = nullptr;
    const float *qkv_b = nullptr, *dense_b = nullptr, *in_b = nullptr, *out_b = nullptr;
  };

  void upload(const model::gpt_neox_weights<W>& w) {
    // One allocation; every tensor 256-byte aligned.
    std::vector<std::pair<const void*, std::size_t>> parts;
    std::size_t total = 0;
    auto add = [&](const void* p, std::size_t bytes) {
      const std::size_t o = total;
      parts.emplace_back(p, bytes);
      total += up(bytes);
      return o;
    };
    struct offs {
      std::size_t qkv, dense, in, out, ln1w, ln1b, ln2w, ln2b, qkvb, denseb, inb, outb;
    };
    std::vector<offs> lo;
    std::deque<std::vector<W>> padded;        // padded MLP matrices, alive until the copies are done
    std::deque<std::vector<float>> padded_f;  // padded MLP input biases
    const std::size_t embed = add(w.embed_in.data.data(), w.embed_in.bytes());
    for (const auto& l : w.layers) {
      offs o{};
      o.qkv = add(l.qkv.data.data(), l.qkv.bytes());
      o.dense = add(l.dense.data.data(), l.dense.bytes());
      if (I_ == w.intermediate) {
        o.in = add(l.mlp_in.data.data(), l.mlp_in.bytes());
        o.out = add(l.mlp_out.data.data(), l.mlp_out.bytes());
      } else {
        const std::size_t I = static_cast<std::size_t>(w.intermediate), Ip = static_cast<std::size_t>(I_);
        const std::size_t H = static_cast<std::size_t>(w.hidden);
        std::vector<W>& in = padded.emplace_back(Ip * H, W{});
        std::copy_n(l.mlp_in.data.data(), I * H, in.data());
        o.in = add(in.data(), in.size() * sizeof(W));
        std::vector<W>& out = padded.emplace_back(H * Ip, W{});
        for (std::size_t r = 0; r < H; ++r) std::copy_n(l.mlp_out.row(static_cast<int>(r)), I, out.data() + r * Ip);
        o.out = add(out.data(), out.size() * sizeof(W));
      }
      o.ln1w = add(l.ln1_weight.data(), l.ln1_weight.size() * 4);
      o.ln1b = add(l.ln1_bias.data(), l.ln1_bias.size() * 4);
      o.ln2w = add(l.ln2_weight.data(), l.ln2_weight.size() * 4);
      o.ln2b = add(l.ln2_bias.data(), l.ln2_bias.size() * 4);
      o.qkvb = add(l.qkv_bias.data(), l.qkv_bias.size() * 4);
      o.denseb = add(l.dense_bias.data(), l.dense_bias.size() * 4);
      if (I_ == w.intermediate) {
        o.inb = add(l.mlp_in_bias.data(), l.mlp_in_bias.size() * 4);
      } else {
        std::vector<float>& b = padded_f.emplace_back(static_cast<std::size_t>(I_), 0.f);
        std::copy_n(l.mlp_in_bias.data(), l.mlp_in_bias.size(), b.data());
        o.inb = add(b.data(), b.size() * 4);
      }
      o.outb = add(l.mlp_out_bias.data(), l.mlp_out_bias.size() * 4);
      lo.push_back(o);
    }
    const std::size_t fw = add(w.final_ln_weight.data(), w.final_ln_weight.size() * 4);
    const std::size_t fb = add(w.final_ln_bias.data(), w.final_ln_bias.size() * 4);
    const bool tied = w.config.tie_word_embeddings;
    const std::size_t eo = tied ? embed : add(w.embed_out.data.data(), w.embed_out.bytes());
    weights_ = device_memory(total);
    std::size_t o = 0;
    for (const auto& [p, bytes] : parts) {
      MLKV_CUDA_CHECK(cudaMemcpyAsync(weights_.as<char>(o), p, bytes, cudaMemcpyHostToDevice, stream_));
      o += up(bytes);
    }
    // The host weights may go once the copies are done (pageable copies return after staging,
    // but wait here so the caller may free them: construction, not a step).
    MLKV_CUDA_CHECK(cudaStreamSynchronize(stream_));
    embed_in_ = weights_.as<W>(embed);
    embed_out_ = weights_.as<W>(eo);
    final_w_ = weights_.as<float>(fw);
    final_b_ = weights_.as<float>(fb);
    layers_.clear();
    for (std::size_t l = 0; l < w.layers.size(); ++l) {
      const auto& L = w.layers[l];
      const offs& f = lo[l];
      layer_ptrs p;
      p.owner = L.owner;
      p.slot = L.kv_slot;
      p.qkv_rows = L.qkv.rows;
      p.qkv = weights_.as<W>(f.qkv);
      p.dense = weights_.as<W>(f.dense);
      p.mlp_in = weights_.as<W>(f.in);
      p.mlp_out = weights_.as<W>(f.out);
      p.ln1w = weights_.as<float>(f.ln1w), p.ln1b = weights_.as<float>(f.ln1b);
      p.ln2w = weights_.as<float>(f.ln2w), p.ln2b = weights_.as<float>(f.ln2b);
      p.qkv_b = weights_.as<float>(f.qkvb), p.dense_b = weights_.as<float>(f.denseb);
      p.in_b = weights_.as<float>(f.inb), p.out_b = weights_.as<float>(f.outb);
      layers_.push_back(p);
    }
    weight_bytes_ = w.step_bytes();
  }

  // ---- checks -----------------------------------------------------------------------------------
  template <class Cache>
  void check_cache() {
    static_assert(std::is_same_v<typename Cache::value_type, T>, "mlkv: the cache's storage type is not the model's");
    constexpr model_shape S = Cache::shape;
    const model_shape& s = shape_;
    MLKV_CHECK(S.layers == s.layers && S.q_heads == s.q_heads && S.kv_heads == s.kv_heads &&
                   S.kv_layers == s.kv_layers && S.head_dim == s.head_dim,
               "the cache's geometry (L=", S.layers, " Hq=", S.q_heads, " Hkv=", S.kv_heads, " Lkv=", S.kv_layers,
               " D=", S.head_dim, ") differs from the model's (L=", s.layers, " Hq=", s.q_heads, " Hkv=", s.kv_heads,
               " Lkv=", s.kv_layers, " D=", s.head_dim, ")");
    for (int l = 0; l < S.layers; ++l) {
      MLKV_CHECK(S.kv_slot(l) == layers_[static_cast<std::size_t>(l)].slot &&
                     S.owner(l) == layers_[static_cast<std::size_t>(l)].owner,
                 "layer ", l, " reads owner layer ", S.source_layer(l), " in the cache's geometry but owner layer ",
                 s.source_layer(l), " in the model's");
    }
    ensure_meta(Cache::page_tokens);
  }

  void check_tokens(std::span<const std::int32_t> tokens) const {
    for (std::size_t r = 0; r < tokens.size(); ++r) {
      MLKV_CHECK(tokens[r] >= 0 && tokens[r] < V_, "token ", tokens[r], " (row ", r,
                 ") is outside the vocabulary [0, ", V_, ")");
    }
  }

  /// Throws when a sequence appears twice (O(batch): a stamp per sequence slot).
  void check_distinct(std::span<const seq_id> seqs) {
    ++stamp_;
    for (std::size_t b = 0; b < seqs.size(); ++b) {
      const std::size_t i = seqs[b].index;
      MLKV_CHECK(i < (std::size_t{1} << 31), "sequence handle ", i, " is invalid");
      if (i >= seen_.size()) seen_.resize(std::max<std::size_t>(i + 1, 2 * seen_.size()), {0u, 0});
      if (seen_[i].first == stamp_) {
        ::mlkv::detail::fail("sequence slot ", i, " appears twice in one decode batch (rows ", seen_[i].second, " and ",
                             b, ")");
      }
      seen_[i] = {stamp_, static_cast<int>(b)};
    }
  }
  /// Offsets 0, 1, ..., B (one token per sequence), cached.
  const std::vector<std::int32_t>& ones_for(int B) {
    while (static_cast<int>(ones_.size()) < B + 1) ones_.push_back(static_cast<std::int32_t>(ones_.size()));
    return ones_;
  }

  /// The host batch object of the cache type (reused between calls: no allocation once grown).
  template <class Cache>
  typename Cache::batch& batch_host_() {
    using B = typename Cache::batch;
    if (!batch_holder_ || batch_type_ != &typeid(B)) {
      batch_holder_ = std::make_shared<B>();
      batch_type_ = &typeid(B);
    }
    return *std::static_pointer_cast<B>(batch_holder_);
  }

  // ---- staging: host -> pinned -> one copy to the device metadata --------------------------------
  void wait_staging() { MLKV_CUDA_CHECK(cudaEventSynchronize(staged_)); }

  template <class Batch>
  void stage_table(const Batch& bt, int B) {
    const int mb = bt.max_blocks();
    MLKV_CHECK(mb <= maxb_, "a sequence maps ", mb, " blocks; the model's tables hold ", maxb_,
               " (max context ", opt_.max_context, ")");
    std::int32_t* blocks = meta_at(pinned_, 5);
    std::int32_t* table = meta_at(pinned_, 6);
    for (int b = 0; b < B; ++b) {
      blocks[b] = bt.seq_blocks()[static_cast<std::size_t>(b)];
      std::memcpy(table + static_cast<std::size_t>(b) * maxb_, bt.block_table().data() + static_cast<std::size_t>(b) * mb,
                  static_cast<std::size_t>(mb) * sizeof(std::int32_t));
    }
  }

  /// Copies [first, first + n) ints of the pinned metadata to the device.
  void copy_meta(int what, std::size_t n) {
    MLKV_CUDA_CHECK(cudaMemcpyAsync(meta_at(meta_.as<std::int32_t>(), what), meta_at(pinned_, what),
                                    n * sizeof(std::int32_t), cudaMemcpyHostToDevice, stream_));
  }

  template <class Cache>
  void stage_general(const Cache& cache, std::span<const seq_id> seqs, std::span<const std::int32_t> offsets,
                     std::span<const std::int32_t> tokens, model::logits_rows which) {
    wait_staging();
    const int B = static_cast<int>(seqs.size());
    const int R = offsets[static_cast<std::size_t>(B)];
    const auto& bt = batch_host_<Cache>();
    std::memcpy(meta_at(pinned_, 0), tokens.data(), tokens.size() * sizeof(std::int32_t));
    std::int32_t* pos = meta_at(pinned_, 1);
    std::int32_t* pick = meta_at(pinned_, 2);
    std::int32_t* ctx = meta_at(pinned_, 3);
    std::int32_t* qoff = meta_at(pinned_, 4);
    int picks = 0;
    dest_.clear();
    for (int b = 0; b < B; ++b) {
      const int start = cache.length(seqs[b]);
      const int n = offsets[b + 1] - offsets[b];
      ctx[b] = start + n;
      qoff[b] = offsets[b];
      for (int i = 0; i < n; ++i) pos[offsets[b] + i] = start + i;
      if (which == model::logits_rows::last && n > 0) {
        pick[picks++] = offsets[b + 1] - 1;
        dest_.push_back(b);
      }
    }
    if (which == model::logits_rows::all) {
      for (int r = 0; r < R; ++r) {
        pick[picks++] = r;
        dest_.push_back(r);
      }
    }
    qoff[B] = R;
    stage_table(bt, B);
    copy_meta(0, static_cast<std::size_t>(R));
    copy_meta(1, static_cast<std::size_t>(R));
    copy_meta(2, static_cast<std::size_t>(std::max(picks, 1)));
    copy_meta(3, static_cast<std::size_t>(B));
    copy_meta(4, static_cast<std::size_t>(B) + 1);
    copy_meta(5, static_cast<std::size_t>(B));
    copy_meta(6, static_cast<std::size_t>(B) * maxb_);
    MLKV_CUDA_CHECK(cudaEventRecord(staged_, stream_));
  }

  template <class Cache>
  void stage_decode(const Cache& cache, int B, const std::int32_t* host_tokens) {
    wait_staging();
    const auto& bt = batch_host_<Cache>();
    std::int32_t* ctx = meta_at(pinned_, 3);
    for (int b = 0; b < B; ++b) ctx[b] = bt.lengths()[static_cast<std::size_t>(b)] + 1;
    if (host_tokens != nullptr) {
      std::memcpy(meta_at(pinned_, 0), host_tokens, static_cast<std::size_t>(B) * sizeof(std::int32_t));
      copy_meta(0, static_cast<std::size_t>(B));
    }
    stage_table(bt, B);
    (void)cache;
    copy_meta(3, static_cast<std::size_t>(B));
    copy_meta(5, static_cast<std::size_t>(B));
    copy_meta(6, static_cast<std::size_t>(B) * maxb_);
    MLKV_CUDA_CHECK(cudaEventRecord(staged_, stream_));
  }

  /// The view of owner slot `slot` over the device copies of the block tables.
  template <class Cache>
  paged_slot_view<T> device_view(const Cache& cache, int slot, int B) const {
    paged_slot_view<T> v;
    v.pages = cache.data();
    v.block_table = d_table();
    v.seq_blocks = d_blocks();
    v.batch = B;
    v.kv_heads = Cache::kv_heads;
    v.head_dim = Cache::head_dim;
    v.page_tokens = Cache::page_tokens;
    v.max_blocks = maxb_;
    v.page_stride = Cache::page_values;
    v.k_offset = static_cast<std::size_t>(slot) * Cache::slot_values;
    v.v_offset = v.k_offset + Cache::half_values;
    v.page_shift = Cache::page_shift;
    return v;
  }

  // ---- launches ---------------------------------------------------------------------------------
  /// y[rows, out] (f32) = x[rows, in] (A) . W[out, in]^T  (column-major: y^T = W^T' x^T).
  /// `tuned` (decode steps): mlkv's matrix-vector kernel for at most gemv_rows rows (when the
  /// operands fit it), else through the shape's cuBLASLt plan (gemm_plan_for), unless gemm_algos
  /// is 0; otherwise cublasGemmEx. `side`: on the side stream (the MLP branch of a decode step),
  /// with the second half of the cuBLAS workspace (tuned only).
  void gemm(const A* x, int rows, int in, const W* w, int out, float* y, bool tuned, bool side = false) {
    if (gemv_applies(x, rows, in, w, out, tuned)) {
      model_detail::gemv(x, rows, in, w, out, y, side ? side_ : stream_, side ? branch_sm_target() : 0);
      return;
    }
    const float one = 1.f, zero = 0.f;
    if (tuned && opt_.gemm_algos > 0) {
      const gemm_plan& p = gemm_plan_for(x, rows, in, w, out, y, side);
      MLKV_CUBLAS_CHECK(cublasLtMatmul(lt_, p.op, &one, w, p.a, x, p.b, &zero, y, p.c, y, p.c, &p.algo, lane_ws(side),
                                       lane_ws_bytes(), side ? side_ : stream_));
      return;
    }
    MLKV_CHECK(!side, "internal: cublasGemmEx on the side stream");
    constexpr cudaDataType_t t = std::is_same_v<W, float> ? CUDA_R_32F : CUDA_R_16BF;
    MLKV_CUBLAS_CHECK(cublasGemmEx(blas_, CUBLAS_OP_T, CUBLAS_OP_N, out, rows, in, &one, w, t, in, x, t, in, &zero, y,
                                   CUDA_R_32F, out, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }

  /// True when a linear layer takes the matrix-vector kernel (decode steps of at most gemv_rows
  /// rows whose operands fit it).
  bool gemv_applies(const A* x, int rows, int in, const W* w, int out, bool tuned) const {
    return tuned && rows <= opt_.gemv_rows && model_detail::gemv_fits(x, rows, in, w, out);
  }

  /// The SMs the MLP branch of a decode step is planned for (branch_sms; 0: all of them, no limit):
  /// cuBLASLt's SM count target there, and the matrix-vector kernel's cap on its grid (in blocks,
  /// several of which may share an SM).
  int branch_sm_target() const {
    if (opt_.branch_sms == 0) return 0;
    const int sms = detail::device_sms();
    return opt_.branch_sms > 0 ? std::min(opt_.branch_sms, sms) : std::max(1, sms / 2);
  }

  /// The cuBLASLt plan of one GEMM shape: descriptors and the algorithm chosen for it.
  struct gemm_plan {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
    float us = 0.f;      // median time of the chosen algorithm (0: untimed)
    int candidates = 0;  // algorithms the heuristic returned
    int chosen = 0;      // index of the chosen one among them
    gemm_plan() = default;
    gemm_plan(const gemm_plan&) = delete;
    gemm_plan& operator=(const gemm_plan&) = delete;
    ~gemm_plan() {
      if (c != nullptr) cublasLtMatrixLayoutDestroy(c);
      if (b != nullptr) cublasLtMatrixLayoutDestroy(b);
      if (a != nullptr) cublasLtMatrixLayoutDestroy(a);
      if (op != nullptr) cublasLtMatmulDescDestroy(op);
    }
  };
  static constexpr int max_gemm_algos = 32;

  /// The plan of shape (rows, in, out), made on first use, never inside a capture (graph_for runs
  /// the step once uncaptured first): the heuristic's first gemm_algos algorithms for this shape
  /// and the workspace, each run twice, then timed 7 times after a write of twice the L2 (a step
  /// streams every weight from memory, so a timing on an L2 that holds them would mislead); the
  /// median decides. Timing runs write y, which the real call that follows writes again.
  /// Each half of the cuBLAS workspace serves one stream (main, side) of cuBLASLt calls.
  std::size_t lane_ws_bytes() const { return blas_ws_.bytes() / 2 & ~std::size_t{255}; }
  void* lane_ws(bool side) const { return blas_ws_.as<char>(side ? lane_ws_bytes() : 0); }

  const gemm_plan& gemm_plan_for(const A* x, int rows, int in, const W* w, int out, float* y, bool side) {
    // x's alignment (a logits chunk starts mid-buffer) is part of the shape: cuBLASLt's algorithms
    // assume 256-byte aligned operands unless told less (weights and outputs are 256-byte aligned).
    const auto addr = reinterpret_cast<std::uintptr_t>(x);
    const std::uint32_t align = addr % 256 == 0 ? 256u : static_cast<std::uint32_t>(addr & (~addr + 1));
    const auto key = std::make_tuple(rows, in, out, align, side && opt_.branch_sms != 0);
    if (const auto it = plans_.find(key); it != plans_.end()) return *it->second;
    cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
    MLKV_CUDA_CHECK(cudaStreamIsCapturing(stream_, &cs));
    MLKV_CHECK(cs == cudaStreamCaptureStatusNone, "internal: a GEMM plan for ", rows, "x", in, "x", out,
               " was asked for inside a graph capture");
    // Nothing else of this model runs while candidates are timed (the other stream included).
    MLKV_CUDA_CHECK(cudaStreamSynchronize(stream_));
    MLKV_CUDA_CHECK(cudaStreamSynchronize(side_));
    cudaStream_t ts = side ? side_ : stream_;
    auto p = std::make_unique<gemm_plan>();
    constexpr cudaDataType_t t = std::is_same_v<W, float> ? CUDA_R_32F : CUDA_R_16BF;
    MLKV_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    MLKV_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    MLKV_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    if (side && opt_.branch_sms != 0) {
      // The MLP branch's GEMMs planned for fewer SMs than the device has, so that the attention
      // branch beside them (the decode kernel above all) keeps the rest (NOTES.md v5).
      const std::int32_t target = branch_sm_target();
      MLKV_CUBLAS_CHECK(
          cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_SM_COUNT_TARGET, &target, sizeof target));
    }
    MLKV_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->a, t, static_cast<std::uint64_t>(in), static_cast<std::uint64_t>(out), in));
    MLKV_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->b, t, static_cast<std::uint64_t>(in), static_cast<std::uint64_t>(rows), in));
    MLKV_CUBLAS_CHECK(
        cublasLtMatrixLayoutCreate(&p->c, CUDA_R_32F, static_cast<std::uint64_t>(out), static_cast<std::uint64_t>(rows), out));
    cublasLtMatmulPreference_t pref = nullptr;
    MLKV_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    cublasLtMatmulHeuristicResult_t res[max_gemm_algos] = {};
    int n = 0;
    const std::size_t ws = lane_ws_bytes();
    cublasStatus_t st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
    if (st == CUBLAS_STATUS_SUCCESS) {
      st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align, sizeof align);
    }
    if (st == CUBLAS_STATUS_SUCCESS) {
      st = cublasLtMatmulAlgoGetHeuristic(lt_, p->op, p->a, p->b, p->c, p->c, pref, opt_.gemm_algos, res, &n);
    }
    cublasLtMatmulPreferenceDestroy(pref);
    MLKV_CUBLAS_CHECK(st);
    MLKV_CHECK(n >= 1, "cuBLASLt has no algorithm for a ", rows, "x", in, "x", out, " GEMM");
    p->candidates = n;
    p->algo = res[0].algo;
    if (n > 1) {
      if (flush_.get() == nullptr) {
        int dev = 0, l2 = 0;
        MLKV_CUDA_CHECK(cudaGetDevice(&dev));
        MLKV_CUDA_CHECK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, dev));
        flush_ = device_memory(2 * static_cast<std::size_t>(std::max(l2, 1 << 20)));
      }
      cudaEvent_t e0 = nullptr, e1 = nullptr;
      MLKV_CUDA_CHECK(cudaEventCreate(&e0));
      const cudaError_t ce = cudaEventCreate(&e1);
      if (ce != cudaSuccess) cudaEventDestroy(e0);
      MLKV_CUDA_CHECK(ce);
      const float one = 1.f, zero = 0.f;
      float best = 0.f;
      try {
        for (int i = 0; i < n; ++i) {
          if (res[i].state != CUBLAS_STATUS_SUCCESS || res[i].workspaceSize > ws) continue;
          auto run = [&] {
            return cublasLtMatmul(lt_, p->op, &one, w, p->a, x, p->b, &zero, y, p->c, y, p->c, &res[i].algo,
                                  lane_ws(side), ws, ts);
          };
          if (run() != CUBLAS_STATUS_SUCCESS || run() != CUBLAS_STATUS_SUCCESS) continue;
          float ms[7];
          for (float& m : ms) {
            MLKV_CUDA_CHECK(cudaMemsetAsync(flush_.get(), 0, flush_.bytes(), ts));
            MLKV_CUDA_CHECK(cudaEventRecord(e0, ts));
            MLKV_CUBLAS_CHECK(run());
            MLKV_CUDA_CHECK(cudaEventRecord(e1, ts));
            MLKV_CUDA_CHECK(cudaEventSynchronize(e1));
            MLKV_CUDA_CHECK(cudaEventElapsedTime(&m, e0, e1));
          }
          std::sort(ms, ms + 7);
          if (best == 0.f || ms[3] < best) {
            best = ms[3];
            p->algo = res[i].algo;
            p->chosen = i;
          }
        }
      } catch (...) {
        cudaEventDestroy(e0);
        cudaEventDestroy(e1);
        throw;
      }
      cudaEventDestroy(e0);
      cudaEventDestroy(e1);
      p->us = best * 1e3f;
    }
    return *plans_.emplace(key, std::move(p)).first->second;
  }

 public:
  /// The decode GEMM plans made so far: (rows, in, out, algorithms timed, index chosen, median us).
  std::vector<std::tuple<int, int, int, int, int, float>> gemm_choices() const {
    std::vector<std::tuple<int, int, int, int, int, float>> v;
    for (const auto& [k, p] : plans_) {
      v.emplace_back(std::get<0>(k), std::get<1>(k), std::get<2>(k), p->candidates, p->chosen, p->us);
    }
    return v;
  }

 private:

  /// The MLP of one layer for R rows: mo = W_out act(W_in h2 + b_in) (the output bias is added by
  /// the next LayerNorm); `side`: on the side stream (run_body's branch of a decode step).
  void mlp(int R, const layer_ptrs& L, const A* h2, float* big2, A* mida, float* mo, bool tuned, bool side) {
    cudaStream_t s = side ? side_ : stream_;
    gemm(h2, R, H_, L.mlp_in, I_, big2, tuned, side);
    // I_ is a multiple of 64: rows of 16-byte aligned float4s.
    const unsigned cols = static_cast<unsigned>((I_ / 4 + 255) / 256);
    detail::launch_pdl(model_detail::bias_act4_kernel<A>, dim3(cols, static_cast<unsigned>(std::min(R, detail::max_grid_yz))),
                       dim3(256), 0, s, true, static_cast<const float*>(big2), L.in_b, R, I_, cfg_.act, mida);
    gemm(mida, R, I_, L.mlp_out, H_, mo, tuned, side);
  }

  /// The LayerNorm kernel with the fewest values per thread that hold a row.
  void ln(int rows, const model_detail::residual_ln_params<A>& p) {
    const int per = (H_ + model_detail::row_threads - 1) / model_detail::row_threads;
    // The adds as a compile-time mode: every call of the model passes each add with its bias.
    const bool a1 = p.add1 != nullptr && p.bias1 != nullptr, a2 = p.add2 != nullptr && p.bias2 != nullptr;
    const int mode = p.add1 == nullptr && p.add2 == nullptr ? 0
                     : a1 && p.add2 == nullptr              ? 1
                     : a1 && a2                             ? 2
                                                            : -1;
    if (mode < 0) ::mlkv::detail::fail("residual LayerNorm: every add comes with its bias, and add2 only after add1");
    auto go = [&](auto k) {
      constexpr int PER = decltype(k)::value;
      const dim3 grid(static_cast<unsigned>(rows)), block(model_detail::row_threads);
      if (mode == 0) {
        detail::launch_pdl(model_detail::residual_ln_fixed_kernel<A, PER, 0>, grid, block, 0, stream_, true, p);
      } else if (mode == 1) {
        detail::launch_pdl(model_detail::residual_ln_fixed_kernel<A, PER, 1>, grid, block, 0, stream_, true, p);
      } else {
        detail::launch_pdl(model_detail::residual_ln_fixed_kernel<A, PER, 2>, grid, block, 0, stream_, true, p);
      }
    };
    if (per <= 1) go(std::integral_constant<int, 1>{});
    else if (per <= 2) go(std::integral_constant<int, 2>{});
    else if (per <= 3) go(std::integral_constant<int, 3>{});
    else if (per <= 4) go(std::integral_constant<int, 4>{});
    else if (per <= 8) go(std::integral_constant<int, 8>{});
    else if (per <= 16) go(std::integral_constant<int, 16>{});
    else go(std::integral_constant<int, model_detail::max_row_per_thread>{});
  }

  /// Every layer for R rows of B sequences; leaves the residual stream in x with the last layer's
  /// contributions pending (final_norm adds them).
  template <class Cache>
  void run_body(const Cache& cache, int B, int R, const attention_batch& ab, bool decode, const std::int32_t* tokens,
                const std::int32_t* pos) {
    MLKV_CUBLAS_CHECK(cublasSetStream(blas_, stream_));
    float* x = sp<float>(sl_.x);
    A* h1 = sp<A>(sl_.h1);
    A* h2 = sp<A>(sl_.h2);
    float* big = sp<float>(sl_.big);
    float* big2 = sp<float>(sl_.big2);
    T* q = sp<T>(sl_.q);
    float* kb = sp<float>(sl_.k);
    float* vb = sp<float>(sl_.v);
    T* att = sp<T>(sl_.att);
    A* atta = sp<A>(sl_.atta);
    float* proj = sp<float>(sl_.proj);
    float* mo = sp<float>(sl_.mo);
    A* mida = sp<A>(sl_.mida);
    const bool parallel = cfg_.use_parallel_residual;
    const float eps = static_cast<float>(cfg_.layer_norm_eps);
    const float scale = 1.0f / std::sqrt(static_cast<float>(shape_.head_dim));
    // Decode with the parallel residual: the MLP branch (its input is the layer's second LayerNorm,
    // computed with the first) runs on the side stream while the attention branch runs here; the
    // next LayerNorm waits for both. The GEMMs' SMs and latency hide under the decode kernel's.
    const bool branch = decode && parallel && opt_.gemm_algos > 0;
    detail::launch_pdl(model_detail::embed_kernel<W>, dim3(static_cast<unsigned>(R)), dim3(model_detail::row_threads), 0,
               stream_, true, tokens, embed_in_, H_, V_, x);
    // Decode: the K/V, read once per layer, streams through the L2 evict-first, so that the
    // step's activations and the next kernels' weights stay there (NOTES.md v7).
    detail::decode_walk walk{};
    walk.evict_first = model_detail::kv_evict_first.load(std::memory_order_relaxed) != 0 ? 1 : 0;
    for (std::size_t l = 0; l < layers_.size(); ++l) {
      const layer_ptrs& L = layers_[l];
      const layer_ptrs* P = l > 0 ? &layers_[l - 1] : nullptr;
      model_detail::residual_ln_params<A> p{};
      p.x = x, p.hidden = H_, p.eps = eps;
      p.w1 = L.ln1w, p.b1 = L.ln1b, p.out1 = h1;
      if (P != nullptr) {
        if (parallel) {
          p.add1 = proj, p.bias1 = P->dense_b, p.add2 = mo, p.bias2 = P->out_b;
        } else {
          p.add1 = mo, p.bias1 = P->out_b;
        }
      }
      if (parallel) p.w2 = L.ln2w, p.b2 = L.ln2b, p.out2 = h2;
      ln(R, p);
      if (branch) {
        MLKV_CUDA_CHECK(cudaEventRecord(fork_, stream_));
        MLKV_CUDA_CHECK(cudaStreamWaitEvent(side_, fork_, 0));
        mlp(R, L, h2, big2, mida, mo, true, true);
        MLKV_CUDA_CHECK(cudaEventRecord(join_, side_));
      }
      gemm(h1, R, H_, L.qkv, L.qkv_rows, big, decode);
      const paged_slot_view<T> view = device_view(cache, L.slot, B);
      if (decode) {
        // Decode: the attention kernel splits the Q/K/V rows itself (bias, rotary) and, on an
        // owner layer, writes the new token's K (rotated) and V into the cache (NOTES.md v6).
        detail::decode_fused_qkv fq{};
        fq.qkv = big;
        fq.qkv_ld = L.qkv_rows;
        fq.bias = L.qkv_b;
        fq.q_dim = qd_;
        fq.write_kv = L.owner ? 1 : 0;
        fq.rotary_dims = rt_.rotary_dims;
        for (int i = 0; i < rt_.rotary_dims / 2; ++i) fq.inv_freq[i] = rt_.inv_freq[i];
        detail::decode_attention_qkv(view, shape_.q_heads, fq, att, ab, scale, dec_ws_.get(), dec_ws_.bytes(),
                                     stream_, walk);
      } else {
        const int kvd = L.owner ? kvd_ : 0;
        detail::launch_pdl(model_detail::qkv_split_kernel<T>, dim3(static_cast<unsigned>(R)),
                           dim3(model_detail::row_threads), 0, stream_, true, static_cast<const float*>(big), L.qkv_rows,
                           L.qkv_b, qd_, kvd, shape_.head_dim, pos, ab.context, rt_, q, kb, vb);
        if (L.owner) append_kv(view, static_cast<const float*>(kb), static_cast<const float*>(vb), ab, &rope_, stream_);
        prefill_attention(view, shape_.q_heads, q, att, ab, scale, stream_);
      }
      if constexpr (!std::is_same_v<A, T>) {
        const std::size_t n = static_cast<std::size_t>(R) * qd_;
        detail::launch_pdl(model_detail::convert_kernel<T, A>, dim3(model_detail::flat_blocks(n)), dim3(256), 0, stream_, true,
                   static_cast<const T*>(att), n, atta);
      }
      gemm(atta, R, qd_, L.dense, H_, proj, decode);
      if (!parallel) {
        model_detail::residual_ln_params<A> p2{};
        p2.x = x, p2.hidden = H_, p2.eps = eps;
        p2.add1 = proj, p2.bias1 = L.dense_b;
        p2.w1 = L.ln2w, p2.b1 = L.ln2b, p2.out1 = h2;
        ln(R, p2);
      }
      if (branch) {
        MLKV_CUDA_CHECK(cudaStreamWaitEvent(stream_, join_, 0));
      } else {
        mlp(R, L, h2, big2, mida, mo, decode, false);
      }
    }
    // The last layer's contributions, once: x is final from here (final_norm only reads it).
    const layer_ptrs& P = layers_.back();
    model_detail::residual_ln_params<A> p{};
    p.x = x, p.hidden = H_, p.eps = eps;
    if (parallel) {
      p.add1 = proj, p.bias1 = P.dense_b, p.add2 = mo, p.bias2 = P.out_b;
    } else {
      p.add1 = mo, p.bias1 = P.out_b;
    }
    p.w1 = final_w_, p.b1 = final_b_, p.out1 = sp<A>(sl_.hf);
    ln(R, p);
  }

  /// hf[i] = final LayerNorm of x[pick[i]] for n rows (x already complete; pick null: row i).
  void final_norm(int n, const std::int32_t* pick) {
    // run_body already normalised every row into hf in row order; gather the picked ones into h1.
    model_detail::residual_ln_params<A> p{};
    p.x = sp<float>(sl_.x), p.hidden = H_, p.eps = static_cast<float>(cfg_.layer_norm_eps);
    p.w1 = final_w_, p.b1 = final_b_, p.out1 = sp<A>(sl_.h1), p.src = pick;
    ln(n, p);
    logits_src_ = sp<A>(sl_.h1);
  }

  /// logits_[0, m) = rows c0 .. c0 + m of logits_src_ times the output embedding.
  void logits_gemm(int c0, int m, bool tuned) {
    gemm(logits_src_ + static_cast<std::size_t>(c0) * H_, m, H_, embed_out_, V_, logits_, tuned);
  }

  template <class Cache>
  cudaGraphExec_t graph_for(const Cache& cache, int B) {
    auto it = graphs_.find(B);
    if (it != graphs_.end()) return it->second;
    const attention_batch ab = attention_batch::decode(B, d_context(), opt_.max_context);
    // The decode workspace for this batch size; growing it invalidates the graphs that use it.
    const std::size_t need = decode_workspace_bytes(device_view(cache, 0, B), shape_.q_heads, ab);
    if (need > dec_ws_.bytes()) {
      MLKV_CUDA_CHECK(cudaStreamSynchronize(stream_));  // the old workspace may be in use (capture time only)
      clear_graphs();
      dec_ws_ = device_memory(need);
    }
    // The attention branch ahead of the MLP branch when both compete for the SMs (large batches):
    // the decode kernel's CTAs are placed first, the MLP's fill in around them (NOTES.md v5).
    const int prio_knob = model_detail::branch_priority.load(std::memory_order_relaxed);
    const bool prio = opt_.gemm_algos > 0 && cfg_.use_parallel_residual &&
                      (prio_knob > 0 || (prio_knob < 0 && B >= model_detail::priority_min_batch));
    auto body = [&] {
      if (!prio) return decode_body(cache, B, ab);
      // The attention branch on hi_ (greatest priority), the MLP branch on side_ (least).
      const cudaStream_t outer = stream_;
      MLKV_CUDA_CHECK(cudaEventRecord(hi_in_, outer));
      MLKV_CUDA_CHECK(cudaStreamWaitEvent(hi_, hi_in_, 0));
      stream_ = hi_;
      try {
        decode_body(cache, B, ab);
      } catch (...) {
        stream_ = outer;
        throw;
      }
      stream_ = outer;
      MLKV_CUDA_CHECK(cudaEventRecord(hi_out_, hi_));
      MLKV_CUDA_CHECK(cudaStreamWaitEvent(outer, hi_out_, 0));
    };
    // The step runs once outside a capture first: the first launch of each kernel (function
    // attributes, occupancy queries, cuBLAS's choices) must not happen inside one. It writes the
    // same K/V rows the graph then writes again, so the result does not change.
    body();
    cudaGraph_t g = nullptr;
    MLKV_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    try {
      body();
    } catch (...) {
      cudaStreamEndCapture(stream_, &g);
      if (g != nullptr) cudaGraphDestroy(g);
      throw;
    }
    MLKV_CUDA_CHECK(cudaStreamEndCapture(stream_, &g));
    cudaGraphExec_t exec = nullptr;
    const cudaError_t e = cudaGraphInstantiate(&exec, g, prio ? cudaGraphInstantiateFlagUseNodePriority : 0);
    cudaGraphDestroy(g);
    MLKV_CUDA_CHECK(e);
    graphs_.emplace(B, exec);
    flush_.reset();  // the GEMM timings' L2 flush buffer (synchronises: capture time only)
    return exec;
  }

  /// What the decode graph holds: every layer, then logits and argmax chunk by chunk.
  template <class Cache>
  void decode_body(const Cache& cache, int B, const attention_batch& ab) {
    run_body(cache, B, B, ab, /*decode=*/true, d_tokens(), nullptr);
    logits_src_ = sp<A>(sl_.hf);
    for (int c0 = 0; c0 < B; c0 += opt_.logits_chunk) {
      const int m = std::min(opt_.logits_chunk, B - c0);
      logits_gemm(c0, m, true);
      detail::launch_pdl(model_detail::argmax_kernel<0>, dim3(static_cast<unsigned>(m)), dim3(model_detail::argmax_threads), 0,
                 stream_, true, static_cast<const float*>(logits_), V_, next_ + c0);
    }
  }

  cuda_model_options opt_;
  cudaStream_t stream_;
  model_shape shape_;
  io::gpt_neox_config cfg_;
  rotary rope_;
  model_detail::rope_table rt_{};
  int H_ = 0, V_ = 0, I_ = 0, qd_ = 0, kvd_ = 0, rows_cap_ = 0;
  int page_tokens_ = 0, maxb_ = 0;
  std::size_t weight_bytes_ = 0;
  device_memory weights_, scratch_, blas_ws_, meta_, dec_ws_, next_buf_;
  scratch_layout sl_{};
  const W *embed_in_ = nullptr, *embed_out_ = nullptr;
  const float *final_w_ = nullptr, *final_b_ = nullptr;
  std::vector<layer_ptrs> layers_;
  float* logits_ = nullptr;
  const A* logits_src_ = nullptr;
  std::int32_t* next_ = nullptr;
  std::int32_t* pinned_ = nullptr;
  cudaEvent_t staged_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  cublasLtHandle_t lt_ = nullptr;
  cudaStream_t side_ = nullptr;  // the MLP branch of decode steps (parallel residual), least priority
  cudaStream_t hi_ = nullptr;    // the attention branch of decode graphs, greatest priority
  cudaEvent_t fork_ = nullptr, join_ = nullptr, hi_in_ = nullptr, hi_out_ = nullptr;
  std::map<std::tuple<int, int, int, std::uint32_t, bool>, std::unique_ptr<gemm_plan>> plans_;
  device_memory flush_;
  std::map<int, cudaGraphExec_t> graphs_;
  std::vector<std::pair<std::uint32_t, int>> seen_;
  std::uint32_t stamp_ = 0;
  std::vector<std::int32_t> ones_;
  std::vector<int> dest_;
  std::shared_ptr<void> batch_holder_;
  const std::type_info* batch_type_ = nullptr;
};

}  // namespace mlkv::cuda
