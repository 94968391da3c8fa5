#pragma once
// The paged twin of run_attention_scenario (tests/attention_harness.hpp): the same chunked
// prefill, decode steps and second chunk, the same oracle comparisons and the same bounds, but
// the K/V live in a paged cache whose pool was fragmented first (so a sequence's pages are
// scattered and out of order), and the batch also exercises what only a paged cache does:
//  - a forked sequence joins the batch, sharing its parent's pages, and then both write into
//    the shared, partly filled page (copy-on-write) in the same chunk;
//  - a sequence is truncated (rollback) and decoding continues over it;
//  - sequences of length 0 stay in the batch with no pages at all;
//  - half of the chunks reserve explicitly before making the batch, the other half let the
//    first owner layer's append map the pages and make the batch after it.
// The kernel under test has the contiguous harness's signature: attn(view, q_heads, q, out, ab, scale),
// and the same options (scenario_options, bf16_queries included).

#include <mlkv/cache/paged.hpp>
#include <mlkv/cpu/reference.hpp>
#include <mlkv/rope.hpp>

#include <algorithm>
#include <functional>
#include <map>
#include <utility>
#include <vector>

#include "attention_harness.hpp"

namespace mlkv_test {

/// Fills `pool` with throw-away sequences and frees a random half of them, so that later
/// allocations come from a jumbled free list; returns the sequences left alive.
template <class Pool>
std::vector<mlkv::seq_id> fragment(Pool& pool, rng& r, int sequences, int max_pages) {
  std::vector<mlkv::seq_id> all, kept;
  for (int i = 0; i < sequences; ++i) {
    all.push_back(pool.add());
    pool.reserve(all.back(), r.integer(1, max_pages) * Pool::page_tokens);
  }
  for (const auto id : all) {
    if (r.integer(0, 1) == 0) {
      pool.free(id);
    } else {
      kept.push_back(id);
    }
  }
  return kept;
}

/// The kernel under test, type-erased: the scenario is instantiated once per (geometry, storage,
/// page size), not once more per kernel (each instantiation is seconds of compile time).
template <class T>
using paged_attention_fn = std::function<void(const mlkv::paged_slot_view<T>&, int, const float*, float*,
                                              const mlkv::cpu::attention_batch&, float)>;

/// Runs the paged scenario for geometry S, storage T and page size P.
template <mlkv::model_shape S, class T, int P>
void run_paged_attention_scenario(const paged_attention_fn<T>& attn, std::uint64_t seed,
                                  const scenario_options& opt = {}) {
  constexpr int L = S.layers, Hq = S.q_heads, Hkv = S.kv_heads, D = S.head_dim;
  using pool_t = mlkv::paged_kv_cache<S, T, P>;
  INFO("paged geometry L=" << L << " Hq=" << Hq << " Hkv=" << Hkv << " Lkv=" << S.kv_layers << " D=" << D
                           << " dtype=" << mlkv::name_of(mlkv::dtype_of<T>) << " page=" << P << " seed=" << seed);
  rng r(seed);
  const int B = opt.batch;
  const int most = pool_t::blocks_for(opt.capacity + 2);
  pool_t pool((B + 1) * most + 24 * 4);
  const auto ballast = fragment(pool, r, 24, 4);

  std::vector<mlkv::seq_id> ids;
  for (int b = 0; b < B; ++b) ids.push_back(pool.add());
  const mlkv::rope_config rc = mlkv::rope_config::from_pct(D, opt.rotary_pct, 10000.f);
  const mlkv::rotary rope(rc);
  const float scale = mlkv::cpu::default_scale(D);
  const std::vector<int> src = oracle_sources<S>();
  std::map<std::pair<int, int>, oracle_kv> store;  // (owner layer, batch member) -> rows
  int chunk_index = 0;

  auto run_chunk = [&](const std::vector<int>& rows) {
    const int n_seq = static_cast<int>(ids.size());
    const bool explicit_reserve = chunk_index++ % 2 == 0;
    std::vector<std::int32_t> offsets(static_cast<std::size_t>(n_seq) + 1, 0), context(static_cast<std::size_t>(n_seq));
    for (int b = 0; b < n_seq; ++b) {
      offsets[static_cast<std::size_t>(b) + 1] = offsets[static_cast<std::size_t>(b)] + rows[static_cast<std::size_t>(b)];
      context[static_cast<std::size_t>(b)] = pool.length(ids[static_cast<std::size_t>(b)]) + rows[static_cast<std::size_t>(b)];
    }
    if (explicit_reserve) {
      for (int b = 0; b < n_seq; ++b) pool.reserve(ids[static_cast<std::size_t>(b)], rows[static_cast<std::size_t>(b)]);
    }
    typename pool_t::batch batch;
    if (explicit_reserve) batch = pool.make_batch(ids);
    const int total = offsets.back();
    for (int l = 0; l < L; ++l) {
      if (src[static_cast<std::size_t>(l)] == l) {  // the oracle says l is an owner
        for (int b = 0; b < n_seq; ++b) {
          const mlkv::seq_id id = ids[static_cast<std::size_t>(b)];
          const int n = rows[static_cast<std::size_t>(b)];
          const int len = pool.length(id);
          auto k = r.vec(static_cast<std::size_t>(n) * Hkv * D), v = r.vec(static_cast<std::size_t>(n) * Hkv * D);
          pool.append_layer(l, id, n, k.data(), v.data(), &rope);
          auto& o = store[{l, b}];
          auto krot = k;
          rope.apply_rows(krot.data(), n, Hkv, len);
          for (int t = 0; t < n; ++t) {
            std::vector<double> ke(k.begin() + static_cast<std::ptrdiff_t>(t) * Hkv * D,
                                   k.begin() + static_cast<std::ptrdiff_t>(t + 1) * Hkv * D);
            oracle::rope(ke.data(), Hkv, D, rc.rotary_dims, rc.base, len + t);
            o.k_exact.insert(o.k_exact.end(), ke.begin(), ke.end());
          }
          for (std::size_t i = 0; i < k.size(); ++i) {
            o.k_stored.push_back(quantized<T>(krot[i]));
            o.v_stored.push_back(quantized<T>(v[i]));
            o.v_exact.push_back(v[i]);
          }
        }
      }
      if (!explicit_reserve && l == 0) batch = pool.make_batch(ids);  // layer 0 is always an owner
      auto q = r.vec(static_cast<std::size_t>(total) * Hq * D);
      std::vector<double> q_exact(q.begin(), q.end());
      for (int b = 0; b < n_seq; ++b) {
        const int n = rows[static_cast<std::size_t>(b)], first = offsets[static_cast<std::size_t>(b)];
        const int len = pool.length(ids[static_cast<std::size_t>(b)]);
        rope.apply_rows(q.data() + static_cast<std::size_t>(first) * Hq * D, n, Hq, len);
        for (int t = 0; t < n; ++t) {
          oracle::rope(q_exact.data() + (static_cast<std::size_t>(first) + t) * Hq * D, Hq, D, rc.rotary_dims, rc.base,
                       len + t);
        }
      }
      std::vector<float> out(q.size(), std::numeric_limits<float>::quiet_NaN());
      const mlkv::cpu::attention_batch ab{n_seq, context.data(), offsets.data()};
      attn(batch.layer_view(l), Hq, q.data(), out.data(), ab, scale);

      for (int b = 0; b < n_seq; ++b) {
        const int n = rows[static_cast<std::size_t>(b)];
        if (n == 0) continue;
        const auto& o = store.at({src[static_cast<std::size_t>(l)], b});
        const std::size_t first = static_cast<std::size_t>(offsets[static_cast<std::size_t>(b)]) * Hq * D;
        const std::size_t count = static_cast<std::size_t>(n) * Hq * D;
        std::vector<double> want_stored(count), want_exact(count), slack(count);
        const int ctx = context[static_cast<std::size_t>(b)];
        oracle_stored(opt, std::vector<double>(q.begin() + static_cast<std::ptrdiff_t>(first), q.begin() + static_cast<std::ptrdiff_t>(first + count)),
                      n, Hq, Hkv, D, o.k_stored.data(), o.v_stored.data(), ctx, scale, want_stored.data(), slack.data());
        oracle::attention(q_exact.data() + first, n, Hq, Hkv, D, o.k_exact.data(), o.v_exact.data(), ctx,
                          1.0 / std::sqrt(static_cast<double>(D)), want_exact.data());
        const std::vector<float> got(out.begin() + static_cast<std::ptrdiff_t>(first),
                                     out.begin() + static_cast<std::ptrdiff_t>(first + count));
        INFO("layer " << l << " batch member " << b << " rows " << n << " context " << ctx << " chunk " << chunk_index);
        const double e_stored = rel_err_slack(got, want_stored, slack), e_exact = rel_err(got, want_exact);
        CHECK(e_stored <= tight_bound);
        CHECK(e_exact <= storage_bound<T>);
        worst_error<T>().first = std::max(worst_error<T>().first, e_stored);
        worst_error<T>().second = std::max(worst_error<T>().second, e_exact);
      }
    }
    for (int b = 0; b < n_seq; ++b) pool.commit(ids[static_cast<std::size_t>(b)], rows[static_cast<std::size_t>(b)]);
  };

  std::vector<int> rows(static_cast<std::size_t>(B));
  for (int b = 0; b < B; ++b) rows[static_cast<std::size_t>(b)] = opt.first_chunk[static_cast<std::size_t>(b) % opt.first_chunk.size()];
  run_chunk(rows);  // prefill, sequences of uneven lengths (some empty)
  for (int s = 0; s < opt.decode_steps; ++s) run_chunk(std::vector<int>(static_cast<std::size_t>(B), 1));

  // Fork the longest sequence: the child joins the batch sharing every page of its parent.
  int parent = 0;
  for (int b = 1; b < B; ++b) {
    if (pool.length(ids[static_cast<std::size_t>(b)]) > pool.length(ids[static_cast<std::size_t>(parent)])) parent = b;
  }
  const int used_before_fork = pool.used_pages();
  ids.push_back(pool.fork(ids[static_cast<std::size_t>(parent)]));
  REQUIRE(pool.used_pages() == used_before_fork);  // a fork copies nothing
  REQUIRE(pool.length(ids.back()) == pool.length(ids[static_cast<std::size_t>(parent)]));
  for (int l = 0; l < L; ++l) {
    if (src[static_cast<std::size_t>(l)] == l && store.count({l, parent}) != 0) store[{l, B}] = store.at({l, parent});
  }

  // Second chunk: half the batch, the parent and its child (both write into their shared page).
  rows.assign(static_cast<std::size_t>(B) + 1, 0);
  for (int b = 0; b <= B; ++b) rows[static_cast<std::size_t>(b)] = b % 2 == 0 || b == parent || b == B ? opt.second_chunk : 0;
  run_chunk(rows);

  // Roll one sequence back (speculative decoding rejected its last tokens), then decode again.
  const int victim = parent;
  const int len = pool.length(ids[static_cast<std::size_t>(victim)]);
  const int keep = len - std::min(len, opt.second_chunk / 2 + 1);
  pool.truncate(ids[static_cast<std::size_t>(victim)], keep);
  for (auto& [key, o] : store) {
    if (key.second != victim) continue;
    const std::size_t n = static_cast<std::size_t>(keep) * Hkv * D;
    o.k_stored.resize(n);
    o.v_stored.resize(n);
    o.k_exact.resize(n);
    o.v_exact.resize(n);
  }
  run_chunk(std::vector<int>(static_cast<std::size_t>(B) + 1, 1));

  // Everything goes back to the pool.
  for (const auto id : ids) pool.free(id);
  for (const auto id : ballast) pool.free(id);
  REQUIRE(pool.free_pages() == pool.pages());
  REQUIRE(pool.sequences() == 0);
  REQUIRE(pool.table_bytes() == 0);
}

}  // namespace mlkv_test
