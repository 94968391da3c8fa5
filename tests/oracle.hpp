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

/// Causal attention of `rows` query rows at positions ctx-rows .. ctx-1 over K/V [ctx, Hkv, D],
/// two-pass softmax. q, out: [rows, Hq, D]
inline void attention(const double* q, int rows, int Hq, int Hkv, int D, const double* k, const double* v, int ctx,
                      double scale, double* out) {
  const int group = Hq / Hkv;
  std::vector<double> w;
  for (int i = 0; i < rows; ++i) {
    const int pos = ctx - rows + i;
    for (int h = 0; h < Hq; ++h) {
      const int kh = h / group;
      const double* qh = q + (static_cast<std::size_t>(i) * Hq + h) * D;
      w.assign(static_cast<std::size_t>(pos + 1), 0.0);
      double mx = -INFINITY;
      for (int t = 0; t <= pos; ++t) {
        double s = 0;
        for (int d = 0; d < D; ++d) s += qh[d] * k[(static_cast<std::size_t>(t) * Hkv + kh) * D + d];
        w[static_cast<std::size_t>(t)] = s * scale;
        mx = std::max(mx, s * scale);
      }
      double sum = 0;
      for (auto& x : w) sum += (x = std::exp(x - mx));
      double* o = out + (static_cast<std::size_t>(i) * Hq + h) * D;
      for (int d = 0; d < D; ++d) {
        double acc = 0;
        for (int t = 0; t <= pos; ++t) acc += w[static_cast<std::size_t>(t)] * v[(static_cast<std::size_t>(t) * Hkv + kh) * D + d];
        o[d] = acc / sum;
      }
    }
  }
}

}  // namespace oracle
