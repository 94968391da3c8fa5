// Generation: greedy and sampled token choice, and batched generation where requests join and
// leave between steps, each producing what it produces alone.
#include <mlkv/cache/paged.hpp>
#include <mlkv/compiled_geometries.hpp>
#include <mlkv/model/generate.hpp>
#include <mlkv/model/weights.hpp>

#include <cmath>
#include <map>
#include <vector>

#include "catch.hpp"
#include "model/model_test_util.hpp"
#include "test_util.hpp"

using mlkv::model::pick_token;
using mlkv::model::sampling;

TEST_CASE("greedy picks the first maximum; top_k = 1 and a tiny top_p are greedy") {
  std::mt19937_64 g(1);
  const std::vector<float> l = {0.1f, 2.f, -1.f, 2.f, 0.5f};
  REQUIRE(pick_token(l, sampling{}, g) == 1);
  sampling s;
  s.temperature = 1.3f;
  s.top_k = 1;
  for (int i = 0; i < 50; ++i) REQUIRE(pick_token(l, s, g) == 1);  // tie: the lower id ranks first
  s.top_k = 0;
  s.top_p = 1e-6f;
  for (int i = 0; i < 50; ++i) REQUIRE(pick_token(l, s, g) == 1);
}

TEST_CASE("sampling follows softmax(logits / T) restricted by top_k and top_p") {
  mlkv_test::rng r(mlkv_test::fresh_seed());
  std::mt19937_64 g(r.gen());
  const std::vector<float> l = {1.f, 0.f, 2.f, -0.5f, 1.5f, -3.f};
  auto freq = [&](const sampling& s, int n) {
    std::vector<double> f(l.size(), 0.0);
    for (int i = 0; i < n; ++i) f[static_cast<std::size_t>(pick_token(l, s, g))] += 1.0 / n;
    return f;
  };
  auto softmax = [&](float T, std::vector<int> keep) {
    std::vector<double> p(l.size(), 0.0);
    double z = 0;
    for (int i : keep) z += std::exp(l[static_cast<std::size_t>(i)] / T);
    for (int i : keep) p[static_cast<std::size_t>(i)] = std::exp(l[static_cast<std::size_t>(i)] / T) / z;
    return p;
  };
  const int n = 40000;
  // Each frequency within 5 standard deviations of its probability.
  auto close = [&](const std::vector<double>& f, const std::vector<double>& p) {
    for (std::size_t i = 0; i < p.size(); ++i) {
      INFO("token " << i << " frequency " << f[i] << " probability " << p[i]);
      CHECK(std::abs(f[i] - p[i]) <= 5 * std::sqrt(p[i] * (1 - p[i]) / n) + 1e-12);
    }
  };
  sampling s;
  s.temperature = 0.7f;
  close(freq(s, n), softmax(0.7f, {0, 1, 2, 3, 4, 5}));
  s.top_k = 3;  // tokens 2, 4, 0
  close(freq(s, n), softmax(0.7f, {2, 4, 0}));
  s.top_k = 0;
  s.temperature = 1.f;
  s.top_p = 0.6f;  // p(2) = 0.43, p(4) = 0.26: {2, 4} is the smallest set reaching 0.6
  close(freq(s, n), softmax(1.f, {2, 4}));
}

TEST_CASE("bad sampling settings are refused with the value and range") {
  sampling s;
  s.top_p = 0.f;
  MLKV_CHECK_ERROR(mlkv::model::check_sampling(s, 10), "top_p (0) must be in (0, 1]");
  s = sampling{};
  s.temperature = -1.f;
  MLKV_CHECK_ERROR(mlkv::model::check_sampling(s, 10), "temperature (-1) must be finite and >= 0");
  s = sampling{};
  s.stop = {10};
  MLKV_CHECK_ERROR(mlkv::model::check_sampling(s, 10), "stop token 10 is outside the vocabulary [0, 10)");
  s = sampling{};
  s.max_new_tokens = 0;
  MLKV_CHECK_ERROR(mlkv::model::check_sampling(s, 10), "max_new_tokens (0) must be at least 1");
}

TEST_CASE("requests join and leave the batch; each produces what it produces alone") {
  constexpr mlkv::model_shape S = mlkv::test_geometries[4].shape;  // MLKV, uneven groups
  auto cfg = mlkv_test::small_config(S, 41, 40);
  const auto w = mlkv::model::random_weights<float>(cfg, mlkv_test::fresh_seed(), 0.25f);
  mlkv::model::cpu_model<float> model(w);
  using cache_t = mlkv::paged_kv_cache<S, float, 4>;

  struct req {
    std::vector<std::int32_t> prompt;
    sampling s;
    int join_step;
  };
  std::vector<req> reqs;
  mlkv_test::rng r(mlkv_test::fresh_seed());
  for (int i = 0; i < 6; ++i) {
    req q;
    for (int t = 0, n = r.integer(1, 9); t < n; ++t) q.prompt.push_back(r.integer(0, 40));
    q.s.max_new_tokens = r.integer(1, 8);
    q.s.temperature = i % 2 == 0 ? 0.f : 0.9f;
    q.s.top_k = i == 3 ? 5 : 0;
    q.s.top_p = i == 5 ? 0.8f : 1.f;
    q.s.seed = r.gen();
    if (i == 2) q.s.stop = {q.prompt[0]};
    q.join_step = i / 2;
    reqs.push_back(q);
  }
  // Alone.
  std::vector<std::vector<std::int32_t>> alone;
  for (const auto& q : reqs) {
    cache_t cache(64);
    mlkv::model::generator<float, cache_t> gen(model, cache);
    gen.add(q.prompt, q.s);
    std::vector<std::int32_t> out;
    while (!gen.idle())
      for (const auto& e : gen.step()) out.push_back(e.token);
    alone.push_back(out);
    CHECK(cache.sequences() == 0);  // the finished request freed its sequence
    CHECK(cache.free_pages() == cache.pages());
  }
  // Together, joining at different steps.
  cache_t cache(64);
  mlkv::model::generator<float, cache_t> gen(model, cache);
  std::map<int, int> which;  // request id -> index
  std::map<int, std::vector<std::int32_t>> got;
  std::map<int, bool> finished;
  for (int step = 0; step < 40 && (step < 4 || !gen.idle()); ++step) {
    for (std::size_t i = 0; i < reqs.size(); ++i) {
      if (reqs[i].join_step == step) which[gen.add(reqs[i].prompt, reqs[i].s)] = static_cast<int>(i);
    }
    for (const auto& e : gen.step()) {
      REQUIRE_FALSE(finished[e.request]);
      got[e.request].push_back(e.token);
      finished[e.request] = e.finished;
    }
  }
  REQUIRE(gen.idle());
  for (const auto& [id, i] : which) {
    INFO("request " << i);
    CHECK(finished[id]);
    CHECK(got[id] == alone[static_cast<std::size_t>(i)]);
    const auto& q = reqs[static_cast<std::size_t>(i)];
    const bool stopped = !q.s.stop.empty() && got[id].back() == q.s.stop[0];
    CHECK((stopped || static_cast<int>(got[id].size()) == q.s.max_new_tokens));
  }
  CHECK(cache.sequences() == 0);
  CHECK(cache.free_pages() == cache.pages());
}

TEST_CASE("cancel frees a request; a full pool fails the step without changing anything") {
  constexpr mlkv::model_shape S = mlkv::test_geometries[3].shape;
  auto cfg = mlkv_test::small_config(S, 41, 40);
  const auto w = mlkv::model::random_weights<float>(cfg, mlkv_test::fresh_seed(), 0.25f);
  mlkv::model::cpu_model<float> model(w);
  using cache_t = mlkv::paged_kv_cache<S, float, 4>;
  cache_t cache(3);  // 12 tokens
  mlkv::model::generator<float, cache_t> gen(model, cache);
  sampling s;
  s.max_new_tokens = 20;
  const int a = gen.add(std::vector<std::int32_t>(6, 1), s);
  const int b = gen.add(std::vector<std::int32_t>(7, 2), s);  // 6 + 7 tokens need 4 pages
  MLKV_CHECK_ERROR(gen.step(), "pages");
  CHECK(cache.length(gen.sequence(a)) == 0);
  CHECK(gen.waiting() == 2);
  REQUIRE(gen.cancel(b));
  REQUIRE_FALSE(gen.cancel(b));
  const auto ev = gen.step();
  REQUIRE(ev.size() == 1);
  CHECK(ev[0].request == a);
  CHECK(cache.length(gen.sequence(a)) == 6);
  MLKV_CHECK_ERROR(gen.add(std::vector<std::int32_t>{99}, s), "prompt token 99 (position 0) is outside the vocabulary [0, 41)");
}
