// The test engine over mlkv::cuda::cuda_model (the only translation unit of these tests that nvcc
// compiles): the three test geometries, f32 weights with an f16 cache and bf16 with bf16.
#include <mlkv/cuda/model/gpt_neox.cuh>
#include <mlkv/dispatch.hpp>

#include "engine.hpp"

namespace mlkv_cuda_model_test {
namespace {

/// A stream destroyed after everything that uses it (the first member of the engine).
struct stream_holder {
  cudaStream_t s = nullptr;
  stream_holder() { MLKV_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking)); }
  ~stream_holder() { cudaStreamDestroy(s); }
  stream_holder(const stream_holder&) = delete;
  stream_holder& operator=(const stream_holder&) = delete;
};

template <mlkv::model_shape S, class W, class T>
class gpu_engine final : public engine {
  using cache_t = mlkv::paged_kv_cache<S, T, page_tokens>;

 public:
  gpu_engine(const mlkv::model::gpt_neox_weights<W>& w, const engine_options& o)
      : stream_(holder_.s), dc_(o.pages, stream_),
        model_(w, mlkv::cuda::cuda_model_options{.max_batch = o.max_batch, .max_rows = o.max_rows,
                                                  .max_context = o.max_context, .logits_chunk = o.logits_chunk},
               stream_) {
    mlkv::cuda::model_detail::branch_priority.store(o.branch_priority);  // read when a graph is made
    mlkv::cuda::detail::decode_force_splits.store(o.decode_splits);     // read when a decode is launched
  }
  ~gpu_engine() override {
    cudaStreamSynchronize(stream_);
    mlkv::cuda::detail::decode_force_splits.store(0);
  }

  int add() override {
    ids_.push_back(dc_.cache().add());
    return static_cast<int>(ids_.size()) - 1;
  }
  void free(int s) override { dc_.cache().free(ids_.at(static_cast<std::size_t>(s))); }
  int length(int s) const override { return dc_.cache().length(ids_.at(static_cast<std::size_t>(s))); }
  int free_pages() const override { return dc_.cache().free_pages(); }
  int vocab() const override { return model_.vocab(); }
  std::size_t graphs() const override { return model_.graphs(); }

  void forward(const std::vector<int>& seqs, const std::vector<std::int32_t>& offsets,
               const std::vector<std::int32_t>& tokens, mlkv::model::logits_rows which, float* logits) override {
    const auto ids = map(seqs);
    model_.forward(dc_.cache(), ids, offsets, tokens, which, logits);
    MLKV_CUDA_CHECK(cudaStreamSynchronize(stream_));
    MLKV_CUDA_CHECK(cudaGetLastError());
  }
  void decode(const std::vector<int>& seqs, const std::vector<std::int32_t>& tokens, float* logits,
              std::int32_t* next, bool tokens_from_last) override {
    const auto ids = map(seqs);
    if (tokens_from_last) {
      model_.decode(dc_.cache(), ids, model_.next_tokens(), true, logits);
    } else {
      MLKV_CHECK(tokens.size() == seqs.size(), "one token per sequence");
      model_.decode(dc_.cache(), ids, tokens.data(), false, logits);
    }
    if (next != nullptr) {
      MLKV_CUDA_CHECK(cudaMemcpyAsync(next, model_.next_tokens(), seqs.size() * sizeof(std::int32_t),
                                      cudaMemcpyDeviceToHost, stream_));
    }
    MLKV_CUDA_CHECK(cudaStreamSynchronize(stream_));
    MLKV_CUDA_CHECK(cudaGetLastError());
  }

 private:
  std::vector<mlkv::seq_id> map(const std::vector<int>& seqs) const {
    std::vector<mlkv::seq_id> out;
    for (int s : seqs) out.push_back(ids_.at(static_cast<std::size_t>(s)));
    return out;
  }

  stream_holder holder_;
  cudaStream_t stream_;
  mlkv::cuda::device_paged_cache<cache_t> dc_;
  mlkv::cuda::cuda_model<W, T> model_;
  std::vector<mlkv::seq_id> ids_;
};

}  // namespace

std::unique_ptr<engine> make_engine(const std::string& dir, const engine_options& opt) {
  const auto cfg = mlkv::io::read_gpt_neox_config(std::filesystem::path(dir) / "config.json");
  return mlkv::dispatch_in<gpu_geometries>(cfg.shape(), [&](auto g) -> std::unique_ptr<engine> {
    constexpr mlkv::model_shape S = decltype(g)::shape;
    if (opt.bf16) {
      const auto w = mlkv::model::load_checkpoint<mlkv::bf16>(dir);
      return std::make_unique<gpu_engine<S, mlkv::bf16, mlkv::bf16>>(w, opt);
    }
    const auto w = mlkv::model::load_checkpoint<float>(dir);
    return std::make_unique<gpu_engine<S, float, mlkv::f16>>(w, opt);
  });
}

}  // namespace mlkv_cuda_model_test
