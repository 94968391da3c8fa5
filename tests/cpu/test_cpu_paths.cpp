// Every test of the reference attention (tests/test_reference_attention.cpp), run on every CPU
// path this machine supports, with the same harness, oracle and bounds, on fresh random inputs.
#include <mlkv/cpu/attention.hpp>

#include "cpu_test_util.hpp"

using namespace mlkv_cpu_test;
using mlkv::cpu::attention_options;

TEMPLATE_TEST_CASE("every CPU path matches the oracle on the paper's configurations", "[cpu]", float, mlkv::f16,
                   mlkv::bf16) {
  for (isa i : tested_isas()) {
    INFO("path " << mlkv::cpu::name_of(i));
    if (reduced()) {
      // One paper configuration (MLKV-4: 12 query heads on one KV head, 4 owner layers).
      mlkv_test::run_attention_scenario<mlkv::paper_configs[6].shape, TestType>(
          kernel({.isa = i}), mlkv_test::fresh_seed(), options_for<TestType>(i));
      continue;
    }
    mlkv_test::for_each_geometry<mlkv_test::paper_list>([&](auto g) {
      mlkv_test::run_attention_scenario<decltype(g)::shape, TestType>(kernel({.isa = i}), mlkv_test::fresh_seed(),
                                                                      options_for<TestType>(i));
    });
  }
}

TEMPLATE_TEST_CASE("every CPU path matches the oracle on awkward geometries", "[cpu]", float, mlkv::f16, mlkv::bf16) {
  for (isa i : tested_isas()) {
    INFO("path " << mlkv::cpu::name_of(i));
    // With the software prefetch always on (by default only calls reading >= 16 MiB of K/V,
    // which no test context reaches, prefetch).
    auto one = [&](auto g) {
      mlkv_test::run_attention_scenario<decltype(g)::shape, TestType>(kernel({.isa = i, .prefetch_min_bytes = 0}),
                                                                      mlkv_test::fresh_seed(), options_for<TestType>(i));
    };
    if (reduced()) {
      mlkv_test::for_each_geometry<reduced_list>(one);
    } else {
      mlkv_test::for_each_geometry<mlkv_test::awkward_list>(one);
    }
  }
}

TEMPLATE_TEST_CASE("every CPU path matches the oracle with 16 and 32 query heads per KV head", "[cpu]", float, mlkv::f16,
                   mlkv::bf16) {
  // The AVX-512 paths put the queries in the lanes for these groups (kt_heads_*): scores, running
  // max and sums one vector per 16 queries, weights stored tokens-major. Whole contexts and
  // contexts cut into chunks of 7 tokens (partial results merged), software prefetch on.
  // (Under emulation or the sanitizers, whose paths have no such mode or run slowly: whole
  // contexts of the 32-head geometry only.)
  for (isa i : tested_isas()) {
    for (int split : {0, 7}) {
      if (reduced() && split != 0) continue;
      INFO("path " << mlkv::cpu::name_of(i) << " split " << split);
      const auto k = kernel({.isa = i, .split_tokens = split, .prefetch_min_bytes = 0});
      mlkv_test::run_attention_scenario<mlkv_test::heads32_d128, TestType>(k, mlkv_test::fresh_seed(),
                                                                          options_for<TestType>(i));
      if (reduced()) continue;
      mlkv_test::run_attention_scenario<mlkv_test::heads16_d64, TestType>(k, mlkv_test::fresh_seed(),
                                                                         options_for<TestType>(i));
    }
  }
}

TEST_CASE("every CPU path over a longer context (multiples of nothing)", "[cpu]") {
  mlkv_test::scenario_options opt;
  opt.batch = 2;
  opt.capacity = 700;
  opt.first_chunk = {613, 1};
  opt.decode_steps = 2;
  opt.second_chunk = 29;
  if (reduced()) opt.first_chunk = {213, 1};  // the double oracle is quadratic in the prefill
  for (isa i : tested_isas()) {
    INFO("path " << mlkv::cpu::name_of(i));
    mlkv_test::run_attention_scenario<mlkv_test::single_owner_d80, mlkv::bf16>(kernel({.isa = i}),
                                                                               mlkv_test::fresh_seed(),
                                                                               options_for<mlkv::bf16>(i, opt));
    // 32 query heads per KV head (queries in lanes, 64-token tiles: the AVX-512 paths) over several
    // tiles, causal rows that end inside a tile, and a last tile partly past the context; a
    // shorter first chunk (the double oracle is quadratic in it and linear in the 32 heads).
    if (i != isa::avx512 && i != isa::avx512_bf16) continue;
    mlkv_test::scenario_options wide = opt;
    wide.first_chunk = {150, 1};
    mlkv_test::run_attention_scenario<mlkv_test::heads32_d128, mlkv::bf16>(kernel({.isa = i}), mlkv_test::fresh_seed(),
                                                                           options_for<mlkv::bf16>(i, wide));
  }
}

TEMPLATE_TEST_CASE("every CPU path: prefilling N tokens at once equals N decode steps", "[cpu]", float, mlkv::bf16) {
  constexpr mlkv::model_shape S = mlkv_test::uneven_gqa;
  constexpr int Hq = S.q_heads, Hkv = S.kv_heads, D = S.head_dim, N = 71;
  mlkv_test::rng r(mlkv_test::fresh_seed());
  const mlkv::rotary rope(mlkv::rope_config{D, 16, 10000.f});
  mlkv::kv_cache<S, TestType> prefill(1, N), decode(1, N);
  const auto k = r.vec(std::size_t{N} * Hkv * D), v = r.vec(std::size_t{N} * Hkv * D);
  const auto q = r.vec(std::size_t{N} * Hq * D);
  const float scale = mlkv::cpu::default_scale(D);
  for (int s = 0; s < S.kv_layers; ++s) prefill.append(s, 0, N, k.data(), v.data(), &rope);
  for (isa i : tested_isas()) {
    INFO("path " << mlkv::cpu::name_of(i));
    const attention_options opt{.isa = i};
    std::vector<float> out_prefill(q.size());
    const std::int32_t ctx = N, offs[2] = {0, N};
    mlkv::cpu::attention(prefill.layer_view(7), Hq, q.data(), out_prefill.data(), {1, &ctx, offs}, scale, opt);

    std::vector<float> out_decode(q.size());
    decode.clear();
    for (int t = 0; t < N; ++t) {
      for (int s = 0; s < S.kv_layers; ++s) {
        decode.append(s, 0, 1, k.data() + static_cast<std::size_t>(t) * Hkv * D,
                      v.data() + static_cast<std::size_t>(t) * Hkv * D, &rope);
      }
      const std::int32_t c = t + 1;
      mlkv::cpu::decode(decode.layer_view(7), Hq, q.data() + static_cast<std::size_t>(t) * Hq * D,
                        out_decode.data() + static_cast<std::size_t>(t) * Hq * D, 1, &c, scale, opt);
      decode.commit(0, 1);
    }
    REQUIRE(mlkv_test::rel_err(out_prefill, out_decode) <= 1e-6);
  }
}
