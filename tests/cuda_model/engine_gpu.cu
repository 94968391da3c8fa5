// The test engine over mlkv::cuda::cuda_model (the only translation unit of these tests that nvcc
// compiles): the three test geometries, f32 weights with an f16 cache and bf16 with bf16.
#include <mlkv/cuda/model/gpt_neox.cuh>
#include <mlkv/dispatch.hpp>

#include <cmath>
#include <cstring>
#include <vector>

#include "engine.hpp"
#include "test_util.hpp"

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
        model_(w, options(o), stream_) {
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

  static mlkv::cuda::cuda_model_options options(const engine_options& o) {
    mlkv::cuda::cuda_model_options m{.max_batch = o.max_batch, .max_rows = o.max_rows, .max_context = o.max_context,
                                     .logits_chunk = o.logits_chunk};
    if (o.gemv_rows >= 0) m.gemv_rows = o.gemv_rows;
    return m;
  }

  stream_holder holder_;
  cudaStream_t stream_;
  mlkv::cuda::device_paged_cache<cache_t> dc_;
  mlkv::cuda::cuda_model<W, T> model_;
  std::vector<mlkv::seq_id> ids_;
};

template <class W>
double gemv_error(int rows, int in, int out, std::uint64_t seed, int max_blocks) {
  MLKV_CHECK(mlkv::cuda::model_detail::gemv_fits<W>(nullptr, rows, in, nullptr, out), "gemv test shape ", rows, "x", in,
             "x", out, " does not fit the kernel");
  // Uniform values in [-1, 1), rounded to W; the reference multiplies the rounded values.
  mlkv_test::rng rg(seed);
  auto make = [&](std::size_t n) {
    std::vector<W> v(n);
    for (auto& e : v) e = mlkv::from_float<W>(rg.uniform());
    return v;
  };
  auto as_double = [](const W& e) { return static_cast<double>(mlkv::to_float(e)); };
  const std::size_t nx = static_cast<std::size_t>(rows) * in, nw = static_cast<std::size_t>(out) * in;
  const std::size_t ny = static_cast<std::size_t>(rows) * out, guard = static_cast<std::size_t>(out);
  const auto x = make(nx), w = make(nw);
  mlkv::cuda::device_memory dx(nx * sizeof(W)), dw(nw * sizeof(W)), dy((ny + guard) * sizeof(float));
  stream_holder sh;
  MLKV_CUDA_CHECK(cudaMemcpyAsync(dx.get(), x.data(), nx * sizeof(W), cudaMemcpyHostToDevice, sh.s));
  MLKV_CUDA_CHECK(cudaMemcpyAsync(dw.get(), w.data(), nw * sizeof(W), cudaMemcpyHostToDevice, sh.s));
  MLKV_CUDA_CHECK(cudaMemsetAsync(dy.get(), 0xff, (ny + guard) * sizeof(float), sh.s));  // NaN
  mlkv::cuda::model_detail::gemv(dx.as<W>(), rows, in, dw.as<W>(), out, dy.as<float>(), sh.s, max_blocks);
  MLKV_CUDA_CHECK(cudaGetLastError());
  std::vector<float> y(ny + guard);
  MLKV_CUDA_CHECK(cudaMemcpyAsync(y.data(), dy.get(), y.size() * sizeof(float), cudaMemcpyDeviceToHost, sh.s));
  MLKV_CUDA_CHECK(cudaStreamSynchronize(sh.s));
  for (std::size_t i = ny; i < ny + guard; ++i) {
    std::uint32_t b;
    std::memcpy(&b, &y[i], sizeof b);
    if (b != 0xffffffffu) return INFINITY;  // a guard row written
  }
  double worst = 0.0;
  for (int r = 0; r < rows; ++r) {
    for (int o = 0; o < out; ++o) {
      double sum = 0.0, mag = 0.0;
      for (int i = 0; i < in; ++i) {
        const double p = as_double(x[static_cast<std::size_t>(r) * in + i]) * as_double(w[static_cast<std::size_t>(o) * in + i]);
        sum += p, mag += std::fabs(p);
      }
      const float g = y[static_cast<std::size_t>(r) * out + o];
      if (!std::isfinite(g)) return INFINITY;
      worst = std::max(worst, std::fabs(static_cast<double>(g) - sum) / std::max(mag, 1e-30));
    }
  }
  return worst;
}

}  // namespace

double gemv_relative_error(bool bf16, int rows, int in, int out, std::uint64_t seed, int max_blocks) {
  return bf16 ? gemv_error<mlkv::bf16>(rows, in, out, seed, max_blocks) : gemv_error<float>(rows, in, out, seed, max_blocks);
}

bool gemv_refuses(bool bf16, int rows, int in, int x_offset) {
  auto go = [&](auto tag) {
    using W = decltype(tag);
    const std::size_t bytes = static_cast<std::size_t>(std::max(rows, 1)) * std::max(in, 1) * sizeof(W) + 64;
    mlkv::cuda::device_memory dx(bytes), dw(bytes), dy(4096);
    stream_holder sh;
    try {
      mlkv::cuda::model_detail::gemv(dx.as<W>(static_cast<std::size_t>(x_offset)), rows, in, dw.as<W>(), 1,
                                     dy.as<float>(), sh.s);
    } catch (const mlkv::error&) {
      return true;
    }
    MLKV_CUDA_CHECK(cudaStreamSynchronize(sh.s));
    return false;
  };
  return bf16 ? go(mlkv::bf16{}) : go(float{});
}

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
