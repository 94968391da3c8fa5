// The reference attention against the double-precision oracle over the geometry list, and the
// equivalence of one prefill of N tokens with N decode steps.
#include <mlkv/cpu/reference.hpp>

#include "attention_harness.hpp"
#include "geometries.hpp"

namespace {
auto reference = [](const auto& view, int q_heads, const float* q, float* out, const mlkv::cpu::attention_batch& ab,
                    float scale) { mlkv::cpu::reference_attention(view, q_heads, q, out, ab, scale); };
}

TEMPLATE_TEST_CASE("reference attention matches the oracle on the paper's configurations", "", float, mlkv::f16,
                   mlkv::bf16) {
  mlkv_test::for_each_geometry<mlkv_test::paper_list>([](auto g) {
    mlkv_test::run_attention_scenario<decltype(g)::shape, TestType>(reference, mlkv_test::fresh_seed());
  });
}

TEMPLATE_TEST_CASE("reference attention matches the oracle on awkward geometries", "", float, mlkv::f16, mlkv::bf16) {
  mlkv_test::for_each_geometry<mlkv_test::awkward_list>([](auto g) {
    mlkv_test::run_attention_scenario<decltype(g)::shape, TestType>(reference, mlkv_test::fresh_seed());
  });
}

TEST_CASE("reference attention over a longer context (multiples of nothing)") {
  mlkv_test::scenario_options opt;
  opt.batch = 2;
  opt.capacity = 700;
  opt.first_chunk = {613, 1};
  opt.decode_steps = 2;
  opt.second_chunk = 29;
  mlkv_test::run_attention_scenario<mlkv_test::single_owner_d80, mlkv::bf16>(reference, mlkv_test::fresh_seed(), opt);
}

TEMPLATE_TEST_CASE("prefilling N tokens at once equals N decode steps", "", float, mlkv::bf16) {
  constexpr mlkv::model_shape S = mlkv_test::uneven_gqa;
  constexpr int Hq = S.q_heads, Hkv = S.kv_heads, D = S.head_dim, N = 23;
  mlkv_test::rng r(mlkv_test::fresh_seed());
  const mlkv::rotary rope(mlkv::rope_config{D, 16, 10000.f});
  mlkv::kv_cache<S, TestType> prefill(1, N), decode(1, N);
  const auto k = r.vec(std::size_t{N} * Hkv * D), v = r.vec(std::size_t{N} * Hkv * D);
  const auto q = r.vec(std::size_t{N} * Hq * D);
  const float scale = mlkv::cpu::default_scale(D);

  // One chunk of N tokens.
  for (int s = 0; s < S.kv_layers; ++s) prefill.append(s, 0, N, k.data(), v.data(), &rope);
  std::vector<float> out_prefill(q.size());
  const std::int32_t ctx = N, offs[2] = {0, N};
  mlkv::cpu::reference_attention(prefill.layer_view(7), Hq, q.data(), out_prefill.data(), {1, &ctx, offs}, scale);
  prefill.commit(0, N);

  // N steps of one token.
  std::vector<float> out_decode(q.size());
  for (int t = 0; t < N; ++t) {
    for (int s = 0; s < S.kv_layers; ++s) {
      decode.append(s, 0, 1, k.data() + static_cast<std::size_t>(t) * Hkv * D, v.data() + static_cast<std::size_t>(t) * Hkv * D, &rope);
    }
    const std::int32_t c = t + 1;
    mlkv::cpu::reference_decode(decode.layer_view(7), Hq, q.data() + static_cast<std::size_t>(t) * Hq * D,
                                out_decode.data() + static_cast<std::size_t>(t) * Hq * D, 1, &c, scale);
    decode.commit(0, 1);
  }
  REQUIRE(mlkv_test::rel_err(out_prefill, out_decode) <= 1e-6);
}

TEST_CASE("attention rejects bad batches with the value and range") {
  constexpr mlkv::model_shape S = mlkv_test::uneven_gqa;
  mlkv::kv_cache<S, float> cache(2, 10);
  std::vector<float> q(2 * 12 * 64), out(q.size());
  auto what = [&](std::vector<std::int32_t> ctx, const std::int32_t* offs, int batch = 2, int hq = 12) {
    try {
      mlkv::cpu::reference_attention(cache.slot_view(0), hq, q.data(), out.data(), {batch, ctx.data(), offs}, 0.1f);
    } catch (const mlkv::error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  REQUIRE(what({11, 1}, nullptr) == "mlkv: sequence 0 attends over 11 tokens; allowed 1 (its query rows) to 10 (its capacity)");
  REQUIRE(what({1, 0}, nullptr) == "mlkv: sequence 1 attends over 0 tokens; allowed 1 (its query rows) to 10 (its capacity)");
  const std::int32_t offs[3] = {0, 2, 2};
  REQUIRE(what({1, 0}, offs) == "mlkv: sequence 0 attends over 1 tokens; allowed 2 (its query rows) to 10 (its capacity)");
  REQUIRE(what({2, 0}, offs) == "no error");  // a sequence with no rows and no context is skipped
  REQUIRE(what({1, 1}, nullptr, 3) == "mlkv: attention batch (3) must be in [0, 2]");
  REQUIRE(what({1, 1}, nullptr, 2, 10) == "mlkv: query heads (10) must be a positive multiple of KV heads (4)");
}

TEST_CASE("keys cached before rotation and rotated when read equal keys cached rotated (f32)") {
  constexpr mlkv::model_shape S = mlkv_test::uneven_gqa;
  constexpr int Hq = S.q_heads, Hkv = S.kv_heads, D = S.head_dim, N = 37;
  mlkv_test::rng r(mlkv_test::fresh_seed());
  const mlkv::rotary rope(mlkv::rope_config{D, 16, 10000.f});
  mlkv::kv_cache<S, float> rotated(1, N), plain(1, N);
  const auto k = r.vec(std::size_t{N} * Hkv * D), v = r.vec(std::size_t{N} * Hkv * D);
  auto q = r.vec(std::size_t{5} * Hq * D);
  rope.apply_rows(q.data(), 5, Hq, N - 5);
  rotated.append(0, 0, N, k.data(), v.data(), &rope);
  plain.append(0, 0, N, k.data(), v.data(), nullptr);
  const std::int32_t ctx = N, offs[2] = {0, 5};
  std::vector<float> a(q.size()), b(q.size()), c(q.size());
  const float scale = mlkv::cpu::default_scale(D);
  mlkv::cpu::reference_attention(rotated.slot_view(0), Hq, q.data(), a.data(), {1, &ctx, offs}, scale);
  mlkv::cpu::reference_attention(plain.slot_view(0), Hq, q.data(), b.data(), {1, &ctx, offs}, scale, &rope);
  mlkv::cpu::reference_attention(plain.slot_view(0), Hq, q.data(), c.data(), {1, &ctx, offs}, scale);
  REQUIRE(a == b);
  REQUIRE(mlkv_test::rel_err(c, a) > 1e-3);  // without the rotation the answer really differs
}
