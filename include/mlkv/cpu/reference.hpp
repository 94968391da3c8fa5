#pragma once
/// \file cpu/reference.hpp
/// The CPU reference attention: decode and causal prefill over one owner slot, plain loops,
/// f32 accumulation, streaming (online) softmax. Clear before fast: the SIMD paths are checked
/// against this, and this against the double-precision oracle in tests/.
///
/// Semantics (the same for every kernel of the library). Sequence b attends over its first
/// context[b] cached tokens; its query rows are the last rows(b) of those, so query row i sits at
/// position p = context[b] - rows(b) + i and sees tokens 0..p (causal). Query head h reads KV head
/// h / (q_heads / kv_heads) (GQA/MQA); the slot view already names the layer's owner (MLKV).
///     out[r, h, :] = sum_t softmax_t(scale * q[r, h, :] . K[t]) * V[t]

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

#include "../dtype.hpp"
#include "../error.hpp"
#include "../rope.hpp"

namespace mlkv::cpu {

/// Which query rows belong to which sequence, and how many cached tokens each attends over.
struct attention_batch {
  int batch = 0;                            ///< sequences
  const std::int32_t* context = nullptr;    ///< [batch] tokens attended (cached + new)
  const std::int32_t* q_offsets = nullptr;  ///< [batch + 1] first query row of each sequence;
                                            ///< nullptr: one row per sequence (decode)

  int first_row(int b) const { return q_offsets != nullptr ? q_offsets[b] : b; }
  int rows(int b) const { return q_offsets != nullptr ? q_offsets[b + 1] - q_offsets[b] : 1; }
  int total_rows() const { return q_offsets != nullptr ? q_offsets[batch] - q_offsets[0] : batch; }
};

/// Checks an attention call against the slot view it reads; throws mlkv::error naming the bad
/// value. Shared by every CPU kernel so that they all reject the same inputs the same way.
template <class View>
void check_attention(const View& kv, int q_heads, const float* q, const float* out, const attention_batch& ab,
                     float scale) {
  MLKV_CHECK(kv.kv_heads >= 1, "slot view has ", kv.kv_heads, " KV heads");
  MLKV_CHECK(q_heads >= 1 && q_heads % kv.kv_heads == 0, "query heads (", q_heads,
             ") must be a positive multiple of KV heads (", kv.kv_heads, ")");
  MLKV_CHECK(ab.batch >= 0 && ab.batch <= kv.batch, "attention batch (", ab.batch, ") must be in [0, ", kv.batch,
             "]");
  MLKV_CHECK(std::isfinite(scale), "softmax scale (", scale, ") must be finite");
  if (ab.batch == 0) return;
  MLKV_CHECK(ab.context != nullptr, "context lengths are null");
  if (ab.q_offsets != nullptr) {
    MLKV_CHECK(ab.q_offsets[0] == 0, "query offsets must start at 0, not ", ab.q_offsets[0]);
  }
  for (int b = 0; b < ab.batch; ++b) {
    const int ctx = ab.context[b];
    const int n = ab.rows(b);
    MLKV_CHECK(n >= 0, "sequence ", b, " has a negative number of query rows (", n, ")");
    MLKV_CHECK(ctx >= n && ctx <= kv.max_tokens(b), "sequence ", b, " attends over ", ctx,
               " tokens; allowed ", n, " (its query rows) to ", kv.max_tokens(b), " (its capacity)");
  }
  if (ab.total_rows() > 0) {
    MLKV_CHECK(q != nullptr && out != nullptr, "query or output pointer is null");
  }
}

/// Reference attention over one slot view (contiguous or paged).
/// q:   [rows, q_heads, head_dim], already rotated
/// out: [rows, q_heads, head_dim]
/// rotate_keys: null when the cache holds rotated keys (the default). Otherwise the cache holds
/// keys before rotation and each key row is rotated at its position when read (the paper's
/// reference model lets consumer layers see its owners' unrotated keys; a model trained that way
/// caches unrotated keys and rotates them only for the owner layers).
template <class View>
void reference_attention(const View& kv, int q_heads, const float* q, float* out, const attention_batch& ab,
                         float scale, const rotary* rotate_keys = nullptr) {
  check_attention(kv, q_heads, q, out, ab, scale);
  const int D = kv.head_dim;
  const int group = q_heads / kv.kv_heads;
  if (rotate_keys != nullptr) {
    MLKV_CHECK(rotate_keys->config().head_dim == D, "rotary head dim (", rotate_keys->config().head_dim,
               ") differs from the cache's head dim (", D, ")");
  }
  std::vector<float> acc(static_cast<std::size_t>(D)), krot(static_cast<std::size_t>(D));
  for (int b = 0; b < ab.batch; ++b) {
    const int ctx = ab.context[b];
    const int n = ab.rows(b);
    for (int i = 0; i < n; ++i) {
      const int pos = ctx - n + i;  // this row's position; it sees tokens 0..pos
      const std::size_t row = static_cast<std::size_t>(ab.first_row(b) + i);
      for (int h = 0; h < q_heads; ++h) {
        const int kvh = h / group;
        const float* qh = q + (row * static_cast<std::size_t>(q_heads) + static_cast<std::size_t>(h)) * D;
        float* oh = out + (row * static_cast<std::size_t>(q_heads) + static_cast<std::size_t>(h)) * D;
        float m = -std::numeric_limits<float>::infinity();
        float l = 0.f;
        std::fill(acc.begin(), acc.end(), 0.f);
        for (int t = 0; t <= pos; ++t) {
          const auto* kt = kv.k_row(b, kvh, t);
          const auto* vt = kv.v_row(b, kvh, t);
          float s = 0.f;
          if (rotate_keys != nullptr) {
            for (int d = 0; d < D; ++d) krot[static_cast<std::size_t>(d)] = to_float(kt[d]);
            rotate_keys->apply(krot.data(), 1, t);
            for (int d = 0; d < D; ++d) s += qh[d] * krot[static_cast<std::size_t>(d)];
          } else {
            for (int d = 0; d < D; ++d) s += qh[d] * to_float(kt[d]);
          }
          s *= scale;
          const float m_new = std::max(m, s);
          const float corr = std::exp(m - m_new);  // exp(-inf) = 0 on the first token
          const float p = std::exp(s - m_new);
          l = l * corr + p;
          for (int d = 0; d < D; ++d) acc[static_cast<std::size_t>(d)] = acc[static_cast<std::size_t>(d)] * corr + p * to_float(vt[d]);
          m = m_new;
        }
        const float inv = l > 0.f ? 1.f / l : 0.f;
        for (int d = 0; d < D; ++d) oh[d] = acc[static_cast<std::size_t>(d)] * inv;
      }
    }
  }
}

/// Decode: one query row per sequence, attending over context[b] tokens (the new one included).
/// q, out: [batch, q_heads, head_dim]
template <class View>
void reference_decode(const View& kv, int q_heads, const float* q, float* out, int batch,
                      const std::int32_t* context, float scale) {
  reference_attention(kv, q_heads, q, out, attention_batch{batch, context, nullptr}, scale);
}

/// The usual softmax scale, 1 / sqrt(head_dim).
inline float default_scale(int head_dim) { return 1.0f / std::sqrt(static_cast<float>(head_dim)); }

}  // namespace mlkv::cpu
