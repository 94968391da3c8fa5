// Capacity planning (mlkv/plan.hpp) against brute force: a real pool filled until the budget or
// its pages run out, and a contiguous cache's own size.
#include <mlkv/cache/contiguous.hpp>
#include <mlkv/cache/paged.hpp>
#include <mlkv/plan.hpp>
#include <mlkv/presets.hpp>

#include <string>

#include "catch.hpp"
#include "geometries.hpp"
#include "test_util.hpp"

namespace {
std::string what_of(auto&& f) {
  try {
    f();
  } catch (const mlkv::error& e) {
    return e.what();
  }
  return "no error";
}

/// Brute force: a pool with every page the budget could hold; add sequences of `tokens` tokens
/// until one no longer fits, in pages or in the budget (pages + block tables, as the pool counts
/// them). Returns the sequences that fit and the bytes they take.
template <class Pool>
std::pair<std::int64_t, std::size_t> fill(std::uint64_t budget, int tokens) {
  Pool pool(std::max(1, Pool::pages_in(budget)));
  std::int64_t n = 0;
  for (;;) {
    const auto id = pool.add();
    bool fits = true;
    try {
      pool.reserve(id, tokens);
      pool.commit(id, tokens);
    } catch (const mlkv::error&) {
      fits = false;
    }
    if (!fits || pool.bytes_used() + pool.table_bytes() > budget) {
      pool.free(id);
      break;
    }
    ++n;
  }
  return {n, pool.bytes_used() + pool.table_bytes()};
}

template <mlkv::model_shape S, class T, int P>
void check_against_pool(mlkv_test::rng& r) {
  using pool_t = mlkv::paged_kv_cache<S, T, P>;
  for (int trial = 0; trial < 6; ++trial) {
    const int tokens = r.integer(1, 5 * P + 3);
    const std::uint64_t budget = pool_t::page_bytes * static_cast<std::uint64_t>(r.integer(1, 300)) +
                                 static_cast<std::uint64_t>(r.integer(0, static_cast<int>(pool_t::page_bytes)));
    INFO("page " << P << " tokens " << tokens << " budget " << budget);
    const mlkv::capacity_plan p = mlkv::plan_paged(S, mlkv::dtype_of<T>, P, budget, tokens);
    const auto [n, bytes] = fill<pool_t>(budget, tokens);
    REQUIRE(p.sequences == n);
    REQUIRE(p.bytes_used == bytes);
    REQUIRE(p.page_bytes == pool_t::page_bytes);
    REQUIRE(p.pages_per_sequence == pool_t::blocks_for(tokens));
    REQUIRE(p.pages == n * p.pages_per_sequence);
    // Paging costs at most one partly used page and the block table per sequence.
    REQUIRE(p.token_bytes_per_sequence == static_cast<std::uint64_t>(tokens) * pool_t::bytes_per_token);
    REQUIRE(p.overhead_bytes_per_sequence == p.bytes_per_sequence - p.token_bytes_per_sequence);
    REQUIRE(p.overhead_bytes_per_sequence < p.page_bytes + p.table_bytes_per_sequence);
    REQUIRE(p.table_bytes_per_sequence == 4 * static_cast<std::uint64_t>(p.pages_per_sequence));
  }
}
}  // namespace

TEST_CASE("the paged plan equals filling a real pool until the budget runs out") {
  mlkv_test::rng r(mlkv_test::fresh_seed());
  check_against_pool<mlkv::paper_configs[0].shape, float, 16>(r);
  check_against_pool<mlkv::paper_configs[6].shape, mlkv::bf16, 64>(r);
  check_against_pool<mlkv_test::uneven_mqa_d80, mlkv::f16, 5>(r);
  check_against_pool<mlkv_test::llama_like, mlkv::bf16, 16>(r);
  check_against_pool<mlkv_test::tiny, float, 1>(r);
}

TEST_CASE("the contiguous plan equals the contiguous cache's own size") {
  mlkv_test::rng r(mlkv_test::fresh_seed());
  mlkv_test::for_each_geometry<mlkv_test::awkward_list>([&](auto g) {
    constexpr mlkv::model_shape S = decltype(g)::shape;
    const int tokens = r.integer(1, 5000);
    const std::uint64_t budget = static_cast<std::uint64_t>(r.integer(1, 1 << 30));
    const mlkv::capacity_plan p = mlkv::plan_contiguous(S, mlkv::dtype::bf16, budget, tokens);
    const auto n = static_cast<int>(p.sequences);
    if (n > 0) REQUIRE(mlkv::kv_cache<S, mlkv::bf16>::bytes(n, tokens) <= budget);
    REQUIRE(mlkv::kv_cache<S, mlkv::bf16>::bytes(n + 1, tokens) > budget);
    REQUIRE(p.bytes_per_sequence == mlkv::kv_cache<S, mlkv::bf16>::bytes(1, tokens));
    REQUIRE(p.overhead_bytes_per_sequence == 0);
  });
}

TEST_CASE("the paper's configurations in 80 GiB: 2048-token sequences, worked by hand") {
  // MHA-144, f32: 2 x 12 layers x 12 heads x 64 x 4 bytes = 73728 bytes per token, 144 MiB per
  // sequence: 80 GiB / 144 MiB = 568.9.
  const auto mha = mlkv::plan_contiguous(mlkv::paper_configs[0].shape, mlkv::dtype::f32, 80 * mlkv::gib, 2048);
  REQUIRE(mha.bytes_per_sequence == 144ull << 20);
  REQUIRE(mha.sequences == 568);
  // MLKV-1, f32: 512 bytes per token, 1 MiB per sequence: 81920 contiguous; paged (16 tokens per
  // page) each sequence also keeps 128 four-byte page indices: 80 GiB / (1 MiB + 512 B) = 81880.04.
  const auto one = mlkv::plan_contiguous(mlkv::paper_configs[8].shape, mlkv::dtype::f32, 80 * mlkv::gib, 2048);
  REQUIRE(one.sequences == 81920);
  const auto one_paged = mlkv::plan_paged(mlkv::paper_configs[8].shape, mlkv::dtype::f32, 16, 80 * mlkv::gib, 2048);
  REQUIRE(one_paged.page_bytes == 8192);
  REQUIRE(one_paged.pages_per_sequence == 128);
  REQUIRE(one_paged.bytes_per_sequence == (1u << 20) + 512);
  REQUIRE(one_paged.sequences == 81880);
  REQUIRE(one_paged.pages == 81880 * 128);
  // MLKV-4, bf16, 2047 tokens, pages of 64: 32 pages, one of them holding 63 tokens.
  const auto four = mlkv::plan_paged(mlkv::paper_configs[6].shape, mlkv::dtype::bf16, 64, 80 * mlkv::gib, 2047);
  REQUIRE(four.pages_per_sequence == 32);
  REQUIRE(four.overhead_bytes_per_sequence == 2 * 4 * 64 * 2 + 32 * 4);  // one token's K/V (all slots) + table
}

TEST_CASE("planning rejects what it cannot answer") {
  const auto& s = mlkv::paper_configs[0].shape;
  REQUIRE(what_of([&] { (void)mlkv::plan_paged(s, mlkv::dtype::f32, 0, 1 << 20, 10); }) ==
          "mlkv: tokens per page (0) must be in 1..65536");
  REQUIRE(what_of([&] { (void)mlkv::plan_paged(s, mlkv::dtype::f32, 16, 1 << 20, 0); }) ==
          "mlkv: tokens per sequence (0) must be at least 1");
  REQUIRE(what_of([&] { (void)mlkv::plan_contiguous(s, mlkv::dtype::f32, 1 << 20, -5); }) ==
          "mlkv: tokens per sequence (-5) must be at least 1");
  mlkv::model_shape bad = s;
  bad.kv_heads = 5;
  REQUIRE(what_of([&] { (void)mlkv::plan_contiguous(bad, mlkv::dtype::f32, 1 << 20, 10); }) ==
          "mlkv: query heads (12) must be a multiple of KV heads (5)");
  REQUIRE(what_of([&] { (void)mlkv::plan_contiguous(s, mlkv::dtype::f32, ~0ull, std::int64_t{1} << 62); }).starts_with(
      "mlkv: capacity plan overflows"));
  // A budget smaller than one sequence: none fit.
  REQUIRE(mlkv::plan_paged(s, mlkv::dtype::f32, 16, 1000, 10).sequences == 0);
}
