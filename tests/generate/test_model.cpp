// The CPU model: logits against the double-precision oracle for small random models written as
// real files and loaded back (MHA, GQA, MQA, MLKV with even and uneven groups, one owner), both
// residual forms, both rotary modes, f32 and bf16; incremental decoding with the cache equals
// recomputing the whole sequence; failures leave the cache as it was.
#include <mlkv/cache/paged.hpp>
#include <mlkv/compiled_geometries.hpp>
#include <mlkv/cpu/executor.hpp>
#include <mlkv/model/gpt_neox.hpp>
#include <mlkv/model/weights.hpp>

#include <vector>

#include "catch.hpp"
#include "model/model_test_util.hpp"
#include "model_oracle.hpp"
#include "test_util.hpp"

namespace {

using mlkv::model::cpu_model;
using mlkv::model::logits_rows;

/// A random model of geometry `s` written to `dir` and loaded back through the real reader.
template <class W>
mlkv::model::gpt_neox_weights<W> file_model(const mlkv::model_shape& s, const std::filesystem::path& dir,
                                            std::uint64_t seed, bool parallel = true,
                                            const char* act = "gelu") {
  auto cfg = mlkv_test::small_config(s, 41, 40);
  cfg.use_parallel_residual = parallel;
  cfg.hidden_act = act;
  cfg.act = std::string(act) == "gelu" ? mlkv::io::activation::gelu : mlkv::io::activation::gelu_tanh;
  // Larger weights than Hugging Face's 0.02 init, so attention is sharp and errors show.
  const auto w = mlkv::model::random_weights<W>(cfg, seed, 0.25f);
  mlkv::model::save_checkpoint(w, dir);
  return mlkv::model::load_checkpoint<W>(dir);
}

/// Feeds each sequence its tokens in chunks (prefill of `first[b]`, then one at a time) and
/// compares every logits row with the oracle's.
template <mlkv::model_shape S, class W, class T>
void check_against_oracle(std::uint64_t seed, bool parallel, const char* act, mlkv::model::key_rope keys,
                          double bound) {
  INFO("geometry L=" << S.layers << " Hq=" << S.q_heads << " Hkv=" << S.kv_heads << " Lkv=" << S.kv_layers
                     << " parallel=" << parallel << " act=" << act << " keys=" << static_cast<int>(keys)
                     << " seed=" << seed);
  mlkv_test::temp_dir dir;
  const auto w = file_model<W>(S, dir.path, seed, parallel, act);
  mlkv::cpu::thread_pool pool(2);
  cpu_model<W> model(w, {.exec = &pool, .keys = keys});
  mlkv::paged_kv_cache<S, T, 4> cache(64);
  mlkv_test::rng r(seed);
  const std::vector<int> first = {7, 1, 13};
  const int B = 3, steps = 4;
  std::vector<std::vector<int>> toks(B);
  std::vector<mlkv::seq_id> ids;
  for (int b = 0; b < B; ++b) {
    ids.push_back(cache.add());
    for (int i = 0; i < first[static_cast<std::size_t>(b)] + steps; ++i) toks[static_cast<std::size_t>(b)].push_back(r.integer(0, w.vocab - 1));
  }
  // Prefill, all rows.
  std::vector<std::int32_t> offs{0}, flat;
  for (int b = 0; b < B; ++b) {
    flat.insert(flat.end(), toks[static_cast<std::size_t>(b)].begin(), toks[static_cast<std::size_t>(b)].begin() + first[static_cast<std::size_t>(b)]);
    offs.push_back(static_cast<std::int32_t>(flat.size()));
  }
  std::vector<float> logits(flat.size() * static_cast<std::size_t>(w.vocab), NAN);
  model.forward(cache, ids, offs, flat, logits_rows::all, logits.data());
  const bool rotated = keys == mlkv::model::key_rope::cached_rotated;
  std::vector<std::vector<double>> want(B);
  for (int b = 0; b < B; ++b) want[static_cast<std::size_t>(b)] = mlkv_test::oracle_logits(w, toks[static_cast<std::size_t>(b)], rotated);
  const std::size_t V = static_cast<std::size_t>(w.vocab);
  for (int b = 0; b < B; ++b) {
    for (int i = 0; i < first[static_cast<std::size_t>(b)]; ++i) {
      const std::vector<float> got(logits.begin() + static_cast<std::ptrdiff_t>((offs[static_cast<std::size_t>(b)] + i) * V),
                                   logits.begin() + static_cast<std::ptrdiff_t>((offs[static_cast<std::size_t>(b)] + i + 1) * V));
      const std::vector<double> ref(want[static_cast<std::size_t>(b)].begin() + static_cast<std::ptrdiff_t>(i * V),
                                    want[static_cast<std::size_t>(b)].begin() + static_cast<std::ptrdiff_t>((i + 1) * V));
      INFO("prefill: sequence " << b << " position " << i);
      CHECK(mlkv_test::rel_err(got, ref) <= bound);
    }
  }
  // Decode steps: one token each, logits of the last row.
  for (int s = 0; s < steps; ++s) {
    std::vector<std::int32_t> step_tokens, step_offs{0};
    for (int b = 0; b < B; ++b) {
      step_tokens.push_back(toks[static_cast<std::size_t>(b)][static_cast<std::size_t>(first[static_cast<std::size_t>(b)] + s)]);
      step_offs.push_back(b + 1);
    }
    std::vector<float> last(static_cast<std::size_t>(B) * V, NAN);
    model.forward(cache, ids, step_offs, step_tokens, logits_rows::last, last.data());
    for (int b = 0; b < B; ++b) {
      const std::size_t pos = static_cast<std::size_t>(first[static_cast<std::size_t>(b)] + s);
      REQUIRE(cache.length(ids[static_cast<std::size_t>(b)]) == static_cast<int>(pos) + 1);
      const std::vector<float> got(last.begin() + static_cast<std::ptrdiff_t>(b * V), last.begin() + static_cast<std::ptrdiff_t>((b + 1) * V));
      const std::vector<double> ref(want[static_cast<std::size_t>(b)].begin() + static_cast<std::ptrdiff_t>(pos * V),
                                    want[static_cast<std::size_t>(b)].begin() + static_cast<std::ptrdiff_t>((pos + 1) * V));
      INFO("decode: sequence " << b << " position " << pos);
      CHECK(mlkv_test::rel_err(got, ref) <= bound);
    }
  }
}

// f32 weights and cache: only f32 rounding separates the model from the oracle (observed about
// 1e-6 relative to the largest logit).
constexpr double f32_bound = 2e-5;
// bf16 weights and cache: every linear layer rounds its input activations to bf16 (relative
// 2^-9) and the cache rounds K/V; with these deliberately large weights (std 0.25) that adds up
// to 2.0e-2 .. 2.6e-2 over eight runs of 4-layer models. The bound leaves room for fresh seeds;
// the f32 test above is the one that pins the arithmetic down.
constexpr double bf16_bound = 6e-2;

template <std::size_t I>
constexpr mlkv::model_shape test_geometry = mlkv::test_geometries[I].shape;

template <class F>
void for_each_test_geometry(F&& f) {
  [&]<std::size_t... I>(std::index_sequence<I...>) {
    (f(std::integral_constant<std::size_t, I>{}), ...);
  }(std::make_index_sequence<mlkv::test_geometries.size()>{});
}

}  // namespace

TEST_CASE("model logits match the oracle on every test geometry (f32)") {
  for_each_test_geometry([](auto i) {
    check_against_oracle<test_geometry<decltype(i)::value>, float, float>(mlkv_test::fresh_seed(), true, "gelu",
                                                                          mlkv::model::key_rope::cached_rotated, f32_bound);
  });
}

TEST_CASE("model logits match the oracle: sequential residual, tanh GELU, keys rotated when read") {
  constexpr auto mlkv_uneven = test_geometry<4>;  // 5 layers, 3 owner layers, GQA
  check_against_oracle<mlkv_uneven, float, float>(mlkv_test::fresh_seed(), false, "gelu_new",
                                                  mlkv::model::key_rope::cached_rotated, f32_bound);
  check_against_oracle<mlkv_uneven, float, float>(mlkv_test::fresh_seed(), true, "gelu",
                                                  mlkv::model::key_rope::rotate_on_read, f32_bound);
  check_against_oracle<test_geometry<3>, float, float>(mlkv_test::fresh_seed(), false, "gelu",
                                                       mlkv::model::key_rope::rotate_on_read, f32_bound);
}

TEST_CASE("model logits match the oracle with bf16 weights and cache") {
  check_against_oracle<test_geometry<3>, mlkv::bf16, mlkv::bf16>(mlkv_test::fresh_seed(), true, "gelu",
                                                                 mlkv::model::key_rope::cached_rotated, bf16_bound);
  check_against_oracle<test_geometry<1>, mlkv::bf16, mlkv::bf16>(mlkv_test::fresh_seed(), true, "gelu",
                                                                 mlkv::model::key_rope::cached_rotated, bf16_bound);
}

TEST_CASE("the two rotary modes differ on consumer layers only") {
  // MHA (every layer an owner): the modes compute the same function. MLKV: they differ.
  auto run = [](auto geometry, mlkv::model::key_rope keys, std::uint64_t seed) {
    constexpr mlkv::model_shape S = decltype(geometry)::value;
    mlkv_test::temp_dir dir;
    const auto w = file_model<float>(S, dir.path, seed);
    cpu_model<float> model(w, {.keys = keys});
    mlkv::paged_kv_cache<S, float, 8> cache(16);
    const std::vector<std::int32_t> t = {3, 9, 1, 30, 7, 7, 12};
    std::vector<float> logits(t.size() * static_cast<std::size_t>(w.vocab));
    model.forward(cache, cache.add(), t, logits_rows::all, logits.data());
    return logits;
  };
  const std::uint64_t seed = mlkv_test::fresh_seed();
  using mha = std::integral_constant<mlkv::model_shape, test_geometry<0>>;
  using mlkv2 = std::integral_constant<mlkv::model_shape, test_geometry<3>>;
  REQUIRE(mlkv_test::rel_err(run(mha{}, mlkv::model::key_rope::cached_rotated, seed),
                             run(mha{}, mlkv::model::key_rope::rotate_on_read, seed)) <= 1e-5);
  REQUIRE(mlkv_test::rel_err(run(mlkv2{}, mlkv::model::key_rope::cached_rotated, seed),
                             run(mlkv2{}, mlkv::model::key_rope::rotate_on_read, seed)) > 1e-3);
}

TEST_CASE("decoding with the cache equals recomputing the whole sequence each step") {
  auto check = [](auto geometry) {
    constexpr mlkv::model_shape S = decltype(geometry)::value;
    INFO("geometry L=" << S.layers << " Hkv=" << S.kv_heads << " Lkv=" << S.kv_layers);
    mlkv_test::temp_dir dir;
    const auto w = file_model<float>(S, dir.path, mlkv_test::fresh_seed());
    cpu_model<float> model(w);
    mlkv::paged_kv_cache<S, float, 4> cache(256);
    const std::size_t V = static_cast<std::size_t>(w.vocab);
    std::vector<std::int32_t> seq = {5, 17, 2, 33, 8};
    const mlkv::seq_id inc = cache.add();
    std::vector<float> logits(V);
    model.forward(cache, inc, seq, logits_rows::last, logits.data());
    for (int step = 0; step < 12; ++step) {
      // Greedy next token from the incremental run.
      const auto next = static_cast<std::int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
      // Recompute the whole sequence in a fresh sequence of the same cache.
      const mlkv::seq_id fresh = cache.add();
      std::vector<float> full(V);
      model.forward(cache, fresh, seq, logits_rows::last, full.data());
      cache.free(fresh);
      REQUIRE(mlkv_test::rel_err(logits, full) <= 1e-5);
      REQUIRE(static_cast<std::int32_t>(std::max_element(full.begin(), full.end()) - full.begin()) == next);
      seq.push_back(next);
      model.forward(cache, inc, std::span<const std::int32_t>(&seq.back(), 1), logits_rows::last, logits.data());
      REQUIRE(cache.length(inc) == static_cast<int>(seq.size()));
    }
  };
  check(std::integral_constant<mlkv::model_shape, test_geometry<0>>{});  // MHA
  check(std::integral_constant<mlkv::model_shape, test_geometry<1>>{});  // GQA
  check(std::integral_constant<mlkv::model_shape, test_geometry<4>>{});  // MLKV, uneven groups
  check(std::integral_constant<mlkv::model_shape, test_geometry<5>>{});  // MLKV, one owner layer
}

TEST_CASE("a failed forward pass leaves every sequence as it was") {
  constexpr mlkv::model_shape S = test_geometry<3>;
  mlkv_test::temp_dir dir;
  const auto w = file_model<float>(S, dir.path, mlkv_test::fresh_seed());
  cpu_model<float> model(w);
  mlkv::paged_kv_cache<S, float, 4> cache(5);  // 20 tokens in all
  const mlkv::seq_id a = cache.add(), b = cache.add();
  const std::vector<std::int32_t> t(9, 3);
  model.forward(cache, a, t, logits_rows::none, nullptr);
  const int free_before = cache.free_pages();
  // b needs 3 pages for 12 tokens, a 1 more for 2: 4 > 2 free.
  const std::vector<mlkv::seq_id> ids = {a, b};
  const std::vector<std::int32_t> offs = {0, 2, 14}, many(14, 4);
  MLKV_CHECK_ERROR(model.forward(cache, ids, offs, many, logits_rows::none, nullptr), "pages");
  CHECK(cache.length(a) == 9);
  CHECK(cache.length(b) == 0);
  CHECK(cache.free_pages() == free_before);
  const std::vector<std::int32_t> bad = {3, 41};
  MLKV_CHECK_ERROR(model.forward(cache, b, bad, logits_rows::none, nullptr), "token 41 (row 1) is outside the vocabulary [0, 41)");
  CHECK(cache.length(b) == 0);
  // The cache of another geometry is refused with both geometries named.
  mlkv::paged_kv_cache<test_geometry<0>, float, 4> other(4);
  MLKV_CHECK_ERROR(model.forward(other, other.add(), t, logits_rows::none, nullptr), "differs from the model's");
}
