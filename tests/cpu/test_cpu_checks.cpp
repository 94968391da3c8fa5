// ISA selection, input checks, and numerics the oracle scenarios do not reach: masked tokens
// weigh exactly zero, peaked softmaxes do not overflow, no invalid operation is raised (an
// engine may trap FP exceptions), and the BF16 dot-product path really reads bf16 queries (the
// harness's tight bound tells the two apart).
#include <mlkv/cpu/attention.hpp>

#include <cfenv>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "../oracle.hpp"
#include "cpu_test_util.hpp"

using namespace mlkv_cpu_test;
using mlkv::cpu::attention_options;

TEST_CASE("ISA paths: names, compile-time default, run-time choice", "[cpu][isa]") {
  for (isa i : mlkv::cpu::all_isas) {
    isa back = isa::scalar;
    REQUIRE(mlkv::cpu::parse_isa(mlkv::cpu::name_of(i), back));
    REQUIRE(back == i);
    if (mlkv::cpu::supported(i)) REQUIRE(mlkv::cpu::compiled(i));
  }
  isa none = isa::scalar;
  REQUIRE_FALSE(mlkv::cpu::parse_isa("sse2", none));
  REQUIRE(mlkv::cpu::compiled(mlkv::cpu::default_isa()));
  REQUIRE(mlkv::cpu::supported(isa::scalar));
  const auto usable = mlkv::cpu::supported_isas();
  REQUIRE(usable.front() == isa::scalar);
  // best_isa(): the last usable path, except avx512_bf16 where VDPBF16PS is not 1.5x the FMA's
  // FLOP rate (then avx512).
  const double gain = mlkv::cpu::bf16_dot_gain();
  INFO("VDPBF16PS over FMA, FLOP rate: " << gain);
  REQUIRE(mlkv::cpu::detail::bf16_dot_pays(2.0));
  REQUIRE(mlkv::cpu::detail::bf16_dot_pays(1.5));
  REQUIRE_FALSE(mlkv::cpu::detail::bf16_dot_pays(1.49));
  REQUIRE_FALSE(mlkv::cpu::detail::bf16_dot_pays(0.5));
  if (usable.back() == isa::avx512_bf16) {
    // (The gain itself is a timing: the benchmarks print it, the tests only use it.)
    REQUIRE(gain > 0.0);
    REQUIRE(mlkv::cpu::detail::pick_isa(2.0) == isa::avx512_bf16);
    REQUIRE(mlkv::cpu::detail::pick_isa(0.5) == isa::avx512);
    REQUIRE(mlkv::cpu::best_isa() == (gain >= 1.5 ? isa::avx512_bf16 : isa::avx512));
  } else {
    REQUIRE(gain == 0.0);
    REQUIRE(mlkv::cpu::detail::pick_isa(0.5) == usable.back());
    REQUIRE(mlkv::cpu::best_isa() == usable.back());
  }
#if defined(__AVX512BF16__) && defined(__AVX512VL__)
  // Built for this machine (-march=native on an AVX-512 BF16 CPU): the default is that path,
  // whatever its speed (the compile flags decide; best_isa() weighs speed).
  REQUIRE(mlkv::cpu::default_isa() == isa::avx512_bf16);
#endif
#if defined(MLKV_CPU_X86)
  REQUIRE_FALSE(mlkv::cpu::compiled(isa::neon));
  REQUIRE_THROWS_WITH(mlkv::cpu::require(isa::neon),
                      Catch::Matchers::StartsWith("mlkv: CPU path neon is not compiled in; usable here: scalar"));
#endif
#if defined(MLKV_CPU_NEON)
  REQUIRE(mlkv::cpu::best_isa() == isa::neon);
  REQUIRE_THROWS_WITH(mlkv::cpu::require(isa::avx2), "mlkv: CPU path avx2 is not compiled in; usable here: scalar, neon");
#endif
}

TEST_CASE("the fast path rejects what the reference rejects, with the same messages", "[cpu]") {
  constexpr mlkv::model_shape S = mlkv_test::uneven_gqa;
  mlkv::kv_cache<S, float> cache(2, 10);
  std::vector<float> q(2 * 12 * 64), out(q.size());
  auto what = [&](std::vector<std::int32_t> ctx, const std::int32_t* offs, int batch = 2, int hq = 12,
                  attention_options opt = {}) {
    try {
      mlkv::cpu::attention(cache.slot_view(0), hq, q.data(), out.data(), {batch, ctx.data(), offs}, 0.1f, opt);
    } catch (const mlkv::error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  REQUIRE(what({11, 1}, nullptr) == "mlkv: sequence 0 attends over 11 tokens; allowed 1 (its query rows) to 10 (its capacity)");
  REQUIRE(what({1, 0}, nullptr) == "mlkv: sequence 1 attends over 0 tokens; allowed 1 (its query rows) to 10 (its capacity)");
  const std::int32_t offs[3] = {0, 2, 2};
  REQUIRE(what({1, 0}, offs) == "mlkv: sequence 0 attends over 1 tokens; allowed 2 (its query rows) to 10 (its capacity)");
  REQUIRE(what({2, 0}, offs) == "no error");
  REQUIRE(what({1, 1}, nullptr, 3) == "mlkv: attention batch (3) must be in [0, 2]");
  REQUIRE(what({1, 1}, nullptr, 2, 10) == "mlkv: query heads (10) must be a positive multiple of KV heads (4)");
  REQUIRE(what({1, 1}, nullptr, 2, 12, {.split_tokens = -3}) ==
          "mlkv: split_tokens (-3) must be 0 (automatic) or positive");
  REQUIRE(what({1, 1}, nullptr, 2, 12, {.kv_heads_per_task = -1}) ==
          "mlkv: kv_heads_per_task (-1) must be 0 (automatic) or positive");
  // A hand-made view with a head dim the kernels cannot tile.
  auto v = cache.slot_view(0);
  v.head_dim = 60;
  std::int32_t c1[2] = {1, 1};
  REQUIRE_THROWS_WITH(mlkv::cpu::decode(v, 12, q.data(), out.data(), 2, c1, 0.1f),
                      "mlkv: head dim (60) must be a multiple of 8 between 8 and 512");
}

namespace {
/// Causal prefill of N rows (masked tokens in every tile but the first rows' full ones, a last
/// tile partly past the context) and decode rows with forced context chunks, on the calling
/// thread: no FE_INVALID, FE_DIVBYZERO or FE_OVERFLOW may be raised (underflow and inexact are
/// the softmax's normal business).
template <int Hq, int Hkv, class T>
void no_fp_exceptions(isa i) {
  constexpr mlkv::model_shape S{.layers = 1, .q_heads = Hq, .kv_heads = Hkv, .kv_layers = 1, .head_dim = 64};
  constexpr int N = 77, D = 64;
  INFO("path " << mlkv::cpu::name_of(i) << " Hq=" << Hq << " Hkv=" << Hkv << " dtype=" << mlkv::name_of(mlkv::dtype_of<T>));
  mlkv_test::rng r(mlkv_test::fresh_seed());
  mlkv::kv_cache<S, T> cache(1, N);
  const auto k = r.vec(std::size_t{N} * Hkv * D), v = r.vec(std::size_t{N} * Hkv * D);
  cache.append(0, 0, N, k.data(), v.data());
  const auto q = r.vec(std::size_t{N} * Hq * D);
  std::vector<float> out(q.size());
  const float scale = mlkv::cpu::default_scale(D);
  const std::int32_t ctx = N, offs[2] = {0, N};
  constexpr int raised = FE_INVALID | FE_DIVBYZERO | FE_OVERFLOW;
  for (int split : {0, 16}) {
    std::feclearexcept(FE_ALL_EXCEPT);
    mlkv::cpu::attention(cache.slot_view(0), Hq, q.data(), out.data(), {1, &ctx, offs}, scale,
                         {.isa = i, .split_tokens = split});
    CHECK(std::fetestexcept(raised) == 0);
    std::feclearexcept(FE_ALL_EXCEPT);
    mlkv::cpu::decode(cache.slot_view(0), Hq, q.data(), out.data(), 1, &ctx, scale, {.isa = i, .split_tokens = split});
    CHECK(std::fetestexcept(raised) == 0);
  }
}
}  // namespace

TEST_CASE("the CPU paths raise no invalid-operation, divide-by-zero or overflow flag", "[cpu]") {
  for (isa i : tested_isas()) {
    no_fp_exceptions<12, 1, mlkv::bf16>(i);  // 12 queries per K row
    no_fp_exceptions<12, 1, mlkv::f16>(i);
    no_fp_exceptions<12, 1, float>(i);
    no_fp_exceptions<4, 4, mlkv::bf16>(i);  // one query per K row (row dot products)
    no_fp_exceptions<4, 4, float>(i);
    no_fp_exceptions<32, 1, mlkv::bf16>(i);  // queries in lanes (AVX-512): 32 and 16 per K row
    no_fp_exceptions<32, 1, mlkv::f16>(i);
    no_fp_exceptions<32, 2, float>(i);
  }
}

namespace {
/// Keys that grow along the context (token t's key times 1 + t / 4): the scores of later tiles
/// pass the running max by more than its slack again and again, so the kernels move it in the
/// middle of a context and rescale the outputs and sums they hold (random inputs of unit scale
/// never do after the first tile). Causal prefill of N rows and a decode row, whole and in
/// chunks, against the oracle.
template <int Hq, int Hkv, class T>
void growing_keys(isa i) {
  constexpr mlkv::model_shape S{.layers = 1, .q_heads = Hq, .kv_heads = Hkv, .kv_layers = 1, .head_dim = 64};
  constexpr int N = 150, D = 64;
  INFO("path " << mlkv::cpu::name_of(i) << " Hq=" << Hq << " Hkv=" << Hkv << " dtype=" << mlkv::name_of(mlkv::dtype_of<T>));
  mlkv_test::rng r(mlkv_test::fresh_seed());
  mlkv::kv_cache<S, T> cache(1, N);
  auto k = r.vec(std::size_t{N} * Hkv * D);
  const auto v = r.vec(std::size_t{N} * Hkv * D);
  for (int t = 0; t < N; ++t) {
    for (int x = 0; x < Hkv * D; ++x) k[static_cast<std::size_t>(t) * Hkv * D + static_cast<std::size_t>(x)] *= 1.f + t / 4.f;
  }
  cache.append(0, 0, N, k.data(), v.data());
  const auto q = r.vec(std::size_t{N} * Hq * D);
  const float scale = mlkv::cpu::default_scale(D);
  const std::vector<double> ks = stored<T>(k.data(), k.size()), vs = stored<T>(v.data(), v.size());
  std::vector<double> want(q.size()), slack(q.size());
  oracle_for<T>(i, std::vector<double>(q.begin(), q.end()), N, Hq, Hkv, D, ks.data(), vs.data(), N, scale, want.data(),
                slack.data());
  const auto last = static_cast<std::ptrdiff_t>(N - 1) * Hq * D;
  for (int split : {0, 45}) {
    INFO("split " << split);
    std::vector<float> out(q.size());
    const std::int32_t ctx = N, offs[2] = {0, N};
    mlkv::cpu::attention(cache.slot_view(0), Hq, q.data(), out.data(), {1, &ctx, offs}, scale,
                         {.isa = i, .split_tokens = split});
    REQUIRE(mlkv_test::rel_err_slack(out, want, slack) <= mlkv_test::tight_bound);
    std::vector<float> row(static_cast<std::size_t>(Hq) * D);
    mlkv::cpu::decode(cache.slot_view(0), Hq, q.data() + last, row.data(), 1, &ctx, scale, {.isa = i, .split_tokens = split});
    REQUIRE(mlkv_test::rel_err_slack(row, std::vector<double>(want.begin() + last, want.end()),
                                     std::vector<double>(slack.begin() + last, slack.end())) <= mlkv_test::tight_bound);
  }
}
}  // namespace

TEST_CASE("the running max moves in the middle of a context: keys growing along it", "[cpu]") {
  for (isa i : tested_isas()) {
    growing_keys<12, 1, mlkv::bf16>(i);  // 12 queries per K row (K^T; 64-token tiles on AVX-512)
    growing_keys<12, 1, mlkv::f16>(i);
    growing_keys<12, 1, float>(i);
    growing_keys<32, 1, mlkv::bf16>(i);  // queries in lanes (AVX-512): 32 and 16 per K row
    growing_keys<32, 1, mlkv::f16>(i);
    growing_keys<32, 2, float>(i);
    growing_keys<32, 2, mlkv::f16>(i);
    growing_keys<64, 1, mlkv::bf16>(i);  // two blocks of 32 queries per row
    growing_keys<4, 4, mlkv::bf16>(i);   // one query per K row (32-token tiles)
    growing_keys<6, 2, float>(i);        // 3 queries per K row
  }
}

TEST_CASE("masked tokens weigh exactly zero: huge future keys do not leak into earlier rows", "[cpu]") {
  // Prefill of N rows where the last tokens carry keys 1000x larger: every row that cannot see
  // them must come out exactly as if they were not there (their scores would otherwise take the
  // running max and flush every visible weight to zero).
  constexpr mlkv::model_shape S{.layers = 1, .q_heads = 12, .kv_heads = 1, .kv_layers = 1, .head_dim = 64};
  constexpr int N = 77, D = 64, Hq = 12;
  mlkv_test::rng r(mlkv_test::fresh_seed());
  mlkv::kv_cache<S, mlkv::bf16> cache(1, N);
  auto k = r.vec(std::size_t{N} * D), v = r.vec(std::size_t{N} * D);
  for (int t = N - 9; t < N; ++t) {
    for (int d = 0; d < D; ++d) k[static_cast<std::size_t>(t) * D + d] *= 1000.f;
  }
  cache.append(0, 0, N, k.data(), v.data());
  auto q = r.vec(std::size_t{N} * Hq * D);
  const float scale = mlkv::cpu::default_scale(D);
  const std::vector<double> ks = stored<mlkv::bf16>(k.data(), k.size()), vs = stored<mlkv::bf16>(v.data(), v.size());
  for (isa i : tested_isas()) {
    INFO("path " << mlkv::cpu::name_of(i));
    std::vector<double> want(q.size()), slack(q.size());
    oracle_for<mlkv::bf16>(i, std::vector<double>(q.begin(), q.end()), N, Hq, 1, D, ks.data(), vs.data(), N, scale,
                           want.data(), slack.data());
    for (int split : {0, 16}) {
      std::vector<float> out(q.size(), std::numeric_limits<float>::quiet_NaN());
      const std::int32_t ctx = N, offs[2] = {0, N};
      mlkv::cpu::attention(cache.slot_view(0), Hq, q.data(), out.data(), {1, &ctx, offs}, scale,
                           {.isa = i, .split_tokens = split});
      for (float x : out) REQUIRE(std::isfinite(x));
      // Rows before the huge keys: as tight as anywhere else.
      const auto early = static_cast<std::ptrdiff_t>(N - 9) * Hq * D;
      REQUIRE(mlkv_test::rel_err_slack(std::vector<float>(out.begin(), out.begin() + early),
                                       std::vector<double>(want.begin(), want.begin() + early),
                                       std::vector<double>(slack.begin(), slack.begin() + early)) <=
              mlkv_test::tight_bound);
      // Rows that see them: a softmax peaked on a few tokens. Their scores reach ~500 (base 2),
      // where one f32 ulp is 3e-5 and a weight 2^(s - m) moves by ~2e-5 per ulp of s; the kernel
      // and the oracle sum the 64 products in different orders, so a few ulps apart.
      REQUIRE(mlkv_test::rel_err_slack(out, want, slack) <= 1e-3);
    }
  }
}

TEST_CASE("the BF16 dot-product path rounds the queries and the weights to bf16: the tight bound tells it apart",
          "[cpu]") {
  // The harness checks the avx512_bf16 path against an oracle that rounds q and the softmax
  // weights to bf16 (with the allowance of oracle::attention's bf16 weights). This shows that each
  // rounding is what makes it pass (against unrounded q, or unrounded weights, the error is
  // ~100x the tight bound) and that the tight bound still catches one token too many or too few.
  if (!mlkv::cpu::supported(isa::avx512_bf16)) {
    WARN("no AVX-512 BF16 on this CPU: nothing to check");
    return;
  }
  constexpr mlkv::model_shape S{.layers = 1, .q_heads = 12, .kv_heads = 1, .kv_layers = 1, .head_dim = 64};
  constexpr int Hq = 12, D = 64;
  mlkv_test::rng r(mlkv_test::fresh_seed());
  for (int ctx : {2, 37, 613}) {
    INFO("context " << ctx);
    mlkv::kv_cache<S, mlkv::bf16> cache(1, ctx);
    const auto k = r.vec(static_cast<std::size_t>(ctx) * D), v = r.vec(static_cast<std::size_t>(ctx) * D);
    cache.append(0, 0, ctx, k.data(), v.data());
    const auto q = r.vec(std::size_t{Hq} * D);
    const std::vector<double> ks = stored<mlkv::bf16>(k.data(), k.size()), vs = stored<mlkv::bf16>(v.data(), v.size());
    const std::vector<double> qx(q.begin(), q.end()), qb = stored<mlkv::bf16>(q.data(), q.size());
    const double scale = mlkv::cpu::default_scale(D);
    std::vector<float> out(q.size());
    const std::int32_t c = ctx;
    mlkv::cpu::decode(cache.slot_view(0), Hq, q.data(), out.data(), 1, &c, static_cast<float>(scale),
                      {.isa = isa::avx512_bf16});
    const std::size_t n = q.size();
    std::vector<double> want(n), want_slack(n), unrounded(n), unrounded_slack(n), fewer(n), fewer_slack(n),
        exact_weights(n);
    oracle::attention(qb.data(), 1, Hq, 1, D, ks.data(), vs.data(), ctx, scale, want.data(), true,
                      want_slack.data());
    oracle::attention(qx.data(), 1, Hq, 1, D, ks.data(), vs.data(), ctx, scale, unrounded.data(), true,
                      unrounded_slack.data());
    oracle::attention(qb.data(), 1, Hq, 1, D, ks.data(), vs.data(), ctx - 1, scale, fewer.data(), true,
                      fewer_slack.data());
    oracle::attention(qb.data(), 1, Hq, 1, D, ks.data(), vs.data(), ctx, scale, exact_weights.data());
    CHECK(mlkv_test::rel_err_slack(out, want, want_slack) <= mlkv_test::tight_bound);
    CHECK(mlkv_test::rel_err_slack(out, fewer, fewer_slack) > 10 * mlkv_test::tight_bound);
    // With two tokens the largest weight itself may lie near a rounding midpoint, and its
    // allowance then covers what rounding q or the weights moves; longer contexts always show
    // both roundings beyond the allowance.
    if (ctx > 2) {
      CHECK(mlkv_test::rel_err_slack(out, unrounded, unrounded_slack) > 10 * mlkv_test::tight_bound);
      CHECK(mlkv_test::rel_err(out, exact_weights) > 10 * mlkv_test::tight_bound);
    }
  }
}
