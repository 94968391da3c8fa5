#pragma once
// The CUDA model as the (g++-compiled) tests see it: a small interface over
// mlkv::cuda::cuda_model and its device paged cache, implemented in engine_gpu.cu (nvcc) for the
// geometries of gpu_geometries.hpp. The tests need no CUDA compiler, only this header.

#include <mlkv/model/modes.hpp>
#include <mlkv/presets.hpp>
#include <mlkv/shape.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace mlkv_cuda_model_test {

/// Geometries of the GPU model tests (the CUDA kernels take head dims 64..128): MHA (Lkv = L),
/// MLKV with uneven groups (owners 0, 1, 3 of 5 layers) and GQA inside, and one owner layer with
/// one KV head (Hkv = 1, Lkv = 1).
inline constexpr std::array<mlkv::named_shape, 3> gpu_geometries{{
    {"gpu-mha", mlkv::model_shape{.layers = 2, .q_heads = 4, .kv_heads = 4, .kv_layers = 2, .head_dim = 64}},
    {"gpu-mlkv-uneven", mlkv::model_shape{.layers = 5, .q_heads = 4, .kv_heads = 2, .kv_layers = 3, .head_dim = 64}},
    {"gpu-mlkv-1", mlkv::model_shape{.layers = 3, .q_heads = 4, .kv_heads = 1, .kv_layers = 1, .head_dim = 64}},
}};

/// Tokens per page of the tests' caches (small, so sequences cross pages).
inline constexpr int page_tokens = 16;

struct engine_options {
  bool bf16 = false;  ///< bf16 weights and cache; otherwise f32 weights with an f16 cache
  int pages = 64;
  int max_batch = 8;
  int max_rows = 256;
  int max_context = 160;
  int logits_chunk = 256;
  /// mlkv::cuda::model_detail::branch_priority for this engine's decode graphs (-1: by batch size)
  int branch_priority = -1;
  /// mlkv::cuda::detail::decode_force_splits for this engine's decode calls (0: the plan's split)
  int decode_splits = 0;
  /// cuda_model_options::gemv_rows (-1: the default; 0: cuBLASLt for every decode GEMM)
  int gemv_rows = -1;
};

/// A CUDA model loaded from a checkpoint directory with its own device cache and stream.
class engine {
 public:
  virtual ~engine() = default;
  virtual int add() = 0;                 ///< a new sequence: its handle
  virtual void free(int seq) = 0;
  virtual int length(int seq) const = 0;
  virtual int free_pages() const = 0;
  virtual int vocab() const = 0;
  virtual std::size_t graphs() const = 0;
  /// cuda_model::forward with host tokens; logits (host) [batch or rows, vocab].
  virtual void forward(const std::vector<int>& seqs, const std::vector<std::int32_t>& offsets,
                       const std::vector<std::int32_t>& tokens, mlkv::model::logits_rows which, float* logits) = 0;
  /// cuda_model::decode; logits (host, may be null) [batch, vocab]; next (host) [batch] greedy tokens.
  /// With tokens_from_last, the tokens are the previous decode's greedy tokens (device to device).
  virtual void decode(const std::vector<int>& seqs, const std::vector<std::int32_t>& tokens, float* logits,
                      std::int32_t* next, bool tokens_from_last = false) = 0;
};

/// mlkv::cuda::model_detail::gemv (the decode steps' matrix-vector kernel) on random inputs,
/// y[rows, out] = x[rows, in] w[out, in]^T with bf16 (or f32) operands, against the exact products
/// of the same values summed in double: the largest |error| of an output relative to
/// sum_i |x_i w_i| of that output. Infinity when an output is not written (poisoned with NaN) or a
/// guard row after y is changed. max_blocks: gemv's cap on the grid (0: none).
double gemv_relative_error(bool bf16, int rows, int in, int out, std::uint64_t seed, int max_blocks = 0);

/// True when mlkv::cuda::model_detail::gemv refuses (throws, launches nothing) operands it does
/// not fit: `rows` rows of `in` values (bf16 or f32) whose x starts x_offset bytes into an aligned
/// buffer. The model then takes cuBLAS for them (gemv_fits).
bool gemv_refuses(bool bf16, int rows, int in, int x_offset);

/// Loads dir (config.json + model.safetensors) through mlkv::model::load_checkpoint.
std::unique_ptr<engine> make_engine(const std::string& dir, const engine_options& opt);

}  // namespace mlkv_cuda_model_test
