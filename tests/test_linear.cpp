// CPU linear layers against a double-precision oracle: f32 and bf16 weights, every tile shape and
// tail, thread counts 1, 2 and 7 (identical results: threads split output features only).
#include <mlkv/cpu/executor.hpp>
#include <mlkv/cpu/linear.hpp>

#include <cmath>
#include <string>
#include <vector>

#include "catch.hpp"
#include "test_util.hpp"

namespace {

// The arithmetic the kernel promises: f32 weights exactly; bf16 weights exactly, with the
// activations rounded to bf16 first where the path says so (vdpbf16ps).
template <class W>
bool rounds_activations() {
  return std::string(mlkv::cpu::linear_path<W>()).find("bf16)") != std::string::npos;
}

template <class W>
void check_linear(mlkv_test::rng& r, int m, int k, int n, bool with_bias, mlkv::cpu::executor* ex) {
  INFO("m=" << m << " k=" << k << " n=" << n << " bias=" << with_bias << " path=" << mlkv::cpu::linear_path<W>());
  const auto x = r.vec(static_cast<std::size_t>(m) * k);
  std::vector<W> w(static_cast<std::size_t>(n) * k);
  for (auto& v : w) v = mlkv::from_float<W>(r.uniform());
  const auto b = r.vec(static_cast<std::size_t>(n));
  std::vector<float> y(static_cast<std::size_t>(m) * n, NAN);
  mlkv::cpu::linear(x.data(), m, k, w.data(), n, with_bias ? b.data() : nullptr, y.data(), ex);
  const bool round_x = rounds_activations<W>();
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < n; ++j) {
      double s = 0, mag = 0;
      for (int t = 0; t < k; ++t) {
        const float xv = x[static_cast<std::size_t>(i) * k + t];
        const double xd = round_x ? mlkv::to_float(mlkv::from_float<mlkv::bf16>(xv)) : xv;
        const double wd = mlkv::to_float(w[static_cast<std::size_t>(j) * k + t]);
        s += xd * wd;
        mag += std::abs(xd * wd);
      }
      if (with_bias) s += b[static_cast<std::size_t>(j)];
      const double got = y[static_cast<std::size_t>(i) * n + j];
      // f32 accumulation of k products: a few ulps of the magnitude sum.
      REQUIRE(std::abs(got - s) <= 1e-6 * (mag + 1.0) * std::sqrt(static_cast<double>(k) + 1.0));
    }
  }
}

}  // namespace

TEMPLATE_TEST_CASE("linear matches the oracle on every tile shape and tail", "", float, mlkv::bf16) {
  mlkv_test::rng r(mlkv_test::fresh_seed());
  mlkv::cpu::thread_pool pool(2);
  for (int m : {1, 2, 3, 4, 5, 9}) {
    for (int k : {1, 7, 16, 31, 33, 64, 100}) {
      for (int n : {1, 3, 4, 5, 13}) check_linear<TestType>(r, m, k, n, (m + n) % 2 == 0, &pool);
    }
  }
  check_linear<TestType>(r, 3, 768, 70, true, &pool);  // a Pythia-sized row
  check_linear<TestType>(r, 16, 256, 33, true, nullptr);
}

TEMPLATE_TEST_CASE("linear gives identical results on 1, 2 and 7 threads", "", float, mlkv::bf16) {
  mlkv_test::rng r(mlkv_test::fresh_seed());
  const int m = 5, k = 300, n = 157;
  const auto x = r.vec(static_cast<std::size_t>(m) * k), b = r.vec(n);
  std::vector<TestType> w(static_cast<std::size_t>(n) * k);
  for (auto& v : w) v = mlkv::from_float<TestType>(r.uniform());
  std::vector<std::vector<float>> ys;
  for (int threads : {1, 2, 7}) {
    mlkv::cpu::thread_pool pool(threads);
    std::vector<float> y(static_cast<std::size_t>(m) * n);
    mlkv::cpu::linear(x.data(), m, k, w.data(), n, b.data(), y.data(), &pool);
    ys.push_back(y);
  }
  REQUIRE(ys[0] == ys[1]);
  REQUIRE(ys[0] == ys[2]);
}

TEST_CASE("linear with row strides, and its argument checks") {
  mlkv_test::rng r(mlkv_test::fresh_seed());
  const int m = 3, k = 20, n = 6;
  const std::size_t ldx = 25, ldy = 9;
  const auto x = r.vec(m * ldx), w = r.vec(static_cast<std::size_t>(n) * k);
  std::vector<float> y(m * ldy, -7.f);
  mlkv::cpu::linear(x.data(), m, k, ldx, w.data(), n, nullptr, y.data(), ldy);
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < n; ++j) {
      double s = 0;
      for (int t = 0; t < k; ++t) s += static_cast<double>(x[i * ldx + t]) * w[static_cast<std::size_t>(j) * k + t];
      REQUIRE(std::abs(y[i * ldy + j] - s) < 1e-4);
    }
    for (std::size_t j = n; j < ldy; ++j) REQUIRE(y[i * ldy + j] == -7.f);  // padding untouched
  }
  auto what = [&](auto f) {
    try {
      f();
    } catch (const mlkv::error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  REQUIRE(what([&] { mlkv::cpu::linear(x.data(), m, 0, w.data(), n, nullptr, y.data()); }) ==
          "mlkv: linear sizes m=3 n=6 k=0 (need m, n >= 0, k >= 1)");
  REQUIRE(what([&] { mlkv::cpu::linear(x.data(), m, k, 10, w.data(), n, nullptr, y.data(), ldy); }) ==
          "mlkv: linear strides ldx=10 (>= k=20) ldy=9 (>= n=6)");
}
