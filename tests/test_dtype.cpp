// Storage types: conversions checked exhaustively over all 65536 f16 and bf16 bit patterns
// (NaN, inf, subnormals included), against the definitions computed in double, and against the
// CPU's own conversion instructions where the build has them.
#include <mlkv/dtype.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "catch.hpp"
#include "test_util.hpp"

#if defined(__F16C__) || defined(__AVX512BF16__)
#include <immintrin.h>
#endif

namespace {

bool is_f16_nan(std::uint16_t h) { return (h & 0x7c00u) == 0x7c00u && (h & 0x3ffu) != 0; }
bool is_bf16_nan(std::uint16_t b) { return (b & 0x7f80u) == 0x7f80u && (b & 0x7fu) != 0; }

// The value of a binary16 pattern from its definition.
double f16_value(std::uint16_t h) {
  const int s = h >> 15, e = (h >> 10) & 0x1f, m = h & 0x3ff;
  const double mag = e == 0 ? std::ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : std::ldexp(1024 + m, e - 25);
  return s ? -mag : mag;
}
double bf16_value(std::uint16_t b) {
  const int s = b >> 15, e = (b >> 7) & 0xff, m = b & 0x7f;
  const double mag = e == 0 ? std::ldexp(m, -133) : e == 255 ? (m ? NAN : INFINITY) : std::ldexp(128 + m, e - 134);
  return s ? -mag : mag;
}

float next_up(float x) { return std::nextafter(x, INFINITY); }
float next_down(float x) { return std::nextafter(x, -INFINITY); }

}  // namespace

TEST_CASE("f16 -> float is exact for every bit pattern") {
  for (std::uint32_t i = 0; i < 65536; ++i) {
    const auto h = static_cast<std::uint16_t>(i);
    const float f = mlkv::to_float(mlkv::f16{h});
    if (is_f16_nan(h)) {
      REQUIRE(std::isnan(f));
      REQUIRE(std::signbit(f) == ((h & 0x8000u) != 0));
    } else {
      REQUIRE(static_cast<double>(f) == f16_value(h));
      REQUIRE(std::signbit(f) == ((h & 0x8000u) != 0));  // -0 stays -0
    }
  }
}

TEST_CASE("float -> f16 rounds to nearest even on every pattern, midpoint and neighbour") {
  for (std::uint32_t i = 0; i < 65536; ++i) {
    const auto h = static_cast<std::uint16_t>(i);
    if (is_f16_nan(h)) {
      const std::uint16_t r = mlkv::float_to_f16_bits(mlkv::to_float(mlkv::f16{h}));
      REQUIRE(is_f16_nan(r));
      REQUIRE((r & 0x8000u) == (h & 0x8000u));
      continue;
    }
    const float x = static_cast<float>(f16_value(h));
    REQUIRE(mlkv::float_to_f16_bits(x) == h);  // every value round-trips (inf and -0 included)
    if ((h & 0x7fffu) >= 0x7c00u) continue;     // inf: no upper neighbour
    // Midpoint to the next magnitude (65504 -> 65536 overflows to inf), exact in float.
    const std::uint16_t up = static_cast<std::uint16_t>(h + 1);
    const double hi = (h & 0x7fffu) == 0x7bffu ? std::copysign(65536.0, x) : f16_value(up);
    const float mid = static_cast<float>((static_cast<double>(x) + hi) / 2);
    REQUIRE(static_cast<double>(mid) == (static_cast<double>(x) + hi) / 2);
    const std::uint16_t even = (h & 1u) ? up : h;
    REQUIRE(mlkv::float_to_f16_bits(mid) == even);
    const bool neg = std::signbit(x);
    const float toward_hi = neg ? next_down(mid) : next_up(mid);
    const float toward_lo = neg ? next_up(mid) : next_down(mid);
    REQUIRE(mlkv::float_to_f16_bits(toward_hi) == up);
    REQUIRE(mlkv::float_to_f16_bits(toward_lo) == h);
  }
  REQUIRE(mlkv::float_to_f16_bits(1e30f) == 0x7c00u);
  REQUIRE(mlkv::float_to_f16_bits(-INFINITY) == 0xfc00u);
  REQUIRE(is_f16_nan(mlkv::float_to_f16_bits(std::numeric_limits<float>::quiet_NaN())));
  REQUIRE(is_f16_nan(mlkv::float_to_f16_bits(std::numeric_limits<float>::signaling_NaN())));
  REQUIRE(mlkv::float_to_f16_bits(std::ldexp(1.f, -25)) == 0);  // tie between 0 and 2^-24
  REQUIRE(mlkv::float_to_f16_bits(next_up(std::ldexp(1.f, -25))) == 1);
  REQUIRE(mlkv::float_to_f16_bits(std::numeric_limits<float>::denorm_min()) == 0);
  REQUIRE(mlkv::float_to_f16_bits(-std::numeric_limits<float>::denorm_min()) == 0x8000u);
}

TEST_CASE("bf16 conversions, exhaustively") {
  for (std::uint32_t i = 0; i < 65536; ++i) {
    const auto b = static_cast<std::uint16_t>(i);
    const float f = mlkv::to_float(mlkv::bf16{b});
    if (is_bf16_nan(b)) {
      REQUIRE(std::isnan(f));
      const std::uint16_t r = mlkv::float_to_bf16_bits(f);
      REQUIRE(is_bf16_nan(r));
      REQUIRE((r & 0x8000u) == (b & 0x8000u));
      continue;
    }
    REQUIRE(static_cast<double>(f) == bf16_value(b));
    REQUIRE(mlkv::float_to_bf16_bits(f) == b);
    if ((b & 0x7fffu) >= 0x7f80u) continue;
    const std::uint16_t up = static_cast<std::uint16_t>(b + 1);
    const double hi = (b & 0x7fffu) == 0x7f7fu ? std::copysign(std::ldexp(1.0, 128), static_cast<double>(f))
                                               : bf16_value(up);
    const double midd = (static_cast<double>(f) + hi) / 2;
    const float mid = static_cast<float>(midd);
    REQUIRE(static_cast<double>(mid) == midd);
    REQUIRE(mlkv::float_to_bf16_bits(mid) == ((b & 1u) ? up : b));
    const bool neg = std::signbit(f);
    REQUIRE(mlkv::float_to_bf16_bits(neg ? next_down(mid) : next_up(mid)) == up);
    REQUIRE(mlkv::float_to_bf16_bits(neg ? next_up(mid) : next_down(mid)) == b);
  }
}

TEST_CASE("conversions agree with the CPU's conversion instructions on random floats") {
  mlkv_test::rng r(mlkv_test::fresh_seed());
  std::uniform_int_distribution<std::uint32_t> bits;
  int checked = 0;
  for (int i = 0; i < 1000000; ++i) {
    const std::uint32_t u = bits(r.gen);
    float f;
    std::memcpy(&f, &u, 4);
    if (std::isnan(f)) continue;
#if defined(__F16C__)
    const auto hw = static_cast<std::uint16_t>(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT));
    REQUIRE(mlkv::float_to_f16_bits(f) == hw);
    ++checked;
#endif
#if defined(__AVX512BF16__) && defined(__AVX512F__)
    if (std::fpclassify(f) != FP_SUBNORMAL) {  // the instruction treats subnormal inputs as zero
      const __m256bh v = _mm512_cvtneps_pbh(_mm512_set1_ps(f));
      std::uint16_t out[16];
      std::memcpy(out, &v, sizeof(out));
      REQUIRE(mlkv::float_to_bf16_bits(f) == out[0]);
      ++checked;
    }
#endif
  }
  SUCCEED("hardware comparisons: " << checked);
}

TEST_CASE("dtype names, sizes and parsing") {
  mlkv::dtype t{};
  REQUIRE(mlkv::parse_dtype("bf16", t));
  REQUIRE(t == mlkv::dtype::bf16);
  REQUIRE(mlkv::size_of(t) == 2);
  REQUIRE(mlkv::name_of(mlkv::dtype::f32) == "f32");
  REQUIRE_FALSE(mlkv::parse_dtype("fp8", t));
  static_assert(mlkv::dtype_of<mlkv::f16> == mlkv::dtype::f16);
  static_assert(mlkv::to_float(mlkv::from_float<mlkv::bf16>(1.5f)) == 1.5f);  // constexpr
  static_assert(mlkv::float_to_f16_bits(65504.f) == 0x7bff);
}
