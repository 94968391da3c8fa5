// The contiguous KV cache: layout, two-phase append, capacity errors that leave the cache as it
// was, caller-provided memory, and the run-time owner check.
#include <mlkv/cache/contiguous.hpp>

#include <cstring>
#include <string>
#include <vector>

#include "catch.hpp"
#include "test_util.hpp"

namespace {
inline constexpr mlkv::model_shape mlkv4{.layers = 12, .q_heads = 12, .kv_heads = 2, .kv_layers = 4, .head_dim = 16};

template <class T>
std::vector<unsigned char> snapshot(const mlkv::kv_cache<mlkv4, T>& c) {
  std::vector<unsigned char> b(c.size_bytes());
  std::memcpy(b.data(), c.data(), b.size());
  return b;
}

std::string what_of(auto&& f) {
  try {
    f();
  } catch (const mlkv::error& e) {
    return e.what();
  }
  return "no error";
}
}  // namespace

TEMPLATE_TEST_CASE("cache layout: one slab per owner slot, none for consumers", "", float, mlkv::f16, mlkv::bf16) {
  using cache_t = mlkv::kv_cache<mlkv4, TestType>;
  mlkv_test::rng r(mlkv_test::fresh_seed());
  const int B = 3, C = 7;
  cache_t cache(B, C);
  REQUIRE(cache_t::elements(B, C) == std::size_t{2} * 4 * B * 2 * C * 16);
  REQUIRE(cache.size_bytes() == cache_t::elements(B, C) * sizeof(TestType));
  REQUIRE(cache_t::bytes_per_token == 2u * 4 * 2 * 16 * sizeof(TestType));
  REQUIRE(reinterpret_cast<std::uintptr_t>(cache.data()) % mlkv::buffer_alignment == 0);

  // Write distinct tokens into each slot of sequence 1 and read them back through the views.
  const int n = 5;
  std::vector<std::vector<float>> ks, vs;
  for (int s = 0; s < cache_t::slots; ++s) {
    ks.push_back(r.vec(static_cast<std::size_t>(n) * 2 * 16));
    vs.push_back(r.vec(static_cast<std::size_t>(n) * 2 * 16));
    cache.append(s, 1, n, ks.back().data(), vs.back().data());
  }
  REQUIRE(cache.length(1) == 0);  // two-phase: nothing committed yet
  cache.commit(1, n);
  REQUIRE(cache.length(1) == n);
  REQUIRE(cache.length(0) == 0);
  for (int layer = 0; layer < 12; ++layer) {
    const int s = mlkv4.kv_slot(layer);
    const auto view = cache.layer_view(layer);
    for (int t = 0; t < n; ++t) {
      for (int h = 0; h < 2; ++h) {
        for (int d = 0; d < 16; ++d) {
          const std::size_t i = (static_cast<std::size_t>(t) * 2 + h) * 16 + d;
          REQUIRE(mlkv::to_float(view.k_row(1, h, t)[d]) == mlkv::to_float(mlkv::from_float<TestType>(ks[s][i])));
          REQUIRE(mlkv::to_float(view.v_row(1, h, t)[d]) == mlkv::to_float(mlkv::from_float<TestType>(vs[s][i])));
        }
      }
      REQUIRE(view.run(1, t) == C - t);
    }
    // The layout is [slot][K|V][batch][head][capacity][D].
    const std::size_t slab = std::size_t{B} * 2 * C * 16;
    REQUIRE(view.k == cache.data() + 2 * slab * static_cast<std::size_t>(s));
    REQUIRE(view.v == view.k + slab);
    REQUIRE(view.k_row(2, 1, 3) == view.k + ((2 * 2 + 1) * C + 3) * 16);
  }
}

TEST_CASE("appending past capacity names the sequence, its length and the capacity, and changes nothing") {
  mlkv::kv_cache<mlkv4, mlkv::bf16> cache(3, 10);
  mlkv_test::rng r(mlkv_test::fresh_seed());
  auto k = r.vec(12 * 2 * 16), v = r.vec(12 * 2 * 16);
  for (int s = 0; s < 4; ++s) cache.append(s, 2, 8, k.data(), v.data());
  cache.commit(2, 8);
  const auto before = snapshot(cache);
  REQUIRE(what_of([&] { cache.append(1, 2, 3, k.data(), v.data()); }) ==
          "mlkv: sequence 2 has 8 tokens; appending 3 would pass its capacity of 10");
  REQUIRE(what_of([&] { cache.commit(2, 3); }) ==
          "mlkv: sequence 2 has 8 tokens; appending 3 would pass its capacity of 10");
  REQUIRE(snapshot(cache) == before);
  REQUIRE(cache.length(2) == 8);

  // A decode step checks every sequence before writing any.
  cache.commit(2, 2);  // sequence 2 is now full
  const auto full = snapshot(cache);
  REQUIRE(what_of([&] { cache.append_step(0, k.data(), v.data()); }) ==
          "mlkv: sequence 2 has 10 tokens; appending 1 would pass its capacity of 10");
  REQUIRE(what_of([&] { cache.commit_all(1); }) ==
          "mlkv: sequence 2 has 10 tokens; appending 1 would pass its capacity of 10");
  REQUIRE(snapshot(cache) == full);
  REQUIRE(cache.length(0) == 0);

  REQUIRE(what_of([&] { cache.append(4, 0, 1, k.data(), v.data()); }) == "mlkv: KV slot 4 is out of range [0, 4)");
  REQUIRE(what_of([&] { cache.append(0, 3, 1, k.data(), v.data()); }) == "mlkv: sequence 3 is out of range [0, 3)");
  REQUIRE(what_of([&] { cache.append(0, 0, -1, k.data(), v.data()); }) ==
          "mlkv: cannot append a negative number of tokens (-1) to sequence 0");
  REQUIRE(what_of([&] { cache.append_layer(4, 0, 1, k.data(), v.data()); }) ==
          "mlkv: layer 4 is a consumer of owner layer 3 and cannot append K/V");
  REQUIRE(what_of([&] { cache.truncate(2, 11); }) == "mlkv: cannot truncate sequence 2 of 10 tokens to 11 (allowed 0..10)");
  REQUIRE(snapshot(cache) == full);
  cache.truncate(2, 4);
  REQUIRE(cache.length(2) == 4);
  cache.append_layer<6>(2, 6, k.data(), v.data());  // owner layer 6: slot 2
  cache.reset(2);
  REQUIRE(cache.length(2) == 0);
}

TEST_CASE("a cache over caller memory") {
  using cache_t = mlkv::kv_cache<mlkv4, mlkv::f16>;
  std::vector<mlkv::f16> mem(cache_t::elements(2, 5));
  REQUIRE(what_of([&] { cache_t c(std::span<mlkv::f16>(mem.data(), mem.size() - 1), 2, 5); }) ==
          "mlkv: caller memory holds 2559 values, a cache of batch 2 x capacity 5 needs 2560");
  REQUIRE(what_of([&] { cache_t c(0, 5); }) == "mlkv: cache batch (0) must be at least 1");
  REQUIRE(what_of([&] { cache_t c(2, 0); }) == "mlkv: cache capacity (0) must be at least 1 token");
  REQUIRE(what_of([&] { cache_t c(1 << 30, 1 << 30); }).starts_with("mlkv: cache size overflows"));
  cache_t c(std::span<mlkv::f16>(mem), 2, 5);
  REQUIRE(c.data() == mem.data());
  std::vector<float> k(2 * 16, 1.5f), v(2 * 16, -2.f);
  c.append_layer<9>(1, 1, k.data(), v.data());
  REQUIRE(mlkv::to_float(c.slot_view(3).k_row(1, 1, 0)[7]) == 1.5f);
  REQUIRE(mlkv::to_float(mem[c.slot_view(3).offset(1, 1, 0) + 7 + std::size_t{2} * 3 * 2 * 2 * 5 * 16]) == 1.5f);
}

TEST_CASE("keys are rotated at their positions when a rotary is given; values are not") {
  mlkv::kv_cache<mlkv4, float> cache(1, 8);
  const mlkv::rotary rope(mlkv::rope_config{16, 8, 10000.f});
  mlkv_test::rng r(mlkv_test::fresh_seed());
  auto k = r.vec(3 * 2 * 16), v = r.vec(3 * 2 * 16);
  cache.append(0, 0, 2, k.data(), v.data(), &rope);
  cache.commit(0, 2);
  cache.append(0, 0, 1, k.data() + 64, v.data() + 64, &rope);  // position 2
  auto want = k;
  rope.apply_rows(want.data(), 3, 2, 0);
  const auto view = cache.slot_view(0);
  for (int t = 0; t < 3; ++t) {
    for (int h = 0; h < 2; ++h) {
      for (int d = 0; d < 16; ++d) {
        REQUIRE(view.k_row(0, h, t)[d] == want[(static_cast<std::size_t>(t) * 2 + h) * 16 + d]);
        REQUIRE(view.v_row(0, h, t)[d] == v[(static_cast<std::size_t>(t) * 2 + h) * 16 + d]);
      }
    }
  }
  const mlkv::rotary wrong(mlkv::rope_config{32, 8, 10000.f});
  REQUIRE(what_of([&] { cache.append(0, 0, 1, k.data(), v.data(), &wrong); }) ==
          "mlkv: rotary head dim (32) differs from the cache's head dim (16)");
}
