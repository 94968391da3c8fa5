#pragma once
/// \file io/convert.hpp
/// The MLKV paper's checkpoint converter (zaydzuhri/pythia-mlkv, convert_to_mlkv.py): an MHA
/// GPT-NeoX checkpoint in, a GQA / MQA / MLKV checkpoint out, with the script's arithmetic.
///
/// What the script computes, step by step (and so what this computes):
///  1. Split each layer's fused `query_key_value` ([heads, 3, head_dim, hidden] rows) into
///     `query`, `key` and `value` ([heads * head_dim, hidden] each; biases likewise).
///  2. GQA/MQA (only when kv_heads != heads): each group of heads/kv_heads consecutive K (and V)
///     heads is replaced by its mean, `torch.mean(dim=0)`, written into a new `torch.zeros`
///     tensor, which is float32 whatever the input dtype.
///  3. MLKV (only when kv_layers != layers): owner layers are `[0] + [int((i+1) * (L / Lkv))]`
///     (floating point); walking the layers upwards, each non-owner layer's K/V is folded into
///     its nearest owner below as `mean(stack([layer, owner]))`: the owner holds the running
///     result, so with three layers a, b, c in a group the owner ends as ((a+b)/2 + c)/2, not
///     (a+b+c)/3. The non-owner K/V tensors are dropped.
///  4. The parameters lost, (heads*L - kv_heads*kv_layers) * (2*hidden*head_dim + 2*head_dim),
///     are given back to the MLP: per layer lost // L parameters, `addition =
///     int(round(per_layer / hidden))` (Python's round: half to even) and intermediate_size grows
///     by addition // 2. When addition != 0, dense_h_to_4h.{weight,bias} and dense_4h_to_h.weight
///     are rebuilt as float32 `torch.zeros` of the new size holding the old values, and the new
///     rows (columns of dense_4h_to_h) are copies of the first addition // 2 old ones.
///  5. config.json gains num_key_value_heads and num_key_value_layers (appended, or replaced in
///     place) and the new intermediate_size; every other key and tensor passes through unchanged.
///
/// Arithmetic, as PyTorch does it on the CPU: `torch.mean` is a float sum (float accumulation for
/// every input dtype; F16/BF16 inputs are widened first) followed by a float division by the
/// count, then (F16/BF16) a round to nearest even. The order of the sum is PyTorch's too
/// (SumKernel.cpp): which order an output column gets depends on its position among the columns
/// reduced together and on the vector width of the PyTorch build (`torch_lanes`: 8 for AVX2 and
/// default builds, the default here; 16 for AVX-512 builds); see detail::torch_sum. All orders
/// agree for the two-term means of step 3 and for groups of up to 4 heads. For groups of 5+ heads
/// this reproduces PyTorch when it reduces a tensor in one piece (always below 32768 outputs,
/// e.g. biases; larger tensors when it runs on one thread, or when its per-thread column ranges
/// are multiples of 4 vectors, as for Pythia-160M's 64 x 768 heads on AVX2 builds). F16/BF16
/// means follow PyTorch 2.x (widen, sum, divide, round once); PyTorch 1.13 rounded the sum to
/// F16/BF16 before dividing, which differs in the last bit for groups whose size is not a power
/// of two. Checked bit for bit against PyTorch 1.13 (Debian; AVX2 and AVX-512 kernels; groups of
/// 2 to 32 heads) for F32 checkpoints, and for F16/BF16 ones where 1.13 and 2.x agree.
/// Dtypes (the script's flow, written as such): an F32 checkpoint stays F32 throughout. For a
/// BF16 (or F16) checkpoint, `query` and every untouched tensor stay BF16; K/V become F32 when
/// step 2 runs (holding the BF16-rounded group means; step 3 then averages in F32), and stay
/// BF16 when only step 3 runs (each pairwise mean rounded to BF16); the rebuilt MLP tensors of
/// step 4 are F32. The library's loader reads such mixed files and converts every tensor to the
/// model's weight type.
///
/// Refused, each with a clear mlkv::error: an input that is not MHA (already converted), a
/// geometry whose KV heads do not divide the heads, a (layers, kv_layers) for which the script's
/// floating-point owners differ from mlkv's exact spread placement (first (30, 22): the library's
/// model would read other owners than the script's), an MLP growth larger than the old
/// intermediate size (the script's slice would be too short and it fails), `use_key_value_mlp`
/// (random MLP K/V projections; nothing to reproduce), sharded or pickle checkpoints.
/// Deliberate extensions: a checkpoint without attention biases (attention_bias: false) converts
/// its weights the same way; an MHA input already split into query/key/value is accepted.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "../dtype.hpp"
#include "../error.hpp"
#include "../shape.hpp"
#include "file.hpp"
#include "hf_config.hpp"
#include "json.hpp"
#include "safetensors.hpp"

namespace mlkv::io {

/// What a conversion does, derived from the input config and the requested geometry.
struct conversion_plan {
  int layers = 0, heads = 0, head_dim = 0, hidden = 0;
  int kv_heads = 0, kv_layers = 0;
  std::vector<int> owners;              ///< owner layers (the script's; equal to mlkv's spread)
  long long heads_lost = 0;             ///< heads*L - kv_heads*kv_layers
  long long params_lost = 0;            ///< heads_lost * (2*hidden*head_dim + 2*head_dim)
  long long params_per_layer = 0;       ///< params_lost // L
  long long intermediate_addition = 0;  ///< int(round(params_per_layer / hidden))
  int old_intermediate = 0;
  int new_intermediate = 0;  ///< old + intermediate_addition // 2
  bool merge_heads = false;  ///< step 2 runs (kv_heads != heads)
  bool merge_layers = false; ///< step 3 runs (kv_layers != layers)
  bool rebuild_mlp = false;  ///< step 4 rebuilds the MLP tensors (intermediate_addition != 0)
};

/// Python's round() of a double: to nearest, ties to even (independent of the FP rounding mode).
inline double round_half_even(double q) {
  const double f = std::floor(q);
  const double diff = q - f;
  if (diff > 0.5) return f + 1.0;
  if (diff < 0.5) return f;
  return std::fmod(f, 2.0) == 0.0 ? f : f + 1.0;
}

/// Checks the request against the input config and computes the plan; throws mlkv::error.
inline conversion_plan plan_conversion(const gpt_neox_config& in, int kv_heads, int kv_layers) {
  in.validate();
  MLKV_CHECK(in.is_mha(), "the input is not an MHA checkpoint (num_key_value_heads=", in.num_key_value_heads,
             ", num_key_value_layers=", in.num_key_value_layers, " of ", in.num_attention_heads, " heads and ",
             in.num_hidden_layers, " layers); the converter takes an MHA checkpoint");
  conversion_plan p;
  p.layers = in.num_hidden_layers;
  p.heads = in.num_attention_heads;
  p.head_dim = in.head_dim();
  p.hidden = in.hidden_size;
  MLKV_CHECK(kv_heads >= 1 && kv_heads <= p.heads && p.heads % kv_heads == 0, "KV heads (", kv_heads,
             ") must divide the ", p.heads, " attention heads");
  MLKV_CHECK(kv_layers >= 1 && kv_layers <= p.layers, "KV layers (", kv_layers, ") must be between 1 and ", p.layers);
  p.kv_heads = kv_heads;
  p.kv_layers = kv_layers;
  p.owners = paper_owner_layers(p.layers, kv_layers);
  const model_shape exact{.layers = p.layers, .q_heads = p.heads, .kv_heads = kv_heads, .kv_layers = kv_layers,
                          .head_dim = p.head_dim};
  exact.validate();
  const std::vector<int> ours = owner_layers(exact);
  if (p.owners != ours) {
    std::string a, b;
    for (std::size_t i = 0; i < ours.size(); ++i) {
      a += (i ? "," : "") + std::to_string(p.owners[i]);
      b += (i ? "," : "") + std::to_string(ours[i]);
    }
    ::mlkv::detail::fail("for ", p.layers, " layers and ", kv_layers, " KV layers the paper's script places owners at {", a,
                 "} (floating point) but mlkv's spread placement at {", b,
                 "}; a checkpoint converted this way would be read with other owners, so it is refused");
  }
  p.merge_heads = kv_heads != p.heads;
  p.merge_layers = kv_layers != p.layers;
  p.heads_lost = static_cast<long long>(p.heads) * p.layers - static_cast<long long>(kv_heads) * kv_layers;
  p.params_lost = p.heads_lost * (static_cast<long long>(p.hidden) * p.head_dim * 2 + p.head_dim * 2);
  p.params_per_layer = p.params_lost / p.layers;
  MLKV_CHECK(p.params_per_layer < (1ll << 53), "parameter count ", p.params_per_layer, " is too large");
  p.intermediate_addition = static_cast<long long>(
      round_half_even(static_cast<double>(p.params_per_layer) / static_cast<double>(p.hidden)));
  p.old_intermediate = in.intermediate_size;
  p.new_intermediate = in.intermediate_size + static_cast<int>(p.intermediate_addition / 2);
  p.rebuild_mlp = p.intermediate_addition != 0;
  MLKV_CHECK(p.new_intermediate - p.old_intermediate <= p.old_intermediate, "the MLP would grow by ",
             p.new_intermediate - p.old_intermediate, " rows, more than its ", p.old_intermediate,
             " rows; the script fills new rows from old ones and cannot");
  return p;
}

namespace detail {

/// PyTorch's `multi_row_sum` order for one column of n terms (utils::CeilLog2, 4 levels): runs
/// of 2^level_power (at least 16) terms are summed left to right from 0 and the run sums are
/// combined in levels. For n <= 16 it is a plain left-to-right sum from 0.
template <class Get>
float torch_cascade_sum(std::size_t n, Get get) {
  constexpr int levels = 4;
  int ceil_log2 = 1;
  if (n > 2) {
    ceil_log2 = 0;
    for (std::uint64_t v = n - 1; v != 0; v >>= 1) ++ceil_log2;
  }
  const int power = std::max(4, ceil_log2 / levels);
  const std::size_t step = std::size_t{1} << power;
  const std::size_t mask = step - 1;
  float acc[levels] = {0.f, 0.f, 0.f, 0.f};
  std::size_t i = 0;
  while (i + step <= n) {
    for (std::size_t j = 0; j < step; ++j, ++i) acc[0] += get(i);
    for (int j = 1; j < levels; ++j) {
      acc[j] += acc[j - 1];
      acc[j - 1] = 0.f;
      if ((i & (mask << (j * power))) != 0) break;
    }
  }
  for (; i < n; ++i) acc[0] += get(i);
  for (int j = 1; j < levels; ++j) acc[0] += acc[j];
  return acc[0];
}

/// PyTorch's `row_sum` order for one column: four interleaved partial sums (terms i = 4m + k) in
/// cascade order, the n % 4 last terms added to the first, then the partials added in order.
template <class Get>
float torch_row_sum(std::size_t n, Get get) {
  const std::size_t m = n / 4;
  float p[4];
  for (std::size_t k = 0; k < 4; ++k) p[k] = torch_cascade_sum(m, [&](std::size_t i) { return get(4 * i + k); });
  for (std::size_t i = 4 * m; i < n; ++i) p[0] += get(i);
  for (std::size_t k = 1; k < 4; ++k) p[0] += p[k];
  return p[0];
}

/// The float sum over n rows that PyTorch's CPU `sum` (SumKernel.cpp, cascade_sum) computes for
/// output column `col` of `cols` contiguous columns reduced in one piece, with `lanes` floats per
/// vector (8: AVX2 and default builds, 16: AVX-512 builds). Columns in full blocks of 4 vectors use
/// the multi-row order, the rest (and every column when fewer than `lanes` are reduced, outside
/// groups of 4) the interleaved row order; the output starts at 0 and accumulates the sum. The
/// orders agree whenever n <= 4.
template <class Get>
float torch_sum(std::size_t n, std::size_t col, std::size_t cols, std::size_t lanes, Get get) {
  bool multi = false;
  if (cols >= lanes) {  // vectorized_outer_sum
    multi = col < cols / (4 * lanes) * (4 * lanes);
  } else {              // scalar_outer_sum: columns in groups of 4
    multi = col < cols / 4 * 4;
  }
  return 0.f + (multi ? torch_cascade_sum(n, get) : torch_row_sum(n, get));
}

/// Rounds a float to what a tensor of dtype t holds.
inline float round_to(st_dtype t, float x) {
  if (t == st_dtype::BF16) return bf16_bits_to_float(float_to_bf16_bits(x));
  if (t == st_dtype::F16) return f16_bits_to_float(float_to_f16_bits(x));
  return x;
}

/// torch.result_type of two float dtypes.
inline st_dtype promote(st_dtype a, st_dtype b) {
  if (a == b) return a;
  if (a == st_dtype::F64 || b == st_dtype::F64) return st_dtype::F64;
  return st_dtype::F32;  // F32 with anything, and F16 with BF16
}

/// A working tensor: dtype and values widened to float (exact for F32/F16/BF16).
struct work_tensor {
  st_dtype dtype = st_dtype::F32;
  std::vector<std::int64_t> shape;
  std::vector<float> v;
};

inline work_tensor read_work(const safetensors_file& f, const tensor_info& t) {
  MLKV_CHECK(t.dtype == st_dtype::F32 || t.dtype == st_dtype::F16 || t.dtype == st_dtype::BF16, f.source(),
             ": tensor \"", t.name, "\" has dtype ", name_of(t.dtype), "; the converter handles F32, F16 and BF16");
  work_tensor w;
  w.dtype = t.dtype;
  w.shape = t.shape;
  w.v.resize(t.numel());
  f.read(t, std::span<float>(w.v));
  return w;
}

}  // namespace detail

/// A converted checkpoint in memory: the new config.json and the tensors (some are views into
/// the input file, which this object keeps mapped).
struct converted_checkpoint {
  conversion_plan plan;
  json::value config;
  safetensors_file input;
  safetensors_writer tensors;
};

/// Vector width (floats) of the PyTorch build whose summation order the head means reproduce by
/// default: 8, as AVX2 and default builds (see torch_sum; it matters for groups of 5+ heads).
inline constexpr int default_torch_lanes = 8;

/// Converts an MHA checkpoint (its parsed config and its safetensors file) in memory.
/// `lanes`: the vector width of the PyTorch build to reproduce, 8 (AVX2, default) or 16 (AVX-512).
inline converted_checkpoint convert(const gpt_neox_config& cfg, const safetensors_file& in, int kv_heads, int kv_layers,
                                    int torch_lanes = default_torch_lanes) {
  MLKV_CHECK(torch_lanes == 8 || torch_lanes == 16, "PyTorch vector width (", torch_lanes, ") must be 8 or 16 floats");
  const std::size_t lanes = static_cast<std::size_t>(torch_lanes);
  using detail::work_tensor;
  // The script rewrites the file's own keys; a configuration made in code has none: use its JSON.
  const json::value base = cfg.raw.is_object() && !cfg.raw.as_object().empty() ? cfg.raw : cfg.to_json();
  converted_checkpoint out{plan_conversion(cfg, kv_heads, kv_layers), base, in, {}};
  const conversion_plan& p = out.plan;
  const int L = p.layers, Hq = p.heads, D = p.head_dim, H = p.hidden, G = Hq / kv_heads;
  const bool bias = cfg.attention_bias;
  std::vector<std::string> consumed;  // input tensors replaced by computed ones

  auto need = [&](const std::string& name, std::vector<std::int64_t> shape) -> const tensor_info& {
    const tensor_info& t = in.at(name);
    MLKV_CHECK(t.shape == shape, in.source(), ": tensor \"", name, "\" has shape ", shape_string(t.shape), ", expected ",
               shape_string(shape), " (from config.json)");
    consumed.push_back(name);
    return t;
  };
  auto layer = [](int l, const char* what) { return "gpt_neox.layers." + std::to_string(l) + "." + what; };

  // Step 1: q, k, v per layer (weights [Hq*D, H], biases [Hq*D]).
  struct qkv_t {
    work_tensor w[3], b[3];  // query, key, value
  };
  std::vector<qkv_t> qkv(static_cast<std::size_t>(L));
  const char* part_names[3] = {"query", "key", "value"};
  for (int l = 0; l < L; ++l) {
    qkv_t& a = qkv[static_cast<std::size_t>(l)];
    const std::string fused = layer(l, "attention.query_key_value.weight");
    if (in.find(fused) != nullptr) {
      const work_tensor fw = detail::read_work(in, need(fused, {3 * Hq * D, H}));
      for (int part = 0; part < 3; ++part) {
        a.w[part] = work_tensor{fw.dtype, {Hq * D, H}, std::vector<float>(static_cast<std::size_t>(Hq * D * H))};
        for (int h = 0; h < Hq; ++h) {
          std::copy_n(fw.v.begin() + static_cast<std::ptrdiff_t>((h * 3 + part) * D) * H, D * H,
                      a.w[part].v.begin() + static_cast<std::ptrdiff_t>(h * D) * H);
        }
      }
      if (bias) {
        const work_tensor fb = detail::read_work(in, need(layer(l, "attention.query_key_value.bias"), {3 * Hq * D}));
        for (int part = 0; part < 3; ++part) {
          a.b[part] = work_tensor{fb.dtype, {Hq * D}, std::vector<float>(static_cast<std::size_t>(Hq * D))};
          for (int h = 0; h < Hq; ++h) {
            std::copy_n(fb.v.begin() + (h * 3 + part) * D, D, a.b[part].v.begin() + h * D);
          }
        }
      }
    } else {
      for (int part = 0; part < 3; ++part) {
        const std::string base = std::string("attention.") + part_names[part];
        a.w[part] = detail::read_work(in, need(layer(l, (base + ".weight").c_str()), {Hq * D, H}));
        if (bias) a.b[part] = detail::read_work(in, need(layer(l, (base + ".bias").c_str()), {Hq * D}));
      }
    }
  }

  // Step 2: mean over each group of G heads into a float32 tensor of kv_heads heads.
  auto merge_heads = [&](work_tensor& t, std::size_t per_head) {
    work_tensor r{st_dtype::F32, t.shape, std::vector<float>(static_cast<std::size_t>(kv_heads) * per_head)};
    r.shape[0] = static_cast<std::int64_t>(kv_heads) * D;
    for (int j = 0; j < kv_heads; ++j) {
      for (std::size_t e = 0; e < per_head; ++e) {
        // torch.mean(x[j*G:(j+1)*G], dim=0): G rows reduced into per_head contiguous columns.
        const float s = detail::torch_sum(static_cast<std::size_t>(G), e, per_head, lanes, [&](std::size_t i) {
          return t.v[(static_cast<std::size_t>(j) * static_cast<std::size_t>(G) + i) * per_head + e];
        });
        // torch.mean in t's dtype (rounded to it), then stored into the float32 zeros tensor.
        r.v[static_cast<std::size_t>(j) * per_head + e] = detail::round_to(t.dtype, s / static_cast<float>(G));
      }
    }
    t = std::move(r);
  };
  if (p.merge_heads) {
    for (auto& a : qkv) {
      for (int part = 1; part < 3; ++part) {
        merge_heads(a.w[part], static_cast<std::size_t>(D) * static_cast<std::size_t>(H));
        if (bias) merge_heads(a.b[part], static_cast<std::size_t>(D));
      }
    }
  }

  // Step 3: fold each non-owner layer into its owner: owner = mean(stack([layer, owner])).
  auto fold = [&](const work_tensor& x, work_tensor& owner) {
    const st_dtype dt = detail::promote(x.dtype, owner.dtype);
    for (std::size_t e = 0; e < owner.v.size(); ++e) {
      // A sum of two terms: every PyTorch order gives (0 + x) + owner.
      const float s = 0.f + detail::torch_cascade_sum(2, [&](std::size_t i) { return i == 0 ? x.v[e] : owner.v[e]; });
      owner.v[e] = detail::round_to(dt, s / 2.0f);
    }
    owner.dtype = dt;
  };
  if (p.merge_layers) {
    for (int l = 0; l < L; ++l) {
      if (std::find(p.owners.begin(), p.owners.end(), l) != p.owners.end()) continue;
      int prev = 0;
      for (const int o : p.owners) {
        if (o < l) prev = std::max(prev, o);
      }
      qkv_t& a = qkv[static_cast<std::size_t>(l)];
      qkv_t& o = qkv[static_cast<std::size_t>(prev)];
      for (int part = 1; part < 3; ++part) {
        fold(a.w[part], o.w[part]);
        if (bias) fold(a.b[part], o.b[part]);
      }
    }
  }

  auto put = [&](std::string name, const work_tensor& t) {
    out.tensors.add_converted(std::move(name), t.dtype, t.shape, std::span<const float>(t.v));
  };
  for (int l = 0; l < L; ++l) {
    const bool owner = !p.merge_layers || std::find(p.owners.begin(), p.owners.end(), l) != p.owners.end();
    for (int part = 0; part < 3; ++part) {
      if (part > 0 && !owner) break;
      const std::string base = std::string("attention.") + part_names[part];
      put(layer(l, (base + ".weight").c_str()), qkv[static_cast<std::size_t>(l)].w[part]);
      if (bias) put(layer(l, (base + ".bias").c_str()), qkv[static_cast<std::size_t>(l)].b[part]);
    }
  }
  qkv.clear();

  // Step 4: the MLP grows; new rows (columns) repeat the first old ones; tensors become float32.
  if (p.rebuild_mlp) {
    const int I0 = p.old_intermediate, I1 = p.new_intermediate, extra = I1 - I0;
    for (int l = 0; l < L; ++l) {
      const work_tensor win = detail::read_work(in, need(layer(l, "mlp.dense_h_to_4h.weight"), {I0, H}));
      const work_tensor bin = detail::read_work(in, need(layer(l, "mlp.dense_h_to_4h.bias"), {I0}));
      const work_tensor wout = detail::read_work(in, need(layer(l, "mlp.dense_4h_to_h.weight"), {H, I0}));
      work_tensor nin{st_dtype::F32, {I1, H}, std::vector<float>(static_cast<std::size_t>(I1) * static_cast<std::size_t>(H))};
      std::copy(win.v.begin(), win.v.end(), nin.v.begin());
      std::copy_n(win.v.begin(), static_cast<std::size_t>(extra) * static_cast<std::size_t>(H),
                  nin.v.begin() + static_cast<std::ptrdiff_t>(I0) * H);
      work_tensor nb{st_dtype::F32, {I1}, std::vector<float>(static_cast<std::size_t>(I1))};
      std::copy(bin.v.begin(), bin.v.end(), nb.v.begin());
      std::copy_n(bin.v.begin(), extra, nb.v.begin() + I0);
      work_tensor nout{st_dtype::F32, {H, I1}, std::vector<float>(static_cast<std::size_t>(H) * static_cast<std::size_t>(I1))};
      for (int r = 0; r < H; ++r) {
        const auto src = wout.v.begin() + static_cast<std::ptrdiff_t>(r) * I0;
        const auto dst = nout.v.begin() + static_cast<std::ptrdiff_t>(r) * I1;
        std::copy_n(src, I0, dst);
        std::copy_n(src, extra, dst + I0);
      }
      put(layer(l, "mlp.dense_h_to_4h.weight"), nin);
      put(layer(l, "mlp.dense_h_to_4h.bias"), nb);
      put(layer(l, "mlp.dense_4h_to_h.weight"), nout);
    }
  }

  // Everything else passes through unchanged (views into the mapped input).
  std::sort(consumed.begin(), consumed.end());
  for (const tensor_info& t : in.tensors()) {
    if (std::binary_search(consumed.begin(), consumed.end(), t.name)) continue;
    out.tensors.add_view(t.name, t.dtype, t.shape, in.bytes(t));
  }
  for (const auto& [k, v] : in.metadata()) out.tensors.set_metadata(k, v);
  out.tensors.set_metadata("format", "pt");

  // Step 5: the config keys, as the script sets them (in place when present, else appended).
  out.config.set("num_key_value_heads", json::value(kv_heads));
  out.config.set("num_key_value_layers", json::value(kv_layers));
  out.config.set("intermediate_size", json::value(p.new_intermediate));
  return out;
}

/// Options of convert_checkpoint.
struct convert_options {
  int kv_heads = 0;        ///< num_key_value_heads of the output
  int kv_layers = 0;       ///< num_key_value_layers of the output
  bool overwrite = false;  ///< replace an existing config.json / model.safetensors in the output
  int torch_lanes = default_torch_lanes;  ///< PyTorch vector width whose sum order to reproduce (8 or 16)
};

/// Converts a checkpoint directory (config.json + model.safetensors) into `out_dir` (created when
/// missing). Other regular files (tokenizer, ...) are copied, weight files of other formats are
/// not. Each file is written atomically, the weights before the config.
inline conversion_plan convert_checkpoint(const std::filesystem::path& in_dir, const std::filesystem::path& out_dir,
                                          const convert_options& opt) {
  namespace fs = std::filesystem;
  const fs::path st = in_dir / "model.safetensors";
  if (!fs::exists(st)) {
    if (fs::exists(in_dir / "model.safetensors.index.json")) {
      ::mlkv::detail::fail(in_dir.string(), ": sharded checkpoints (model.safetensors.index.json) are not supported");
    }
    if (fs::exists(in_dir / "pytorch_model.bin")) {
      ::mlkv::detail::fail(in_dir.string(), ": only pytorch_model.bin found; convert it to model.safetensors first");
    }
    ::mlkv::detail::fail(in_dir.string(), ": no model.safetensors");
  }
  const gpt_neox_config cfg = read_gpt_neox_config(in_dir / "config.json");
  const safetensors_file in = safetensors_file::open(st);
  converted_checkpoint c = convert(cfg, in, opt.kv_heads, opt.kv_layers, opt.torch_lanes);

  if (fs::exists(out_dir)) {
    MLKV_CHECK(!fs::equivalent(in_dir, out_dir), "the output directory is the input directory (", in_dir.string(), ")");
    MLKV_CHECK(fs::is_directory(out_dir), out_dir.string(), " exists and is not a directory");
    const bool taken = fs::exists(out_dir / "config.json") || fs::exists(out_dir / "model.safetensors");
    MLKV_CHECK(!taken || opt.overwrite, out_dir.string(), " already holds a checkpoint (pass overwrite to replace it)");
  }
  fs::create_directories(out_dir);
  c.tensors.write(out_dir / "model.safetensors");
  write_file_atomic(out_dir / "config.json", json::dump(c.config, 2) + "\n");

  for (const fs::directory_entry& e : fs::directory_iterator(in_dir)) {
    if (!e.is_regular_file()) continue;
    const std::string name = e.path().filename().string();
    const bool weights = name == "config.json" || name == "pytorch_model.bin" || name.ends_with(".safetensors") ||
                         name.ends_with(".index.json") || name.ends_with(".bin") || name.ends_with(".h5") ||
                         name.ends_with(".msgpack") || name.ends_with(".pt") || name.ends_with(".pth");
    if (weights) continue;
    const std::string text = read_file(e.path(), std::size_t{1} << 30);
    write_file_atomic(out_dir / name, text);
  }
  return c.plan;
}

}  // namespace mlkv::io
