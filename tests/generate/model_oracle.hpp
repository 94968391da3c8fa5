#pragma once
// A plain double-precision GPT-NeoX forward pass with MLKV sharing, written from the
// definitions (Hugging Face's GPTNeoXForCausalLM and the paper's model), sharing no code with
// the library's model: its own owner placement, LayerNorm, activation, rotary and attention.
// It reads the weights' documented in-memory layout (qkv rows: Q, then K and V on owners).

#include <mlkv/model/weights.hpp>

#include <cmath>
#include <vector>

#include "oracle.hpp"

namespace mlkv_test {

/// Logits [tokens.size(), vocab] for one sequence, every position, recomputed from scratch.
/// keys_rotated_for_consumers: true for Hugging Face semantics (keys cached after rotation);
/// false for the paper's uncached model (consumer layers see their owner's unrotated keys).
template <class W>
std::vector<double> oracle_logits(const mlkv::model::gpt_neox_weights<W>& w, const std::vector<int>& tokens,
                                  bool keys_rotated_for_consumers = true) {
  const auto& c = w.config;
  const int T = static_cast<int>(tokens.size()), H = w.hidden, L = c.num_hidden_layers;
  const int Hq = c.num_attention_heads, Hkv = c.num_key_value_heads, D = H / Hq, I = w.intermediate;
  const int rot = static_cast<int>(D * c.rotary_pct);
  const std::vector<int> src = oracle::sources(L, c.num_key_value_layers, 0, 0);
  auto f = [](auto x) { return static_cast<double>(mlkv::to_float(x)); };
  auto ln = [&](const std::vector<double>& x, const mlkv::model::vec& g, const mlkv::model::vec& b) {
    std::vector<double> y(x.size());
    for (int t = 0; t < T; ++t) {
      double mean = 0, var = 0;
      for (int i = 0; i < H; ++i) mean += x[static_cast<std::size_t>(t * H + i)];
      mean /= H;
      for (int i = 0; i < H; ++i) var += std::pow(x[static_cast<std::size_t>(t * H + i)] - mean, 2);
      var /= H;
      for (int i = 0; i < H; ++i) {
        y[static_cast<std::size_t>(t * H + i)] =
            (x[static_cast<std::size_t>(t * H + i)] - mean) / std::sqrt(var + c.layer_norm_eps) * g[static_cast<std::size_t>(i)] +
            b[static_cast<std::size_t>(i)];
      }
    }
    return y;
  };
  // y[t, o] = x[t, :] . M[row0 + o, :] + bias[row0 + o]
  auto lin = [&](const std::vector<double>& x, int in, const mlkv::model::matrix<W>& m, int row0, int out,
                 const float* bias) {
    std::vector<double> y(static_cast<std::size_t>(T) * out);
    for (int t = 0; t < T; ++t) {
      for (int o = 0; o < out; ++o) {
        double s = bias != nullptr ? bias[row0 + o] : 0.0;
        const W* r = m.row(row0 + o);
        for (int i = 0; i < in; ++i) s += x[static_cast<std::size_t>(t) * in + i] * f(r[i]);
        y[static_cast<std::size_t>(t) * out + o] = s;
      }
    }
    return y;
  };
  auto act = [&](double x) {
    if (c.hidden_act == "relu") return x > 0 ? x : 0.0;
    if (c.hidden_act == "silu" || c.hidden_act == "swish") return x / (1 + std::exp(-x));
    if (c.hidden_act == "gelu") return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
    return 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
  };

  std::vector<double> x(static_cast<std::size_t>(T) * H);
  for (int t = 0; t < T; ++t)
    for (int i = 0; i < H; ++i) x[static_cast<std::size_t>(t * H + i)] = f(w.embed_in.row(tokens[static_cast<std::size_t>(t)])[i]);

  std::vector<std::vector<double>> k_raw(static_cast<std::size_t>(L)), k_rot(static_cast<std::size_t>(L)),
      v_of(static_cast<std::size_t>(L));
  for (int l = 0; l < L; ++l) {
    const auto& lw = w.layers[static_cast<std::size_t>(l)];
    const std::vector<double> h = ln(x, lw.ln1_weight, lw.ln1_bias);
    std::vector<double> q = lin(h, H, lw.qkv, 0, Hq * D, lw.qkv_bias.data());
    for (int t = 0; t < T; ++t) oracle::rope(&q[static_cast<std::size_t>(t) * Hq * D], Hq, D, rot, c.rotary_emb_base, t);
    if (src[static_cast<std::size_t>(l)] == l) {
      k_raw[static_cast<std::size_t>(l)] = lin(h, H, lw.qkv, Hq * D, Hkv * D, lw.qkv_bias.data());
      v_of[static_cast<std::size_t>(l)] = lin(h, H, lw.qkv, Hq * D + Hkv * D, Hkv * D, lw.qkv_bias.data());
      k_rot[static_cast<std::size_t>(l)] = k_raw[static_cast<std::size_t>(l)];
      for (int t = 0; t < T; ++t)
        oracle::rope(&k_rot[static_cast<std::size_t>(l)][static_cast<std::size_t>(t) * Hkv * D], Hkv, D, rot, c.rotary_emb_base, t);
    }
    const int o = src[static_cast<std::size_t>(l)];
    const bool rotated = o == l || keys_rotated_for_consumers;
    const auto& K = rotated ? k_rot[static_cast<std::size_t>(o)] : k_raw[static_cast<std::size_t>(o)];
    std::vector<double> att(static_cast<std::size_t>(T) * Hq * D);
    oracle::attention(q.data(), T, Hq, Hkv, D, K.data(), v_of[static_cast<std::size_t>(o)].data(), T,
                      1.0 / std::sqrt(static_cast<double>(D)), att.data());
    const std::vector<double> a = lin(att, Hq * D, lw.dense, 0, H, lw.dense_bias.data());
    auto mlp = [&](const std::vector<double>& z) {
      std::vector<double> m = lin(z, H, lw.mlp_in, 0, I, lw.mlp_in_bias.data());
      for (auto& v : m) v = act(v);
      return lin(m, I, lw.mlp_out, 0, H, lw.mlp_out_bias.data());
    };
    if (c.use_parallel_residual) {
      const std::vector<double> m = mlp(ln(x, lw.ln2_weight, lw.ln2_bias));
      for (std::size_t i = 0; i < x.size(); ++i) x[i] += a[i] + m[i];
    } else {
      for (std::size_t i = 0; i < x.size(); ++i) x[i] += a[i];
      const std::vector<double> m = mlp(ln(x, lw.ln2_weight, lw.ln2_bias));
      for (std::size_t i = 0; i < x.size(); ++i) x[i] += m[i];
    }
  }
  const std::vector<double> hf = ln(x, w.final_ln_weight, w.final_ln_bias);
  return lin(hf, H, w.output_embedding(), 0, w.vocab, nullptr);
}

}  // namespace mlkv_test
