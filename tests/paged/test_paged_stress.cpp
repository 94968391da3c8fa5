// A randomized stress test of the paged cache's bookkeeping (fixed seeds, so a failure replays).
// Thousands of operations interleave add, append (two-phase, sometimes rolled back before its
// commit), fork, truncate, free and batch reservations across hundreds of sequences on a pool
// small enough to run out. After every operation a shadow model, kept independently of the
// cache, checks that:
//  - every live sequence reads back exactly the tokens appended to it (every value of every
//    owner slot, K and V, through a batch view);
//  - two sequences reach the same page only when a fork made them share it and neither has
//    written into it since, and sequences that do share a prefix still share its pages (the
//    shadow gives each block a "share group": new on every write, inherited on fork);
//  - the reference counts, free pages and byte counters agree with the block tables, and the
//    pages in use never exceed the blocks the sequences hold;
// that every failed operation (exhausted pool, stale or unknown handle) throws and leaves the
// whole pool as it was; and that the counters return to empty at the end.
#include <mlkv/cache/paged.hpp>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "catch.hpp"
#include "test_util.hpp"

namespace {
inline constexpr mlkv::model_shape small{.layers = 4, .q_heads = 4, .kv_heads = 2, .kv_layers = 2, .head_dim = 8};
constexpr int Hkv = small.kv_heads, D = small.head_dim, slots = small.kv_layers;

/// The value of element (slot, K or V, head, d) of token `id`: an integer in [-127, 127], exact
/// in every storage type, different for nearly every token.
float token_value(std::uint32_t id, int slot, int kv, int h, int d) {
  std::uint64_t x = (static_cast<std::uint64_t>(id) << 20) ^ (static_cast<std::uint64_t>(slot) << 12) ^
                    (static_cast<std::uint64_t>(kv) << 11) ^ (static_cast<std::uint64_t>(h) << 8) ^ static_cast<std::uint64_t>(d);
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  return static_cast<float>(static_cast<int>(x % 255) - 127);
}

/// The shadow of one sequence: its token ids, and the share group of each of its blocks.
struct shadow_seq {
  mlkv::seq_id id;
  std::vector<std::uint32_t> tokens;
  std::vector<std::uint64_t> groups;
};

template <class T, int P>
class stress {
  using pool_t = mlkv::paged_kv_cache<small, T, P>;

 public:
  stress(std::uint64_t seed, int pages, int max_live, bool caller_memory)
      : gen_(seed), max_live_(max_live), memory_(caller_memory ? pool_t::elements(pages) : 0),
        pool_(make_pool(pages, caller_memory)) {}

  void run(int steps) {
    for (int step = 0; step < steps; ++step) {
      INFO("step " << step << " live " << live_.size() << " free pages " << pool_.free_pages());
      const int op = pick(0, 99);
      INFO("operation " << op);
      if (live_.empty() || (op < 12 && static_cast<int>(live_.size()) < max_live_)) {
        add();
      } else if (op < 50) {
        append(pick_live());
      } else if (op < 58) {
        append_rolled_back(pick_live());
      } else if (op < 66) {
        if (static_cast<int>(live_.size()) < max_live_) fork(pick_live());
      } else if (op < 74) {
        truncate(pick_live());
      } else if (op < 82 || pool_.free_pages() < 4) {
        free(pick_live());
      } else if (op < 90) {
        step_reserve();
      } else {
        bad_handle();
      }
      check();
    }
    // Everything goes back.
    while (!live_.empty()) free(0);
    check();
    const mlkv::paged_usage u = pool_.usage();
    REQUIRE(u.sequences == 0);
    REQUIRE(u.used_pages == 0);
    REQUIRE(u.free_pages == u.pages);
    REQUIRE(u.bytes_used == 0);
    REQUIRE(u.table_bytes == 0);
    REQUIRE(u.tokens == 0);
    for (int p = 0; p < pool_.pages(); ++p) REQUIRE(pool_.page_refs(p) == 0);
    // The run exercised what it is meant to.
    INFO("adds " << adds_ << " appends " << appends_ << " forks " << forks_ << " truncates " << truncates_ << " frees "
                 << frees_ << " exhausted " << exhausted_ << " copies " << copies_ << " bad handles " << bad_);
    REQUIRE(adds_ >= 100);
    REQUIRE(forks_ >= 50);
    REQUIRE(exhausted_ >= 10);
    if (P > 1) REQUIRE(copies_ >= 20);  // a page of one token is never written after its token
    REQUIRE(max_seen_live_ >= max_live_ / 2);
  }

 private:
  pool_t make_pool(int pages, bool caller_memory) {
    auto copy = [this](T* dst, const T* src, std::size_t n) {
      ++copies_;
      std::memcpy(static_cast<void*>(dst), static_cast<const void*>(src), n * sizeof(T));
    };
    if (caller_memory) return pool_t(std::span<T>(memory_), pages, mlkv::memory_kind::host, copy);
    return pool_t(pages, copy);
  }

  int pick(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(gen_); }
  int pick_live() { return pick(0, static_cast<int>(live_.size()) - 1); }
  std::uint64_t new_group() { return next_group_++; }

  /// Everything observable about the pool, to compare before and after a failed operation.
  struct state {
    std::vector<int> lengths, mapped, refs;
    std::vector<std::vector<std::int32_t>> tables;
    int free_pages = 0, sequences = 0;
    std::size_t table_bytes = 0;
    std::vector<unsigned char> bytes;
    bool operator==(const state&) const = default;
  };
  state capture() const {
    state s;
    for (const auto& q : live_) {
      s.lengths.push_back(pool_.length(q.id));
      s.mapped.push_back(pool_.mapped_tokens(q.id));
      const auto t = pool_.block_table(q.id);
      s.tables.emplace_back(t.begin(), t.end());
    }
    for (int p = 0; p < pool_.pages(); ++p) s.refs.push_back(pool_.page_refs(p));
    s.free_pages = pool_.free_pages();
    s.sequences = pool_.sequences();
    s.table_bytes = pool_.table_bytes();
    s.bytes.resize(pool_t::bytes(pool_.pages()));
    std::memcpy(s.bytes.data(), pool_.data(), s.bytes.size());
    return s;
  }

  /// Runs `f`, which must throw an mlkv::error whose message contains `want`, and checks that
  /// nothing changed.
  template <class F>
  void expect_failure(F&& f, const std::string& want) {
    const state before = capture();
    std::string what = "no error";
    try {
      f();
    } catch (const mlkv::error& e) {
      what = e.what();
    }
    INFO("error: " << what);
    REQUIRE(what.find(want) != std::string::npos);
    REQUIRE(capture() == before);
  }

  void rows(const std::vector<std::uint32_t>& ids, int slot, std::vector<float>& k, std::vector<float>& v) const {
    k.resize(ids.size() * Hkv * D);
    v.resize(k.size());
    for (std::size_t t = 0; t < ids.size(); ++t) {
      for (int h = 0; h < Hkv; ++h) {
        for (int d = 0; d < D; ++d) {
          k[(t * Hkv + static_cast<std::size_t>(h)) * D + static_cast<std::size_t>(d)] = token_value(ids[t], slot, 0, h, d);
          v[(t * Hkv + static_cast<std::size_t>(h)) * D + static_cast<std::size_t>(d)] = token_value(ids[t], slot, 1, h, d);
        }
      }
    }
  }

  /// Pages the sequences `members` (in this order) need for n more tokens each, from the
  /// shadow: new blocks, plus a copy of the block holding position `length` while another live
  /// sequence still shares it (a sharer earlier in the list that copies leaves the group).
  int pages_needed(const std::vector<int>& members, int n) const {
    if (n == 0) return 0;
    std::map<std::uint64_t, int> left;
    int need = 0;
    for (const int i : members) {
      const shadow_seq& q = live_[static_cast<std::size_t>(i)];
      const int len = static_cast<int>(q.tokens.size());
      need += pool_t::blocks_for(len + n) - pool_t::blocks_for(len);
      if (len % P == 0) continue;
      const std::uint64_t g = q.groups[static_cast<std::size_t>(len / P)];
      int sharers = -left[g];
      for (const auto& o : live_) sharers += static_cast<int>(std::count(o.groups.begin(), o.groups.end(), g));
      if (sharers > 1) {
        ++need;
        ++left[g];
      }
    }
    return need;
  }
  int pages_needed(int i, int n) const { return pages_needed(std::vector<int>{i}, n); }
  /// The shadow of writing positions len..len+n-1: the blocks written get new groups.
  void shadow_write(shadow_seq& q, int n) {
    if (n == 0) return;  // an empty append writes nothing and copies nothing
    const int len = static_cast<int>(q.tokens.size());
    q.groups.resize(static_cast<std::size_t>(pool_t::blocks_for(len + n)));
    for (int j = len / P; j < pool_t::blocks_for(len + n); ++j) q.groups[static_cast<std::size_t>(j)] = new_group();
  }

  /// n new token ids; their values (as stored in T) go into expected_.
  std::vector<std::uint32_t> new_tokens(int n) {
    std::vector<std::uint32_t> ids(static_cast<std::size_t>(n));
    for (auto& x : ids) {
      x = next_token_++;
      for (int sl = 0; sl < slots; ++sl) {
        for (int kv = 0; kv < 2; ++kv) {
          for (int h = 0; h < Hkv; ++h) {
            for (int d = 0; d < D; ++d) expected_.push_back(mlkv::from_float<T>(token_value(x, sl, kv, h, d)));
          }
        }
      }
    }
    return ids;
  }
  /// The stored row of token `id`, slot, K (0) or V (1), head: [D]
  const T* expected_row(std::uint32_t id, int slot, int kv, int h) const {
    return expected_.data() + ((((static_cast<std::size_t>(id) * slots + static_cast<std::size_t>(slot)) * 2 +
                                 static_cast<std::size_t>(kv)) * Hkv + static_cast<std::size_t>(h)) * D);
  }

  void add() {
    live_.push_back({pool_.add(), {}, {}});
    ++adds_;
    max_seen_live_ = std::max(max_seen_live_, static_cast<int>(live_.size()));
  }

  void append(int i) {
    shadow_seq& q = live_[static_cast<std::size_t>(i)];
    const int n = pick(0, 3) == 0 ? pick(0, 4 * P + 3) : pick(1, 2);
    const std::vector<std::uint32_t> ids = new_tokens(n);
    std::vector<float> k, v;
    if (pages_needed(i, n) > pool_.free_pages()) {
      ++exhausted_;
      rows(ids, 0, k, v);
      expect_failure([&] { pool_.append(0, q.id, n, k.data(), v.data()); }, "free pages");
      return;
    }
    // Owner slots in a random order, as a model with a different placement would write them.
    const int free_before = pool_.free_pages();
    const int need = pages_needed(i, n);
    const int first = pick(0, slots - 1);
    for (int s = 0; s < slots; ++s) {
      const int slot = (first + s) % slots;
      rows(ids, slot, k, v);
      pool_.append(slot, q.id, n, k.data(), v.data());
    }
    REQUIRE(pool_.length(q.id) == static_cast<int>(q.tokens.size()));  // two-phase: not yet
    REQUIRE(pool_.free_pages() == free_before - need);  // exactly the pages needed, no more
    pool_.commit(q.id, n);
    shadow_write(q, n);
    q.tokens.insert(q.tokens.end(), ids.begin(), ids.end());
    ++appends_;
  }

  /// Speculative decoding that is rejected: tokens appended to some slots, then rolled back.
  void append_rolled_back(int i) {
    shadow_seq& q = live_[static_cast<std::size_t>(i)];
    const int n = pick(1, 2 * P);
    if (pages_needed(i, n) > pool_.free_pages()) return;
    const std::vector<std::uint32_t> ids = new_tokens(n);
    std::vector<float> k, v;
    rows(ids, 0, k, v);
    pool_.append(0, q.id, n, k.data(), v.data());
    shadow_write(q, n);  // the write made the touched blocks private (copy-on-write)
    const int len = static_cast<int>(q.tokens.size());
    pool_.truncate(q.id, len);
    q.groups.resize(static_cast<std::size_t>(pool_t::blocks_for(len)));
  }

  void fork(int i) {
    const shadow_seq& p = live_[static_cast<std::size_t>(i)];
    shadow_seq c{pool_.fork(p.id), p.tokens, p.groups};
    live_.push_back(std::move(c));
    ++forks_;
    max_seen_live_ = std::max(max_seen_live_, static_cast<int>(live_.size()));
  }

  void truncate(int i) {
    shadow_seq& q = live_[static_cast<std::size_t>(i)];
    const int len = static_cast<int>(q.tokens.size());
    if (pick(0, 4) == 0) {
      expect_failure([&] { pool_.truncate(q.id, len + 1); }, "cannot truncate");
      return;
    }
    const int keep = pick(0, 2) == 0 ? pick(0, len) : std::max(0, len - pick(1, P + 1));
    pool_.truncate(q.id, keep);
    q.tokens.resize(static_cast<std::size_t>(keep));
    q.groups.resize(static_cast<std::size_t>(pool_t::blocks_for(keep)));
    ++truncates_;
  }

  void free(int i) {
    const mlkv::seq_id id = live_[static_cast<std::size_t>(i)].id;
    pool_.free(id);
    dead_.push_back(id);
    live_.erase(live_.begin() + i);
    ++frees_;
  }

  /// A decode step over a random subset: one token for each, all or nothing.
  void step_reserve() {
    std::vector<int> members;
    for (int i = 0; i < static_cast<int>(live_.size()); ++i) {
      if (pick(0, 2) == 0) members.push_back(i);
    }
    std::shuffle(members.begin(), members.end(), gen_);
    std::vector<mlkv::seq_id> ids;
    for (const int i : members) ids.push_back(live_[static_cast<std::size_t>(i)].id);
    const int n = pick(1, 3) == 1 ? P : 1;
    const int need = pages_needed(members, n);
    if (need > pool_.free_pages()) {
      ++exhausted_;
      expect_failure([&] { pool_.reserve(ids, n); }, "free pages");
      return;
    }
    const int free_before = pool_.free_pages();
    pool_.reserve(ids, n);
    REQUIRE(free_before - pool_.free_pages() == need);
    std::vector<float> k, v;
    for (const int i : members) {
      shadow_seq& q = live_[static_cast<std::size_t>(i)];
      const std::vector<std::uint32_t> tok = new_tokens(n);
      for (int s = 0; s < slots; ++s) {
        rows(tok, s, k, v);
        pool_.append(s, q.id, n, k.data(), v.data());  // reserved: maps nothing more
      }
      shadow_write(q, n);
      q.tokens.insert(q.tokens.end(), tok.begin(), tok.end());
    }
    REQUIRE(pool_.free_pages() == free_before - need);
    pool_.commit(ids, n);
  }

  void bad_handle() {
    std::vector<float> k(Hkv * D), v(Hkv * D);
    if (!dead_.empty() && pick(0, 3) != 0) {
      const mlkv::seq_id id = dead_[static_cast<std::size_t>(pick(0, static_cast<int>(dead_.size()) - 1))];
      switch (pick(0, 5)) {
        case 0: expect_failure([&] { pool_.append(0, id, 1, k.data(), v.data()); }, "stale sequence handle"); break;
        case 1: expect_failure([&] { (void)pool_.fork(id); }, "stale sequence handle"); break;
        case 2: expect_failure([&] { pool_.truncate(id, 0); }, "stale sequence handle"); break;
        case 3: expect_failure([&] { pool_.free(id); }, "stale sequence handle"); break;
        case 4: expect_failure([&] { pool_.commit(id, 0); }, "stale sequence handle"); break;
        default: {
          // A stale handle inside a step changes no other sequence.
          std::vector<mlkv::seq_id> ids;
          for (const auto& q : live_) ids.push_back(q.id);
          ids.insert(ids.begin() + pick(0, static_cast<int>(ids.size())), id);
          expect_failure([&] { pool_.reserve(ids, 1); }, "stale sequence handle");
        }
      }
    } else {
      const mlkv::seq_id id{static_cast<std::uint32_t>(pick(100000, 200000)), 1};
      expect_failure([&] { pool_.reserve(id, 1); }, "unknown sequence handle");
    }
    ++bad_;
  }

  /// The invariants, after every operation.
  void check() {
    // Plain comparisons and one FAIL with the first broken invariant: a Catch assertion per value
    // would dominate the run time (millions per run).
    std::string why;
    auto expect = [&](bool ok, auto&&... what) {
      if (!ok && why.empty()) why = (std::string() + ... + detail_str(what));
      return ok;
    };
    expect(pool_.sequences() == static_cast<int>(live_.size()), "live sequence count ", pool_.sequences());
    std::vector<int> refs(static_cast<std::size_t>(pool_.pages()), 0);
    std::map<std::uint64_t, std::int32_t> page_of_group;
    std::map<std::int32_t, std::uint64_t> group_of_page;
    std::size_t blocks = 0;
    std::int64_t tokens = 0;
    for (const auto& q : live_) {
      const std::string who = "sequence " + std::to_string(q.id.index) + ": ";
      expect(pool_.contains(q.id), who, "not live");
      expect(pool_.length(q.id) == static_cast<int>(q.tokens.size()), who, "length ", pool_.length(q.id), " != ",
             q.tokens.size());
      const auto table = pool_.block_table(q.id);
      // No page beyond ceil(length / P).
      if (!expect(table.size() == q.groups.size(), who, "blocks ", table.size(), " != ", q.groups.size())) break;
      for (std::size_t j = 0; j < table.size(); ++j) {
        const std::int32_t page = table[j];
        if (!expect(page >= 0 && page < pool_.pages(), who, "page ", page, " out of range")) break;
        ++refs[static_cast<std::size_t>(page)];
        // Same page <=> same share group: sharing only between a fork and its parent until one
        // writes, and a shared prefix is never copied needlessly.
        const auto g = page_of_group.emplace(q.groups[j], page).first;
        const auto p = group_of_page.emplace(page, q.groups[j]).first;
        expect(g->second == page, who, "block ", j, " is page ", page, " but shares with page ", g->second);
        expect(p->second == q.groups[j], who, "block ", j, " page ", page,
               " is also reached by a sequence it must not share with");
      }
      blocks += table.size();
      tokens += static_cast<std::int64_t>(q.tokens.size());
    }
    int used = 0;
    for (int p = 0; p < pool_.pages(); ++p) {
      expect(pool_.page_refs(p) == refs[static_cast<std::size_t>(p)], "page ", p, " has ", pool_.page_refs(p),
             " references, the block tables hold ", refs[static_cast<std::size_t>(p)]);
      used += refs[static_cast<std::size_t>(p)] > 0 ? 1 : 0;
    }
    expect(pool_.used_pages() == used, "used pages ", pool_.used_pages(), " != ", used);
    expect(pool_.free_pages() == pool_.pages() - used, "free pages ", pool_.free_pages());
    expect(used <= static_cast<int>(blocks), "used pages ", used, " > blocks ", blocks);
    expect(pool_.table_bytes() == blocks * 4, "table bytes ", pool_.table_bytes(), " != 4 x ", blocks);
    expect(pool_.bytes_used() == static_cast<std::size_t>(used) * pool_t::page_bytes, "bytes used ", pool_.bytes_used());
    expect(pool_.usage().tokens == tokens, "tokens ", pool_.usage().tokens, " != ", tokens);

    // Contents: every value of every token of every live sequence, through one batch.
    std::vector<mlkv::seq_id> ids;
    for (const auto& q : live_) ids.push_back(q.id);
    pool_.fill_batch(ids, batch_);
    for (int s = 0; s < slots && why.empty(); ++s) {
      const auto view = batch_.slot_view(s);
      for (std::size_t b = 0; b < live_.size(); ++b) {
        const auto& q = live_[b];
        for (std::size_t t = 0; t < q.tokens.size(); ++t) {
          for (int h = 0; h < Hkv; ++h) {
            const T* kr = view.k_row(static_cast<int>(b), h, static_cast<int>(t));
            const T* vr = view.v_row(static_cast<int>(b), h, static_cast<int>(t));
            const bool ok = std::memcmp(kr, expected_row(q.tokens[t], s, 0, h), D * sizeof(T)) == 0 &&
                            std::memcmp(vr, expected_row(q.tokens[t], s, 1, h), D * sizeof(T)) == 0;
            expect(ok, "sequence ", q.id.index, " slot ", s, " token ", t, " head ", h, " reads wrong values");
          }
        }
      }
    }
    if (!why.empty()) FAIL(why);
  }

  template <class X>
  static std::string detail_str(const X& x) {
    if constexpr (std::is_convertible_v<X, std::string>) {
      return std::string(x);
    } else {
      return std::to_string(x);
    }
  }

  std::mt19937_64 gen_;
  int max_live_;
  std::vector<T> memory_;
  pool_t pool_;
  typename pool_t::batch batch_;
  std::vector<shadow_seq> live_;
  std::vector<mlkv::seq_id> dead_;
  std::uint32_t next_token_ = 0;
  std::vector<T> expected_;  ///< [token id, slots, K|V, Hkv, D]: what each token's rows must read
  std::uint64_t next_group_ = 1;
  int adds_ = 0, appends_ = 0, forks_ = 0, truncates_ = 0, frees_ = 0, exhausted_ = 0, bad_ = 0;
  int max_seen_live_ = 0;
  std::int64_t copies_ = 0;
};
}  // namespace

TEST_CASE("stress: pages of 16, 4000 operations, up to 160 sequences") {
  for (const std::uint64_t seed : {1u, 2u}) {
    INFO("seed " << seed);
    stress<float, 16>(seed, 220, 160, false).run(4000);
  }
}

TEST_CASE("stress: pages of 3 in caller memory, bf16, 4000 operations, up to 120 sequences") {
  for (const std::uint64_t seed : {3u, 4u}) {
    INFO("seed " << seed);
    stress<mlkv::bf16, 3>(seed, 600, 120, true).run(4000);
  }
}

TEST_CASE("stress: pages of 1, 2000 operations, up to 100 sequences") {
  stress<mlkv::f16, 1>(5, 900, 100, false).run(2000);
}
