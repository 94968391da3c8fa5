#pragma once
// Shared helpers of the tests: fresh random inputs (seed printed, MLKV_TEST_SEED to replay) and
// error measures.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

namespace mlkv_test {

/// A fresh seed per run (std::random_device), or MLKV_TEST_SEED to replay a failure.
inline std::uint64_t fresh_seed() {
  if (const char* s = std::getenv("MLKV_TEST_SEED")) return std::strtoull(s, nullptr, 10);
  std::random_device rd;
  return (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
}

/// True when the test runs under ASan/UBSan (the _asan builds set it): loops may shrink there.
inline bool sanitized() { return std::getenv("MLKV_TEST_SANITIZED") != nullptr; }

struct rng {
  std::mt19937_64 gen;
  explicit rng(std::uint64_t seed) : gen(seed) {}
  float uniform(float lo = -1.f, float hi = 1.f) { return std::uniform_real_distribution<float>(lo, hi)(gen); }
  int integer(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(gen); }
  std::vector<float> vec(std::size_t n, float lo = -1.f, float hi = 1.f) {
    std::vector<float> v(n);
    for (auto& x : v) x = uniform(lo, hi);
    return v;
  }
};

/// max(|a - b| - slack, 0) / max(|b|, floor): the error relative to the reference's scale, with
/// an allowance per element (oracle::attention with bf16 weights).
template <class A, class B, class S>
double rel_err_slack(const A& a, const B& b, const S& slack, double floor = 1e-6) {
  double num = 0, den = floor;
  for (std::size_t i = 0; i < b.size(); ++i) {
    const double d = std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i]));
    num = std::isnan(d) ? INFINITY : std::max(num, d - static_cast<double>(slack[i]));
    den = std::max(den, std::abs(static_cast<double>(b[i])));
  }
  return num / den;
}

/// rel_err_slack without an allowance: max |a - b| / max(|b|, floor).
template <class A, class B>
double rel_err(const A& a, const B& b, double floor = 1e-6) {
  struct none {
    double operator[](std::size_t) const { return 0.0; }
  };
  return rel_err_slack(a, b, none{}, floor);
}

}  // namespace mlkv_test
