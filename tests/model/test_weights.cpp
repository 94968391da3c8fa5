// The weights loader: small random checkpoints written as real files by the test's own code (HF's
// fused layout and the paper's split layout; F32, BF16 and F16 files; buffers HF files carry),
// loaded as f32 and bf16 weights and compared value by value; save_checkpoint round trips; and
// each kind of bad checkpoint refused with a message naming the tensor.

#include <catch.hpp>

#include <mlkv/compiled_geometries.hpp>
#include <mlkv/model/weights.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "model_test_util.hpp"
#include "test_util.hpp"

using namespace mlkv;
using io::st_dtype;
using mlkv_test::temp_dir;

namespace {

struct tensor {
  std::vector<std::int64_t> shape;
  std::vector<float> v;
};

/// A checkpoint as a map from Hugging Face tensor names to values.
struct hand_checkpoint {
  io::gpt_neox_config cfg;
  bool fused = false;
  std::map<std::string, tensor> t;
};

std::string L(int l, const std::string& what) { return "gpt_neox.layers." + std::to_string(l) + "." + what; }

hand_checkpoint make_hand(const io::gpt_neox_config& cfg, bool fused, mlkv_test::rng& r) {
  hand_checkpoint h{cfg, fused, {}};
  const int H = cfg.hidden_size, I = cfg.intermediate_size, V = cfg.vocab_size, D = cfg.head_dim();
  const model_shape s = cfg.shape();
  auto put = [&](const std::string& name, std::vector<std::int64_t> shape) {
    std::size_t n = 1;
    for (auto d : shape) n *= static_cast<std::size_t>(d);
    h.t[name] = tensor{shape, r.vec(n)};
  };
  put("gpt_neox.embed_in.weight", {V, H});
  for (int l = 0; l < cfg.num_hidden_layers; ++l) {
    for (const char* ln : {"input_layernorm", "post_attention_layernorm"}) {
      put(L(l, std::string(ln) + ".weight"), {H});
      put(L(l, std::string(ln) + ".bias"), {H});
    }
    if (fused) {
      put(L(l, "attention.query_key_value.weight"), {3 * H, H});
      if (cfg.attention_bias) put(L(l, "attention.query_key_value.bias"), {3 * H});
    } else {
      put(L(l, "attention.query.weight"), {cfg.num_attention_heads * D, H});
      if (cfg.attention_bias) put(L(l, "attention.query.bias"), {cfg.num_attention_heads * D});
      if (s.owner(l)) {
        for (const char* kv : {"key", "value"}) {
          put(L(l, std::string("attention.") + kv + ".weight"), {cfg.num_key_value_heads * D, H});
          if (cfg.attention_bias) put(L(l, std::string("attention.") + kv + ".bias"), {cfg.num_key_value_heads * D});
        }
      }
    }
    put(L(l, "attention.dense.weight"), {H, H});
    if (cfg.attention_bias) put(L(l, "attention.dense.bias"), {H});
    put(L(l, "mlp.dense_h_to_4h.weight"), {I, H});
    put(L(l, "mlp.dense_h_to_4h.bias"), {I});
    put(L(l, "mlp.dense_4h_to_h.weight"), {H, I});
    put(L(l, "mlp.dense_4h_to_h.bias"), {H});
  }
  put("gpt_neox.final_layer_norm.weight", {H});
  put("gpt_neox.final_layer_norm.bias", {H});
  if (!cfg.tie_word_embeddings) put("embed_out.weight", {V, H});
  return h;
}

/// Writes the checkpoint in `dt` (plus the buffers older HF files carry) into dir.
void write_hand(const hand_checkpoint& h, st_dtype dt, const std::filesystem::path& dir, bool buffers = true) {
  io::safetensors_writer w;
  w.set_metadata("format", "pt");
  for (const auto& [name, t] : h.t) w.add_converted(name, dt, t.shape, t.v);
  if (buffers) {
    w.add(L(0, "attention.bias"), st_dtype::U8, {1, 1, 4, 4}, std::vector<std::byte>(16, std::byte{1}));
    w.add(L(0, "attention.masked_bias"), st_dtype::F32, {}, std::vector<std::byte>(4));
    w.add_converted(L(0, "attention.rotary_emb.inv_freq"), st_dtype::F32, {2}, std::vector<float>{1.f, 0.5f});
  }
  std::filesystem::create_directories(dir);
  w.write(dir / "model.safetensors");
  io::write_file_atomic(dir / "config.json", json::dump(h.cfg.to_json(), 2));
}

/// What a value of file dtype `dt` loaded as W holds (LayerNorm parameters and biases load as
/// float whatever W is: W = float for them).
template <class W>
W expect_w(float x, st_dtype dt) {
  float f = x;
  if (dt == st_dtype::BF16) f = bf16_bits_to_float(float_to_bf16_bits(x));
  if (dt == st_dtype::F16) f = f16_bits_to_float(float_to_f16_bits(x));
  return from_float<W>(f);
}
template <class W>
bool same(W a, W b) {
  if constexpr (std::is_same_v<W, float>) {
    return a == b;
  } else {
    return a.bits == b.bits;
  }
}

/// Compares loaded weights with the hand checkpoint, value by value; returns mismatches.
template <class W>
std::size_t compare(const model::gpt_neox_weights<W>& w, const hand_checkpoint& h, st_dtype dt) {
  std::size_t bad = 0;
  auto rows = [&](const W* got, const tensor& t, std::size_t r0, std::size_t n, std::size_t cols) {
    for (std::size_t i = 0; i < n * cols; ++i) bad += same(got[i], expect_w<W>(t.v[r0 * cols + i], dt)) ? 0 : 1;
  };
  auto vec = [&](const model::vec& got, const std::string& name) {
    const tensor& t = h.t.at(name);
    if (got.size() != t.v.size()) return void(bad += 1000000);
    for (std::size_t i = 0; i < got.size(); ++i) bad += got[i] == expect_w<float>(t.v[i], dt) ? 0 : 1;
  };
  auto mat = [&](const model::matrix<W>& m, const std::string& name) {
    const tensor& t = h.t.at(name);
    if (m.rows != t.shape[0] || m.cols != t.shape[1]) return void(bad += 1000000);
    rows(m.data.data(), t, 0, static_cast<std::size_t>(m.rows), static_cast<std::size_t>(m.cols));
  };
  const int D = h.cfg.head_dim(), hq = h.cfg.num_attention_heads;
  const auto H = static_cast<std::size_t>(w.hidden);
  mat(w.embed_in, "gpt_neox.embed_in.weight");
  for (int l = 0; l < h.cfg.num_hidden_layers; ++l) {
    const auto& lw = w.layers[static_cast<std::size_t>(l)];
    vec(lw.ln1_weight, L(l, "input_layernorm.weight"));
    vec(lw.ln1_bias, L(l, "input_layernorm.bias"));
    vec(lw.ln2_weight, L(l, "post_attention_layernorm.weight"));
    vec(lw.ln2_bias, L(l, "post_attention_layernorm.bias"));
    const bool owner = w.shape.owner(l);
    const int rows_expected = w.q_dim + (owner ? 2 * w.kv_dim : 0);
    if (lw.owner != owner || lw.kv_slot != w.shape.kv_slot(l) || lw.qkv.rows != rows_expected) bad += 1000000;
    if (h.fused) {
      const tensor& f = h.t.at(L(l, "attention.query_key_value.weight"));
      for (int hd = 0; hd < hq; ++hd) {
        for (int part = 0; part < 3; ++part) {
          // HF row (hd, part, d) is our row part * q_dim + hd * D + d.
          rows(lw.qkv.row(part * w.q_dim + hd * D), f, static_cast<std::size_t>((hd * 3 + part) * D),
               static_cast<std::size_t>(D), H);
          if (h.cfg.attention_bias) {
            const tensor& b = h.t.at(L(l, "attention.query_key_value.bias"));
            for (int d = 0; d < D; ++d) {
              bad += lw.qkv_bias[static_cast<std::size_t>(part * w.q_dim + hd * D + d)] ==
                             expect_w<float>(b.v[static_cast<std::size_t>((hd * 3 + part) * D + d)], dt)
                         ? 0
                         : 1;
            }
          }
        }
      }
    } else {
      const char* names[3] = {"query", "key", "value"};
      const int row0[3] = {0, w.q_dim, w.q_dim + w.kv_dim};
      for (int p = 0; p < (owner ? 3 : 1); ++p) {
        const tensor& t = h.t.at(L(l, std::string("attention.") + names[p] + ".weight"));
        rows(lw.qkv.row(row0[p]), t, 0, static_cast<std::size_t>(t.shape[0]), H);
        if (h.cfg.attention_bias) {
          const tensor& b = h.t.at(L(l, std::string("attention.") + names[p] + ".bias"));
          for (std::size_t i = 0; i < b.v.size(); ++i) {
            bad += lw.qkv_bias[static_cast<std::size_t>(row0[p]) + i] == expect_w<float>(b.v[i], dt) ? 0 : 1;
          }
        }
      }
    }
    if (!h.cfg.attention_bias) {
      for (std::size_t i = 0; i < lw.qkv_bias.size(); ++i) bad += lw.qkv_bias[i] == 0.f ? 0 : 1;
      for (std::size_t i = 0; i < lw.dense_bias.size(); ++i) bad += lw.dense_bias[i] == 0.f ? 0 : 1;
    } else {
      vec(lw.dense_bias, L(l, "attention.dense.bias"));
    }
    mat(lw.dense, L(l, "attention.dense.weight"));
    mat(lw.mlp_in, L(l, "mlp.dense_h_to_4h.weight"));
    vec(lw.mlp_in_bias, L(l, "mlp.dense_h_to_4h.bias"));
    mat(lw.mlp_out, L(l, "mlp.dense_4h_to_h.weight"));
    vec(lw.mlp_out_bias, L(l, "mlp.dense_4h_to_h.bias"));
  }
  vec(w.final_ln_weight, "gpt_neox.final_layer_norm.weight");
  vec(w.final_ln_bias, "gpt_neox.final_layer_norm.bias");
  if (h.cfg.tie_word_embeddings) {
    if (&w.output_embedding() != &w.embed_in || !w.embed_out.empty()) bad += 1000000;
  } else {
    mat(w.embed_out, "embed_out.weight");
  }
  return bad;
}

std::size_t parameters_of(const hand_checkpoint& h) {
  std::size_t n = 0;
  for (const auto& [name, t] : h.t) n += t.v.size();
  return n;
}

template <class W>
std::string load_error(const std::filesystem::path& dir) {
  return mlkv_test::error_of([&] { (void)model::load_checkpoint<W>(dir); });
}

}  // namespace

TEST_CASE("weights: hand-written checkpoints load as f32 and bf16 weights", "[model][weights]") {
  const std::uint64_t seed = mlkv_test::fresh_seed();
  INFO("seed " << seed);
  mlkv_test::rng r(seed);
  temp_dir dir;
  int n = 0;
  for (const auto& g : test_geometries) {
    const io::gpt_neox_config cfg = mlkv_test::small_config(g.shape);
    for (const bool fused : {false, true}) {
      if (fused && !cfg.is_mha()) continue;  // HF's fused layout exists for MHA only
      const hand_checkpoint h = make_hand(cfg, fused, r);
      for (const st_dtype dt : {st_dtype::F32, st_dtype::BF16, st_dtype::F16}) {
        INFO(g.name << (fused ? " fused" : " split") << " file " << io::name_of(dt));
        const auto d = dir / ("c" + std::to_string(n++));
        write_hand(h, dt, d);
        const auto wf = model::load_checkpoint<float>(d);
        CHECK(compare(wf, h, dt) == 0);
        CHECK(wf.shape == g.shape);
        CHECK(wf.parameters() == parameters_of(h));
        const auto wb = model::load_checkpoint<bf16>(d);
        CHECK(compare(wb, h, dt) == 0);
        CHECK(wb.step_bytes() < wf.step_bytes());
      }
    }
  }
}

TEST_CASE("weights: tied embeddings and checkpoints without attention biases", "[model][weights]") {
  const std::uint64_t seed = mlkv_test::fresh_seed();
  INFO("seed " << seed);
  mlkv_test::rng r(seed);
  temp_dir dir;
  io::gpt_neox_config cfg = mlkv_test::small_config(test_geometries[3].shape);
  cfg.tie_word_embeddings = true;
  cfg.attention_bias = false;
  const hand_checkpoint h = make_hand(cfg, false, r);
  write_hand(h, st_dtype::F32, dir.path);
  const auto w = model::load_checkpoint<float>(dir.path);
  CHECK(compare(w, h, st_dtype::F32) == 0);
  CHECK(w.config.tie_word_embeddings);
  CHECK_FALSE(w.config.attention_bias);
  CHECK(w.parameters() == parameters_of(h));
}

TEST_CASE("weights: save_checkpoint and load_checkpoint round-trip exactly", "[model][weights]") {
  const std::uint64_t seed = mlkv_test::fresh_seed();
  INFO("seed " << seed);
  temp_dir dir;
  int n = 0;
  auto round_trip = [&](auto tag, const io::gpt_neox_config& cfg, model::qkv_format format) {
    using W = decltype(tag);
    const auto w = model::random_weights<W>(cfg, seed + static_cast<std::uint64_t>(n));
    const auto d = dir / ("r" + std::to_string(n++));
    model::save_checkpoint(w, d, format);
    const io::safetensors_file f = io::safetensors_file::open(d / "model.safetensors");
    CHECK((f.find(L(0, "attention.query_key_value.weight")) != nullptr) ==
          (format == model::qkv_format::fused || (format == model::qkv_format::automatic && cfg.is_mha())));
    const auto back = model::load_checkpoint<W>(d);
    auto eq_m = [](const model::matrix<W>& a, const model::matrix<W>& b) {
      if (a.rows != b.rows || a.cols != b.cols) return false;
      for (std::size_t i = 0; i < a.size(); ++i) {
        if (!same(a.data[i], b.data[i])) return false;
      }
      return true;
    };
    auto eq_v = [](const model::vec& a, const model::vec& b) {
      if (a.size() != b.size()) return false;
      for (std::size_t i = 0; i < a.size(); ++i) {
        if (a[i] != b[i]) return false;
      }
      return true;
    };
    CHECK(eq_m(w.embed_in, back.embed_in));
    CHECK(eq_m(w.embed_out, back.embed_out));
    CHECK(eq_v(w.final_ln_weight, back.final_ln_weight));
    CHECK(eq_v(w.final_ln_bias, back.final_ln_bias));
    REQUIRE(w.layers.size() == back.layers.size());
    for (std::size_t l = 0; l < w.layers.size(); ++l) {
      const auto &a = w.layers[l], &b = back.layers[l];
      CHECK(eq_m(a.qkv, b.qkv));
      CHECK(eq_v(a.qkv_bias, b.qkv_bias));
      CHECK(eq_m(a.dense, b.dense));
      CHECK(eq_m(a.mlp_in, b.mlp_in));
      CHECK(eq_m(a.mlp_out, b.mlp_out));
      CHECK(eq_v(a.ln1_weight, b.ln1_weight));
      CHECK(eq_v(a.ln2_bias, b.ln2_bias));
      CHECK(eq_v(a.dense_bias, b.dense_bias));
      CHECK(eq_v(a.mlp_in_bias, b.mlp_in_bias));
      CHECK(eq_v(a.mlp_out_bias, b.mlp_out_bias));
    }
    CHECK(back.config.shape() == cfg.shape());
  };
  for (const auto& g : test_geometries) {
    INFO(g.name);
    const io::gpt_neox_config cfg = mlkv_test::small_config(g.shape);
    round_trip(float{}, cfg, model::qkv_format::automatic);
    round_trip(bf16{}, cfg, model::qkv_format::automatic);
    if (cfg.is_mha()) round_trip(float{}, cfg, model::qkv_format::separate);
  }
  // Random weights are deterministic in the seed.
  const io::gpt_neox_config cfg = mlkv_test::small_config(test_geometries[0].shape);
  const auto a = model::random_weights<float>(cfg, 7), b = model::random_weights<float>(cfg, 7),
             c = model::random_weights<float>(cfg, 8);
  CHECK(a.layers[1].mlp_out.data[5] == b.layers[1].mlp_out.data[5]);
  CHECK(a.layers[1].mlp_out.data[5] != c.layers[1].mlp_out.data[5]);
}

TEST_CASE("weights: bad checkpoints are refused, naming the tensor", "[model][weights]") {
  const std::uint64_t seed = mlkv_test::fresh_seed();
  INFO("seed " << seed);
  mlkv_test::rng r(seed);
  temp_dir dir;
  const io::gpt_neox_config mlkv_cfg = mlkv_test::small_config(test_geometries[3].shape);  // owners 0, 2
  const io::gpt_neox_config mha_cfg = mlkv_test::small_config(test_geometries[0].shape);
  int n = 0;
  auto variant = [&](const hand_checkpoint& h, auto&& edit) {
    hand_checkpoint e = h;
    edit(e);
    const auto d = dir / ("b" + std::to_string(n++));
    write_hand(e, st_dtype::F32, d, false);
    return d;
  };
  const hand_checkpoint good = make_hand(mlkv_cfg, false, r);
  CHECK(load_error<float>(variant(good, [](hand_checkpoint&) {})) == "(no error)");

  // A missing tensor, named with its role and expected shape.
  CHECK(load_error<float>(variant(good, [](hand_checkpoint& e) { e.t.erase(L(2, "attention.value.weight")); }))
            .find("missing tensor \"gpt_neox.layers.2.attention.value.weight\" (layer 2 value projection, shape [16, 64])") !=
        std::string::npos);
  CHECK(load_error<float>(variant(good, [](hand_checkpoint& e) { e.t.erase("embed_out.weight"); }))
            .find("missing tensor \"embed_out.weight\"") != std::string::npos);
  // A wrong shape.
  CHECK(load_error<float>(variant(good, [](hand_checkpoint& e) {
          e.t[L(1, "mlp.dense_h_to_4h.weight")] = tensor{{47, 64}, std::vector<float>(47 * 64)};
        })).find("tensor \"gpt_neox.layers.1.mlp.dense_h_to_4h.weight\" has shape [47, 64], expected [48, 64]") !=
        std::string::npos);
  // K/V on a consumer layer: the file's owners are not the config's.
  CHECK(load_error<float>(variant(good, [](hand_checkpoint& e) {
          e.t[L(1, "attention.key.weight")] = tensor{{16, 64}, std::vector<float>(16 * 64)};
        })).find("\"gpt_neox.layers.1.attention.key.weight\"; K/V tensors on a layer that config.json makes a consumer") !=
        std::string::npos);
  // The paper's MLP K/V projections.
  CHECK(load_error<float>(variant(good, [](hand_checkpoint& e) {
          e.t[L(0, "attention.key.dense_in.weight")] = tensor{{8, 64}, std::vector<float>(8 * 64)};
        })).find("use_key_value_mlp") != std::string::npos);
  // A tensor that is no part of the model.
  CHECK(load_error<float>(variant(good, [](hand_checkpoint& e) {
          e.t["lm_head.weight"] = tensor{{2}, {1.f, 2.f}};
        })).find("does not have: \"lm_head.weight\"") != std::string::npos);
  // A fused projection where the config asks for GQA/MLKV.
  {
    hand_checkpoint fused = make_hand(mha_cfg, true, r);
    fused.cfg.num_key_value_heads = 2;
    CHECK(load_error<float>(variant(fused, [](hand_checkpoint&) {}))
              .find("layer 0 has a fused attention.query_key_value") != std::string::npos);
  }
  // A wrong dtype: integers where weights belong.
  {
    const auto d = dir / "dtype";
    write_hand(good, st_dtype::F32, d, false);
    io::safetensors_writer w;
    const io::safetensors_file f = io::safetensors_file::open(d / "model.safetensors");
    for (const auto& t : f.tensors()) {
      if (t.name == "gpt_neox.final_layer_norm.bias") {
        w.add(t.name, st_dtype::I32, t.shape, std::vector<std::byte>(t.nbytes()));
      } else {
        w.add_view(t.name, t.dtype, t.shape, f.bytes(t));
      }
    }
    w.write(d / "model2.safetensors");
    std::filesystem::rename(d / "model2.safetensors", d / "model.safetensors");
    CHECK(load_error<float>(d).find("tensor \"gpt_neox.final_layer_norm.bias\" has dtype I32; weights must be F32, F16 or BF16") !=
          std::string::npos);
  }
  // Files: truncated weights, invalid config JSON, sharded or pickle-only checkpoints, nothing.
  {
    const auto d = variant(good, [](hand_checkpoint&) {});
    const std::string bytes = io::read_file(d / "model.safetensors");
    mlkv_test::write_bytes(d / "model.safetensors", bytes.data(), bytes.size() - 10);
    CHECK(load_error<float>(d).find("model.safetensors: tensor") != std::string::npos);
    CHECK(load_error<float>(d).find("run past the end") != std::string::npos);
    mlkv_test::write_text(d / "config.json", "{\"hidden_size\": 64,\n\"num_attention_heads\": }");
    CHECK(load_error<float>(d).find("config.json: invalid JSON at line 2, column 24") != std::string::npos);
  }
  const auto empty = dir / "empty";
  std::filesystem::create_directories(empty);
  CHECK(load_error<float>(empty).find("no model.safetensors") != std::string::npos);
  mlkv_test::write_text(empty / "pytorch_model.bin", "x");
  CHECK(load_error<float>(empty).find("only pytorch_model.bin found") != std::string::npos);
  mlkv_test::write_text(empty / "model.safetensors.index.json", "{}");
  CHECK(load_error<float>(empty).find("sharded checkpoints") != std::string::npos);
}
