#pragma once
/// \file model/gpt_neox.hpp
/// The reference GPT-NeoX / Pythia decoder with MLKV sharing on the CPU, built only on the
/// library's public pieces: weights (model/weights.hpp), the paged KV cache, rotary, the linear
/// layers (cpu/linear.hpp) and the attention kernels (cpu/attention.hpp, cpu/reference.hpp).
///
/// It computes what Hugging Face's GPTNeoXForCausalLM computes, layer by layer:
///     h = LayerNorm1(x)
///     q, k, v = h W_qkv + b            (k, v only on owner layers: MLKV, Zuhri et al. 2024)
///     owner layers append k (rotated) and v to their cache slot for the new tokens
///     a = Attention(rope(q), cache slot of the layer's owner) W_dense + b_dense
///     parallel residual:   x = (MLP(LayerNorm2(x)) + a) + x
///     sequential residual: y = a + x;  x = MLP(LayerNorm2(y)) + y
///     logits = LayerNorm_final(x) W_out
/// with MLP(z) = act(z W_in + b_in) W_out + b_out and the rotary embedding over the first
/// rotary_pct * head_dim dims of each head (config.json's rotary_pct and rotary_emb_base).
///
/// Keys are cached after rotation (the default) or before it (`key_rope::rotate_on_read`): then
/// owner layers rotate each key when they read it and consumer layers read the owners' keys
/// unrotated, as the paper's reference model computes without a cache; checkpoints uptrained
/// that way need it.
///
/// Cached and uncached passes compute the same thing: a chunk of new tokens is written to the
/// cache first (owner layers), then every layer attends over the cache, causally.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "../cache/paged.hpp"
#include "../cpu/attention.hpp"
#include "../cpu/executor.hpp"
#include "../cpu/linear.hpp"
#include "../cpu/reference.hpp"
#include "../error.hpp"
#include "../rope.hpp"
#include "modes.hpp"
#include "weights.hpp"

namespace mlkv::model {

/// How a model runs.
struct run_options {
  cpu::executor* exec = nullptr;             ///< threads for the linear layers and attention
  cpu::isa isa = cpu::default_isa();         ///< attention kernel path
  key_rope keys = key_rope::cached_rotated;  ///< where keys are rotated
};

namespace detail {

/// out = LayerNorm(x) * w + b over `n` values (biased variance, as torch.nn.LayerNorm).
inline void layer_norm(const float* x, int n, const float* w, const float* b, float eps, float* out) {
  double mean = 0.0;
  for (int i = 0; i < n; ++i) mean += x[i];
  mean /= n;
  double var = 0.0;
  for (int i = 0; i < n; ++i) var += (x[i] - mean) * (x[i] - mean);
  var /= n;
  const float mu = static_cast<float>(mean);
  const float inv = static_cast<float>(1.0 / std::sqrt(var + static_cast<double>(eps)));
  for (int i = 0; i < n; ++i) out[i] = (x[i] - mu) * inv * w[i] + b[i];
}

/// The activation of config.json's hidden_act.
inline float activate(io::activation a, float x) {
  switch (a) {
    case io::activation::gelu_tanh: {
      const float c = 0.7978845608028654f;  // sqrt(2 / pi)
      return 0.5f * x * (1.0f + std::tanh(c * (x + 0.044715f * x * x * x)));
    }
    case io::activation::relu: return x > 0.f ? x : 0.f;
    case io::activation::silu: return x / (1.0f + std::exp(-x));
    case io::activation::gelu:
    default: return 0.5f * x * (1.0f + std::erf(x * 0.7071067811865476f));
  }
}

}  // namespace detail

/// The CPU model over weights of type W (float or mlkv::bf16). The weights must outlive it.
template <class W>
class cpu_model {
 public:
  explicit cpu_model(const gpt_neox_weights<W>& w, run_options opt = {})
      : w_(w), opt_(opt), rope_(w.config.rope()) {
    MLKV_CHECK(!w.layers.empty() && w.hidden > 0 && w.vocab > 0, "model weights are empty");
  }

  const gpt_neox_weights<W>& weights() const { return w_; }
  const run_options& options() const { return opt_; }
  int vocab() const { return w_.vocab; }

  /// Runs new tokens of `seqs` through the model, appending their K/V to `cache` and committing
  /// them. tokens: the new tokens of sequence b are tokens[offsets[b] .. offsets[b+1]) (offsets:
  /// [batch + 1], starting at 0; a sequence may have none). logits: see logits_rows; may be null
  /// for logits_rows::none. On an error (a bad token, a full pool) nothing is appended or
  /// committed: every sequence stays as it was.
  template <class Cache>
  void forward(Cache& cache, std::span<const seq_id> seqs, std::span<const std::int32_t> offsets,
               std::span<const std::int32_t> tokens, logits_rows which, float* logits) {
    check_cache<Cache>();
    const int B = static_cast<int>(seqs.size());
    MLKV_CHECK(offsets.size() == seqs.size() + 1, "token offsets have ", offsets.size(), " entries; ", B,
               " sequences need ", B + 1);
    MLKV_CHECK(offsets[0] == 0, "token offsets must start at 0, not ", offsets[0]);
    for (int b = 0; b < B; ++b) {
      MLKV_CHECK(offsets[b + 1] >= offsets[b], "token offsets must not decrease (sequence ", b, ": ", offsets[b],
                 " then ", offsets[b + 1], ")");
    }
    const int R = offsets[B];
    MLKV_CHECK(static_cast<std::size_t>(R) == tokens.size(), "token offsets end at ", R, " but ", tokens.size(),
               " tokens were given");
    for (int r = 0; r < R; ++r) {
      MLKV_CHECK(tokens[r] >= 0 && tokens[r] < w_.vocab, "token ", tokens[r], " (row ", r,
                 ") is outside the vocabulary [0, ", w_.vocab, ")");
    }
    MLKV_CHECK(which == logits_rows::none || logits != nullptr, "logits output is null");
    if (R == 0) return;

    // Map every page the new tokens need, all or nothing.
    model::reserve_rows(cache, seqs, offsets);
    try {
      run_layers(cache, seqs, offsets, tokens);
    } catch (...) {
      for (int b = 0; b < B; ++b) cache.truncate(seqs[b], cache.length(seqs[b]));
      throw;
    }
    for (int b = 0; b < B; ++b) {
      const int n = offsets[b + 1] - offsets[b];
      if (n > 0) cache.commit(seqs[b], n);
    }
    if (which != logits_rows::none) write_logits(offsets, which, logits);
  }

  /// forward() for one sequence.
  template <class Cache>
  void forward(Cache& cache, seq_id seq, std::span<const std::int32_t> tokens, logits_rows which, float* logits) {
    const std::int32_t offs[2] = {0, static_cast<std::int32_t>(tokens.size())};
    forward(cache, std::span<const seq_id>(&seq, 1), std::span<const std::int32_t>(offs, 2), tokens, which, logits);
  }

 private:
  template <class Cache>
  void check_cache() const {
    constexpr model_shape S = Cache::shape;
    const model_shape& s = w_.shape;
    MLKV_CHECK(S.layers == s.layers && S.q_heads == s.q_heads && S.kv_heads == s.kv_heads &&
                   S.kv_layers == s.kv_layers && S.head_dim == s.head_dim,
               "the cache's geometry (L=", S.layers, " Hq=", S.q_heads, " Hkv=", S.kv_heads, " Lkv=", S.kv_layers,
               " D=", S.head_dim, ") differs from the model's (L=", s.layers, " Hq=", s.q_heads, " Hkv=", s.kv_heads,
               " Lkv=", s.kv_layers, " D=", s.head_dim, ")");
    for (int l = 0; l < S.layers; ++l) {
      MLKV_CHECK(S.kv_slot(l) == w_.layers[static_cast<std::size_t>(l)].kv_slot &&
                     S.owner(l) == w_.layers[static_cast<std::size_t>(l)].owner,
                 "layer ", l, " reads owner layer ", S.source_layer(l), " in the cache's geometry but owner layer ",
                 s.source_layer(l), " in the model's");
    }
  }

  void ensure(std::vector<float>& v, std::size_t n) {
    if (v.size() < n) v.resize(n);
  }

  template <class Cache>
  void run_layers(Cache& cache, std::span<const seq_id> seqs, std::span<const std::int32_t> offsets,
                  std::span<const std::int32_t> tokens) {
    const int B = static_cast<int>(seqs.size());
    const int R = offsets[B];
    const int H = w_.hidden, Hq = w_.shape.q_heads, D = w_.shape.head_dim, I = w_.intermediate;
    const int q_dim = w_.q_dim, kv_dim = w_.kv_dim;
    const std::size_t rows = static_cast<std::size_t>(R);
    const float eps = static_cast<float>(w_.config.layer_norm_eps);
    const float scale = cpu::default_scale(D);

    ensure(x_, rows * H);
    ensure(h_, rows * H);
    ensure(qkv_, rows * (q_dim + 2 * kv_dim));
    ensure(q_, rows * q_dim);
    ensure(att_, rows * q_dim);
    ensure(proj_, rows * H);
    ensure(mid_, rows * I);
    ensure(mlp_, rows * H);
    ensure(kbuf_, rows * kv_dim);
    ensure(vbuf_, rows * kv_dim);

    // Embeddings.
    for (int r = 0; r < R; ++r) {
      const W* e = w_.embed_in.row(tokens[r]);
      for (int i = 0; i < H; ++i) x_[static_cast<std::size_t>(r) * H + i] = to_float(e[i]);
    }
    // Positions: sequence b's new tokens sit at length(b) .. length(b) + n - 1.
    context_.resize(static_cast<std::size_t>(B));
    starts_.resize(static_cast<std::size_t>(B));
    for (int b = 0; b < B; ++b) {
      starts_[static_cast<std::size_t>(b)] = cache.length(seqs[b]);
      context_[static_cast<std::size_t>(b)] = starts_[static_cast<std::size_t>(b)] + offsets[b + 1] - offsets[b];
    }
    const auto batch = cache.make_batch(seqs);  // after reserve_rows: the pages are mapped
    const cpu::attention_batch ab{B, context_.data(), offsets.data()};
    const rotary* key_rope_on_append = opt_.keys == key_rope::cached_rotated ? &rope_ : nullptr;

    for (int l = 0; l < static_cast<int>(w_.layers.size()); ++l) {
      const auto& L = w_.layers[static_cast<std::size_t>(l)];
      const int qkv_rows = L.qkv.rows;
      for (int r = 0; r < R; ++r) {
        detail::layer_norm(&x_[static_cast<std::size_t>(r) * H], H, L.ln1_weight.data(), L.ln1_bias.data(), eps,
                           &h_[static_cast<std::size_t>(r) * H]);
      }
      cpu::linear(h_.data(), R, H, L.qkv.data.data(), qkv_rows, L.qkv_bias.data(), qkv_.data(), opt_.exec);
      // Queries, rotated at their positions.
      for (int b = 0; b < B; ++b) {
        for (int r = offsets[b]; r < offsets[b + 1]; ++r) {
          float* qr = &q_[static_cast<std::size_t>(r) * q_dim];
          std::copy_n(&qkv_[static_cast<std::size_t>(r) * qkv_rows], q_dim, qr);
          rope_.apply(qr, Hq, starts_[static_cast<std::size_t>(b)] + (r - offsets[b]));
        }
      }
      // Owner layers write the new tokens' K/V into their slot (to reserved pages).
      if (L.owner) {
        for (int b = 0; b < B; ++b) {
          const int n = offsets[b + 1] - offsets[b];
          if (n == 0) continue;
          for (int i = 0; i < n; ++i) {
            const float* row = &qkv_[static_cast<std::size_t>(offsets[b] + i) * qkv_rows];
            std::copy_n(row + q_dim, kv_dim, &kbuf_[static_cast<std::size_t>(i) * kv_dim]);
            std::copy_n(row + q_dim + kv_dim, kv_dim, &vbuf_[static_cast<std::size_t>(i) * kv_dim]);
          }
          cache.append(L.kv_slot, seqs[b], n, kbuf_.data(), vbuf_.data(), key_rope_on_append);
        }
      }
      // Attention over the owner's slot.
      const auto view = batch.slot_view(L.kv_slot);
      if (opt_.keys == key_rope::rotate_on_read && L.owner) {
        cpu::reference_attention(view, Hq, q_.data(), att_.data(), ab, scale, &rope_);
      } else {
        // Between two reads of a slot the step streams at least a layer's weights through the
        // caches, so the K/V always comes from DRAM: prefetch whatever the call's size.
        cpu::attention(view, Hq, q_.data(), att_.data(), ab, scale,
                       cpu::attention_options{.isa = opt_.isa, .exec = opt_.exec, .prefetch_min_bytes = 0});
      }
      cpu::linear(att_.data(), R, q_dim, L.dense.data.data(), H, L.dense_bias.data(), proj_.data(), opt_.exec);

      if (w_.config.use_parallel_residual) {
        for (int r = 0; r < R; ++r) {
          detail::layer_norm(&x_[static_cast<std::size_t>(r) * H], H, L.ln2_weight.data(), L.ln2_bias.data(), eps,
                             &h_[static_cast<std::size_t>(r) * H]);
        }
        mlp(L, R);
        for (std::size_t i = 0; i < rows * H; ++i) x_[i] = (mlp_[i] + proj_[i]) + x_[i];
      } else {
        for (std::size_t i = 0; i < rows * H; ++i) proj_[i] = proj_[i] + x_[i];
        for (int r = 0; r < R; ++r) {
          detail::layer_norm(&proj_[static_cast<std::size_t>(r) * H], H, L.ln2_weight.data(), L.ln2_bias.data(), eps,
                             &h_[static_cast<std::size_t>(r) * H]);
        }
        mlp(L, R);
        for (std::size_t i = 0; i < rows * H; ++i) x_[i] = mlp_[i] + proj_[i];
      }
    }
  }

  /// mlp_ = act(h_ W_in + b_in) W_out + b_out for R rows.
  void mlp(const layer_weights<W>& L, int R) {
    const int H = w_.hidden, I = w_.intermediate;
    cpu::linear(h_.data(), R, H, L.mlp_in.data.data(), I, L.mlp_in_bias.data(), mid_.data(), opt_.exec);
    const io::activation act = w_.config.act;
    const std::size_t n = static_cast<std::size_t>(R) * I;
    for (std::size_t i = 0; i < n; ++i) mid_[i] = detail::activate(act, mid_[i]);
    cpu::linear(mid_.data(), R, I, L.mlp_out.data.data(), H, L.mlp_out_bias.data(), mlp_.data(), opt_.exec);
  }

  void write_logits(std::span<const std::int32_t> offsets, logits_rows which, float* logits) {
    const int B = static_cast<int>(offsets.size()) - 1;
    const int H = w_.hidden, V = w_.vocab;
    const float eps = static_cast<float>(w_.config.layer_norm_eps);
    const auto& out = w_.output_embedding();
    // Rows to project, and where their logits go.
    pick_.clear();
    dest_.clear();
    if (which == logits_rows::all) {
      for (int r = 0; r < offsets[B]; ++r) {
        pick_.push_back(r);
        dest_.push_back(r);
      }
    } else {
      for (int b = 0; b < B; ++b) {
        if (offsets[b + 1] > offsets[b]) {
          pick_.push_back(offsets[b + 1] - 1);
          dest_.push_back(b);
        }
      }
    }
    // Chunks of rows, so the hidden states of a large batch never need [rows, vocab] scratch.
    constexpr int chunk = 64;
    ensure(h_, static_cast<std::size_t>(chunk) * H);
    ensure(logit_chunk_, static_cast<std::size_t>(chunk) * V);
    for (std::size_t c0 = 0; c0 < pick_.size(); c0 += chunk) {
      const int n = static_cast<int>(std::min<std::size_t>(chunk, pick_.size() - c0));
      for (int i = 0; i < n; ++i) {
        detail::layer_norm(&x_[static_cast<std::size_t>(pick_[c0 + i]) * H], H, w_.final_ln_weight.data(),
                           w_.final_ln_bias.data(), eps, &h_[static_cast<std::size_t>(i) * H]);
      }
      const bool contiguous = dest_[c0 + static_cast<std::size_t>(n) - 1] - dest_[c0] == n - 1;
      float* y = contiguous ? logits + static_cast<std::size_t>(dest_[c0]) * V : logit_chunk_.data();
      cpu::linear(h_.data(), n, H, out.data.data(), V, nullptr, y, opt_.exec);
      if (!contiguous) {
        for (int i = 0; i < n; ++i) {
          std::copy_n(&logit_chunk_[static_cast<std::size_t>(i) * V], V,
                      logits + static_cast<std::size_t>(dest_[c0 + i]) * V);
        }
      }
    }
  }

  const gpt_neox_weights<W>& w_;
  run_options opt_;
  rotary rope_;
  // Scratch, reused between calls.
  std::vector<float> x_, h_, qkv_, q_, att_, proj_, mid_, mlp_, kbuf_, vbuf_, logit_chunk_;
  std::vector<std::int32_t> context_, starts_;
  std::vector<int> pick_, dest_;
};

}  // namespace mlkv::model
