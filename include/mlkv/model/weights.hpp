#pragma once
/// \file model/weights.hpp
/// The weights of a GPT-NeoX / Pythia model with MLKV sharing: loaded from Hugging Face files
/// (config.json + model.safetensors), written back, or made at random for demos and tests.
///
/// Tensor names, as Hugging Face's GPTNeoXForCausalLM writes them (prefix `gpt_neox.`):
///     embed_in.weight                                   [vocab, hidden]
///     layers.{i}.input_layernorm.{weight,bias}          [hidden]
///     layers.{i}.post_attention_layernorm.{weight,bias} [hidden]
///     layers.{i}.attention.query_key_value.{weight,bias} [heads * 3 * head_dim, hidden] (MHA)
///         rows grouped per head: [heads, 3 (q, k, v), head_dim, hidden]
///     layers.{i}.attention.dense.{weight,bias}          [hidden, hidden]
///     layers.{i}.mlp.dense_h_to_4h.{weight,bias}        [intermediate, hidden]
///     layers.{i}.mlp.dense_4h_to_h.{weight,bias}        [hidden, intermediate]
///     final_layer_norm.{weight,bias}                    [hidden]
///   and `embed_out.weight` [vocab, hidden] (absent when tie_word_embeddings).
/// As the MLKV paper's converter writes them, the fused projection is replaced by
///     layers.{i}.attention.query.{weight,bias}          [q_heads * head_dim, hidden]  (every layer)
///     layers.{i}.attention.{key,value}.{weight,bias}    [kv_heads * head_dim, hidden] (owner layers only)
/// Buffers some files carry (attention.bias, attention.masked_bias, attention.rotary_emb.inv_freq)
/// are ignored. Any other tensor, a missing tensor, a wrong shape or a non-float dtype is an
/// mlkv::error naming the tensor and what was expected; K/V tensors on a consumer layer are an
/// error too (the file's owner layers must be the config's).
///
/// In memory every linear weight is a row-major [out, in] matrix of W (float or mlkv::bf16,
/// 64-byte aligned), as nn.Linear stores it, so a matrix-vector product walks rows. Q, K and V
/// of a layer are one matrix (`qkv`): the q_heads * head_dim query rows (head-major), then, on an
/// owner layer only, kv_heads * head_dim key rows and as many value rows, so one product computes
/// all three. LayerNorm parameters and biases are f32 (exact for bf16 files). F16 files are
/// converted on load (to f32 exactly, to bf16 rounding to nearest even).

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <set>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "../cache/buffer.hpp"
#include "../dtype.hpp"
#include "../error.hpp"
#include "../io/file.hpp"
#include "../io/hf_config.hpp"
#include "../io/json.hpp"
#include "../io/safetensors.hpp"
#include "../shape.hpp"

namespace mlkv::model {

/// A row-major matrix [rows, cols] of W in 64-byte aligned memory (nn.Linear: [out, in]); past
/// 2 MiB on transparent huge pages (detail::cache_memory): a decode step streams every matrix.
template <class W>
struct matrix {
  detail::cache_memory<W> data;
  int rows = 0;
  int cols = 0;

  matrix() = default;
  matrix(int r, int c)
      : data(detail::checked_mul(static_cast<std::size_t>(r), static_cast<std::size_t>(c), "matrix size")), rows(r),
        cols(c) {}

  /// Row r: cols values.
  const W* row(int r) const { return data.data() + static_cast<std::size_t>(r) * static_cast<std::size_t>(cols); }
  W* row(int r) { return data.data() + static_cast<std::size_t>(r) * static_cast<std::size_t>(cols); }
  bool empty() const { return rows == 0 || cols == 0; }
  std::size_t size() const { return static_cast<std::size_t>(rows) * static_cast<std::size_t>(cols); }
  std::size_t bytes() const { return size() * sizeof(W); }
};

/// An f32 parameter vector (LayerNorm scale/shift, bias), 64-byte aligned.
using vec = aligned_buffer<float>;

/// One decoder layer.
template <class W>
struct layer_weights {
  bool owner = false;  ///< projects and stores K/V (an MLKV owner layer)
  int kv_slot = 0;     ///< the cache slot this layer reads (its owner's)
  vec ln1_weight, ln1_bias;  ///< input_layernorm [hidden]
  vec ln2_weight, ln2_bias;  ///< post_attention_layernorm [hidden]
  matrix<W> qkv;             ///< [q_dim + (owner ? 2 * kv_dim : 0), hidden]: Q rows, then K, then V
  vec qkv_bias;              ///< [qkv.rows]
  matrix<W> dense;           ///< attention output projection [hidden, hidden]
  vec dense_bias;            ///< [hidden]
  matrix<W> mlp_in;          ///< dense_h_to_4h [intermediate, hidden]
  vec mlp_in_bias;           ///< [intermediate]
  matrix<W> mlp_out;         ///< dense_4h_to_h [hidden, intermediate]
  vec mlp_out_bias;          ///< [hidden]
};

/// All weights of a model, with its configuration and geometry.
template <class W>
struct gpt_neox_weights {
  static_assert(std::is_same_v<W, float> || std::is_same_v<W, bf16>, "mlkv: model weights are float or mlkv::bf16");
  using weight_type = W;

  io::gpt_neox_config config;  ///< hyper-parameters (rotary, activation, residual form, eps, ...)
  model_shape shape;           ///< the geometry (config.shape())
  int hidden = 0;              ///< hidden_size
  int q_dim = 0;               ///< q_heads * head_dim (= hidden)
  int kv_dim = 0;              ///< kv_heads * head_dim
  int intermediate = 0;        ///< intermediate_size
  int vocab = 0;               ///< vocab_size

  matrix<W> embed_in;               ///< [vocab, hidden]
  std::vector<layer_weights<W>> layers;
  vec final_ln_weight, final_ln_bias;  ///< [hidden]
  matrix<W> embed_out;              ///< [vocab, hidden]; empty when the embeddings are tied

  /// The output projection (embed_out, or embed_in when tie_word_embeddings).
  const matrix<W>& output_embedding() const { return config.tie_word_embeddings ? embed_in : embed_out; }

  /// Bytes a decode step reads in full: every layer's matrices and vectors, the final LayerNorm
  /// and the output projection (the input embedding contributes one row per token, not counted).
  std::size_t step_bytes() const {
    std::size_t n = output_embedding().bytes() + (final_ln_weight.size() + final_ln_bias.size()) * sizeof(float);
    for (const auto& l : layers) {
      n += l.qkv.bytes() + l.dense.bytes() + l.mlp_in.bytes() + l.mlp_out.bytes();
      n += (l.ln1_weight.size() + l.ln1_bias.size() + l.ln2_weight.size() + l.ln2_bias.size() + l.qkv_bias.size() +
            l.dense_bias.size() + l.mlp_in_bias.size() + l.mlp_out_bias.size()) *
           sizeof(float);
    }
    return n;
  }

  /// Number of parameters, as Hugging Face counts them (a tied output embedding counts once;
  /// without attention_bias the zero Q/K/V and dense biases held here are not parameters).
  std::size_t parameters() const {
    std::size_t n = embed_in.size() + (config.tie_word_embeddings ? 0 : embed_out.size()) + final_ln_weight.size() +
                    final_ln_bias.size();
    for (const auto& l : layers) {
      n += l.qkv.size() + l.dense.size() + l.mlp_in.size() + l.mlp_out.size();
      n += l.ln1_weight.size() + l.ln1_bias.size() + l.ln2_weight.size() + l.ln2_bias.size();
      n += l.mlp_in_bias.size() + l.mlp_out_bias.size();
      if (config.attention_bias) n += l.qkv_bias.size() + l.dense_bias.size();
    }
    return n;
  }
};

/// Hugging Face's tensor name of layer `l`'s parameter `what` ("attention.dense.weight", ...).
inline std::string layer_tensor(int l, std::string_view what) {
  return "gpt_neox.layers." + std::to_string(l) + "." + std::string(what);
}

namespace detail {

/// Weight geometry derived from a validated configuration.
template <class W>
gpt_neox_weights<W> empty_weights(const io::gpt_neox_config& cfg) {
  cfg.validate();
  gpt_neox_weights<W> w;
  w.config = cfg;
  w.shape = cfg.shape();
  w.hidden = cfg.hidden_size;
  w.q_dim = cfg.num_attention_heads * cfg.head_dim();
  w.kv_dim = cfg.num_key_value_heads * cfg.head_dim();
  w.intermediate = cfg.intermediate_size;
  w.vocab = cfg.vocab_size;
  w.layers.resize(static_cast<std::size_t>(cfg.num_hidden_layers));
  for (int l = 0; l < cfg.num_hidden_layers; ++l) {
    auto& lw = w.layers[static_cast<std::size_t>(l)];
    lw.owner = w.shape.owner(l);
    lw.kv_slot = w.shape.kv_slot(l);
  }
  return w;
}

/// Reads tensors of one file against one configuration, remembering which were used.
template <class W>
class loader {
 public:
  explicit loader(const io::safetensors_file& f) : f_(f) {}

  const io::tensor_info& tensor(const std::string& name, std::vector<std::int64_t> shape, std::string_view what) {
    const io::tensor_info* t = f_.find(name);
    if (t == nullptr) {
      ::mlkv::detail::fail(f_.source(), ": missing tensor \"", name, "\" (", what, ", shape ", io::shape_string(shape),
                           ")");
    }
    if (t->dtype != io::st_dtype::F32 && t->dtype != io::st_dtype::F16 && t->dtype != io::st_dtype::BF16) {
      ::mlkv::detail::fail(f_.source(), ": tensor \"", name, "\" has dtype ", io::name_of(t->dtype),
                           "; weights must be F32, F16 or BF16");
    }
    if (t->shape != shape) {
      ::mlkv::detail::fail(f_.source(), ": tensor \"", name, "\" has shape ", io::shape_string(t->shape), ", expected ",
                           io::shape_string(shape), " (", what, ", from config.json)");
    }
    used_.insert(name);
    return *t;
  }

  /// Converts rows [r0, r0 + n) of a 2-D tensor (or elements of a 1-D one, cols = 1) into dst.
  template <class T>
  void rows(const io::tensor_info& t, std::size_t r0, std::size_t n, std::size_t cols, T* dst) const {
    const std::size_t es = io::size_of(t.dtype);
    io::detail::convert_elements(f_.bytes(t).data() + r0 * cols * es, t.dtype, n * cols, dst);
  }

  matrix<W> mat(const std::string& name, int r, int c, std::string_view what) {
    const io::tensor_info& t = tensor(name, {r, c}, what);
    matrix<W> m(r, c);
    rows(t, 0, static_cast<std::size_t>(r), static_cast<std::size_t>(c), m.data.data());
    return m;
  }

  vec vector(const std::string& name, int n, std::string_view what) {
    const io::tensor_info& t = tensor(name, {n}, what);
    vec v(static_cast<std::size_t>(n));
    rows(t, 0, static_cast<std::size_t>(n), 1, v.data());
    return v;
  }

  bool has(const std::string& name) const { return f_.find(name) != nullptr; }
  void ignore(const std::string& name) {
    if (has(name)) used_.insert(name);
  }

  /// Throws when the file holds tensors the model does not use.
  void check_all_used() const {
    std::vector<std::string> extra;
    for (const auto& t : f_.tensors()) {
      if (used_.count(t.name) == 0) extra.push_back(t.name);
    }
    if (extra.empty()) return;
    std::string list;
    for (std::size_t i = 0; i < extra.size() && i < 5; ++i) list += (i ? ", \"" : "\"") + extra[i] + "\"";
    if (extra.size() > 5) list += ", ... (" + std::to_string(extra.size()) + " in all)";
    std::string hint;
    for (const auto& e : extra) {
      if (e.find(".attention.key.dense_in.") != std::string::npos) {
        hint = "; K/V projections that are MLPs (use_key_value_mlp) are not supported";
        break;
      }
      if (e.find(".attention.key.") != std::string::npos || e.find(".attention.value.") != std::string::npos) {
        hint = "; K/V tensors on a layer that config.json makes a consumer mean the file's owner layers differ from "
               "the config's (num_key_value_layers)";
        break;
      }
    }
    ::mlkv::detail::fail(f_.source(), ": tensors that a GPT-NeoX model with this config.json does not have: ", list, hint);
  }

 private:
  const io::safetensors_file& f_;
  std::set<std::string> used_;
};

}  // namespace detail

/// Loads the weights of `cfg` from a safetensors file, converting to W (float or mlkv::bf16).
template <class W>
gpt_neox_weights<W> load_weights(const io::safetensors_file& f, const io::gpt_neox_config& cfg) {
  gpt_neox_weights<W> w = detail::empty_weights<W>(cfg);
  detail::loader<W> ld(f);
  const int H = w.hidden, I = w.intermediate, V = w.vocab, D = cfg.head_dim();
  const int hq = cfg.num_attention_heads, hkv = cfg.num_key_value_heads;

  w.embed_in = ld.mat("gpt_neox.embed_in.weight", V, H, "input embedding");
  for (int l = 0; l < cfg.num_hidden_layers; ++l) {
    auto& lw = w.layers[static_cast<std::size_t>(l)];
    auto name = [&](std::string_view what) { return layer_tensor(l, what); };
    const std::string at = "layer " + std::to_string(l);
    lw.ln1_weight = ld.vector(name("input_layernorm.weight"), H, at + " input LayerNorm");
    lw.ln1_bias = ld.vector(name("input_layernorm.bias"), H, at + " input LayerNorm");
    lw.ln2_weight = ld.vector(name("post_attention_layernorm.weight"), H, at + " post-attention LayerNorm");
    lw.ln2_bias = ld.vector(name("post_attention_layernorm.bias"), H, at + " post-attention LayerNorm");

    const int rows = w.q_dim + (lw.owner ? 2 * w.kv_dim : 0);
    lw.qkv = matrix<W>(rows, H);
    lw.qkv_bias = vec(static_cast<std::size_t>(rows));
    if (ld.has(name("attention.query_key_value.weight"))) {
      // Hugging Face's fused MHA projection: rows [heads, 3, head_dim]; regroup into Q, K, V.
      if (!lw.owner || hkv != hq) {
        ::mlkv::detail::fail(f.source(), ": ", at, " has a fused attention.query_key_value (one K/V head per query "
                             "head on every layer), but config.json gives num_key_value_heads=", hkv,
                             " and num_key_value_layers=", cfg.num_key_value_layers, " of ", cfg.num_hidden_layers);
      }
      const auto& t = ld.tensor(name("attention.query_key_value.weight"), {3 * w.q_dim, H}, at + " fused QKV projection");
      for (int h = 0; h < hq; ++h) {
        for (int part = 0; part < 3; ++part) {
          ld.rows(t, static_cast<std::size_t>((h * 3 + part) * D), static_cast<std::size_t>(D),
                  static_cast<std::size_t>(H), lw.qkv.row(part * w.q_dim + h * D));
        }
      }
      if (cfg.attention_bias) {
        const auto& b = ld.tensor(name("attention.query_key_value.bias"), {3 * w.q_dim}, at + " fused QKV bias");
        for (int h = 0; h < hq; ++h) {
          for (int part = 0; part < 3; ++part) {
            ld.rows(b, static_cast<std::size_t>((h * 3 + part) * D), static_cast<std::size_t>(D), 1,
                    lw.qkv_bias.data() + part * w.q_dim + h * D);
          }
        }
      }
    } else {
      // The paper's converter: separate projections, K/V only on owner layers.
      const struct {
        const char* name;
        int row0, n;
      } parts[] = {{"query", 0, w.q_dim}, {"key", w.q_dim, w.kv_dim}, {"value", w.q_dim + w.kv_dim, w.kv_dim}};
      for (const auto& p : parts) {
        if (p.row0 > 0 && !lw.owner) break;  // consumer: no K/V (extra tensors are reported below)
        const std::string base = std::string("attention.") + p.name;
        const auto& t = ld.tensor(name(base + ".weight"), {p.n, H}, at + " " + p.name + " projection");
        ld.rows(t, 0, static_cast<std::size_t>(p.n), static_cast<std::size_t>(H), lw.qkv.row(p.row0));
        if (cfg.attention_bias) {
          const auto& b = ld.tensor(name(base + ".bias"), {p.n}, at + " " + p.name + " bias");
          ld.rows(b, 0, static_cast<std::size_t>(p.n), 1, lw.qkv_bias.data() + p.row0);
        }
      }
    }
    for (const char* buf : {"attention.bias", "attention.masked_bias", "attention.rotary_emb.inv_freq"}) {
      ld.ignore(name(buf));
    }
    lw.dense = ld.mat(name("attention.dense.weight"), H, H, at + " attention output projection");
    lw.dense_bias = cfg.attention_bias ? ld.vector(name("attention.dense.bias"), H, at + " attention output bias")
                                       : vec(static_cast<std::size_t>(H));
    lw.mlp_in = ld.mat(name("mlp.dense_h_to_4h.weight"), I, H, at + " MLP input projection");
    lw.mlp_in_bias = ld.vector(name("mlp.dense_h_to_4h.bias"), I, at + " MLP input bias");
    lw.mlp_out = ld.mat(name("mlp.dense_4h_to_h.weight"), H, I, at + " MLP output projection");
    lw.mlp_out_bias = ld.vector(name("mlp.dense_4h_to_h.bias"), H, at + " MLP output bias");
  }
  w.final_ln_weight = ld.vector("gpt_neox.final_layer_norm.weight", H, "final LayerNorm");
  w.final_ln_bias = ld.vector("gpt_neox.final_layer_norm.bias", H, "final LayerNorm");
  if (cfg.tie_word_embeddings) {
    ld.ignore("embed_out.weight");  // tied: the input embedding is used
  } else {
    w.embed_out = ld.mat("embed_out.weight", V, H, "output embedding");
  }
  ld.check_all_used();
  return w;
}

/// Loads a checkpoint directory: config.json and model.safetensors.
template <class W>
gpt_neox_weights<W> load_checkpoint(const std::filesystem::path& dir) {
  const auto st = dir / "model.safetensors";
  if (!std::filesystem::exists(st)) {
    if (std::filesystem::exists(dir / "model.safetensors.index.json")) {
      ::mlkv::detail::fail(dir.string(), ": sharded checkpoints (model.safetensors.index.json) are not supported; "
                           "merge them into one model.safetensors");
    }
    if (std::filesystem::exists(dir / "pytorch_model.bin")) {
      ::mlkv::detail::fail(dir.string(), ": only pytorch_model.bin found; convert it to model.safetensors first "
                           "(pickle files are not read)");
    }
    ::mlkv::detail::fail(dir.string(), ": no model.safetensors");
  }
  const io::gpt_neox_config cfg = io::read_gpt_neox_config(dir / "config.json");
  const io::safetensors_file f = io::safetensors_file::open(st);
  return load_weights<W>(f, cfg);
}

namespace detail {
/// splitmix64: a fast, well-mixed generator for large random models.
struct splitmix {
  std::uint64_t s;
  std::uint64_t next() {
    std::uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  /// Uniform in [-1, 1).
  float uniform() { return static_cast<float>(static_cast<std::int64_t>(next() >> 40) - (1ll << 23)) * 0x1p-23f; }
};

/// Rounds through W, so values survive a round trip through a file of W.
template <class W>
float representable(float x) {
  return to_float(from_float<W>(x));
}
}  // namespace detail

/// A model with random weights (deterministic in `seed`): linear weights uniform with standard
/// deviation `init_std` (Hugging Face initialises GPT-NeoX with 0.02), biases a tenth of that,
/// LayerNorm scales near 1. Every value is representable in W, so a file written from these
/// weights reads back exactly.
template <class W>
gpt_neox_weights<W> random_weights(const io::gpt_neox_config& cfg, std::uint64_t seed, float init_std = 0.02f) {
  gpt_neox_weights<W> w = detail::empty_weights<W>(cfg);
  detail::splitmix rng{seed};
  const float a = init_std * std::sqrt(3.0f);  // uniform(-a, a) has standard deviation init_std
  auto fill_mat = [&](matrix<W>& m, int r, int c) {
    m = matrix<W>(r, c);
    for (std::size_t i = 0; i < m.size(); ++i) m.data[i] = from_float<W>(a * rng.uniform());
  };
  auto fill_vec = [&](vec& v, int n, float center, float scale) {
    v = vec(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) v[static_cast<std::size_t>(i)] = detail::representable<W>(center + scale * rng.uniform());
  };
  const int H = w.hidden;
  fill_mat(w.embed_in, w.vocab, H);
  for (auto& l : w.layers) {
    fill_vec(l.ln1_weight, H, 1.f, 0.1f);
    fill_vec(l.ln1_bias, H, 0.f, 0.1f * a);
    fill_vec(l.ln2_weight, H, 1.f, 0.1f);
    fill_vec(l.ln2_bias, H, 0.f, 0.1f * a);
    const int rows = w.q_dim + (l.owner ? 2 * w.kv_dim : 0);
    fill_mat(l.qkv, rows, H);
    fill_vec(l.qkv_bias, rows, 0.f, cfg.attention_bias ? 0.1f * a : 0.f);
    fill_mat(l.dense, H, H);
    fill_vec(l.dense_bias, H, 0.f, cfg.attention_bias ? 0.1f * a : 0.f);
    fill_mat(l.mlp_in, w.intermediate, H);
    fill_vec(l.mlp_in_bias, w.intermediate, 0.f, 0.1f * a);
    fill_mat(l.mlp_out, H, w.intermediate);
    fill_vec(l.mlp_out_bias, H, 0.f, 0.1f * a);
  }
  fill_vec(w.final_ln_weight, H, 1.f, 0.1f);
  fill_vec(w.final_ln_bias, H, 0.f, 0.1f * a);
  if (!cfg.tie_word_embeddings) fill_mat(w.embed_out, w.vocab, H);
  return w;
}

/// How save_checkpoint writes Q/K/V.
enum class qkv_format : std::uint8_t {
  automatic,  ///< fused (Hugging Face) for plain MHA, separate otherwise
  fused,      ///< attention.query_key_value (MHA only)
  separate,   ///< attention.query / key / value (the paper's converter)
};

/// Writes a checkpoint directory (config.json + model.safetensors, tensors stored as W), each
/// file atomically. The directory is created when missing.
template <class W>
void save_checkpoint(const gpt_neox_weights<W>& w, const std::filesystem::path& dir,
                     qkv_format format = qkv_format::automatic) {
  const io::gpt_neox_config& cfg = w.config;
  const bool fused = format == qkv_format::fused || (format == qkv_format::automatic && cfg.is_mha());
  MLKV_CHECK(!fused || cfg.is_mha(), "a fused query_key_value needs one K/V head per query head on every layer");
  const int D = cfg.head_dim(), hq = cfg.num_attention_heads, H = w.hidden;
  constexpr io::st_dtype dt = io::st_dtype_of<W>;
  io::safetensors_writer out;
  out.set_metadata("format", "pt");  // transformers refuses safetensors files without it
  auto bytes_of = [](const matrix<W>& m) {
    return std::span<const std::byte>(reinterpret_cast<const std::byte*>(m.data.data()), m.bytes());
  };
  auto put_mat = [&](std::string name, const matrix<W>& m) {
    out.add_view(std::move(name), dt, {m.rows, m.cols}, bytes_of(m));
  };
  auto put_vec = [&](std::string name, const float* v, std::size_t n) {
    out.add_converted(std::move(name), dt, {static_cast<std::int64_t>(n)}, std::span<const float>(v, n));
  };
  put_mat("gpt_neox.embed_in.weight", w.embed_in);
  for (int l = 0; l < cfg.num_hidden_layers; ++l) {
    const auto& lw = w.layers[static_cast<std::size_t>(l)];
    put_vec(layer_tensor(l, "input_layernorm.weight"), lw.ln1_weight.data(), lw.ln1_weight.size());
    put_vec(layer_tensor(l, "input_layernorm.bias"), lw.ln1_bias.data(), lw.ln1_bias.size());
    put_vec(layer_tensor(l, "post_attention_layernorm.weight"), lw.ln2_weight.data(), lw.ln2_weight.size());
    put_vec(layer_tensor(l, "post_attention_layernorm.bias"), lw.ln2_bias.data(), lw.ln2_bias.size());
    if (fused) {
      // Back to Hugging Face's per-head grouping [heads, 3, head_dim, hidden].
      std::vector<std::byte> wb(lw.qkv.bytes());
      std::vector<float> bias(static_cast<std::size_t>(lw.qkv.rows));
      const std::size_t row_bytes = static_cast<std::size_t>(H) * sizeof(W);
      for (int h = 0; h < hq; ++h) {
        for (int part = 0; part < 3; ++part) {
          for (int d = 0; d < D; ++d) {
            const int src = part * w.q_dim + h * D + d, dst = (h * 3 + part) * D + d;
            std::memcpy(wb.data() + static_cast<std::size_t>(dst) * row_bytes, lw.qkv.row(src), row_bytes);
            bias[static_cast<std::size_t>(dst)] = lw.qkv_bias[static_cast<std::size_t>(src)];
          }
        }
      }
      out.add(layer_tensor(l, "attention.query_key_value.weight"), dt, {lw.qkv.rows, H}, std::move(wb));
      if (cfg.attention_bias) put_vec(layer_tensor(l, "attention.query_key_value.bias"), bias.data(), bias.size());
    } else {
      const struct {
        const char* name;
        int row0, n;
      } parts[] = {{"query", 0, w.q_dim}, {"key", w.q_dim, w.kv_dim}, {"value", w.q_dim + w.kv_dim, w.kv_dim}};
      for (const auto& p : parts) {
        if (p.row0 > 0 && !lw.owner) break;
        const std::string base = std::string("attention.") + p.name;
        out.add_view(layer_tensor(l, base + ".weight"), dt, {p.n, H},
                     std::span<const std::byte>(reinterpret_cast<const std::byte*>(lw.qkv.row(p.row0)),
                                                static_cast<std::size_t>(p.n) * static_cast<std::size_t>(H) * sizeof(W)));
        if (cfg.attention_bias) {
          put_vec(layer_tensor(l, base + ".bias"), lw.qkv_bias.data() + p.row0, static_cast<std::size_t>(p.n));
        }
      }
    }
    put_mat(layer_tensor(l, "attention.dense.weight"), lw.dense);
    if (cfg.attention_bias) put_vec(layer_tensor(l, "attention.dense.bias"), lw.dense_bias.data(), lw.dense_bias.size());
    put_mat(layer_tensor(l, "mlp.dense_h_to_4h.weight"), lw.mlp_in);
    put_vec(layer_tensor(l, "mlp.dense_h_to_4h.bias"), lw.mlp_in_bias.data(), lw.mlp_in_bias.size());
    put_mat(layer_tensor(l, "mlp.dense_4h_to_h.weight"), lw.mlp_out);
    put_vec(layer_tensor(l, "mlp.dense_4h_to_h.bias"), lw.mlp_out_bias.data(), lw.mlp_out_bias.size());
  }
  put_vec("gpt_neox.final_layer_norm.weight", w.final_ln_weight.data(), w.final_ln_weight.size());
  put_vec("gpt_neox.final_layer_norm.bias", w.final_ln_bias.data(), w.final_ln_bias.size());
  if (!cfg.tie_word_embeddings) put_mat("embed_out.weight", w.embed_out);

  std::filesystem::create_directories(dir);
  out.write(dir / "model.safetensors");
  io::write_file_atomic(dir / "config.json", json::dump(cfg.to_json(), 2) + "\n");
}

}  // namespace mlkv::model
