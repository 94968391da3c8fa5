#pragma once
/// \file rope.hpp
/// Rotary position embedding as GPT-NeoX does it (Hugging Face `GPTNeoXRotaryEmbedding` and
/// `apply_rotary_pos_emb`): rotate-half over the first `rotary_dims` values of each head, the rest
/// passed through.
///
/// For pair i < rotary_dims/2 at position p, with inv_freq_i = 1 / base^(2i / rotary_dims) and
/// angle = p * inv_freq_i (all in f32, as Hugging Face computes them):
///     x[i]        <- x[i] * cos(angle) - x[i + r/2] * sin(angle)
///     x[i + r/2]  <- x[i + r/2] * cos(angle) + x[i] * sin(angle)

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "error.hpp"

namespace mlkv {

/// Rotary settings of a model: how many leading dims of a head rotate, and the frequency base.
struct rope_config {
  int head_dim = 0;     ///< D
  int rotary_dims = 0;  ///< even, 0..D; GPT-NeoX: int(D * rotary_pct)
  float base = 10000.f; ///< rotary_emb_base

  /// GPT-NeoX's rule: rotary_dims = int(head_dim * rotary_pct).
  static rope_config from_pct(int head_dim, double rotary_pct, float base) {
    MLKV_CHECK(rotary_pct >= 0.0 && rotary_pct <= 1.0, "rotary_pct (", rotary_pct, ") must be in [0, 1]");
    return rope_config{head_dim, static_cast<int>(head_dim * rotary_pct), base};
  }

  void validate() const {
    MLKV_CHECK(head_dim > 0, "rope head dim (", head_dim, ") must be positive");
    MLKV_CHECK(rotary_dims >= 0 && rotary_dims <= head_dim && rotary_dims % 2 == 0, "rotary dims (",
               rotary_dims, ") must be even and in [0, head dim ", head_dim, "]");
    MLKV_CHECK(base > 0.f && std::isfinite(base), "rotary base (", base, ") must be a positive finite number");
  }
};

/// Precomputed inverse frequencies; applies the rotation to any number of heads at a position.
class rotary {
 public:
  rotary() = default;
  explicit rotary(const rope_config& c) : cfg_(c) {
    c.validate();
    const int half = c.rotary_dims / 2;
    inv_freq_.resize(static_cast<std::size_t>(half));
    for (int i = 0; i < half; ++i) {
      // Hugging Face: 1.0 / (base ** (arange(0, dim, 2).float() / dim)), in f32.
      const float expo = static_cast<float>(2 * i) / static_cast<float>(c.rotary_dims);
      inv_freq_[static_cast<std::size_t>(i)] = 1.0f / std::pow(c.base, expo);
    }
  }

  const rope_config& config() const { return cfg_; }
  int rotary_dims() const { return cfg_.rotary_dims; }
  const std::vector<float>& inv_freq() const { return inv_freq_; }

  /// Rotates `heads` consecutive heads of head_dim values at one position, in place.
  /// x: [heads, head_dim]
  void apply(float* x, int heads, std::int64_t position) const {
    const int half = cfg_.rotary_dims / 2;
    if (half == 0) return;
    const float pos = static_cast<float>(position);
    for (int i = 0; i < half; ++i) {
      const float angle = pos * inv_freq_[static_cast<std::size_t>(i)];
      const float c = std::cos(angle);
      const float s = std::sin(angle);
      for (int h = 0; h < heads; ++h) {
        float* row = x + static_cast<std::ptrdiff_t>(h) * cfg_.head_dim;
        const float a = row[i];
        const float b = row[i + half];
        // Same products and sums as Hugging Face: x*cos + rotate_half(x)*sin.
        const float ac = a * c, bs = b * s, bc = b * c, as = a * s;
        row[i] = ac - bs;
        row[i + half] = bc + as;
      }
    }
  }

  /// Rotates rows [n, heads, head_dim] at positions first_position .. first_position + n - 1.
  void apply_rows(float* x, int n, int heads, std::int64_t first_position) const {
    for (int t = 0; t < n; ++t) {
      apply(x + static_cast<std::ptrdiff_t>(t) * heads * cfg_.head_dim, heads, first_position + t);
    }
  }

 private:
  rope_config cfg_{};
  std::vector<float> inv_freq_;
};

}  // namespace mlkv
