// What cache/paged.hpp documents may run concurrently, run concurrently (this program is also
// built with -fsanitize=thread as test_paged_concurrency_tsan):
//  1. kernels reading views of one batch, and const queries, from many threads at once;
//  2. appends to different, already reserved sequences from many threads at once, each thread
//     also running attention over its own sequences (an engine that splits a step by sequence);
//  3. every other mutation under the caller's lock, from many threads (the pool keeps no hidden
//     shared state outside its own members).
// Every result is compared with the same work done on one thread.
#include <mlkv/cache/paged.hpp>
#include <mlkv/cpu/reference.hpp>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "catch.hpp"
#include "test_util.hpp"

namespace {
inline constexpr mlkv::model_shape geo{.layers = 6, .q_heads = 4, .kv_heads = 2, .kv_layers = 3, .head_dim = 16};
constexpr int Hq = geo.q_heads, Hkv = geo.kv_heads, D = geo.head_dim;
using pool_t = mlkv::paged_kv_cache<geo, mlkv::bf16, 8>;
constexpr int threads = 4;

/// K/V rows of `n` tokens of sequence `b` at step `step` and slot `slot`: a pure function of
/// its arguments, so that every thread layout writes the same values.
std::vector<float> rows(std::uint64_t seed, int b, int step, int slot, int n) {
  mlkv_test::rng r(seed ^ (static_cast<std::uint64_t>(b) << 40) ^ (static_cast<std::uint64_t>(step) << 20) ^
                   static_cast<std::uint64_t>(slot));
  return r.vec(static_cast<std::size_t>(n) * Hkv * D);
}

/// An engine's decode steps over `B` sequences; `workers` threads split the sequences, each
/// appending K/V and running attention for its own. Returns every attention output.
std::vector<float> decode_steps(std::uint64_t seed, int workers, int B, int steps) {
  pool_t pool(B * 12 + 8);
  std::vector<mlkv::seq_id> ids;
  for (int b = 0; b < B; ++b) ids.push_back(pool.add());
  // Prompts of uneven lengths (0 included), written on one thread.
  for (int b = 0; b < B; ++b) {
    const int n = (b * 7) % 23;
    for (int s = 0; s < geo.kv_layers; ++s) {
      const auto k = rows(seed, b, -1, s, n), v = rows(seed, b, -1, 100 + s, n);
      pool.append(s, ids[static_cast<std::size_t>(b)], n, k.data(), v.data());
    }
    pool.commit(ids[static_cast<std::size_t>(b)], n);
  }
  const mlkv::rotary rope(mlkv::rope_config{D, D, 10000.f});
  std::vector<float> out(static_cast<std::size_t>(steps) * geo.layers * B * Hq * D);
  for (int step = 0; step < steps; ++step) {
    pool.reserve(ids, 1);  // the step's only allocation, on one thread
    auto work = [&](int w) {
      // This worker's sequences, as their own batch (a const call: may run concurrently).
      std::vector<mlkv::seq_id> mine;
      std::vector<int> index;
      for (int b = w; b < B; b += workers) {
        mine.push_back(ids[static_cast<std::size_t>(b)]);
        index.push_back(b);
      }
      const auto batch = pool.make_batch(mine);
      std::vector<std::int32_t> ctx;
      for (const auto id : mine) ctx.push_back(pool.length(id) + 1);
      for (int l = 0; l < geo.layers; ++l) {
        if (geo.owner(l)) {
          for (std::size_t i = 0; i < mine.size(); ++i) {
            const int b = index[i];
            const auto k = rows(seed, b, step, geo.kv_slot(l), 1), v = rows(seed, b, step, 100 + geo.kv_slot(l), 1);
            pool.append_layer(l, mine[i], 1, k.data(), v.data(), &rope);  // reserved: writes only
          }
        }
        std::vector<float> q(mine.size() * Hq * D), o(q.size());
        for (std::size_t i = 0; i < mine.size(); ++i) {
          const auto x = rows(seed, index[i], step, 1000 + l, 2);  // 2 * Hkv * D = Hq * D values
          std::copy(x.begin(), x.end(), q.begin() + static_cast<std::ptrdiff_t>(i * Hq * D));
        }
        mlkv::cpu::reference_decode(batch.layer_view(l), Hq, q.data(), o.data(), static_cast<int>(mine.size()),
                                    ctx.data(), mlkv::cpu::default_scale(D));
        for (std::size_t i = 0; i < mine.size(); ++i) {
          const std::size_t at = ((static_cast<std::size_t>(step) * geo.layers + static_cast<std::size_t>(l)) * B +
                                  static_cast<std::size_t>(index[i])) * Hq * D;
          std::copy(o.begin() + static_cast<std::ptrdiff_t>(i * Hq * D),
                    o.begin() + static_cast<std::ptrdiff_t>((i + 1) * Hq * D), out.begin() + static_cast<std::ptrdiff_t>(at));
        }
      }
    };
    if (workers == 1) {
      work(0);
    } else {
      std::vector<std::thread> pool_threads;
      for (int w = 0; w < workers; ++w) pool_threads.emplace_back(work, w);
      for (auto& t : pool_threads) t.join();
    }
    pool.commit(ids, 1);
  }
  return out;
}
}  // namespace

TEST_CASE("kernels and const queries read one batch from many threads at once") {
  const std::uint64_t seed = mlkv_test::fresh_seed();
  mlkv_test::rng r(seed);
  pool_t pool(64);
  std::vector<mlkv::seq_id> ids;
  for (int b = 0; b < 6; ++b) {
    ids.push_back(pool.add());
    const int n = r.integer(0, 40);
    for (int s = 0; s < geo.kv_layers; ++s) {
      const auto k = r.vec(static_cast<std::size_t>(n) * Hkv * D), v = r.vec(static_cast<std::size_t>(n) * Hkv * D);
      pool.append(s, ids.back(), n, k.data(), v.data());
    }
    pool.commit(ids.back(), n);
  }
  // A fork shares pages with its parent: concurrent readers of shared pages too.
  ids.push_back(pool.fork(ids[2]));
  const auto batch = pool.make_batch(ids);
  const int B = static_cast<int>(ids.size());
  std::vector<std::int32_t> ctx(batch.lengths().begin(), batch.lengths().end());
  std::vector<std::int32_t> offs(static_cast<std::size_t>(B) + 1, 0);
  for (int b = 0; b < B; ++b) offs[static_cast<std::size_t>(b) + 1] = offs[static_cast<std::size_t>(b)] + std::min(ctx[static_cast<std::size_t>(b)], 3);
  const mlkv::cpu::attention_batch ab{B, ctx.data(), offs.data()};
  const auto q = r.vec(static_cast<std::size_t>(ab.total_rows()) * Hq * D);
  std::vector<std::vector<float>> want(geo.layers);
  for (int l = 0; l < geo.layers; ++l) {
    want[static_cast<std::size_t>(l)].resize(q.size());
    mlkv::cpu::reference_attention(batch.layer_view(l), Hq, q.data(), want[static_cast<std::size_t>(l)].data(), ab, 0.25f);
  }
  std::vector<std::vector<std::vector<float>>> got(threads, std::vector<std::vector<float>>(geo.layers));
  std::vector<std::int64_t> seen(threads, 0);
  std::vector<std::thread> pool_threads;
  for (int t = 0; t < threads; ++t) {
    pool_threads.emplace_back([&, t] {
      for (int rep = 0; rep < 3; ++rep) {
        for (int i = 0; i < geo.layers; ++i) {
          const int l = (i + t) % geo.layers;  // threads read different slots at the same time
          auto& o = got[static_cast<std::size_t>(t)][static_cast<std::size_t>(l)];
          o.assign(q.size(), 0.f);
          mlkv::cpu::reference_attention(batch.layer_view(l), Hq, q.data(), o.data(), ab, 0.25f);
          // Const queries at the same time.
          const auto again = pool.make_batch(ids);
          seen[static_cast<std::size_t>(t)] += pool.usage().tokens + pool.length(ids[static_cast<std::size_t>(l % B)]) +
                                               static_cast<std::int64_t>(pool.block_table(ids[0]).size()) + again.max_blocks();
        }
      }
    });
  }
  for (auto& t : pool_threads) t.join();
  for (int t = 0; t < threads; ++t) {
    REQUIRE(seen[static_cast<std::size_t>(t)] == seen[0]);
    for (int l = 0; l < geo.layers; ++l) REQUIRE(got[static_cast<std::size_t>(t)][static_cast<std::size_t>(l)] == want[static_cast<std::size_t>(l)]);
  }
}

TEST_CASE("appends to different reserved sequences run concurrently, with attention over them") {
  const std::uint64_t seed = mlkv_test::fresh_seed();
  const int steps = mlkv_test::sanitized() ? 4 : 8;
  const auto one = decode_steps(seed, 1, 10, steps);
  const auto many = decode_steps(seed, threads, 10, steps);
  REQUIRE(one.size() == many.size());
  REQUIRE(std::memcmp(one.data(), many.data(), one.size() * sizeof(float)) == 0);
  // The outputs are real attention results, not untouched memory.
  REQUIRE(std::any_of(one.begin(), one.end(), [](float x) { return x != 0.f; }));
}

TEST_CASE("mutations from many threads under the caller's lock") {
  const std::uint64_t seed = mlkv_test::fresh_seed();
  pool_t pool(threads * 40);
  std::mutex lock;
  std::vector<int> failures(threads, 0);
  std::vector<std::thread> pool_threads;
  for (int t = 0; t < threads; ++t) {
    pool_threads.emplace_back([&, t] {
      mlkv_test::rng r(seed + static_cast<std::uint64_t>(t));
      struct mine {
        mlkv::seq_id id;
        std::vector<float> k0;  // slot 0 K values, as appended: [tokens, Hkv, D]
      };
      std::vector<mine> seqs;
      for (int op = 0; op < 300; ++op) {
        const int what = r.integer(0, 9);
        std::lock_guard<std::mutex> g(lock);
        if (seqs.empty() || what == 0) {
          seqs.push_back({pool.add(), {}});
        } else if (what < 6) {
          auto& s = seqs[static_cast<std::size_t>(r.integer(0, static_cast<int>(seqs.size()) - 1))];
          const int n = r.integer(1, 9);
          const auto k = r.vec(static_cast<std::size_t>(n) * Hkv * D), v = r.vec(k.size());
          try {
            for (int sl = 0; sl < geo.kv_layers; ++sl) pool.append(sl, s.id, n, k.data(), v.data());
            pool.commit(s.id, n);
            s.k0.insert(s.k0.end(), k.begin(), k.end());
          } catch (const mlkv::error&) {
            ++failures[static_cast<std::size_t>(t)];  // the shared pool ran out: nothing changed
            pool.truncate(s.id, pool.length(s.id));
          }
        } else if (what < 7) {
          const auto& s = seqs[static_cast<std::size_t>(r.integer(0, static_cast<int>(seqs.size()) - 1))];
          seqs.push_back({pool.fork(s.id), s.k0});
        } else if (what < 8) {
          auto& s = seqs[static_cast<std::size_t>(r.integer(0, static_cast<int>(seqs.size()) - 1))];
          const int keep = r.integer(0, pool.length(s.id));
          pool.truncate(s.id, keep);
          s.k0.resize(static_cast<std::size_t>(keep) * Hkv * D);
        } else {
          const auto i = static_cast<std::size_t>(r.integer(0, static_cast<int>(seqs.size()) - 1));
          pool.free(seqs[i].id);
          seqs.erase(seqs.begin() + static_cast<std::ptrdiff_t>(i));
        }
        // This thread's sequences read back what it appended (slot 0 keys).
        for (const auto& s : seqs) {
          const mlkv::seq_id one[1] = {s.id};
          const auto batch = pool.make_batch(one);
          const auto view = batch.slot_view(0);
          for (int tok = 0; tok < pool.length(s.id); ++tok) {
            for (int h = 0; h < Hkv; ++h) {
              for (int d = 0; d < D; ++d) {
                const float want = mlkv::to_float(mlkv::from_float<mlkv::bf16>(
                    s.k0[(static_cast<std::size_t>(tok) * Hkv + static_cast<std::size_t>(h)) * D + static_cast<std::size_t>(d)]));
                if (mlkv::to_float(view.k_row(0, h, tok)[d]) != want) failures[static_cast<std::size_t>(t)] += 1000000;
              }
            }
          }
        }
      }
      std::lock_guard<std::mutex> g(lock);
      for (const auto& s : seqs) pool.free(s.id);
    });
  }
  for (auto& t : pool_threads) t.join();
  for (int t = 0; t < threads; ++t) REQUIRE(failures[static_cast<std::size_t>(t)] < 1000000);
  REQUIRE(pool.sequences() == 0);
  REQUIRE(pool.free_pages() == pool.pages());
  REQUIRE(pool.table_bytes() == 0);
}
