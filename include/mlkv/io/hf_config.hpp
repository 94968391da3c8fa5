#pragma once
/// \file io/hf_config.hpp
/// Hugging Face `config.json` of GPT-NeoX / Pythia models, with the MLKV paper's keys
/// `num_key_value_heads` (KV heads per owner layer) and `num_key_value_layers` (owner layers).
///
/// Keys read (HF's default when absent, as `GPTNeoXConfig` applies it):
///   required: hidden_size, num_attention_heads, num_hidden_layers, intermediate_size, vocab_size
///   optional: max_position_embeddings (2048), rotary_pct or partial_rotary_factor (0.25),
///             rotary_emb_base or rope_theta (10000), use_parallel_residual (true),
///             hidden_act ("gelu"), layer_norm_eps (1e-5), tie_word_embeddings (false),
///             attention_bias (true), bos_token_id, eos_token_id, torch_dtype, model_type,
///             num_key_value_heads (= num_attention_heads), num_key_value_layers
///             (= num_hidden_layers), use_key_value_mlp (false).
/// A missing required key, or any key of the wrong JSON type or out of range, is an mlkv::error
/// naming the key, the value found and what is allowed. Other keys are kept (see `raw`) and
/// written back unchanged.
///
/// Decisions:
///  - `use_key_value_mlp: true` (the paper's variant whose K/V projections are two-layer MLPs,
///    initialised at random by its converter) is refused: the paper's reported models use linear
///    K/V projections, and so does this library's model.
///  - The paper's code places owner layers at `[0] + [int((i+1) * (L / Lkv)) ...]`, computed in
///    floating point; `mlkv::placement::spread` computes the same in exact integers. They agree
///    for every configuration of the paper; where they do not (first (L, Lkv) = (30, 22)),
///    `shape()` returns a table placement holding the paper's owners, so a checkpoint is always
///    read with the owners it was trained with (and dispatch then refuses it unless that exact
///    geometry is compiled in).
///  - The paper's configuration class defaults num_key_value_heads/layers to 64/44 (GPT-NeoX-20B's
///    values); a config without them is an ordinary GPT-NeoX file, so they default to MHA here.
///  - `rope_scaling` other than null is refused (not part of Pythia or the paper).

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "../error.hpp"
#include "../rope.hpp"
#include "../shape.hpp"
#include "file.hpp"
#include "json.hpp"

namespace mlkv::io {

/// The MLP activation (`hidden_act`).
enum class activation : std::uint8_t {
  gelu,       ///< "gelu": x * Phi(x), exact (erf)
  gelu_tanh,  ///< "gelu_new", "gelu_pytorch_tanh", "gelu_fast": the tanh approximation
  relu,       ///< "relu"
  silu,       ///< "silu", "swish": x * sigmoid(x)
};

/// The paper's owner layers, exactly as its Python computes them (floating point):
/// `[0] + [int((i + 1) * (L / Lkv)) for i in range(Lkv - 1)]`.
inline std::vector<int> paper_owner_layers(int layers, int kv_layers) {
  MLKV_CHECK(layers >= 1 && kv_layers >= 1 && kv_layers <= layers, "KV layers (", kv_layers,
             ") must be between 1 and layers (", layers, ")");
  std::vector<int> owners{0};
  const double step = static_cast<double>(layers) / static_cast<double>(kv_layers);  // Python's L / Lkv
  for (int i = 0; i < kv_layers - 1; ++i) owners.push_back(static_cast<int>(static_cast<double>(i + 1) * step));
  return owners;
}

/// The owner layers of a valid geometry, ascending.
inline std::vector<int> owner_layers(const model_shape& s) {
  std::vector<int> o;
  for (int slot = 0; slot < s.kv_layers; ++slot) o.push_back(s.owner_layer(slot));
  return o;
}

/// The geometry the paper's model builds: spread placement when the paper's floating-point owners
/// equal the exact ones (every configuration of the paper), else a table of the paper's owners
/// (each layer reads the nearest owner at or below it). Throws for invalid values.
inline model_shape paper_shape(int layers, int q_heads, int kv_heads, int kv_layers, int head_dim) {
  model_shape s{.layers = layers, .q_heads = q_heads, .kv_heads = kv_heads, .kv_layers = kv_layers, .head_dim = head_dim};
  s.validate();
  const std::vector<int> paper = paper_owner_layers(layers, kv_layers);
  if (paper == owner_layers(s)) return s;
  std::vector<int> reads(static_cast<std::size_t>(layers));
  std::size_t next = 0;
  int current = -1;
  for (int l = 0; l < layers; ++l) {
    while (next < paper.size() && paper[next] <= l) current = paper[next++];
    reads[static_cast<std::size_t>(l)] = current;
  }
  s.placement = placement::from_table(reads);
  s.validate();
  return s;
}

/// A GPT-NeoX configuration (Hugging Face's keys) with the MLKV paper's KV sharing.
struct gpt_neox_config {
  int vocab_size = 0;
  int hidden_size = 0;
  int num_hidden_layers = 0;
  int num_attention_heads = 0;
  int intermediate_size = 0;
  int max_position_embeddings = 2048;
  int num_key_value_heads = 0;   ///< KV heads per owner layer (paper); = num_attention_heads for MHA
  int num_key_value_layers = 0;  ///< owner layers (paper); = num_hidden_layers without layer sharing
  double rotary_pct = 0.25;
  double rotary_emb_base = 10000.0;
  bool use_parallel_residual = true;
  std::string hidden_act = "gelu";
  activation act = activation::gelu;
  double layer_norm_eps = 1e-5;
  bool tie_word_embeddings = false;
  bool attention_bias = true;  ///< false: no biases on query_key_value and dense (zeros)
  std::optional<int> bos_token_id;
  std::vector<int> eos_token_ids;  ///< stop tokens (eos_token_id may be one id or a list)
  std::string torch_dtype;         ///< informational ("float16", ...); empty when absent
  std::vector<std::string> defaulted;  ///< optional keys that were absent and took defaults
  json::value raw = json::value::object();  ///< the file's object (unknown keys kept)

  /// Values per attention head: hidden_size / num_attention_heads.
  int head_dim() const { return hidden_size / num_attention_heads; }
  /// Rotated dims per head: int(head_dim * rotary_pct), as GPT-NeoX computes it.
  int rotary_dims() const { return static_cast<int>(head_dim() * rotary_pct); }
  /// The rotary settings for mlkv::rotary.
  rope_config rope() const {
    return rope_config{head_dim(), rotary_dims(), static_cast<float>(rotary_emb_base)};
  }
  /// The geometry (see paper_shape for the placement).
  model_shape shape() const {
    return paper_shape(num_hidden_layers, num_attention_heads, num_key_value_heads, num_key_value_layers, head_dim());
  }
  /// No KV sharing at all (an ordinary GPT-NeoX checkpoint).
  bool is_mha() const {
    return num_key_value_heads == num_attention_heads && num_key_value_layers == num_hidden_layers;
  }

  /// Checks every value (ranges, divisibility, geometry, rotary); throws an mlkv::error.
  void validate(std::string_view source = "config") const;

  /// The configuration as config.json: `raw` with every field above written over it (values
  /// equal to raw's are left as written there, so a file read and written back is unchanged).
  json::value to_json() const;
};

namespace detail {

inline std::string shown(const json::value& v) {
  std::string s = json::dump(v);
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

/// Reads config values, naming the source and key in every error.
struct config_reader {
  const json::value& obj;
  std::string_view source;
  std::vector<std::string>& defaulted;

  [[noreturn]] void bad(std::string_view key, const auto&... what) const {
    ::mlkv::detail::fail(source, ": \"", key, "\" ", what...);
  }

  const json::value* get(std::string_view key) const { return obj.find(key); }

  int integer(std::string_view key, std::optional<int> fallback, int lo, int hi) const {
    const json::value* v = get(key);
    if (v == nullptr) {
      if (!fallback) ::mlkv::detail::fail(source, ": missing required key \"", key, "\"");
      defaulted.emplace_back(key);
      return *fallback;
    }
    if (!v->is_integer() || v->as_int() < lo || v->as_int() > hi) {
      bad(key, "must be an integer between ", lo, " and ", hi, ", found ", shown(*v));
    }
    return static_cast<int>(v->as_int());
  }

  double number(std::string_view key, double fallback, double lo, double hi) const {
    const json::value* v = get(key);
    if (v == nullptr) {
      defaulted.emplace_back(key);
      return fallback;
    }
    if (!v->is_number() || !(v->as_double() >= lo && v->as_double() <= hi)) {
      bad(key, "must be a number between ", lo, " and ", hi, ", found ", shown(*v));
    }
    return v->as_double();
  }

  bool boolean(std::string_view key, bool fallback) const {
    const json::value* v = get(key);
    if (v == nullptr) {
      defaulted.emplace_back(key);
      return fallback;
    }
    if (!v->is_bool()) bad(key, "must be true or false, found ", shown(*v));
    return v->as_bool();
  }

  std::optional<std::string> string(std::string_view key) const {
    const json::value* v = get(key);
    if (v == nullptr || v->is_null()) return std::nullopt;
    if (!v->is_string()) bad(key, "must be a string, found ", shown(*v));
    return v->as_string();
  }
};

inline bool parse_activation(std::string_view s, activation& a) {
  if (s == "gelu") {
    a = activation::gelu;
  } else if (s == "gelu_new" || s == "gelu_pytorch_tanh" || s == "gelu_fast") {
    a = activation::gelu_tanh;
  } else if (s == "relu") {
    a = activation::relu;
  } else if (s == "silu" || s == "swish") {
    a = activation::silu;
  } else {
    return false;
  }
  return true;
}

}  // namespace detail

inline void gpt_neox_config::validate(std::string_view source) const {
  auto bad = [&](const auto&... what) { ::mlkv::detail::fail(source, ": ", what...); };
  if (hidden_size < 1 || num_attention_heads < 1 || hidden_size % num_attention_heads != 0) {
    bad("hidden_size (", hidden_size, ") must be a positive multiple of num_attention_heads (", num_attention_heads, ")");
  }
  if (num_key_value_heads < 1 || num_key_value_heads > num_attention_heads ||
      num_attention_heads % num_key_value_heads != 0) {
    bad("num_key_value_heads (", num_key_value_heads, ") must divide num_attention_heads (", num_attention_heads, ")");
  }
  if (num_key_value_layers < 1 || num_key_value_layers > num_hidden_layers) {
    bad("num_key_value_layers (", num_key_value_layers, ") must be between 1 and num_hidden_layers (",
        num_hidden_layers, ")");
  }
  if (vocab_size < 1 || intermediate_size < 1 || max_position_embeddings < 1) {
    bad("vocab_size (", vocab_size, "), intermediate_size (", intermediate_size, ") and max_position_embeddings (",
        max_position_embeddings, ") must be positive");
  }
  if (!(rotary_pct >= 0.0 && rotary_pct <= 1.0)) bad("rotary_pct (", rotary_pct, ") must be in [0, 1]");
  if (!(rotary_emb_base > 0.0 && std::isfinite(rotary_emb_base) && rotary_emb_base <= 3.0e38)) {
    bad("rotary_emb_base (", rotary_emb_base, ") must be a positive finite number");
  }
  if (!(layer_norm_eps >= 0.0 && layer_norm_eps < 1.0)) bad("layer_norm_eps (", layer_norm_eps, ") must be in [0, 1)");
  activation a{};
  if (!detail::parse_activation(hidden_act, a) || a != act) {
    bad("hidden_act \"", hidden_act, "\" is not supported (supported: gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, "
        "relu, silu, swish)");
  }
  const model_shape s{.layers = num_hidden_layers, .q_heads = num_attention_heads, .kv_heads = num_key_value_heads,
                      .kv_layers = num_key_value_layers, .head_dim = hidden_size / num_attention_heads};
  const shape_message m = s.check();
  if (!m.empty()) bad(m.view(), " (from hidden_size ", hidden_size, " / num_attention_heads ", num_attention_heads, ")");
  if (rotary_dims() % 2 != 0) {
    bad("rotary_pct (", rotary_pct, ") gives ", rotary_dims(), " rotary dims of head dim ", head_dim(),
        "; GPT-NeoX needs an even number");
  }
}

/// Reads a GPT-NeoX configuration from a parsed config.json object.
inline gpt_neox_config parse_gpt_neox_config(const json::value& obj, std::string_view source = "config.json") {
  if (!obj.is_object()) ::mlkv::detail::fail(source, ": expected a JSON object, found ", json::a_kind_name(obj.type()));
  gpt_neox_config c;
  c.raw = obj;
  detail::config_reader r{obj, source, c.defaulted};

  if (auto mt = r.string("model_type"); mt && *mt != "gpt_neox") {
    r.bad("model_type", "is \"", *mt, "\"; this reader understands GPT-NeoX checkpoints (\"gpt_neox\")");
  }
  if (r.boolean("use_key_value_mlp", false)) {
    r.bad("use_key_value_mlp", "is true: K/V projections that are MLPs are not supported (the paper's reported models "
          "and this library use linear K/V projections)");
  }
  if (const json::value* rs = r.get("rope_scaling"); rs != nullptr && !rs->is_null()) {
    r.bad("rope_scaling", "is ", detail::shown(*rs), "; rotary scaling is not supported (must be null)");
  }

  constexpr int big = std::numeric_limits<int>::max();
  c.hidden_size = r.integer("hidden_size", std::nullopt, 1, 1 << 20);
  c.num_attention_heads = r.integer("num_attention_heads", std::nullopt, 1, 4096);
  c.num_hidden_layers = r.integer("num_hidden_layers", std::nullopt, 1, max_layers);
  c.intermediate_size = r.integer("intermediate_size", std::nullopt, 1, 1 << 24);
  c.vocab_size = r.integer("vocab_size", std::nullopt, 1, 1 << 26);
  c.max_position_embeddings = r.integer("max_position_embeddings", 2048, 1, big);
  c.num_key_value_heads = r.integer("num_key_value_heads", c.num_attention_heads, 1, 4096);
  c.num_key_value_layers = r.integer("num_key_value_layers", c.num_hidden_layers, 1, max_layers);

  // Newer transformers versions also write the same values as partial_rotary_factor/rope_theta.
  auto aliased = [&](std::string_view key, std::string_view alias, double fallback, double lo, double hi) {
    const json::value* a = r.get(key);
    const json::value* b = r.get(alias);
    if (a == nullptr && b != nullptr) return r.number(alias, fallback, lo, hi);
    const double v = r.number(key, fallback, lo, hi);
    if (a != nullptr && b != nullptr && r.number(alias, fallback, lo, hi) != v) {
      r.bad(alias, "(", detail::shown(*b), ") disagrees with \"", key, "\" (", detail::shown(*a), ")");
    }
    return v;
  };
  c.rotary_pct = aliased("rotary_pct", "partial_rotary_factor", 0.25, 0.0, 1.0);
  c.rotary_emb_base = aliased("rotary_emb_base", "rope_theta", 10000.0, 1e-30, 3.0e38);
  c.use_parallel_residual = r.boolean("use_parallel_residual", true);
  c.layer_norm_eps = r.number("layer_norm_eps", 1e-5, 0.0, 0.999);
  c.tie_word_embeddings = r.boolean("tie_word_embeddings", false);
  c.attention_bias = r.boolean("attention_bias", true);

  if (auto act = r.string("hidden_act")) {
    c.hidden_act = *act;
  } else {
    if (r.get("hidden_act") == nullptr) c.defaulted.emplace_back("hidden_act");
    c.hidden_act = "gelu";
  }
  if (!detail::parse_activation(c.hidden_act, c.act)) {
    r.bad("hidden_act", "is \"", c.hidden_act,
          "\"; supported: gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, relu, silu, swish");
  }

  if (const json::value* b = r.get("bos_token_id"); b != nullptr && !b->is_null()) {
    c.bos_token_id = r.integer("bos_token_id", std::nullopt, 0, big);
  }
  if (const json::value* e = r.get("eos_token_id"); e != nullptr && !e->is_null()) {
    if (e->is_array()) {
      for (const json::value& id : e->as_array()) {
        if (!id.is_integer() || id.as_int() < 0 || id.as_int() > big) {
          r.bad("eos_token_id", "must be a token id or a list of token ids, found ", detail::shown(*e));
        }
        c.eos_token_ids.push_back(static_cast<int>(id.as_int()));
      }
    } else {
      c.eos_token_ids.push_back(r.integer("eos_token_id", std::nullopt, 0, big));
    }
  }
  c.torch_dtype = r.string("torch_dtype").value_or("");

  c.validate(source);
  return c;
}

/// Reads a GPT-NeoX configuration from config.json text.
inline gpt_neox_config parse_gpt_neox_config_text(std::string_view text, std::string_view source = "config.json") {
  return parse_gpt_neox_config(json::parse(text, source), source);
}

/// Reads a GPT-NeoX config.json file.
inline gpt_neox_config read_gpt_neox_config(const std::filesystem::path& path) {
  const std::string text = read_file(path);
  const std::string source = path.string();
  return parse_gpt_neox_config(json::parse(text, source), source);
}

/// Pythia-160M's configuration (EleutherAI/pythia-160m) as an MHA checkpoint has it: the shape
/// of the paper's experiments, for demos and benchmarks with random weights.
inline gpt_neox_config pythia160m_config() {
  gpt_neox_config c;
  c.vocab_size = 50304;
  c.hidden_size = 768;
  c.num_hidden_layers = 12;
  c.num_attention_heads = 12;
  c.intermediate_size = 3072;
  c.max_position_embeddings = 2048;
  c.num_key_value_heads = 12;
  c.num_key_value_layers = 12;
  c.rotary_pct = 0.25;
  c.rotary_emb_base = 10000;
  c.use_parallel_residual = true;
  c.hidden_act = "gelu";
  c.layer_norm_eps = 1e-5;
  c.tie_word_embeddings = false;
  c.validate();
  return c;
}

inline json::value gpt_neox_config::to_json() const {
  json::value o = raw.is_object() ? raw : json::value::object();
  // Writes `v` unless raw already holds an equal value (numbers compare by value).
  auto put = [&](std::string key, json::value v) {
    if (const json::value* old = o.find(key); old != nullptr) {
      if (old->is_number() && v.is_number() && old->as_double() == v.as_double()) return;
      if (*old == v) return;
    }
    o.set(std::move(key), std::move(v));
  };
  auto num = [](double d) {
    return d == std::floor(d) && std::fabs(d) < 1e15 ? json::value(static_cast<std::int64_t>(d)) : json::value(d);
  };
  if (o.find("architectures") == nullptr) {
    json::value a = json::value::array();
    a.push_back(json::value("GPTNeoXForCausalLM"));
    o.set("architectures", std::move(a));
  }
  put("model_type", json::value("gpt_neox"));
  put("vocab_size", json::value(vocab_size));
  put("hidden_size", json::value(hidden_size));
  put("num_hidden_layers", json::value(num_hidden_layers));
  put("num_attention_heads", json::value(num_attention_heads));
  put("intermediate_size", json::value(intermediate_size));
  put("max_position_embeddings", json::value(max_position_embeddings));
  put("hidden_act", json::value(hidden_act));
  put("rotary_pct", json::value(rotary_pct));
  put("rotary_emb_base", num(rotary_emb_base));
  put("use_parallel_residual", json::value(use_parallel_residual));
  put("layer_norm_eps", json::value(layer_norm_eps));
  put("tie_word_embeddings", json::value(tie_word_embeddings));
  if (!attention_bias || o.find("attention_bias") != nullptr) put("attention_bias", json::value(attention_bias));
  if (bos_token_id) put("bos_token_id", json::value(*bos_token_id));
  if (eos_token_ids.size() == 1) {
    put("eos_token_id", json::value(eos_token_ids[0]));
  } else if (!eos_token_ids.empty()) {
    json::value a = json::value::array();
    for (const int id : eos_token_ids) a.push_back(json::value(id));
    put("eos_token_id", std::move(a));
  }
  if (!torch_dtype.empty()) put("torch_dtype", json::value(torch_dtype));
  put("num_key_value_heads", json::value(num_key_value_heads));
  put("num_key_value_layers", json::value(num_key_value_layers));
  return o;
}

}  // namespace mlkv::io
