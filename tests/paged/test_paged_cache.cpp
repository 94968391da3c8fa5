// The paged KV cache: page layout, two-phase append, fork with copy-on-write, truncate, caller
// and device memory, exact accounting, and errors that name the values and change nothing.
#include <mlkv/cache/contiguous.hpp>
#include <mlkv/cache/paged.hpp>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "catch.hpp"
#include "test_util.hpp"

namespace {
inline constexpr mlkv::model_shape mlkv4{.layers = 12, .q_heads = 12, .kv_heads = 2, .kv_layers = 4, .head_dim = 16};
constexpr int Hkv = 2, D = 16, slots = 4;

std::string what_of(auto&& f) {
  try {
    f();
  } catch (const mlkv::error& e) {
    return e.what();
  }
  return "no error";
}

/// Everything observable about a pool's bookkeeping and contents.
template <class Pool>
struct snapshot {
  std::vector<int> lengths, refs;
  std::vector<std::vector<std::int32_t>> tables;
  int free_pages = 0, sequences = 0;
  std::size_t table_bytes = 0;
  std::vector<unsigned char> bytes;
  snapshot(const Pool& p, const std::vector<mlkv::seq_id>& ids) {
    for (const auto id : ids) {
      lengths.push_back(p.length(id));
      const auto t = p.block_table(id);
      tables.emplace_back(t.begin(), t.end());
    }
    for (int i = 0; i < p.pages(); ++i) refs.push_back(p.page_refs(i));
    free_pages = p.free_pages();
    sequences = p.sequences();
    table_bytes = p.table_bytes();
    bytes.resize(Pool::bytes(p.pages()));
    std::memcpy(bytes.data(), p.data(), bytes.size());
  }
  bool operator==(const snapshot&) const = default;
};

/// Appends n random tokens to every slot of `id` and commits; returns them per slot as
/// [n, Hkv, D] K and V rows.
template <class Pool>
void append_all(Pool& p, mlkv::seq_id id, int n, mlkv_test::rng& r, std::vector<std::vector<float>>& ks,
                std::vector<std::vector<float>>& vs) {
  ks.resize(slots);
  vs.resize(slots);
  for (int s = 0; s < slots; ++s) {
    const auto k = r.vec(static_cast<std::size_t>(n) * Hkv * D), v = r.vec(static_cast<std::size_t>(n) * Hkv * D);
    p.append(s, id, n, k.data(), v.data());
    ks[static_cast<std::size_t>(s)].insert(ks[static_cast<std::size_t>(s)].end(), k.begin(), k.end());
    vs[static_cast<std::size_t>(s)].insert(vs[static_cast<std::size_t>(s)].end(), v.begin(), v.end());
  }
  p.commit(id, n);
}

/// Checks that `id` reads back exactly `ks`/`vs` (rounded to T) through a batch view.
template <class Pool>
void check_reads(const Pool& p, mlkv::seq_id id, const std::vector<std::vector<float>>& ks,
                 const std::vector<std::vector<float>>& vs) {
  using T = typename Pool::value_type;
  const mlkv::seq_id one[1] = {id};
  const auto batch = p.make_batch(one);
  const int n = p.length(id);
  for (int s = 0; s < slots; ++s) {
    const auto view = batch.slot_view(s);
    for (int t = 0; t < n; ++t) {
      for (int h = 0; h < Hkv; ++h) {
        for (int d = 0; d < D; ++d) {
          const std::size_t i = (static_cast<std::size_t>(t) * Hkv + static_cast<std::size_t>(h)) * D + static_cast<std::size_t>(d);
          REQUIRE(mlkv::to_float(view.k_row(0, h, t)[d]) == mlkv::to_float(mlkv::from_float<T>(ks[static_cast<std::size_t>(s)][i])));
          REQUIRE(mlkv::to_float(view.v_row(0, h, t)[d]) == mlkv::to_float(mlkv::from_float<T>(vs[static_cast<std::size_t>(s)][i])));
        }
      }
    }
  }
}
}  // namespace

TEMPLATE_TEST_CASE("page layout: [slot][K|V][kv_head][page_tokens][head_dim], one page for all slots", "", float,
                   mlkv::f16, mlkv::bf16) {
  using pool_t = mlkv::paged_kv_cache<mlkv4, TestType, 4>;
  static_assert(pool_t::page_values == std::size_t{4} * 2 * 2 * 4 * 16);
  static_assert(pool_t::page_bytes == pool_t::page_values * sizeof(TestType));
  static_assert(pool_t::page_bytes == 4 * pool_t::bytes_per_token);
  mlkv_test::rng r(mlkv_test::fresh_seed());
  pool_t pool(8);
  REQUIRE(reinterpret_cast<std::uintptr_t>(pool.data()) % mlkv::buffer_alignment == 0);
  REQUIRE(pool.bytes_free() == 8 * pool_t::page_bytes);
  const auto a = pool.add(), b = pool.add();
  std::vector<std::vector<float>> ka, va, kb, vb;
  append_all(pool, a, 3, r, ka, va);   // a: page 0 (tokens 0..2)
  append_all(pool, b, 6, r, kb, vb);   // b: pages 1, 2
  append_all(pool, a, 2, r, ka, va);   // a: page 0 (token 3), page 3 (token 4)
  REQUIRE(std::vector<std::int32_t>(pool.block_table(a).begin(), pool.block_table(a).end()) == std::vector<std::int32_t>{0, 3});
  REQUIRE(std::vector<std::int32_t>(pool.block_table(b).begin(), pool.block_table(b).end()) == std::vector<std::int32_t>{1, 2});
  REQUIRE(pool.used_pages() == 4);
  check_reads(pool, a, ka, va);
  check_reads(pool, b, kb, vb);

  // The raw page memory, addressed by hand: sequence b, token 5 is page 2, row 1.
  for (int s = 0; s < slots; ++s) {
    for (int h = 0; h < Hkv; ++h) {
      for (int d = 0; d < D; ++d) {
        const TestType* page = pool.page_data(2);
        const std::size_t row = ((static_cast<std::size_t>(s) * 2 * Hkv + static_cast<std::size_t>(h)) * 4 + 1) * D + static_cast<std::size_t>(d);
        const std::size_t vrow = row + std::size_t{Hkv} * 4 * D;
        const std::size_t i = (std::size_t{5} * Hkv + static_cast<std::size_t>(h)) * D + static_cast<std::size_t>(d);
        REQUIRE(mlkv::to_float(page[row]) == mlkv::to_float(mlkv::from_float<TestType>(kb[static_cast<std::size_t>(s)][i])));
        REQUIRE(mlkv::to_float(page[vrow]) == mlkv::to_float(mlkv::from_float<TestType>(vb[static_cast<std::size_t>(s)][i])));
      }
    }
  }

  // The batch view: packed block table, runs end at page boundaries, layers read their owner.
  const mlkv::seq_id both[2] = {b, a};
  const auto batch = pool.make_batch(both);
  REQUIRE(batch.size() == 2);
  REQUIRE(batch.max_blocks() == 2);
  REQUIRE(std::vector<std::int32_t>(batch.block_table().begin(), batch.block_table().end()) == std::vector<std::int32_t>{1, 2, 0, 3});
  REQUIRE(std::vector<std::int32_t>(batch.seq_blocks().begin(), batch.seq_blocks().end()) == std::vector<std::int32_t>{2, 2});
  REQUIRE(std::vector<std::int32_t>(batch.lengths().begin(), batch.lengths().end()) == std::vector<std::int32_t>{6, 5});
  for (int layer = 0; layer < 12; ++layer) {
    const auto v = batch.layer_view(layer);
    const auto w = batch.slot_view(mlkv4.kv_slot(layer));
    REQUIRE(v.k_offset == w.k_offset);
    REQUIRE(v.k_offset == static_cast<std::size_t>(mlkv4.kv_slot(layer)) * pool_t::slot_values);
    REQUIRE(v.v_offset == v.k_offset + pool_t::half_values);
    REQUIRE(v.max_tokens(0) == 8);
    REQUIRE(v.run(0, 0) == 4);
    REQUIRE(v.run(0, 5) == 3);
    REQUIRE(v.k_row(1, 1, 4) == pool.data() + 3 * pool_t::page_values + v.k_offset + (1 * 4 + 0) * D);
  }
  // Pages of a power-of-two size are addressed by shifts; a view without the shift divides and
  // reaches the same rows.
  REQUIRE(batch.slot_view(0).page_shift == 2);
  REQUIRE(mlkv::paged_kv_cache<mlkv4, TestType, 3>::page_shift == -1);
  REQUIRE(mlkv::paged_kv_cache<mlkv4, TestType, 64>::page_shift == 6);
  // The same view from the pool's geometry alone (paged_slot_view::over_pool, for engines with
  // their own pool); pages of 3 tokens divide.
  {
    const auto v = batch.slot_view(1);
    const auto w = mlkv::paged_slot_view<TestType>::over_pool(v.pages, v.block_table, v.seq_blocks, v.batch, v.kv_heads,
                                                              v.head_dim, v.page_tokens, v.max_blocks, slots, 1);
    REQUIRE(w.page_stride == v.page_stride);
    REQUIRE(w.k_offset == v.k_offset);
    REQUIRE(w.v_offset == v.v_offset);
    REQUIRE(w.page_shift == v.page_shift);
    REQUIRE(mlkv::paged_slot_view<TestType>::over_pool(v.pages, v.block_table, v.seq_blocks, v.batch, v.kv_heads,
                                                       v.head_dim, 3, v.max_blocks, slots, 1)
                .page_shift == -1);
  }
  for (int s = 0; s < slots; ++s) {
    const auto shifted = batch.slot_view(s);
    auto divided = shifted;
    divided.page_shift = -1;
    for (int b2 = 0; b2 < 2; ++b2) {
      for (int t = 0; t < batch.lengths()[static_cast<std::size_t>(b2)]; ++t) {
        REQUIRE(divided.k_row(b2, 1, t) == shifted.k_row(b2, 1, t));
        REQUIRE(divided.v_row(b2, 0, t) == shifted.v_row(b2, 0, t));
        REQUIRE(divided.run(b2, t) == shifted.run(b2, t));
      }
    }
  }
  REQUIRE(what_of([&] { (void)batch.slot_view(4); }) == "mlkv: KV slot 4 is out of range [0, 4)");
  REQUIRE(what_of([&] { (void)batch.layer_view(12); }) == "mlkv: layer 12 is out of range [0, 12)");
}

TEST_CASE("two-phase append: append writes without moving the length, commit needs the pages") {
  using pool_t = mlkv::paged_kv_cache<mlkv4, float, 4>;
  mlkv_test::rng r(mlkv_test::fresh_seed());
  pool_t pool(6);
  const auto a = pool.add();
  auto k = r.vec(std::size_t{7} * Hkv * D), v = r.vec(std::size_t{7} * Hkv * D);
  REQUIRE(pool.mapped_tokens(a) == 0);
  pool.append(0, a, 5, k.data(), v.data());
  REQUIRE(pool.length(a) == 0);
  REQUIRE(pool.mapped_tokens(a) == 8);
  pool.append(1, a, 5, k.data(), v.data());  // the same tokens through another slot: no new page
  REQUIRE(pool.used_pages() == 2);
  REQUIRE(what_of([&] { pool.commit(a, 6); }) ==
          "mlkv: paged cache: sequence {index 0, generation 1} has 0 tokens and 5 more appended or reserved; "
          "committing 6 needs them appended (or reserved) first");
  REQUIRE(what_of([&] { pool.commit(a, -1); }) ==
          "mlkv: paged cache: cannot commit a negative number of tokens (-1) to sequence {index 0, generation 1}");
  pool.commit(a, 5);
  REQUIRE(pool.length(a) == 5);
  REQUIRE(pool.mapped_tokens(a) == 8);

  // Batch reserve and commit: all or nothing.
  const auto b = pool.add(), c = pool.add();
  const mlkv::seq_id bc[2] = {b, c};
  pool.reserve(bc, 3);
  REQUIRE(pool.used_pages() == 4);
  REQUIRE(what_of([&] { pool.commit(std::span<const mlkv::seq_id>(bc), 4); }) ==
          "mlkv: paged cache: sequence {index 1, generation 1} has 0 tokens and 3 more appended or reserved; "
          "committing 4 needs them appended (or reserved) first");
  REQUIRE(pool.length(b) == 0);
  const mlkv::seq_id twice[2] = {b, b};
  REQUIRE(what_of([&] { pool.commit(std::span<const mlkv::seq_id>(twice), 1); }) ==
          "mlkv: paged cache: commit: sequence {index 1, generation 1} appears twice in one commit");
  REQUIRE(what_of([&] { pool.reserve(std::span<const mlkv::seq_id>(twice), 1); }) ==
          "mlkv: paged cache: reserve: sequence {index 1, generation 1} appears twice in one reservation");
  pool.commit(std::span<const mlkv::seq_id>(bc), 3);
  REQUIRE(pool.length(b) == 3);
  REQUIRE(pool.length(c) == 3);
  // Reserving nothing, or what is already mapped, changes nothing.
  pool.reserve(a, 0);
  pool.reserve(a, 3);
  REQUIRE(pool.used_pages() == 4);
}

TEMPLATE_TEST_CASE("an exhausted pool names what was asked and what is free, and changes nothing", "", float,
                   mlkv::bf16) {
  using pool_t = mlkv::paged_kv_cache<mlkv4, TestType, 4>;
  mlkv_test::rng r(mlkv_test::fresh_seed());
  pool_t pool(5);
  const auto a = pool.add(), b = pool.add();
  std::vector<std::vector<float>> ka, va, kb, vb;
  append_all(pool, a, 6, r, ka, va);  // 2 pages
  append_all(pool, b, 5, r, kb, vb);  // 2 pages: 1 free
  const auto c = pool.fork(b);        // shares b's pages
  const std::vector<mlkv::seq_id> ids{a, b, c};
  const snapshot<pool_t> before(pool, ids);
  auto k = r.vec(std::size_t{9} * Hkv * D), v = r.vec(std::size_t{9} * Hkv * D);

  REQUIRE(what_of([&] { pool.append(2, a, 7, k.data(), v.data()); }) ==
          "mlkv: paged cache: append: sequence {index 0, generation 1} at length 6 needs 2 free pages (2 new, 0 "
          "copy-on-write) for 7 more tokens, but only 1 of 5 pages are free");
  REQUIRE(what_of([&] { pool.reserve(c, 4); }) ==
          "mlkv: paged cache: reserve: sequence {index 2, generation 1} at length 5 needs 2 free pages (1 new, 1 "
          "copy-on-write) for 4 more tokens, but only 1 of 5 pages are free");
  const mlkv::seq_id step[3] = {a, b, c};
  REQUIRE(what_of([&] { pool.reserve(step, 4); }) ==
          "mlkv: paged cache: reserve: 3 sequences need 4 free pages (3 new, 1 copy-on-write) for 4 more tokens "
          "each, but only 1 of 5 pages are free");
  REQUIRE(snapshot<pool_t>(pool, ids) == before);
  check_reads(pool, a, ka, va);
  check_reads(pool, b, kb, vb);
  check_reads(pool, c, kb, vb);
  {
    // A one-token step fits: b and its fork c share their partly used page; b copies it, c keeps
    // it (one copy, not two), and a writes into its own page.
    pool_t twin(5);
    const auto ta = twin.add(), tb = twin.add();
    twin.reserve(ta, 6);
    twin.commit(ta, 6);
    twin.reserve(tb, 5);
    twin.commit(tb, 5);
    const auto tc = twin.fork(tb);
    const auto shared_page = twin.block_table(tb)[1];
    const mlkv::seq_id all[3] = {ta, tb, tc};
    twin.reserve(all, 1);
    REQUIRE(twin.free_pages() == 0);
    REQUIRE(twin.block_table(tc)[1] == shared_page);
    REQUIRE(twin.block_table(tb)[1] != shared_page);
    REQUIRE(twin.page_refs(shared_page) == 1);
  }

  // What does fit still works after the failures; then the pool is full.
  pool.append(0, a, 6, k.data(), v.data());
  REQUIRE(pool.free_pages() == 0);
  REQUIRE(what_of([&] { pool.append(1, a, 7, k.data(), v.data()); }) ==
          "mlkv: paged cache: append: sequence {index 0, generation 1} at length 6 needs 1 free pages (1 new, 0 "
          "copy-on-write) for 7 more tokens, but only 0 of 5 pages are free");
  REQUIRE(what_of([&] { pool.commit(a, 7); }) ==
          "mlkv: paged cache: sequence {index 0, generation 1} has 6 tokens and 6 more appended or reserved; "
          "committing 7 needs them appended (or reserved) first");
  pool.commit(a, 6);
  REQUIRE(pool.length(a) == 12);
}

TEST_CASE("bad handles: freed, reused, unknown and default handles are named as such") {
  using pool_t = mlkv::paged_kv_cache<mlkv4, float, 4>;
  pool_t pool(4);
  std::vector<float> k(Hkv * D, 1.f), v(Hkv * D, 2.f);
  const auto a = pool.add();
  pool.append(0, a, 1, k.data(), v.data());
  pool.commit(a, 1);
  const auto b = pool.add();
  REQUIRE(pool.contains(a));
  pool.free(a);
  REQUIRE_FALSE(pool.contains(a));
  REQUIRE(pool.free_pages() == 4);
  REQUIRE(what_of([&] { (void)pool.length(a); }) ==
          "mlkv: paged cache: length: stale sequence handle {index 0, generation 1}: that sequence was freed (slot 0 "
          "is at generation 2, free)");
  REQUIRE(what_of([&] { pool.append(0, a, 1, k.data(), v.data()); }) ==
          "mlkv: paged cache: append: stale sequence handle {index 0, generation 1}: that sequence was freed (slot 0 "
          "is at generation 2, free)");
  REQUIRE(what_of([&] { pool.free(a); }).starts_with("mlkv: paged cache: free: stale sequence handle"));
  const auto c = pool.add();  // reuses slot 0 with a new generation
  REQUIRE(c.index == 0);
  REQUIRE(c.generation == 2);
  REQUIRE(what_of([&] { (void)pool.fork(a); }) ==
          "mlkv: paged cache: fork: stale sequence handle {index 0, generation 1}: that sequence was freed (slot 0 "
          "is at generation 2, a newer sequence)");
  REQUIRE(what_of([&] { pool.truncate(mlkv::seq_id{7, 1}, 0); }) ==
          "mlkv: paged cache: truncate: unknown sequence handle {index 7, generation 1}; this cache has issued "
          "handles for 2 slots");
  REQUIRE(what_of([&] { pool.commit(mlkv::seq_id{}, 0); }).starts_with(
      "mlkv: paged cache: commit: unknown sequence handle {index 4294967295, generation 0}"));
  REQUIRE(what_of([&] { pool.reserve(mlkv::seq_id{1, 0}, 1); }) ==
          "mlkv: paged cache: reserve: unknown sequence handle {index 1, generation 0}; slot 1 is at generation 1");
  REQUIRE(what_of([&] { pool.reserve(mlkv::seq_id{1, 5}, 1); }) ==
          "mlkv: paged cache: reserve: unknown sequence handle {index 1, generation 5}; slot 1 is at generation 1");
  const mlkv::seq_id mixed[2] = {b, a};
  REQUIRE(what_of([&] { (void)pool.make_batch(mixed); }).starts_with("mlkv: paged cache: make_batch: stale sequence handle"));
  REQUIRE(what_of([&] { pool.reserve(mixed, 1); }).starts_with("mlkv: paged cache: reserve: stale sequence handle"));
  REQUIRE(pool.free_pages() == 4);  // the failed batch reserve mapped nothing for b
  REQUIRE(pool.sequences() == 2);
}

TEMPLATE_TEST_CASE("fork shares pages; the first write into a shared page copies it", "", float, mlkv::f16) {
  using pool_t = mlkv::paged_kv_cache<mlkv4, TestType, 4>;
  mlkv_test::rng r(mlkv_test::fresh_seed());
  int copies = 0;
  pool_t pool(16, [&](TestType* dst, const TestType* src, std::size_t n) {
    ++copies;
    REQUIRE(n == pool_t::page_values);
    std::memcpy(static_cast<void*>(dst), static_cast<const void*>(src), n * sizeof(TestType));
  });
  const auto parent = pool.add();
  std::vector<std::vector<float>> kp, vp;
  append_all(pool, parent, 6, r, kp, vp);  // blocks 0 (full), 1 (2 of 4 tokens)
  const auto child = pool.fork(parent);
  REQUIRE(pool.length(child) == 6);
  REQUIRE(pool.used_pages() == 2);
  REQUIRE(pool.usage().shared_pages == 2);
  REQUIRE(pool.page_refs(pool.block_table(parent)[1]) == 2);
  REQUIRE(std::ranges::equal(pool.block_table(child), pool.block_table(parent)));
  REQUIRE(pool.table_bytes() == 4 * 4);

  // The child writes token 6: its partly used page is copied (once, for all slots), the full
  // page stays shared.
  auto kc = kp, vc = vp;
  std::vector<std::vector<float>> k1, v1;
  append_all(pool, child, 1, r, k1, v1);
  for (int s = 0; s < slots; ++s) {
    kc[static_cast<std::size_t>(s)].insert(kc[static_cast<std::size_t>(s)].end(), k1[static_cast<std::size_t>(s)].begin(), k1[static_cast<std::size_t>(s)].end());
    vc[static_cast<std::size_t>(s)].insert(vc[static_cast<std::size_t>(s)].end(), v1[static_cast<std::size_t>(s)].begin(), v1[static_cast<std::size_t>(s)].end());
  }
  REQUIRE(copies == 1);
  REQUIRE(pool.used_pages() == 3);
  REQUIRE(pool.block_table(child)[0] == pool.block_table(parent)[0]);
  REQUIRE(pool.block_table(child)[1] != pool.block_table(parent)[1]);
  REQUIRE(pool.page_refs(pool.block_table(parent)[1]) == 1);
  check_reads(pool, parent, kp, vp);
  check_reads(pool, child, kc, vc);

  // The parent now owns its page alone: writing copies nothing.
  std::vector<std::vector<float>> k2, v2;
  append_all(pool, parent, 3, r, k2, v2);
  REQUIRE(copies == 1);
  for (int s = 0; s < slots; ++s) {
    kp[static_cast<std::size_t>(s)].insert(kp[static_cast<std::size_t>(s)].end(), k2[static_cast<std::size_t>(s)].begin(), k2[static_cast<std::size_t>(s)].end());
    vp[static_cast<std::size_t>(s)].insert(vp[static_cast<std::size_t>(s)].end(), v2[static_cast<std::size_t>(s)].begin(), v2[static_cast<std::size_t>(s)].end());
  }
  check_reads(pool, parent, kp, vp);
  check_reads(pool, child, kc, vc);

  // A fork of a sequence at a page boundary shares only full pages: its first write maps a new one.
  const auto at_boundary = pool.add();
  std::vector<std::vector<float>> kb, vb;
  append_all(pool, at_boundary, 4, r, kb, vb);
  const auto g = pool.fork(at_boundary);
  append_all(pool, g, 1, r, k1, v1);
  REQUIRE(copies == 1);
  REQUIRE(pool.block_table(g)[0] == pool.block_table(at_boundary)[0]);

  // Freeing the parent keeps the pages the child still reads.
  pool.free(parent);
  check_reads(pool, child, kc, vc);
  REQUIRE(pool.page_refs(pool.block_table(child)[0]) == 1);
  pool.free(child);
  pool.free(at_boundary);
  pool.free(g);
  REQUIRE(pool.free_pages() == 16);
  REQUIRE(pool.table_bytes() == 0);
}

TEST_CASE("fork during a step shares only committed tokens; a failing copy function changes nothing") {
  using pool_t = mlkv::paged_kv_cache<mlkv4, float, 4>;
  mlkv_test::rng r(mlkv_test::fresh_seed());
  bool fail_copy = false;
  pool_t pool(8, [&](float* dst, const float* src, std::size_t n) {
    if (fail_copy) throw mlkv::error("device copy failed");
    std::memcpy(dst, src, n * sizeof(float));
  });
  const auto p = pool.add();
  std::vector<std::vector<float>> kp, vp;
  append_all(pool, p, 3, r, kp, vp);
  auto k = r.vec(std::size_t{6} * Hkv * D), v = r.vec(std::size_t{6} * Hkv * D);
  pool.append(0, p, 6, k.data(), v.data());  // pending: tokens 3..8, pages 1 and 2 reserved
  REQUIRE(pool.mapped_tokens(p) == 12);
  const auto c = pool.fork(p);
  REQUIRE(pool.length(c) == 3);
  REQUIRE(pool.mapped_tokens(c) == 4);  // the parent's reserved pages stay its own
  REQUIRE(pool.page_refs(pool.block_table(p)[1]) == 1);

  // The parent's next slot write meets its now shared first page: copy-on-write. The copy fails.
  fail_copy = true;
  const std::vector<mlkv::seq_id> ids{p, c};
  const snapshot<pool_t> before(pool, ids);
  REQUIRE(what_of([&] { pool.append(1, p, 6, k.data(), v.data()); }) == "device copy failed");
  // Only a free page was written; every sequence and count is as it was.
  snapshot<pool_t> after(pool, ids);
  REQUIRE(after.tables == before.tables);
  REQUIRE(after.refs == before.refs);
  REQUIRE(after.free_pages == before.free_pages);
  fail_copy = false;
  pool.append(1, p, 6, k.data(), v.data());
  pool.append(2, p, 6, k.data(), v.data());
  pool.append(3, p, 6, k.data(), v.data());
  pool.commit(p, 6);
  for (int s = 0; s < slots; ++s) {
    kp[static_cast<std::size_t>(s)].insert(kp[static_cast<std::size_t>(s)].end(), k.begin(), k.end());
    vp[static_cast<std::size_t>(s)].insert(vp[static_cast<std::size_t>(s)].end(), v.begin(), v.end());
  }
  check_reads(pool, p, kp, vp);
  std::vector<std::vector<float>> kc(static_cast<std::size_t>(slots)), vc(static_cast<std::size_t>(slots));
  for (int s = 0; s < slots; ++s) {
    kc[static_cast<std::size_t>(s)].assign(kp[static_cast<std::size_t>(s)].begin(), kp[static_cast<std::size_t>(s)].begin() + 3 * Hkv * D);
    vc[static_cast<std::size_t>(s)].assign(vp[static_cast<std::size_t>(s)].begin(), vp[static_cast<std::size_t>(s)].begin() + 3 * Hkv * D);
  }
  check_reads(pool, c, kc, vc);
}

TEST_CASE("truncate rolls back tokens and uncommitted appends, releasing pages") {
  using pool_t = mlkv::paged_kv_cache<mlkv4, float, 4>;
  mlkv_test::rng r(mlkv_test::fresh_seed());
  pool_t pool(8);
  const auto a = pool.add();
  std::vector<std::vector<float>> ka, va;
  append_all(pool, a, 10, r, ka, va);  // 3 pages
  auto k = r.vec(std::size_t{5} * Hkv * D), v = r.vec(std::size_t{5} * Hkv * D);
  pool.append(0, a, 5, k.data(), v.data());  // pending: 4 pages
  REQUIRE(pool.used_pages() == 4);
  REQUIRE(what_of([&] { pool.truncate(a, 11); }) ==
          "mlkv: paged cache: cannot truncate sequence {index 0, generation 1} of 10 tokens to 11 (allowed 0..10)");
  REQUIRE(what_of([&] { pool.truncate(a, -1); }) ==
          "mlkv: paged cache: cannot truncate sequence {index 0, generation 1} of 10 tokens to -1 (allowed 0..10)");
  pool.truncate(a, 10);  // drops the pending append only
  REQUIRE(pool.used_pages() == 3);
  REQUIRE(pool.length(a) == 10);
  check_reads(pool, a, ka, va);
  const auto f = pool.fork(a);
  pool.truncate(a, 5);  // keeps the partly used page 1, which f still shares
  REQUIRE(pool.mapped_tokens(a) == 8);
  REQUIRE(pool.used_pages() == 3);
  REQUIRE(pool.page_refs(pool.block_table(a)[1]) == 2);
  for (int s = 0; s < slots; ++s) {
    ka[static_cast<std::size_t>(s)].resize(std::size_t{5} * Hkv * D);
    va[static_cast<std::size_t>(s)].resize(std::size_t{5} * Hkv * D);
  }
  check_reads(pool, a, ka, va);
  std::vector<std::vector<float>> k2, v2;
  append_all(pool, a, 2, r, k2, v2);  // copy-on-write of page 1; f keeps its tokens 5..9
  REQUIRE(pool.used_pages() == 4);
  REQUIRE(pool.length(f) == 10);
  pool.truncate(a, 0);
  REQUIRE(pool.mapped_tokens(a) == 0);
  REQUIRE(pool.used_pages() == 3);
  pool.free(f);
  REQUIRE(pool.free_pages() == 8);
  pool.free(a);
  REQUIRE(pool.sequences() == 0);
}

TEMPLATE_TEST_CASE("keys are rotated as in the contiguous cache: the same rows, bit for bit", "", float, mlkv::f16,
                   mlkv::bf16) {
  using pool_t = mlkv::paged_kv_cache<mlkv4, TestType, 3>;
  mlkv_test::rng r(mlkv_test::fresh_seed());
  const mlkv::rotary rope(mlkv::rope_config{16, 8, 10000.f});
  mlkv::kv_cache<mlkv4, TestType> flat(2, 20);
  pool_t pool(16);
  const mlkv::seq_id ids[2] = {pool.add(), pool.add()};
  for (const int n : {5, 1, 7, 2}) {
    for (int b = 0; b < 2; ++b) {
      for (int layer = 0; layer < 12; ++layer) {
        if (!mlkv4.owner(layer)) continue;
        const auto k = r.vec(static_cast<std::size_t>(n) * Hkv * D), v = r.vec(static_cast<std::size_t>(n) * Hkv * D);
        flat.append_layer(layer, b, n, k.data(), v.data(), &rope);
        pool.append_layer(layer, ids[b], n, k.data(), v.data(), &rope);
      }
      flat.commit(b, n);
      pool.commit(ids[b], n);
    }
  }
  const auto batch = pool.make_batch(ids);
  for (int layer = 0; layer < 12; ++layer) {
    const auto pv = batch.layer_view(layer);
    const auto cv = flat.layer_view(layer);
    for (int b = 0; b < 2; ++b) {
      for (int t = 0; t < 15; ++t) {
        for (int h = 0; h < Hkv; ++h) {
          REQUIRE(std::memcmp(pv.k_row(b, h, t), cv.k_row(b, h, t), D * sizeof(TestType)) == 0);
          REQUIRE(std::memcmp(pv.v_row(b, h, t), cv.v_row(b, h, t), D * sizeof(TestType)) == 0);
        }
      }
    }
  }
  const mlkv::rotary wrong(mlkv::rope_config{32, 8, 10000.f});
  std::vector<float> k(Hkv * D), v(Hkv * D);
  REQUIRE(what_of([&] { pool.append(0, ids[0], 1, k.data(), v.data(), &wrong); }) ==
          "mlkv: rotary head dim (32) differs from the cache's head dim (16)");
  pool.template append_layer<6>(ids[0], 1, k.data(), v.data());  // owner layer 6: slot 2
}

TEST_CASE("argument errors name the value and the allowed range, and change nothing") {
  using pool_t = mlkv::paged_kv_cache<mlkv4, float, 4>;
  pool_t pool(4);
  const auto a = pool.add();
  std::vector<float> k(3 * Hkv * D), v(3 * Hkv * D);
  REQUIRE(what_of([&] { pool.append(4, a, 1, k.data(), v.data()); }) == "mlkv: KV slot 4 is out of range [0, 4)");
  REQUIRE(what_of([&] { pool.append(-1, a, 1, k.data(), v.data()); }) == "mlkv: KV slot -1 is out of range [0, 4)");
  REQUIRE(what_of([&] { pool.append(0, a, -1, k.data(), v.data()); }) ==
          "mlkv: paged cache: append: cannot append a negative number of tokens (-1) to sequence {index 0, generation 1}");
  REQUIRE(what_of([&] { pool.append(0, a, 1, nullptr, v.data()); }) == "mlkv: paged cache: append of 1 tokens with null K or V");
  REQUIRE(what_of([&] { pool.append_layer(4, a, 1, k.data(), v.data()); }) ==
          "mlkv: layer 4 is a consumer of owner layer 3 and cannot append K/V");
  REQUIRE(what_of([&] { pool.append_layer(12, a, 1, k.data(), v.data()); }) == "mlkv: layer 12 is out of range [0, 12)");
  REQUIRE(what_of([&] { pool.reserve(a, pool_t::max_sequence_tokens); }) ==
          "mlkv: paged cache: reserve: sequence {index 0, generation 1} at length 0 needs 536870911 free pages "
          "(536870911 new, 0 copy-on-write) for 2147483644 more tokens, but only 4 of 4 pages are free");
  pool.append(0, a, 3, k.data(), v.data());
  pool.commit(a, 3);
  REQUIRE(what_of([&] { pool.reserve(a, pool_t::max_sequence_tokens); }) ==
          "mlkv: paged cache: reserve: sequence {index 0, generation 1} has 3 tokens; 2147483644 more would pass the "
          "most a sequence holds (2147483644)");
  REQUIRE(what_of([&] { (void)pool.page_refs(4); }) == "mlkv: page 4 is out of range [0, 4)");
  REQUIRE(what_of([&] { (void)pool.page_data(-1); }) == "mlkv: page -1 is out of range [0, 4)");
  REQUIRE(what_of([&] { pool_t p(0); }) == "mlkv: paged cache: pages (0) must be at least 1");
  REQUIRE(what_of([&] { (void)pool_t::elements(1 << 30); }) == "no error");
  REQUIRE(pool.length(a) == 3);
  REQUIRE(pool.used_pages() == 1);
}

TEST_CASE("a pool over caller memory, on the host or on a device") {
  using pool_t = mlkv::paged_kv_cache<mlkv4, mlkv::bf16, 4>;
  std::vector<mlkv::bf16> mem(pool_t::elements(3));
  REQUIRE(mem.size() == 3 * pool_t::page_values);
  REQUIRE(what_of([&] { pool_t p(std::span<mlkv::bf16>(mem.data(), mem.size() - 1), 3); }) ==
          "mlkv: caller memory holds 3071 values, a paged cache of 3 pages of 4 tokens needs 3072");
  REQUIRE(what_of([&] { pool_t p(std::span<mlkv::bf16>(), 3); }) == "mlkv: caller memory is null");
  REQUIRE(what_of([&] { pool_t p(std::span<mlkv::bf16>(mem), 3, mlkv::memory_kind::device); }) ==
          "mlkv: a paged cache over device memory needs a copy function for copy-on-write pages");

  // Host memory the caller owns: the pool writes there.
  {
    pool_t p(std::span<mlkv::bf16>(mem), 3);
    REQUIRE(p.data() == mem.data());
    REQUIRE(p.memory() == mlkv::memory_kind::host);
    const auto a = p.add();
    std::vector<float> k(Hkv * D, 1.5f), v(Hkv * D, -2.f);
    p.append_layer<9>(a, 1, k.data(), v.data());  // owner layer 9: slot 3
    REQUIRE(mlkv::to_float(mem[3 * pool_t::slot_values + 7]) == 1.5f);
    REQUIRE(mlkv::to_float(mem[3 * pool_t::slot_values + pool_t::half_values + 7]) == -2.f);
  }

  // Device memory: the pool only keeps books. It never dereferences the memory (here a host
  // vector filled with a marker stands in for it), copy-on-write goes through the caller's copy
  // function with the pages' addresses, and append refuses to write.
  std::fill(mem.begin(), mem.end(), mlkv::bf16{0x7e7e});
  std::vector<std::pair<std::ptrdiff_t, std::ptrdiff_t>> copies;
  pool_t dev(std::span<mlkv::bf16>(mem), 3, mlkv::memory_kind::device,
             [&](mlkv::bf16* dst, const mlkv::bf16* src, std::size_t n) {
               REQUIRE(n == pool_t::page_values);
               copies.emplace_back(dst - mem.data(), src - mem.data());
             });
  REQUIRE(dev.memory() == mlkv::memory_kind::device);
  const auto a = dev.add();
  std::vector<float> k(Hkv * D), v(Hkv * D);
  REQUIRE(what_of([&] { dev.append(0, a, 1, k.data(), v.data()); }) ==
          "mlkv: paged cache: append writes on the host, but this cache's pages are device memory; reserve() the "
          "tokens and write them through block_table()");
  dev.reserve(a, 6);
  dev.commit(a, 6);  // the engine wrote tokens 0..5 through the block table
  REQUIRE(std::vector<std::int32_t>(dev.block_table(a).begin(), dev.block_table(a).end()) == std::vector<std::int32_t>{0, 1});
  const auto b = dev.fork(a);
  dev.reserve(b, 1);
  REQUIRE(copies.size() == 1);
  REQUIRE(copies[0].first == static_cast<std::ptrdiff_t>(2 * pool_t::page_values));
  REQUIRE(copies[0].second == static_cast<std::ptrdiff_t>(1 * pool_t::page_values));
  REQUIRE(dev.block_table(b)[1] == 2);
  REQUIRE(std::all_of(mem.begin(), mem.end(), [](mlkv::bf16 x) { return x.bits == 0x7e7e; }));
  const mlkv::seq_id ab[2] = {a, b};
  const auto batch = dev.make_batch(ab);
  REQUIRE(batch.slot_view(1).pages == mem.data());
}

TEST_CASE("accounting: bytes in use and free are exact; paging wastes less than a page per sequence") {
  using pool_t = mlkv::paged_kv_cache<mlkv4, mlkv::f16, 16>;
  mlkv_test::rng r(mlkv_test::fresh_seed());
  pool_t pool(200);
  std::vector<mlkv::seq_id> ids;
  std::int64_t tokens = 0;
  std::vector<float> k(std::size_t{40} * Hkv * D, 0.5f), v(k.size(), 0.25f);
  for (int i = 0; i < 20; ++i) {
    ids.push_back(pool.add());
    const int n = r.integer(0, 40);
    for (int s = 0; s < slots; ++s) pool.append(s, ids.back(), n, k.data(), v.data());
    pool.commit(ids.back(), n);
    tokens += n;
  }
  const mlkv::paged_usage u = pool.usage();
  std::int64_t blocks = 0;
  for (const auto id : ids) blocks += static_cast<std::int64_t>(pool.block_table(id).size());
  REQUIRE(u.pages == 200);
  REQUIRE(u.used_pages == blocks);
  REQUIRE(u.free_pages == 200 - blocks);
  REQUIRE(u.sequences == 20);
  REQUIRE(u.tokens == tokens);
  REQUIRE(u.shared_pages == 0);
  REQUIRE(u.page_bytes == 16 * pool_t::bytes_per_token);
  REQUIRE(u.bytes_used == static_cast<std::size_t>(blocks) * u.page_bytes);
  REQUIRE(u.bytes_used + u.bytes_free == pool_t::bytes(200));
  REQUIRE(u.table_bytes == static_cast<std::size_t>(blocks) * 4);
  // The bound: paging costs at most one page per sequence plus the block tables.
  const std::size_t token_bytes = static_cast<std::size_t>(tokens) * pool_t::bytes_per_token;
  REQUIRE(u.bytes_used >= token_bytes);
  REQUIRE(u.bytes_used - token_bytes < ids.size() * u.page_bytes);
  for (const auto id : ids) pool.free(id);
  const mlkv::paged_usage e = pool.usage();
  REQUIRE(e.used_pages == 0);
  REQUIRE(e.bytes_used == 0);
  REQUIRE(e.table_bytes == 0);
  REQUIRE(e.tokens == 0);
  REQUIRE(e.sequences == 0);
}
