// The fast kernels over the paged cache (cache/paged.hpp): the paged harness (fragmented pool,
// forks sharing pages, copy-on-write, rollback) with the oracle, and bit-for-bit agreement
// with the same kernel over a contiguous cache holding the same rows.
#include <mlkv/cache/paged.hpp>
#include <mlkv/cpu/attention.hpp>

#include <algorithm>
#include <limits>
#include <vector>

#include "../paged/paged_harness.hpp"
#include "cpu_test_util.hpp"

using namespace mlkv_cpu_test;

// The paged harness's oracle reads the queries as given, so the avx512_bf16 path (which reads
// bf16 queries) is checked over pages only through the bit-for-bit comparison below.
TEMPLATE_TEST_CASE("every CPU path over pages matches the oracle", "[cpu][paged]", float, mlkv::f16, mlkv::bf16) {
  for (isa i : tested_isas()) {
    if (rounds_queries<TestType>(i)) continue;
    INFO("path " << mlkv::cpu::name_of(i));
    mlkv_test::run_paged_attention_scenario<mlkv_test::uneven_gqa, TestType, 16>(kernel({.isa = i}),
                                                                                mlkv_test::fresh_seed());
    mlkv_test::run_paged_attention_scenario<mlkv_test::group7_d96, TestType, 3>(kernel({.isa = i}),
                                                                               mlkv_test::fresh_seed());
    mlkv_test::run_paged_attention_scenario<mlkv_test::tiny, TestType, 1>(kernel({.isa = i, .split_tokens = 4}),
                                                                         mlkv_test::fresh_seed());
    if (!reduced()) {
      mlkv_test::run_paged_attention_scenario<mlkv_test::yoco, TestType, 5>(kernel({.isa = i}), mlkv_test::fresh_seed());
      mlkv_test::run_paged_attention_scenario<mlkv::paper_configs[6].shape, TestType, 64>(kernel({.isa = i}),
                                                                                         mlkv_test::fresh_seed());
    }
  }
}

namespace {
/// Fills a contiguous cache and a paged cache (pages of P tokens) with the same rows and checks
/// that every path gives the same outputs, bit for bit, over both (prefill and decode rows).
template <mlkv::model_shape S, class T, int P>
void same_bits_as_contiguous(std::uint64_t seed) {
  constexpr int Hq = S.q_heads, Hkv = S.kv_heads, D = S.head_dim, B = 3;
  INFO("page " << P << " seed " << seed);
  mlkv_test::rng r(seed);
  const int len[B] = {45, 0, 130};  // cached tokens
  const int rows[B] = {1, 3, 17};   // new tokens (query rows)
  constexpr int cap = 160;
  mlkv::kv_cache<S, T> flat(B, cap);
  mlkv::paged_kv_cache<S, T, P> pool(B * (cap / P + 2) + 8);
  std::vector<mlkv::seq_id> scratch_ids;  // scatter the pages: allocate and free some first
  for (int i = 0; i < 4; ++i) {
    scratch_ids.push_back(pool.add());
    pool.reserve(scratch_ids.back(), 2 * P);
  }
  std::vector<mlkv::seq_id> ids;
  for (int b = 0; b < B; ++b) ids.push_back(pool.add());
  pool.free(scratch_ids[1]);
  pool.free(scratch_ids[3]);
  std::vector<std::int32_t> ctx(B), offs(B + 1, 0);
  for (int b = 0; b < B; ++b) {
    const int n = len[b] + rows[b];
    for (int s = 0; s < S.kv_layers; ++s) {
      const auto k = r.vec(static_cast<std::size_t>(n) * Hkv * D), v = r.vec(static_cast<std::size_t>(n) * Hkv * D);
      flat.append(s, b, n, k.data(), v.data());
      pool.append(s, ids[static_cast<std::size_t>(b)], n, k.data(), v.data());
    }
    flat.commit(b, n);
    pool.commit(ids[static_cast<std::size_t>(b)], n);
    ctx[static_cast<std::size_t>(b)] = n;
    offs[static_cast<std::size_t>(b) + 1] = offs[static_cast<std::size_t>(b)] + rows[b];
  }
  const auto batch = pool.make_batch(ids);
  const auto q = r.vec(static_cast<std::size_t>(offs[B]) * Hq * D);
  const float scale = mlkv::cpu::default_scale(D);
  for (isa i : tested_isas()) {
    INFO("path " << mlkv::cpu::name_of(i));
    for (int split : {0, 7}) {
      // The software prefetch walks the same runs: on for the second split setting. Under
      // emulation and the sanitizers only that one (it also splits the contexts).
      if (reduced() && split == 0) continue;
      const mlkv::cpu::attention_options opt{
          .isa = i, .split_tokens = split, .prefetch_min_bytes = split == 0 ? std::size_t{16} << 20 : 0};
      // KV heads walked together by a decode task: the automatic choice (all of them over short
      // page runs, one over the contiguous cache), one, and 3 (a last task with fewer): the
      // walk order must not change a bit. The contiguous cache with one head is the reference.
      const mlkv::cpu::attention_options one_head = [&] {
        auto o = opt;
        o.kv_heads_per_task = 1;
        return o;
      }();
      for (const int kv_per_task : {0, 1, 3}) {
        INFO("split " << split << ", kv_heads_per_task " << kv_per_task);
        auto walk = opt;
        walk.kv_heads_per_task = kv_per_task;
        // Under emulation and the sanitizers: the first and the last layer only.
        for (int l = 0; l < S.layers; l += reduced() ? std::max(1, S.layers - 1) : 1) {
          std::vector<float> a(q.size(), std::numeric_limits<float>::quiet_NaN()), p = a, f = a;
          mlkv::cpu::attention(flat.layer_view(l), Hq, q.data(), a.data(), {B, ctx.data(), offs.data()}, scale, one_head);
          mlkv::cpu::attention(batch.layer_view(l), Hq, q.data(), p.data(), {B, ctx.data(), offs.data()}, scale, walk);
          mlkv::cpu::attention(flat.layer_view(l), Hq, q.data(), f.data(), {B, ctx.data(), offs.data()}, scale, walk);
          REQUIRE(a == p);
          REQUIRE(a == f);
          // And one decode row per sequence over the same pages.
          std::vector<float> da(static_cast<std::size_t>(B) * Hq * D), dp = da, df = da;
          mlkv::cpu::decode(flat.layer_view(l), Hq, q.data(), da.data(), B, ctx.data(), scale, one_head);
          mlkv::cpu::decode(batch.layer_view(l), Hq, q.data(), dp.data(), B, ctx.data(), scale, walk);
          mlkv::cpu::decode(flat.layer_view(l), Hq, q.data(), df.data(), B, ctx.data(), scale, walk);
          REQUIRE(da == dp);
          REQUIRE(da == df);
        }
      }
    }
  }
  for (const auto id : ids) pool.free(id);
  pool.free(scratch_ids[0]);
  pool.free(scratch_ids[2]);
}
}  // namespace

TEST_CASE("every CPU path gives the same bits over pages as over a contiguous cache", "[cpu][paged]") {
  same_bits_as_contiguous<mlkv_test::uneven_gqa, mlkv::bf16, 16>(mlkv_test::fresh_seed());
  same_bits_as_contiguous<mlkv_test::group7_d96, mlkv::bf16, 5>(mlkv_test::fresh_seed());
  same_bits_as_contiguous<mlkv_test::uneven_mqa_d80, mlkv::f16, 1>(mlkv_test::fresh_seed());
  same_bits_as_contiguous<mlkv_test::llama_like, float, 33>(mlkv_test::fresh_seed());
  same_bits_as_contiguous<mlkv_test::heads32_d128, mlkv::bf16, 16>(mlkv_test::fresh_seed());  // queries in lanes
  same_bits_as_contiguous<mlkv_test::heads16_d64, mlkv::f16, 7>(mlkv_test::fresh_seed());
}
