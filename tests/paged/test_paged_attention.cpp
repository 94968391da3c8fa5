// Attention kernels over paged caches: the oracle scenario of the contiguous tests (same bounds)
// over the geometry list and several page sizes, and the same outputs as over a contiguous cache
// holding the same K/V.
#include <mlkv/cache/contiguous.hpp>
#include <mlkv/cache/paged.hpp>
#include <mlkv/cpu/attention.hpp>
#include <mlkv/cpu/reference.hpp>

#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "geometries.hpp"
#include "paged_harness.hpp"

namespace {
auto reference = [](const auto& view, int q_heads, const float* q, float* out, const mlkv::cpu::attention_batch& ab,
                    float scale) { mlkv::cpu::reference_attention(view, q_heads, q, out, ab, scale); };

/// The fast CPU attention (cpu/attention.hpp) with fixed options.
auto fast(const mlkv::cpu::attention_options& o) {
  return [o](const auto& view, int q_heads, const float* q, float* out, const mlkv::cpu::attention_batch& ab,
             float scale) { mlkv::cpu::attention(view, q_heads, q, out, ab, scale, o); };
}

/// The harness options for the fast path `i` and storage T: the AVX-512 BF16 path reads the
/// queries as bf16, so the oracle on the stored values rounds them too (as in tests/cpu).
template <class T>
mlkv_test::scenario_options fast_options(mlkv::cpu::isa i) {
  mlkv_test::scenario_options o;
  o.bf16_queries = o.bf16_weights = i == mlkv::cpu::isa::avx512_bf16 && std::is_same_v<T, mlkv::bf16>;
  return o;
}

std::string what_of(auto&& f) {
  try {
    f();
  } catch (const mlkv::error& e) {
    return e.what();
  }
  return "no error";
}

/// Fills a contiguous cache and a paged pool with the same K/V (rotated keys) for sequences of
/// the given lengths, then runs `attn` over both for every layer, a decode row per sequence and a
/// prefill chunk, and returns the largest difference relative to the output scale.
template <mlkv::model_shape S, class T, int P, class Attn>
double paged_vs_contiguous(Attn&& attn, std::uint64_t seed, const std::vector<int>& lengths) {
  constexpr int Hq = S.q_heads, Hkv = S.kv_heads, D = S.head_dim;
  mlkv_test::rng r(seed);
  const int B = static_cast<int>(lengths.size());
  int longest = 1;
  for (const int n : lengths) longest = std::max(longest, n);
  mlkv::kv_cache<S, T> flat(B, longest);
  using pool_t = mlkv::paged_kv_cache<S, T, P>;
  pool_t pool(B * pool_t::blocks_for(longest) + 40);
  const auto ballast = mlkv_test::fragment(pool, r, 10, 4);
  std::vector<mlkv::seq_id> ids;
  for (int b = 0; b < B; ++b) ids.push_back(pool.add());
  const mlkv::rotary rope(mlkv::rope_config{D, D / 2, 10000.f});
  // Interleave the sequences a few tokens at a time, so their pages alternate in the pool.
  std::vector<int> done(static_cast<std::size_t>(B), 0);
  for (bool more = true; more;) {
    more = false;
    for (int b = 0; b < B; ++b) {
      const int n = std::min(r.integer(1, 2 * P), lengths[static_cast<std::size_t>(b)] - done[static_cast<std::size_t>(b)]);
      if (n <= 0) continue;
      more = true;
      for (int s = 0; s < S.kv_layers; ++s) {
        const auto k = r.vec(static_cast<std::size_t>(n) * Hkv * D), v = r.vec(static_cast<std::size_t>(n) * Hkv * D);
        flat.append(s, b, n, k.data(), v.data(), &rope);
        pool.append(s, ids[static_cast<std::size_t>(b)], n, k.data(), v.data(), &rope);
      }
      flat.commit(b, n);
      pool.commit(ids[static_cast<std::size_t>(b)], n);
      done[static_cast<std::size_t>(b)] += n;
    }
  }
  const auto batch = pool.make_batch(ids);
  double worst = 0;
  std::vector<std::int32_t> ctx(lengths.begin(), lengths.end());
  // Decode (one row each; length-0 sequences get none) and a chunk of up to 5 rows each.
  std::vector<std::int32_t> offs(static_cast<std::size_t>(B) + 1, 0), decode_offs(static_cast<std::size_t>(B) + 1, 0);
  for (int b = 0; b < B; ++b) {
    const int len = lengths[static_cast<std::size_t>(b)];
    offs[static_cast<std::size_t>(b) + 1] = offs[static_cast<std::size_t>(b)] + std::min(len, 5);
    decode_offs[static_cast<std::size_t>(b) + 1] = decode_offs[static_cast<std::size_t>(b)] + std::min(len, 1);
  }
  for (const auto* o : {decode_offs.data(), offs.data()}) {
    const mlkv::cpu::attention_batch ab{B, ctx.data(), o};
    const auto q = r.vec(static_cast<std::size_t>(ab.total_rows()) * Hq * D);
    for (int l = 0; l < S.layers; ++l) {
      std::vector<float> a(q.size(), std::numeric_limits<float>::quiet_NaN()), c = a;
      attn(flat.layer_view(l), Hq, q.data(), c.data(), ab, mlkv::cpu::default_scale(D));
      attn(batch.layer_view(l), Hq, q.data(), a.data(), ab, mlkv::cpu::default_scale(D));
      worst = std::max(worst, mlkv_test::rel_err(a, c));
    }
  }
  for (const auto id : ids) pool.free(id);
  for (const auto id : ballast) pool.free(id);
  return worst;
}
}  // namespace

TEMPLATE_TEST_CASE("reference attention over pages of 16 matches the oracle on the paper's configurations", "",
                   float, mlkv::f16, mlkv::bf16) {
  mlkv_test::for_each_geometry<mlkv_test::paper_list>([](auto g) {
    mlkv_test::run_paged_attention_scenario<decltype(g)::shape, TestType, 16>(reference, mlkv_test::fresh_seed());
  });
}

TEMPLATE_TEST_CASE("reference attention over pages of 3 matches the oracle on awkward geometries", "", float,
                   mlkv::f16, mlkv::bf16) {
  mlkv_test::for_each_geometry<mlkv_test::awkward_list>([](auto g) {
    mlkv_test::run_paged_attention_scenario<decltype(g)::shape, TestType, 3>(reference, mlkv_test::fresh_seed());
  });
}

TEST_CASE("reference attention over pages of 1, 5 and 64 tokens, and a longer context") {
  mlkv_test::run_paged_attention_scenario<mlkv_test::uneven_gqa, float, 1>(reference, mlkv_test::fresh_seed());
  mlkv_test::run_paged_attention_scenario<mlkv_test::yoco, mlkv::bf16, 5>(reference, mlkv_test::fresh_seed());
  mlkv_test::run_paged_attention_scenario<mlkv_test::cla3, mlkv::f16, 64>(reference, mlkv_test::fresh_seed());
  mlkv_test::scenario_options opt;
  opt.batch = 2;
  opt.capacity = 700;
  opt.first_chunk = {mlkv_test::sanitized() ? 213 : 613, 1};
  opt.decode_steps = 2;
  opt.second_chunk = 29;
  mlkv_test::run_paged_attention_scenario<mlkv_test::single_owner_d80, mlkv::bf16, 64>(reference,
                                                                                       mlkv_test::fresh_seed(), opt);
}

TEMPLATE_TEST_CASE("the reference gives the same outputs, bit for bit, over pages and over a contiguous cache", "",
                   float, mlkv::bf16) {
  const std::vector<int> lengths{0, 1, 15, 16, 17, 0, 64, 100};
  REQUIRE(paged_vs_contiguous<mlkv_test::uneven_gqa, TestType, 16>(reference, mlkv_test::fresh_seed(), lengths) == 0.0);
  REQUIRE(paged_vs_contiguous<mlkv_test::uneven_mqa_d80, TestType, 64>(reference, mlkv_test::fresh_seed(), lengths) == 0.0);
  REQUIRE(paged_vs_contiguous<mlkv_test::llama_like, TestType, 7>(reference, mlkv_test::fresh_seed(), lengths) == 0.0);
  REQUIRE(paged_vs_contiguous<mlkv_test::tiny, TestType, 1>(reference, mlkv_test::fresh_seed(), lengths) == 0.0);
}

TEST_CASE("attention over a paged batch rejects a context past a sequence's pages") {
  constexpr mlkv::model_shape S = mlkv_test::uneven_gqa;
  mlkv::paged_kv_cache<S, float, 16> pool(4);
  const mlkv::seq_id ids[2] = {pool.add(), pool.add()};
  pool.reserve(ids[0], 20);
  pool.commit(ids[0], 20);
  const auto batch = pool.make_batch(ids);
  std::vector<float> q(2 * 12 * 64), out(q.size());
  auto what = [&](std::vector<std::int32_t> ctx) {
    return what_of([&] {
      mlkv::cpu::reference_attention(batch.slot_view(0), 12, q.data(), out.data(), {2, ctx.data(), nullptr}, 0.1f);
    });
  };
  REQUIRE(what({33, 0}) == "mlkv: sequence 0 attends over 33 tokens; allowed 1 (its query rows) to 32 (its capacity)");
  REQUIRE(what({20, 1}) == "mlkv: sequence 1 attends over 1 tokens; allowed 1 (its query rows) to 0 (its capacity)");
  // A sequence with no pages and no rows is skipped.
  const std::int32_t ctx[2] = {20, 0}, offs[3] = {0, 1, 1};
  mlkv::cpu::reference_attention(batch.slot_view(0), 12, q.data(), out.data(), {2, ctx, offs}, 0.1f);
}

TEMPLATE_TEST_CASE("the fast attention over pages matches the oracle (best path, 2 threads, split contexts)", "",
                   float, mlkv::f16, mlkv::bf16) {
  mlkv::cpu::thread_pool threads(2);
  const mlkv::cpu::isa best = mlkv::cpu::best_isa();
  INFO("path " << mlkv::cpu::name_of(best));
  const auto opt = fast_options<TestType>(best);
  // Pages of 16 over the paper's configurations (three of them in the sanitized build).
  mlkv_test::for_each_geometry<mlkv_test::paper_list>([&](auto g) {
    mlkv_test::run_paged_attention_scenario<decltype(g)::shape, TestType, 16>(fast({.isa = best, .exec = &threads}),
                                                                             mlkv_test::fresh_seed(), opt);
  });
  // Pages of 3 and 64, with contexts cut into chunks that end inside pages (log-sum-exp merges).
  mlkv_test::run_paged_attention_scenario<mlkv_test::uneven_mqa_d80, TestType, 3>(
      fast({.isa = best, .exec = &threads, .split_tokens = 7}), mlkv_test::fresh_seed(), opt);
  mlkv_test::run_paged_attention_scenario<mlkv_test::llama_like, TestType, 64>(
      fast({.isa = best, .exec = &threads, .split_tokens = 40}), mlkv_test::fresh_seed(), opt);
  mlkv_test::run_paged_attention_scenario<mlkv_test::group7_d96, TestType, 5>(fast({.isa = best}),
                                                                             mlkv_test::fresh_seed(), opt);
}

TEMPLATE_TEST_CASE("the fast attention gives the same bits over pages as over a contiguous cache", "", float,
                   mlkv::bf16) {
  mlkv::cpu::thread_pool threads(2);
  const std::vector<int> lengths{0, 1, 15, 16, 17, 0, 64, mlkv_test::sanitized() ? 100 : 300};
  for (const mlkv::cpu::isa i : mlkv::cpu::supported_isas()) {
    INFO("path " << mlkv::cpu::name_of(i));
    // The same cut into tasks over both caches: the automatic choice of KV heads per task depends
    // on the view (short page runs: all heads), and with two threads a different cut chunks the
    // contexts differently, which changes the rounding (cpu/attention.hpp).
    for (const int kv_per_task : {1, 3}) {
      INFO("kv_heads_per_task " << kv_per_task);
      const auto k = fast({.isa = i, .exec = &threads, .kv_heads_per_task = kv_per_task});
      REQUIRE(paged_vs_contiguous<mlkv_test::uneven_gqa, TestType, 16>(k, mlkv_test::fresh_seed(), lengths) == 0.0);
      REQUIRE(paged_vs_contiguous<mlkv_test::llama_like, TestType, 64>(k, mlkv_test::fresh_seed(), lengths) == 0.0);
    }
    REQUIRE(paged_vs_contiguous<mlkv_test::uneven_mqa_d80, TestType, 7>(fast({.isa = i, .split_tokens = 50}),
                                                                        mlkv_test::fresh_seed(), lengths) == 0.0);
  }
}
