// Rotary embedding: GPT-NeoX rotate-half over the first rotary_dims, against the double oracle.
#include <mlkv/rope.hpp>

#include <cmath>
#include <vector>

#include "catch.hpp"
#include "oracle.hpp"
#include "test_util.hpp"

TEST_CASE("rotary matches the definition for partial and full rotation") {
  mlkv_test::rng r(mlkv_test::fresh_seed());
  struct c {
    int D;
    double pct;
    float base;
  };
  for (const c cfg : {c{64, 0.25, 10000.f}, c{64, 1.0, 10000.f}, c{80, 0.25, 10000.f}, c{128, 0.5, 500000.f},
                      c{64, 0.0, 10000.f}}) {
    const mlkv::rotary rope(mlkv::rope_config::from_pct(cfg.D, cfg.pct, cfg.base));
    REQUIRE(rope.rotary_dims() == static_cast<int>(cfg.D * cfg.pct));
    for (long pos : {0L, 1L, 7L, 1000L, 32767L}) {
      const int heads = 3;
      auto x = r.vec(static_cast<std::size_t>(heads) * cfg.D);
      std::vector<double> want(x.begin(), x.end());
      oracle::rope(want.data(), heads, cfg.D, rope.rotary_dims(), cfg.base, pos);
      rope.apply(x.data(), heads, pos);
      // f32 angles (as Hugging Face computes them) lose ~ulp(pos) radians at large positions.
      const double tol = 4e-7 * (2.0 + static_cast<double>(pos));
      for (std::size_t i = 0; i < x.size(); ++i) REQUIRE(std::abs(x[i] - want[i]) <= tol);
      for (int h = 0; h < heads; ++h) {  // the un-rotated tail passes through untouched
        for (int d = rope.rotary_dims(); d < cfg.D; ++d) {
          REQUIRE(x[static_cast<std::size_t>(h * cfg.D + d)] == static_cast<float>(want[static_cast<std::size_t>(h * cfg.D + d)]));
        }
      }
    }
  }
}

TEST_CASE("rotated dot products depend only on the relative position") {
  mlkv_test::rng r(mlkv_test::fresh_seed());
  const mlkv::rotary rope(mlkv::rope_config{64, 64, 10000.f});
  const auto q0 = r.vec(64), k0 = r.vec(64);
  auto dot_at = [&](long pq, long pk) {
    auto q = q0, k = k0;
    rope.apply(q.data(), 1, pq);
    rope.apply(k.data(), 1, pk);
    double s = 0;
    for (int d = 0; d < 64; ++d) s += static_cast<double>(q[static_cast<std::size_t>(d)]) * k[static_cast<std::size_t>(d)];
    return s;
  };
  const double ref = dot_at(5, 2);
  for (long shift : {1L, 10L, 100L}) REQUIRE(std::abs(dot_at(5 + shift, 2 + shift) - ref) < 1e-3);
  REQUIRE(std::abs(dot_at(9, 2) - ref) > 1e-3);  // a different offset does change it
}

TEST_CASE("bad rotary settings are refused with the value and range") {
  auto what = [](auto f) {
    try {
      f();
    } catch (const mlkv::error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  REQUIRE(what([] { mlkv::rotary r(mlkv::rope_config{64, 65, 10000.f}); }) ==
          "mlkv: rotary dims (65) must be even and in [0, head dim 64]");
  REQUIRE(what([] { mlkv::rope_config::from_pct(64, 1.5, 10000.f); }) == "mlkv: rotary_pct (1.5) must be in [0, 1]");
  REQUIRE(what([] { mlkv::rotary r(mlkv::rope_config{64, 16, -1.f}); }) ==
          "mlkv: rotary base (-1) must be a positive finite number");
}
