// config.json -> configuration -> geometry -> the compiled geometry (dispatch): Pythia-160M as
// Hugging Face ships it, the paper's nine configurations, the test geometries, defaults and
// aliases, every kind of missing or ill-typed key, the paper's floating-point owner placement,
// and the refusal of an uncompiled geometry with the list of compiled ones.

#include <catch.hpp>

#include <mlkv/dispatch.hpp>
#include <mlkv/io/hf_config.hpp>
#include <mlkv/presets.hpp>

#include <string>
#include <vector>

#include "model_test_util.hpp"

using namespace mlkv;
using mlkv::io::gpt_neox_config;
using mlkv::io::parse_gpt_neox_config;
using mlkv::io::parse_gpt_neox_config_text;

namespace {

// EleutherAI/pythia-160m's config.json as Hugging Face serves it.
const char* const pythia160m_json = R"({
  "architectures": [
    "GPTNeoXForCausalLM"
  ],
  "bos_token_id": 0,
  "eos_token_id": 0,
  "hidden_act": "gelu",
  "hidden_size": 768,
  "initializer_range": 0.02,
  "intermediate_size": 3072,
  "layer_norm_eps": 1e-05,
  "max_position_embeddings": 2048,
  "model_type": "gpt_neox",
  "num_attention_heads": 12,
  "num_hidden_layers": 12,
  "rotary_emb_base": 10000,
  "rotary_pct": 0.25,
  "tie_word_embeddings": false,
  "torch_dtype": "float16",
  "transformers_version": "4.24.0",
  "use_cache": true,
  "use_parallel_residual": true,
  "vocab_size": 50304
})";

gpt_neox_config with(const std::string& extra_members) {
  std::string text = pythia160m_json;
  text.insert(text.rfind('}'), ", " + extra_members);
  return parse_gpt_neox_config_text(text, "config.json");
}

std::string edit_error(const std::string& key, const std::string& new_value) {
  json::value v = json::parse(pythia160m_json);
  if (new_value.empty()) {
    auto& m = v.as_object();
    std::erase_if(m, [&](const json::member& x) { return x.key == key; });
  } else {
    v.set(key, json::parse(new_value));
  }
  return mlkv_test::error_of([&] { (void)parse_gpt_neox_config(v, "config.json"); });
}

/// The compiled geometry dispatch reaches for `s`: its shape and name.
std::pair<model_shape, std::string> dispatched(const model_shape& s) {
  return dispatch(s, [](auto g) {
    constexpr model_shape S = decltype(g)::shape;
    // The compile-time tables of the geometry dispatch chose are usable here.
    static_assert(layer_map<S>::owners[0] == 0);
    return std::pair<model_shape, std::string>(S, std::string(compiled_geometries[static_cast<std::size_t>(find_compiled(S))].name));
  });
}

}  // namespace

TEST_CASE("config: Pythia-160M as Hugging Face ships it", "[model][config]") {
  const gpt_neox_config c = parse_gpt_neox_config_text(std::string(pythia160m_json), "config.json");
  CHECK(c.hidden_size == 768);
  CHECK(c.num_attention_heads == 12);
  CHECK(c.num_hidden_layers == 12);
  CHECK(c.intermediate_size == 3072);
  CHECK(c.vocab_size == 50304);
  CHECK(c.max_position_embeddings == 2048);
  CHECK(c.head_dim() == 64);
  CHECK(c.rotary_dims() == 16);
  CHECK(c.rope().base == 10000.f);
  CHECK(c.use_parallel_residual);
  CHECK(c.act == io::activation::gelu);
  CHECK(c.layer_norm_eps == 1e-5);
  CHECK_FALSE(c.tie_word_embeddings);
  CHECK(c.attention_bias);
  CHECK(c.bos_token_id == 0);
  CHECK(c.eos_token_ids == std::vector<int>{0});
  CHECK(c.torch_dtype == "float16");
  CHECK(c.is_mha());
  CHECK(c.shape() == paper_configs[0].shape);
  // Absent keys that took Hugging Face's defaults are reported.
  CHECK(std::find(c.defaulted.begin(), c.defaulted.end(), "num_key_value_heads") != c.defaulted.end());
  CHECK(std::find(c.defaulted.begin(), c.defaulted.end(), "attention_bias") != c.defaulted.end());
  CHECK(std::find(c.defaulted.begin(), c.defaulted.end(), "hidden_size") == c.defaulted.end());
  // Written back: every original key in its place and value, the paper's keys appended.
  const json::value out = c.to_json();
  const auto& in_members = c.raw.as_object();
  const auto& out_members = out.as_object();
  REQUIRE(out_members.size() == in_members.size() + 2);
  for (std::size_t i = 0; i < in_members.size(); ++i) {
    CHECK(out_members[i].key == in_members[i].key);
    CHECK(out_members[i].val == in_members[i].val);
  }
  CHECK(out_members[in_members.size()].key == "num_key_value_heads");
  CHECK(out.find("num_key_value_layers")->as_int() == 12);
}

TEST_CASE("config: the paper's nine configurations dispatch to their compiled geometry", "[model][config][dispatch]") {
  for (const auto& pc : paper_configs) {
    INFO(pc.name);
    const gpt_neox_config c = with("\"num_key_value_heads\": " + std::to_string(pc.shape.kv_heads) +
                                   ", \"num_key_value_layers\": " + std::to_string(pc.shape.kv_layers));
    CHECK(c.shape() == pc.shape);
    CHECK(c.shape().placement.kind == placement_kind::spread);
    CHECK(is_compiled(c.shape()));
    const auto [shape, name] = dispatched(c.shape());
    CHECK(shape == pc.shape);
    CHECK(name == pc.name);
  }
}

TEST_CASE("config: the test geometries are compiled in", "[model][config][dispatch]") {
  for (const auto& tg : test_geometries) {
    INFO(tg.name);
    const gpt_neox_config c = mlkv_test::small_config(tg.shape);
    const gpt_neox_config back = parse_gpt_neox_config(c.to_json(), "config.json");
    CHECK(back.shape() == tg.shape);
    CHECK(dispatched(back.shape()).second == tg.name);
  }
}

TEST_CASE("dispatch: an uncompiled geometry is refused with the list of compiled ones", "[model][dispatch]") {
  // Pythia-410M: 24 layers, 16 heads of 64.
  json::value v = json::parse(pythia160m_json);
  v.set("hidden_size", json::value(1024));
  v.set("num_attention_heads", json::value(16));
  v.set("num_hidden_layers", json::value(24));
  const gpt_neox_config c = parse_gpt_neox_config(v, "config.json");
  CHECK_FALSE(is_compiled(c.shape()));
  const std::string msg = mlkv_test::error_of([&] { dispatch(c.shape(), [](auto) {}); });
  INFO(msg);
  CHECK(msg.find("geometry L=24 Hq=16 Hkv=16 Lkv=24 D=64 spread is not compiled into this program") != std::string::npos);
  for (const auto& g : compiled_geometries) {
    CHECK(msg.find(std::string(g.name) + " (" + describe(g.shape) + ")") != std::string::npos);
  }
  CHECK(msg.find("MLKV_GEOMETRIES") != std::string::npos);
  // A compiled geometry with another placement is a different geometry.
  model_shape cla = paper_configs[6].shape;
  cla.placement = placement::every_n(3);
  CHECK_FALSE(is_compiled(cla));
  MLKV_CHECK_ERROR(dispatch(cla, [](auto) {}), "every-3 is not compiled");
}

TEST_CASE("config: the paper's floating-point owners", "[model][config]") {
  // Independently: floor((i+1) * L / Lkv) exactly, against the paper's int((i+1) * (L / Lkv)).
  int first_l = 0, first_lkv = 0;
  for (int L = 1; L <= 64 && first_l == 0; ++L) {
    for (int Lkv = 1; Lkv <= L; ++Lkv) {
      std::vector<int> exact{0};
      for (int i = 0; i + 1 < Lkv; ++i) exact.push_back((i + 1) * L / Lkv);
      const model_shape s{.layers = L, .q_heads = 4, .kv_heads = 2, .kv_layers = Lkv, .head_dim = 8};
      CHECK(io::owner_layers(s) == exact);
      if (io::paper_owner_layers(L, Lkv) != exact) {
        first_l = L;
        first_lkv = Lkv;
        break;
      }
    }
  }
  CHECK(first_l == 30);  // DESIGN.md: the first disagreement is (30, 22)
  CHECK(first_lkv == 22);
  for (const auto& pc : paper_configs) {
    CHECK(io::paper_owner_layers(12, pc.shape.kv_layers) == io::owner_layers(pc.shape));
  }
  // A checkpoint made with (30, 22) is read with the paper's owners (a table placement).
  const gpt_neox_config c = parse_gpt_neox_config_text(
      std::string(R"({"hidden_size": 240, "num_attention_heads": 30, "num_hidden_layers": 30, "intermediate_size": 64,
                      "vocab_size": 7, "num_key_value_layers": 22, "num_key_value_heads": 15})"),
      "config.json");
  const model_shape s = c.shape();
  CHECK(s.placement.kind == placement_kind::table);
  CHECK(io::owner_layers(s) == io::paper_owner_layers(30, 22));
  CHECK(s.owner(14));
  CHECK_FALSE(s.owner(15));
  CHECK(s.source_layer(15) == 14);
  MLKV_CHECK_ERROR(dispatch(s, [](auto) {}), "table{");
}

TEST_CASE("config: defaults, aliases and variants", "[model][config]") {
  const gpt_neox_config m = parse_gpt_neox_config_text(
      std::string(R"({"hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 3, "intermediate_size": 96,
                      "vocab_size": 100})"),
      "config.json");
  CHECK(m.rotary_pct == 0.25);
  CHECK(m.rotary_emb_base == 10000.0);
  CHECK(m.use_parallel_residual);
  CHECK(m.hidden_act == "gelu");
  CHECK(m.layer_norm_eps == 1e-5);
  CHECK(m.max_position_embeddings == 2048);
  CHECK(m.eos_token_ids.empty());
  CHECK(m.is_mha());
  for (const char* k : {"rotary_pct", "rotary_emb_base", "use_parallel_residual", "hidden_act", "layer_norm_eps",
                        "max_position_embeddings", "num_key_value_heads", "num_key_value_layers"}) {
    INFO(k);
    CHECK(std::find(m.defaulted.begin(), m.defaulted.end(), k) != m.defaulted.end());
  }
  const gpt_neox_config v = parse_gpt_neox_config_text(
      std::string(R"({"hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 5, "intermediate_size": 96,
                      "vocab_size": 100, "num_key_value_heads": 2, "num_key_value_layers": 3,
                      "partial_rotary_factor": 0.5, "rope_theta": 500.5, "hidden_act": "gelu_new",
                      "eos_token_id": [1, 2], "use_parallel_residual": false, "attention_bias": false,
                      "tie_word_embeddings": true, "rope_scaling": null, "use_key_value_mlp": false})"),
      "config.json");
  CHECK(v.rotary_pct == 0.5);
  CHECK(v.rotary_dims() == 8);
  CHECK(v.rotary_emb_base == 500.5);
  CHECK(v.act == io::activation::gelu_tanh);
  CHECK(v.eos_token_ids == std::vector<int>{1, 2});
  CHECK_FALSE(v.use_parallel_residual);
  CHECK_FALSE(v.attention_bias);
  CHECK(v.tie_word_embeddings);
  CHECK(v.shape() == model_shape{.layers = 5, .q_heads = 4, .kv_heads = 2, .kv_layers = 3, .head_dim = 16});
  // partial_rotary_factor and rotary_pct both present must agree.
  MLKV_CHECK_ERROR(with("\"partial_rotary_factor\": 0.5"), "\"partial_rotary_factor\" (0.5) disagrees with \"rotary_pct\"");
}

TEST_CASE("config: missing and ill-typed keys are refused, naming the key", "[model][config]") {
  for (const char* k : {"hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size", "vocab_size"}) {
    INFO(k);
    CHECK(edit_error(k, "") == std::string("mlkv: config.json: missing required key \"") + k + "\"");
  }
  struct bad {
    const char *key, *value, *expect;
  };
  const bad cases[] = {
      {"hidden_size", "\"768\"", "\"hidden_size\" must be an integer between 1 and 1048576, found \"768\""},
      {"hidden_size", "768.5", "must be an integer"},
      {"hidden_size", "770", "hidden_size (770) must be a positive multiple of num_attention_heads (12)"},
      {"hidden_size", "120", "head dim (10) must be a multiple of 8"},
      {"num_hidden_layers", "0", "\"num_hidden_layers\" must be an integer between 1 and 256, found 0"},
      {"num_hidden_layers", "null", "must be an integer"},
      {"vocab_size", "-5", "\"vocab_size\" must be an integer"},
      {"use_parallel_residual", "\"yes\"", "\"use_parallel_residual\" must be true or false, found \"yes\""},
      {"tie_word_embeddings", "1", "must be true or false"},
      {"rotary_pct", "2", "\"rotary_pct\" must be a number between 0 and 1, found 2"},
      {"rotary_pct", "0.3", "gives 19 rotary dims of head dim 64; GPT-NeoX needs an even number"},
      {"rotary_emb_base", "-1", "\"rotary_emb_base\" must be a number"},
      {"layer_norm_eps", "\"small\"", "\"layer_norm_eps\" must be a number"},
      {"hidden_act", "\"tanh\"", "\"hidden_act\" is \"tanh\"; supported: gelu, gelu_new"},
      {"hidden_act", "3", "\"hidden_act\" must be a string"},
      {"use_key_value_mlp", "true", "\"use_key_value_mlp\" is true: K/V projections that are MLPs are not supported"},
      {"num_key_value_heads", "5", "num_key_value_heads (5) must divide num_attention_heads (12)"},
      {"num_key_value_heads", "24", "num_key_value_heads (24) must divide num_attention_heads (12)"},
      {"num_key_value_heads", "5000", "\"num_key_value_heads\" must be an integer between 1 and 4096"},
      {"num_key_value_layers", "13", "num_key_value_layers (13) must be between 1 and num_hidden_layers (12)"},
      {"num_key_value_layers", "0", "\"num_key_value_layers\" must be an integer between 1 and 256, found 0"},
      {"model_type", "\"llama\"", "\"model_type\" is \"llama\"; this reader understands GPT-NeoX"},
      {"rope_scaling", "{\"type\": \"linear\", \"factor\": 2}", "rotary scaling is not supported"},
      {"eos_token_id", "[1, \"x\"]", "\"eos_token_id\" must be a token id or a list of token ids"},
      {"torch_dtype", "16", "\"torch_dtype\" must be a string"},
  };
  for (const bad& b : cases) {
    INFO(b.key << " = " << b.value);
    const std::string e = edit_error(b.key, b.value);
    INFO(e);
    CHECK(e.rfind("mlkv: config.json: ", 0) == 0);
    CHECK(e.find(b.expect) != std::string::npos);
  }
  // Not JSON, not an object, a file that is not there.
  MLKV_CHECK_ERROR(parse_gpt_neox_config_text(std::string("{\"hidden_size\": 768,}"), "config.json"),
                   "config.json: invalid JSON at line 1, column 21");
  MLKV_CHECK_ERROR(parse_gpt_neox_config_text(std::string("[1]"), "config.json"), "expected a JSON object, found an array");
  mlkv_test::temp_dir dir;
  MLKV_CHECK_ERROR(io::read_gpt_neox_config(dir / "config.json"), "cannot open");
  mlkv_test::write_text(dir / "config.json", "{\n  \"hidden_size\": 64\n  \"x\": 1\n}");
  MLKV_CHECK_ERROR(io::read_gpt_neox_config(dir / "config.json"), "config.json: invalid JSON at line 3, column 3");
}
