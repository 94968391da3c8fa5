#pragma once
// The double-precision oracle: deliberately plain, written from the definitions and sharing no
// code with the library (its own owner placement, rotary and two-pass softmax).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <set>
#include <vector>

namespace oracle {

/// Owner layer read by each layer, straight from the definitions.
/// kind: 0 spread, 1 every-n (arg = n), 2 suffix (arg = source), 3 table (tab).
inline std::vector<int> sources(int L, int Lkv, int kind, int arg, const std::vector<int>& tab = {}) {
  std::vector<int> src(static_cast<std::size_t>(L));
  if (kind == 3) return tab;
  std::set<int> owners;
  if (kind == 0) {
    owners.insert(0);
    for (int i = 0; i <= Lkv - 2; ++i) owners.insert((i + 1) * L / Lkv);  // floor((i+1) L / Lkv)
  } else if (kind == 1) {
    for (int l = 0; l < L; ++l) if (l % arg == 0) owners.insert(l);
  } else {
    for (int l = 0; l < Lkv; ++l) owners.insert(l);
  }
  for (int l = 0; l < L; ++l) {
    if (kind == 2 && l >= Lkv) {
      src[static_cast<std::size_t>(l)] = arg;
      continue;
    }
    int best = -1;
    for (int o : owners) if (o <= l) best = std::max(best, o);  // nearest owner at or below
    src[static_cast<std::size_t>(l)] = best;
  }
  return src;
}

/// GPT-NeoX rotary in double: rotate-half over the first `rot` dims. x: [heads, D]
inline void rope(double* x, int heads, int D, int rot, double base, long pos) {
  const int half = rot / 2;
  for (int h = 0; h < heads; ++h) {
    double* r = x + static_cast<std::ptrdiff_t>(h) * D;
    for (int i = 0; i < half; ++i) {
      const double theta = static_cast<double>(pos) * std::pow(base, -2.0 * i / rot);
      const double a = r[i], b = r[i + half];
      r[i] = a * std::cos(theta) - b * std::sin(theta);
      r[i + half] = b * std::cos(theta) + a * std::sin(theta);
    }
  }
}

/// x >= 0 rounded to bf16 (8 significant bits), to nearest, ties to even, as the BF16
/// conversion instructions round; values below 2^-126 (f32 and bf16 subnormals) are not used.
inline double bf16_round(double x) {
  if (x == 0) return 0;
  int e = 0;
  const double f = std::frexp(x, &e);  // x = f 2^e, f in [0.5, 1)
  return std::ldexp(std::nearbyint(f * 256.0), e - 8);
}

/// Causal attention of `rows` query rows at positions ctx-rows .. ctx-1 over K/V [ctx, Hkv, D],
/// two-pass softmax in base 2: weights w_t = 2^(s_t - c), s_t = q.k_t * scale * log2(e) and
/// c = ceil(max s), out = sum_t w_t v_t / sum_t w_t. q, out: [rows, Hq, D].
/// With bf16_weights (a kernel that multiplies P.V in bf16: the CPU's VDPBF16PS path) each weight
/// is rounded to bf16 and the normaliser sums the rounded weights. Rounding 2^s scaled by a power
/// of two gives the same digits whatever whole number c is, so the weights are defined without
/// knowing the kernel's running max. slack (same shape as out) then gets how far the output may
/// move because the kernel, whose scores and 2^x carry f32 rounding, may round a weight that lies
/// near the midpoint of two bf16 values to the other one. Per weight, the kernel's relative error
/// before rounding is bounded by
///   ln 2 * ((D + 8) 2^-24 * sum_d |q_d k_d| * scale * log2 e + 2^-22 (|s| + |s - m| + 10)) + 2^-17
/// (the f32 dot product, the scaling, s - m, and 2^x: the kernel's degree-4 polynomial, 3.7e-6);
/// where the two ends of that interval round to different bf16 values, the weight is ambiguous by their distance a_t and the output by
/// sum_t a_t |v_t - o| / (sum_t w_t - sum_t a_t). Weights below 2^-120 of the largest are
/// ambiguous by 2^-118 (the kernel may flush them or clamp 2^x there).
inline void attention(const double* q, int rows, int Hq, int Hkv, int D, const double* k, const double* v, int ctx,
                      double scale, double* out, bool bf16_weights = false, double* slack = nullptr) {
  const int group = Hq / Hkv;
  const double log2e = 1.4426950408889634, ln2 = 0.6931471805599453;
  std::vector<double> s, a, w, amb;
  for (int i = 0; i < rows; ++i) {
    const int pos = ctx - rows + i;
    const std::size_t n = static_cast<std::size_t>(pos + 1);
    for (int h = 0; h < Hq; ++h) {
      const int kh = h / group;
      const double* qh = q + (static_cast<std::size_t>(i) * Hq + h) * D;
      s.assign(n, 0.0);
      a.assign(n, 0.0);
      double mx = -INFINITY;
      for (std::size_t t = 0; t < n; ++t) {
        double dot = 0, mag = 0;
        for (int d = 0; d < D; ++d) {
          const double p = qh[d] * k[(t * Hkv + kh) * D + d];
          dot += p;
          mag += std::abs(p);
        }
        s[t] = dot * scale * log2e;
        a[t] = mag * scale * log2e;
        mx = std::max(mx, s[t]);
      }
      const double c = std::ceil(mx);
      w.assign(n, 0.0);
      amb.assign(n, 0.0);
      double sum = 0, sum_amb = 0;
      for (std::size_t t = 0; t < n; ++t) {
        const double x = std::exp2(s[t] - c);
        if (!bf16_weights) {
          w[t] = x;
        } else if (x < std::ldexp(1.0, -120)) {
          w[t] = x;
          amb[t] = std::ldexp(1.0, -118);
        } else {
          const double eps =
              ln2 * ((D + 8) * std::ldexp(a[t], -24) + std::ldexp(std::abs(s[t]) + std::abs(s[t] - c) + 10, -22)) +
              std::ldexp(1.0, -17);
          w[t] = bf16_round(x);
          amb[t] = bf16_round(x * (1 + eps)) - bf16_round(x * (1 - eps));
        }
        sum += w[t];
        sum_amb += amb[t];
      }
      double* o = out + (static_cast<std::size_t>(i) * Hq + h) * D;
      for (int d = 0; d < D; ++d) {
        double acc = 0, m = 0;
        for (std::size_t t = 0; t < n; ++t) acc += w[t] * v[(t * Hkv + kh) * D + d];
        o[d] = acc / sum;
        if (slack == nullptr) continue;
        for (std::size_t t = 0; t < n; ++t) {
          if (amb[t] > 0) m += amb[t] * std::abs(v[(t * Hkv + kh) * D + d] - o[d]);
        }
        slack[(static_cast<std::size_t>(i) * Hq + h) * D + static_cast<std::size_t>(d)] =
            m / std::max(sum - sum_amb, 0.5 * sum);
      }
    }
  }
}

}  // namespace oracle
