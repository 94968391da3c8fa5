// The paper's converter against an independent, plainly written computation of the same
// arithmetic (convert_to_mlkv.py's steps, with PyTorch's float summation order) on small random
// MHA checkpoints of several geometries and dtypes, compared bit for bit; its plan for the paper's
// nine Pythia-160M configurations; its refusals; and the mlkv-convert command line.

#include <catch.hpp>

#include <mlkv/io/convert.hpp>
#include <mlkv/model/weights.hpp>
#include <mlkv/presets.hpp>

#include <sys/wait.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "model_test_util.hpp"
#include "test_util.hpp"

using namespace mlkv;
using io::st_dtype;
using mlkv_test::temp_dir;

namespace {

struct tensor {
  st_dtype dt = st_dtype::F32;
  std::vector<std::int64_t> shape;
  std::vector<float> v;
};
using checkpoint = std::map<std::string, tensor>;

std::string L(int l, const std::string& what) { return "gpt_neox.layers." + std::to_string(l) + "." + what; }

float round_to(st_dtype dt, float x) {
  if (dt == st_dtype::BF16) return bf16_bits_to_float(float_to_bf16_bits(x));
  if (dt == st_dtype::F16) return f16_bits_to_float(float_to_f16_bits(x));
  return x;
}

struct geometry {
  int layers, heads, head_dim, intermediate;
};

/// A random MHA checkpoint as Hugging Face writes it (fused query_key_value), values already
/// representable in dt, plus the buffers HF files carry.
checkpoint make_mha(const geometry& g, st_dtype dt, mlkv_test::rng& r) {
  checkpoint c;
  const int H = g.heads * g.head_dim, I = g.intermediate;
  auto put = [&](const std::string& name, std::vector<std::int64_t> shape) {
    std::size_t n = 1;
    for (auto d : shape) n *= static_cast<std::size_t>(d);
    tensor t{dt, shape, r.vec(n)};
    for (float& x : t.v) x = round_to(dt, x);
    c[name] = std::move(t);
  };
  put("gpt_neox.embed_in.weight", {11, H});
  for (int l = 0; l < g.layers; ++l) {
    put(L(l, "input_layernorm.weight"), {H});
    put(L(l, "input_layernorm.bias"), {H});
    put(L(l, "post_attention_layernorm.weight"), {H});
    put(L(l, "post_attention_layernorm.bias"), {H});
    put(L(l, "attention.query_key_value.weight"), {3 * H, H});
    put(L(l, "attention.query_key_value.bias"), {3 * H});
    put(L(l, "attention.dense.weight"), {H, H});
    put(L(l, "attention.dense.bias"), {H});
    put(L(l, "mlp.dense_h_to_4h.weight"), {I, H});
    put(L(l, "mlp.dense_h_to_4h.bias"), {I});
    put(L(l, "mlp.dense_4h_to_h.weight"), {H, I});
    put(L(l, "mlp.dense_4h_to_h.bias"), {H});
  }
  put("gpt_neox.final_layer_norm.weight", {H});
  put("gpt_neox.final_layer_norm.bias", {H});
  put("embed_out.weight", {11, H});
  c[L(0, "attention.rotary_emb.inv_freq")] = tensor{st_dtype::F32, {2}, {1.f, 0.25f}};
  return c;
}

std::string mha_config_json(const geometry& g, int intermediate) {
  const int H = g.heads * g.head_dim;
  return "{\"architectures\": [\"GPTNeoXForCausalLM\"], \"custom_key\": \"kept\", \"hidden_size\": " + std::to_string(H) +
         ", \"intermediate_size\": " + std::to_string(intermediate) + ", \"num_attention_heads\": " +
         std::to_string(g.heads) + ", \"num_hidden_layers\": " + std::to_string(g.layers) +
         ", \"vocab_size\": 11, \"rotary_pct\": 0.25, \"model_type\": \"gpt_neox\", \"torch_dtype\": \"float16\"}";
}

/// PyTorch's float sum of the terms of output column `col` of `cols` columns reduced together
/// (SumKernel.cpp), written out plainly: columns in full blocks of 4 vectors of `lanes` floats
/// (groups of 4 columns when there are fewer than `lanes`) sum left to right from 0, in runs of
/// 16 whose sums are added when there are 32 terms; the other columns keep 4 interleaved partial
/// sums (terms 4i+k), add the leftover terms to the first, then add the partials in order.
float torch_order_sum(const std::vector<float>& x, std::size_t col, std::size_t cols, std::size_t lanes) {
  const std::size_t n = x.size();
  const bool left_to_right = cols >= lanes ? col < cols / (4 * lanes) * (4 * lanes) : col < cols / 4 * 4;
  if (left_to_right) {
    if (n <= 16) {
      float s = 0.f;
      for (const float t : x) s += t;
      return s;
    }
    REQUIRE(n == 32);
    float a = 0.f, b = 0.f;
    for (std::size_t i = 0; i < 16; ++i) a += x[i];
    for (std::size_t i = 16; i < 32; ++i) b += x[i];
    return a + b;
  }
  REQUIRE(n / 4 <= 16);
  float p[4] = {0.f, 0.f, 0.f, 0.f};
  const std::size_t whole = n / 4 * 4;
  for (std::size_t i = 0; i < whole; ++i) p[i % 4] += x[i];
  for (std::size_t i = whole; i < n; ++i) p[0] += x[i];
  return ((p[0] + p[1]) + p[2]) + p[3];
}

/// The script's conversion, step by step, on the test's own data structures.
checkpoint expected_conversion(const checkpoint& in, const geometry& g, int kv_heads, int kv_layers, std::size_t lanes,
                               int& new_intermediate) {
  checkpoint out = in;
  const int Lk = g.layers, Hq = g.heads, D = g.head_dim, H = Hq * D, G = Hq / kv_heads;
  const char* parts[3] = {"key", "value", "query"};
  // 1. Split the fused projection: rows [heads, 3 (q, k, v), head_dim].
  for (int l = 0; l < Lk; ++l) {
    const tensor w = out.at(L(l, "attention.query_key_value.weight"));
    const tensor b = out.at(L(l, "attention.query_key_value.bias"));
    out.erase(L(l, "attention.query_key_value.weight"));
    out.erase(L(l, "attention.query_key_value.bias"));
    const char* names[3] = {"query", "key", "value"};
    for (int part = 0; part < 3; ++part) {
      tensor pw{w.dt, {Hq * D, H}, {}}, pb{b.dt, {Hq * D}, {}};
      for (int h = 0; h < Hq; ++h) {
        for (int d = 0; d < D; ++d) {
          const std::size_t row = static_cast<std::size_t>((h * 3 + part) * D + d);
          pw.v.insert(pw.v.end(), w.v.begin() + static_cast<std::ptrdiff_t>(row) * H,
                      w.v.begin() + static_cast<std::ptrdiff_t>(row + 1) * H);
          pb.v.push_back(b.v[row]);
        }
      }
      out[L(l, std::string("attention.") + names[part] + ".weight")] = pw;
      out[L(l, std::string("attention.") + names[part] + ".bias")] = pb;
    }
  }
  // 2. Average each group of G heads (mean in the tensor's dtype) into a float32 tensor.
  if (kv_heads != Hq) {
    for (int l = 0; l < Lk; ++l) {
      for (int p = 0; p < 2; ++p) {
        for (const char* wb : {".weight", ".bias"}) {
          tensor& t = out.at(L(l, std::string("attention.") + parts[p] + wb));
          const std::size_t per = t.v.size() / static_cast<std::size_t>(Hq);  // values per head
          tensor m{st_dtype::F32, t.shape, std::vector<float>(static_cast<std::size_t>(kv_heads) * per)};
          m.shape[0] = kv_heads * D;
          for (int j = 0; j < kv_heads; ++j) {
            for (std::size_t e = 0; e < per; ++e) {
              std::vector<float> terms;
              for (int i = 0; i < G; ++i) terms.push_back(t.v[static_cast<std::size_t>(j * G + i) * per + e]);
              m.v[static_cast<std::size_t>(j) * per + e] =
                  round_to(t.dt, torch_order_sum(terms, e, per, lanes) / static_cast<float>(G));
            }
          }
          t = m;
        }
      }
    }
  }
  // 3. Fold each non-owner layer into the owner below it: owner = mean(stack([layer, owner])).
  if (kv_layers != Lk) {
    std::vector<int> owners{0};
    for (int i = 0; i < kv_layers - 1; ++i) {
      owners.push_back(static_cast<int>((i + 1) * (static_cast<double>(Lk) / static_cast<double>(kv_layers))));
    }
    for (int l = 0; l < Lk; ++l) {
      if (std::find(owners.begin(), owners.end(), l) != owners.end()) continue;
      int prev = 0;
      for (const int o : owners) prev = o < l ? std::max(prev, o) : prev;
      for (int p = 0; p < 2; ++p) {
        for (const char* wb : {".weight", ".bias"}) {
          const std::string name = std::string("attention.") + parts[p] + wb;
          const tensor x = out.at(L(l, name));
          tensor& o = out.at(L(prev, name));
          const st_dtype dt = x.dt == o.dt ? x.dt : st_dtype::F32;
          for (std::size_t e = 0; e < o.v.size(); ++e) o.v[e] = round_to(dt, (x.v[e] + o.v[e]) / 2.f);
          o.dt = dt;
          out.erase(L(l, name));
        }
      }
    }
  }
  // 4. The MLP grows by the parameters lost; new rows copy the first old ones; float32 tensors.
  const long long lost =
      (static_cast<long long>(Hq) * Lk - static_cast<long long>(kv_heads) * kv_layers) * (2LL * H * D + 2LL * D);
  const long long per_layer = lost / Lk;
  const long long addition = static_cast<long long>(std::nearbyint(static_cast<double>(per_layer) / H));  // ties to even
  const int I0 = g.intermediate, I1 = I0 + static_cast<int>(addition / 2);
  new_intermediate = I1;
  if (addition != 0) {
    for (int l = 0; l < Lk; ++l) {
      tensor& win = out.at(L(l, "mlp.dense_h_to_4h.weight"));
      tensor& bin = out.at(L(l, "mlp.dense_h_to_4h.bias"));
      tensor& wout = out.at(L(l, "mlp.dense_4h_to_h.weight"));
      tensor nin{st_dtype::F32, {I1, H}, {}}, nb{st_dtype::F32, {I1}, {}}, nout{st_dtype::F32, {H, I1}, {}};
      for (int row = 0; row < I1; ++row) {
        const int src = row < I0 ? row : row - I0;
        for (int c = 0; c < H; ++c) nin.v.push_back(win.v[static_cast<std::size_t>(src * H + c)]);
        nb.v.push_back(bin.v[static_cast<std::size_t>(src)]);
      }
      for (int row = 0; row < H; ++row) {
        for (int c = 0; c < I1; ++c) {
          const int src = c < I0 ? c : c - I0;
          nout.v.push_back(wout.v[static_cast<std::size_t>(row * I0 + src)]);
        }
      }
      win = nin;
      bin = nb;
      wout = nout;
    }
  }
  return out;
}

void write_checkpoint(const checkpoint& c, const std::string& config, const std::filesystem::path& dir) {
  io::safetensors_writer w;
  for (const auto& [name, t] : c) w.add_converted(name, t.dt, t.shape, t.v);
  std::filesystem::create_directories(dir);
  w.write(dir / "model.safetensors");
  mlkv_test::write_text(dir / "config.json", config);
}

checkpoint read_checkpoint(const io::safetensors_file& f) {
  checkpoint c;
  for (const auto& t : f.tensors()) {
    tensor x{t.dtype, t.shape, std::vector<float>(t.numel())};
    f.read(t, std::span<float>(x.v));
    c[t.name] = std::move(x);
  }
  return c;
}

/// Mismatching tensors (name, dtype, shape or any value) between two checkpoints.
std::vector<std::string> differences(const checkpoint& got, const checkpoint& want) {
  std::vector<std::string> d;
  for (const auto& [name, t] : want) {
    const auto it = got.find(name);
    if (it == got.end()) {
      d.push_back("missing " + name);
    } else if (it->second.dt != t.dt || it->second.shape != t.shape || it->second.v != t.v) {
      d.push_back("differs " + name + " (" + std::string(io::name_of(it->second.dt)) + " vs " +
                  std::string(io::name_of(t.dt)) + ")");
    }
  }
  for (const auto& [name, t] : got) {
    if (want.count(name) == 0) d.push_back("unexpected " + name);
  }
  return d;
}

int run(const std::string& cmd) {
  const int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

}  // namespace

TEST_CASE("convert: matches an independent computation of the script's arithmetic", "[model][convert]") {
  const std::uint64_t seed = mlkv_test::fresh_seed();
  INFO("seed " << seed << " (MLKV_TEST_SEED to replay)");
  mlkv_test::rng r(seed);
  struct conversion {
    geometry g;
    st_dtype dt;
    int kv_heads, kv_layers, lanes;
  };
  const geometry g6{6, 4, 8, 64}, g12{3, 12, 8, 128}, g32{2, 32, 8, 256};
  const std::vector<conversion> cases = {
      {g6, st_dtype::F32, 4, 6, 8},   {g6, st_dtype::F32, 2, 6, 8},  {g6, st_dtype::F32, 1, 6, 8},
      {g6, st_dtype::F32, 4, 3, 8},   {g6, st_dtype::F32, 4, 2, 8},  {g6, st_dtype::F32, 2, 4, 8},
      {g6, st_dtype::F32, 1, 1, 8},   {g6, st_dtype::BF16, 2, 6, 8}, {g6, st_dtype::BF16, 4, 2, 8},
      {g6, st_dtype::BF16, 1, 3, 8},  {g6, st_dtype::F16, 1, 2, 8},  {g12, st_dtype::F32, 1, 3, 8},
      {g12, st_dtype::F32, 4, 1, 8},  {g12, st_dtype::F32, 3, 3, 8}, {g12, st_dtype::BF16, 1, 3, 8},
      {g12, st_dtype::F32, 1, 3, 16}, {g32, st_dtype::F32, 1, 2, 8}, {g32, st_dtype::F32, 2, 1, 8},
      {g32, st_dtype::F32, 1, 2, 16},
  };
  for (const conversion& c : cases) {
    INFO("layers " << c.g.layers << " heads " << c.g.heads << " " << io::name_of(c.dt) << " -> kv_heads " << c.kv_heads
                   << ", kv_layers " << c.kv_layers << ", lanes " << c.lanes);
    const checkpoint in = make_mha(c.g, c.dt, r);
    io::safetensors_writer w;
    for (const auto& [name, t] : in) w.add_converted(name, t.dt, t.shape, t.v);
    const std::vector<std::byte> file = w.serialize();
    const io::safetensors_file f = io::safetensors_file::from_memory(file, "in.safetensors");
    const io::gpt_neox_config cfg = io::parse_gpt_neox_config_text(mha_config_json(c.g, c.g.intermediate));

    const io::converted_checkpoint conv = io::convert(cfg, f, c.kv_heads, c.kv_layers, c.lanes);
    const std::vector<std::byte> out_bytes = conv.tensors.serialize();
    const checkpoint got = read_checkpoint(io::safetensors_file::from_memory(out_bytes, "out.safetensors"));
    int new_intermediate = 0;
    const checkpoint want = expected_conversion(in, c.g, c.kv_heads, c.kv_layers, static_cast<std::size_t>(c.lanes),
                                                new_intermediate);
    const std::vector<std::string> diff = differences(got, want);
    for (const auto& d : diff) UNSCOPED_INFO(d);
    CHECK(diff.empty());

    // config.json: every key kept in place, intermediate_size updated, the paper's keys appended.
    const auto& before = cfg.raw.as_object();
    const auto& after = conv.config.as_object();
    REQUIRE(after.size() == before.size() + 2);
    for (std::size_t i = 0; i < before.size(); ++i) {
      CHECK(after[i].key == before[i].key);
      if (before[i].key != "intermediate_size") CHECK(after[i].val == before[i].val);
    }
    CHECK(conv.config.find("intermediate_size")->as_int() == new_intermediate);
    CHECK(after[before.size()].key == "num_key_value_heads");
    CHECK(after[before.size()].val.as_int() == c.kv_heads);
    CHECK(after[before.size() + 1].key == "num_key_value_layers");
    CHECK(after[before.size() + 1].val.as_int() == c.kv_layers);
    CHECK(conv.plan.new_intermediate == new_intermediate);
  }
}

TEST_CASE("convert: layer folding is the script's running pairwise mean, not a plain mean", "[model][convert]") {
  // Owners 0 and 3 of 6 layers: the owner of layers 0, 1, 2 ends as ((k0 + k1)/2 + k2)/2.
  const std::uint64_t seed = mlkv_test::fresh_seed();
  INFO("seed " << seed);
  mlkv_test::rng r(seed);
  const geometry g{6, 4, 8, 64};
  const checkpoint in = make_mha(g, st_dtype::F32, r);
  io::safetensors_writer w;
  for (const auto& [name, t] : in) w.add_converted(name, t.dt, t.shape, t.v);
  const auto file = w.serialize();
  const auto conv = io::convert(io::parse_gpt_neox_config_text(mha_config_json(g, g.intermediate)),
                                io::safetensors_file::from_memory(file), 4, 2);
  const auto out_bytes = conv.tensors.serialize();
  const auto got = read_checkpoint(io::safetensors_file::from_memory(out_bytes));
  const auto& k = got.at(L(0, "attention.key.bias")).v;
  auto key_bias = [&](int l, int i) {  // the key rows of layer l's fused bias
    const int h = i / 8, d = i % 8;
    return in.at(L(l, "attention.query_key_value.bias")).v[static_cast<std::size_t>((h * 3 + 1) * 8 + d)];
  };
  int differs_from_plain_mean = 0;
  for (int i = 0; i < 32; ++i) {
    const float running = ((key_bias(0, i) + key_bias(1, i)) / 2.f + key_bias(2, i)) / 2.f;
    // k2 + k1 order: the script stacks [layer, owner]
    const float script = ((key_bias(1, i) + key_bias(0, i)) / 2.f + key_bias(2, i)) / 2.f;
    CHECK(k[static_cast<std::size_t>(i)] == script);
    CHECK(running == script);
    const double plain = (static_cast<double>(key_bias(0, i)) + key_bias(1, i) + key_bias(2, i)) / 3.0;
    differs_from_plain_mean += std::abs(plain - k[static_cast<std::size_t>(i)]) > 1e-3 ? 1 : 0;
  }
  CHECK(differs_from_plain_mean > 0);
  CHECK(got.count(L(1, "attention.key.weight")) == 0);  // non-owners keep only their query
  CHECK(got.count(L(1, "attention.query.weight")) == 1);
  CHECK(got.count(L(3, "attention.value.bias")) == 1);
}

TEST_CASE("convert: the plan for the paper's nine Pythia-160M configurations", "[model][convert]") {
  const io::gpt_neox_config pythia = io::parse_gpt_neox_config_text(
      R"({"hidden_size": 768, "num_attention_heads": 12, "num_hidden_layers": 12, "intermediate_size": 3072,
          "vocab_size": 50304})");
  // intermediate_size after conversion, from the script's formula evaluated by hand (Python):
  // 3072 + int(round(((144 - Hkv*Lkv) * 98432 // 12) / 768)) // 2
  const std::map<std::string, int> intermediate = {{"MHA-144", 3072}, {"GQA-48", 3584}, {"MLKV-48", 3584},
                                                   {"MQA-12", 3777},  {"MLKV-12", 3777}, {"MLKV-6", 3809},
                                                   {"MLKV-4", 3819},  {"MLKV-2", 3830},  {"MLKV-1", 3835}};
  for (const auto& pc : paper_configs) {
    INFO(pc.name);
    const io::conversion_plan p = io::plan_conversion(pythia, pc.shape.kv_heads, pc.shape.kv_layers);
    CHECK(p.new_intermediate == intermediate.at(std::string(pc.name)));
    CHECK(p.owners == io::owner_layers(pc.shape));
    CHECK(p.merge_heads == (pc.shape.kv_heads != 12));
    CHECK(p.merge_layers == (pc.shape.kv_layers != 12));
  }
  // Python's round: half to even.
  CHECK(io::round_half_even(0.5) == 0.0);
  CHECK(io::round_half_even(1.5) == 2.0);
  CHECK(io::round_half_even(2.5) == 2.0);
  CHECK(io::round_half_even(21.5) == 22.0);
  CHECK(io::round_half_even(22.5) == 22.0);
  CHECK(io::round_half_even(1409.8333) == 1410.0);
}

TEST_CASE("convert: refusals", "[model][convert]") {
  const geometry g{6, 4, 8, 64};
  const io::gpt_neox_config cfg = io::parse_gpt_neox_config_text(mha_config_json(g, 64));
  MLKV_CHECK_ERROR(io::plan_conversion(cfg, 3, 6), "KV heads (3) must divide the 4 attention heads");
  MLKV_CHECK_ERROR(io::plan_conversion(cfg, 2, 7), "KV layers (7) must be between 1 and 6");
  MLKV_CHECK_ERROR(io::plan_conversion(io::parse_gpt_neox_config_text(mha_config_json(g, 16)), 1, 1),
                   "the MLP would grow by 31 rows, more than its 16 rows");
  io::gpt_neox_config converted = cfg;
  converted.num_key_value_heads = 2;
  MLKV_CHECK_ERROR(io::plan_conversion(converted, 1, 6), "the input is not an MHA checkpoint");
  // Where the script's floating-point owners differ from the exact spread placement.
  const io::gpt_neox_config deep = io::parse_gpt_neox_config_text(mha_config_json(geometry{30, 2, 8, 64}, 64));
  MLKV_CHECK_ERROR(io::plan_conversion(deep, 1, 22),
                   "places owners at {0,1,2,4,5,6,8,9,10,12,13,14,16,17,19,20,21,23,24,25,27,28} (floating point) "
                   "but mlkv's spread placement at {0,1,2,4,5,6,8,9,10,12,13,15,");
  CHECK_NOTHROW(io::plan_conversion(deep, 1, 21));
}

TEST_CASE("convert: checkpoint directories, and loading the result", "[model][convert]") {
  const std::uint64_t seed = mlkv_test::fresh_seed();
  INFO("seed " << seed);
  mlkv_test::rng r(seed);
  temp_dir dir;
  const geometry g{6, 4, 8, 64};
  const checkpoint in = make_mha(g, st_dtype::BF16, r);
  write_checkpoint(in, mha_config_json(g, g.intermediate), dir / "in");
  mlkv_test::write_text(dir / "in" / "tokenizer.json", "{\"tokens\": []}");
  mlkv_test::write_text(dir / "in" / "pytorch_model.bin", "stale");
  io::convert_options opt;
  opt.kv_heads = 1;
  opt.kv_layers = 4;
  const io::conversion_plan p = io::convert_checkpoint(dir / "in", dir / "out", opt);
  CHECK(std::filesystem::exists(dir / "out" / "tokenizer.json"));
  CHECK_FALSE(std::filesystem::exists(dir / "out" / "pytorch_model.bin"));  // other weight formats are not copied

  int new_intermediate = 0;
  const checkpoint want = expected_conversion(in, g, 1, 4, 8, new_intermediate);
  const io::safetensors_file f = io::safetensors_file::open(dir / "out" / "model.safetensors");
  CHECK(differences(read_checkpoint(f), want).empty());
  CHECK(p.new_intermediate == new_intermediate);

  // The library's loader reads the converted (mixed-dtype) checkpoint with the paper's owners.
  const auto w = model::load_checkpoint<float>(dir / "out");
  CHECK(w.shape == model_shape{.layers = 6, .q_heads = 4, .kv_heads = 1, .kv_layers = 4, .head_dim = 8});
  CHECK(w.intermediate == new_intermediate);
  for (int l = 0; l < 6; ++l) {
    const auto& lw = w.layers[static_cast<std::size_t>(l)];
    INFO("layer " << l);
    CHECK(lw.owner == (l == 0 || l == 1 || l == 3 || l == 4));
    if (!lw.owner) continue;
    const auto& k = want.at(L(l, "attention.key.weight")).v;
    const auto& v = want.at(L(l, "attention.value.bias")).v;
    for (std::size_t i = 0; i < k.size(); ++i) REQUIRE(lw.qkv.data[static_cast<std::size_t>(w.q_dim) * 32 + i] == k[i]);
    for (std::size_t i = 0; i < v.size(); ++i) REQUIRE(lw.qkv_bias[static_cast<std::size_t>(w.q_dim + w.kv_dim) + i] == v[i]);
  }

  // An existing output is kept unless overwriting is asked for; the input is never the output.
  MLKV_CHECK_ERROR(io::convert_checkpoint(dir / "in", dir / "out", opt), "already holds a checkpoint");
  opt.overwrite = true;
  CHECK_NOTHROW(io::convert_checkpoint(dir / "in", dir / "out", opt));
  MLKV_CHECK_ERROR(io::convert_checkpoint(dir / "in", dir / "in", opt), "the output directory is the input directory");
  MLKV_CHECK_ERROR(io::convert_checkpoint(dir / "missing", dir / "out2", opt), "no model.safetensors");
}

#ifdef MLKV_CONVERT_EXE
TEST_CASE("convert: the mlkv-convert command line", "[model][convert]") {
  temp_dir dir;
  mlkv_test::rng r(mlkv_test::fresh_seed());
  const geometry g{6, 4, 8, 64};
  write_checkpoint(make_mha(g, st_dtype::F32, r), mha_config_json(g, g.intermediate), dir / "in");
  const std::string exe = MLKV_CONVERT_EXE;
  const std::string in = (dir / "in").string(), out = (dir / "out").string(), err = (dir / "err.txt").string();
  const std::string quiet = " >/dev/null 2>" + err;
  CHECK(run(exe + quiet) == 2);
  CHECK(io::read_file(err).find("usage: mlkv-convert") != std::string::npos);
  CHECK(run(exe + " --kv-heads x --kv-layers 2 " + in + " " + out + quiet) == 2);
  CHECK(run(exe + " --kv-heads 1 --bogus " + in + " " + out + quiet) == 2);
  CHECK(run(exe + " --kv-heads 1 --kv-layers 2 " + in + quiet) == 2);
  CHECK(run(exe + " --kv-heads 1 --kv-layers 2 --torch-lanes 4 " + in + " " + out + quiet) == 2);
  CHECK(run(exe + " --kv-heads 3 --kv-layers 2 " + in + " " + out + quiet) == 2);  // 3 does not divide 4 heads
  CHECK(io::read_file(err).find("KV heads (3) must divide") != std::string::npos);
  CHECK(run(exe + " --help" + quiet) == 0);
  CHECK(run(exe + " --kv-heads 1 --kv-layers 2 " + in + " " + out + quiet) == 0);
  CHECK(io::read_gpt_neox_config(dir / "out" / "config.json").num_key_value_layers == 2);
  CHECK(run(exe + " --kv-heads 1 --kv-layers 2 " + in + " " + out + quiet) == 1);  // output exists
  CHECK(run(exe + " --kv-heads 1 --kv-layers 2 --force " + in + " " + out + quiet) == 0);
  CHECK(run(exe + " --kv-heads 1 --kv-layers 2 " + (dir / "nothing").string() + " " + out + quiet) == 1);
}
#endif
