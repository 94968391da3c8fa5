// Threads and context splits: results do not depend on the number of threads beyond rounding
// (1, 2 and 7 threads), forced context chunks merged by log-sum-exp match the oracle on every
// geometry, an engine's own executor runs the same tasks, and the thread pool runs every task
// exactly once.
#include <mlkv/cpu/attention.hpp>
#include <mlkv/cpu/executor.hpp>

#include <algorithm>
#include <atomic>
#include <limits>
#include <thread>
#include <vector>

#include "cpu_test_util.hpp"

using namespace mlkv_cpu_test;
using mlkv::cpu::attention_options;
using mlkv::cpu::executor;
using mlkv::cpu::thread_pool;

namespace {

/// Runs the kernel with the first executor (its output goes to the harness and the oracle) and
/// again with each other executor, which must agree with the first within rounding.
auto on_every_pool(isa i, std::vector<executor*> pools, int split, double& worst) {
  return [=, &worst](const auto& view, int q_heads, const float* q, float* out, const mlkv::cpu::attention_batch& ab,
                     float scale) {
    mlkv::cpu::attention(view, q_heads, q, out, ab, scale, {.isa = i, .exec = pools[0], .split_tokens = split});
    const std::size_t n = static_cast<std::size_t>(ab.total_rows()) * q_heads * view.head_dim;
    const std::vector<float> first(out, out + n);
    std::vector<float> again(n);
    for (std::size_t p = 1; p < pools.size(); ++p) {
      std::fill(again.begin(), again.end(), std::numeric_limits<float>::quiet_NaN());
      mlkv::cpu::attention(view, q_heads, q, again.data(), ab, scale, {.isa = i, .exec = pools[p], .split_tokens = split});
      const double e = mlkv_test::rel_err(again, first);
      INFO("threads " << pools[p]->concurrency() << " vs " << pools[0]->concurrency());
      CHECK(e <= 1e-5);
      worst = std::max(worst, e);
    }
  };
}

}  // namespace

TEST_CASE("results do not depend on the number of threads (1, 2, 7) beyond rounding", "[cpu][threads]") {
  thread_pool one(1), two(2), seven(7);
  const std::vector<executor*> pools{&one, &two, &seven};
  double worst = 0;
  for (isa i : tested_isas()) {
    INFO("path " << mlkv::cpu::name_of(i));
    // The harness's scenario with forced chunks of 5 tokens (many partials merged), on 1, 2
    // and 7 threads: the tasks are the same, their order and threads differ.
    mlkv_test::scenario_options opt;
    auto one = [&](auto g) {
      mlkv_test::run_attention_scenario<decltype(g)::shape, mlkv::bf16>(on_every_pool(i, pools, 5, worst),
                                                                        mlkv_test::fresh_seed(),
                                                                        options_for<mlkv::bf16>(i, opt));
    };
    if (reduced()) {
      one(mlkv_test::geometry<mlkv_test::group7_d96>{});
      one(mlkv_test::geometry<mlkv_test::yoco>{});
    } else {
      mlkv_test::for_each_geometry<reduced_list>(one);
      one(mlkv_test::geometry<mlkv_test::heads32_d128>{});  // queries in lanes (AVX-512)
    }
  }
  if (std::getenv("MLKV_TEST_VERBOSE") != nullptr) std::printf("worst difference between thread counts: %.3g\n", worst);
}

namespace {
/// An executor that counts the tasks of the last call it ran (the plan's cut of the work).
class counting_executor final : public executor {
 public:
  explicit counting_executor(executor& e) : e_(e) {}
  int concurrency() const override { return e_.concurrency(); }
  void parallel_for(int tasks, mlkv::cpu::task_ref body) override {
    last = tasks;
    e_.parallel_for(tasks, body);
  }
  int last = 0;

 private:
  executor& e_;
};

/// Long contexts and few (sequence, KV head) blocks: the automatic plan cuts each context into
/// chunks whose number depends on the thread count (none on 1 thread, more on 7 than on 1, and
/// on 2 threads too where there are fewer blocks than two per thread: `cut_on_two`, decode
/// rows). Decode rows and a short prefill chunk at the end of the contexts, against the oracle
/// (on the queries the path reads) and across thread counts.
template <mlkv::model_shape S, class T>
void long_context_threads(isa i, const std::vector<executor*>& pools, double& worst, bool cut_on_two = false) {
  constexpr int Hq = S.q_heads, Hkv = S.kv_heads, D = S.head_dim, B = 2, cap = 3100;
  mlkv_test::rng r(mlkv_test::fresh_seed());
  mlkv::kv_cache<S, T> cache(B, cap);
  const std::int32_t ctx[B] = {reduced() ? 1201 : 3001, reduced() ? 777 : 1777};
  std::vector<double> ks[B], vs[B];  // as stored, for the oracle
  for (int b = 0; b < B; ++b) {
    const auto k = r.vec(std::size_t{cap} * Hkv * D), v = r.vec(std::size_t{cap} * Hkv * D);
    cache.append(0, b, ctx[b], k.data(), v.data());
    ks[b] = stored<T>(k.data(), static_cast<std::size_t>(ctx[b]) * Hkv * D);
    vs[b] = stored<T>(v.data(), static_cast<std::size_t>(ctx[b]) * Hkv * D);
  }
  const float scale = mlkv::cpu::default_scale(D);
  for (int rows : {1, 9}) {
    INFO("rows per sequence " << rows);
    const std::int32_t offs[B + 1] = {0, rows, 2 * rows};
    const mlkv::cpu::attention_batch ab{B, ctx, rows == 1 ? nullptr : offs};
    const auto q = r.vec(std::size_t{2} * rows * Hq * D);
    std::vector<double> want(q.size()), slack(q.size());  // the oracle on the values the path reads
    const std::size_t per_seq = static_cast<std::size_t>(rows) * Hq * D;
    for (int b = 0; b < B; ++b) {
      const std::size_t o = static_cast<std::size_t>(b) * per_seq;
      oracle_for<T>(i, std::vector<double>(q.begin() + static_cast<std::ptrdiff_t>(o), q.begin() + static_cast<std::ptrdiff_t>(o + per_seq)),
                    rows, Hq, Hkv, D, ks[b].data(), vs[b].data(), ctx[b], scale, want.data() + o, slack.data() + o);
    }
    std::vector<float> first;
    std::vector<int> tasks;
    for (executor* pool : pools) {
      INFO("threads " << pool->concurrency());
      counting_executor ex(*pool);
      std::vector<float> out(q.size(), std::numeric_limits<float>::quiet_NaN());
      mlkv::cpu::attention(cache.slot_view(0), Hq, q.data(), out.data(), ab, scale,
                           {.isa = i, .exec = &ex, .prefetch_min_bytes = ex.concurrency() == 2 ? 0 : std::size_t{16} << 20});
      tasks.push_back(ex.last);
      CHECK(mlkv_test::rel_err_slack(out, want, slack) <= mlkv_test::tight_bound);
      if (first.empty()) {
        first = out;
      } else {
        const double e = mlkv_test::rel_err(out, first);
        CHECK(e <= 1e-5);
        worst = std::max(worst, e);
      }
    }
    // The contexts were cut (pools: 1, 2 and 7 threads), so partials were merged.
    CHECK(tasks.back() > tasks.front());
    if (cut_on_two && rows == 1) CHECK(tasks[1] > tasks.front());
  }
}
}  // namespace

TEST_CASE("long contexts cut by thread count give the same results beyond rounding", "[cpu][threads]") {
  thread_pool one(1), two(2), seven(7);
  const std::vector<executor*> pools{&one, &two, &seven};
  double worst = 0;
  for (isa i : tested_isas()) {
    INFO("path " << mlkv::cpu::name_of(i));
    long_context_threads<mlkv_test::single_owner_d80, float>(i, pools, worst);
    long_context_threads<mlkv_test::group7_d96, mlkv::f16>(i, pools, worst);
    long_context_threads<mlkv_test::uneven_mqa_d80, mlkv::bf16>(i, pools, worst, /*cut_on_two=*/true);
  }
  if (std::getenv("MLKV_TEST_VERBOSE") != nullptr) std::printf("worst difference between thread counts: %.3g\n", worst);
}

TEMPLATE_TEST_CASE("context chunks merged by log-sum-exp match the oracle on every geometry", "[cpu][threads]", float,
                   mlkv::f16, mlkv::bf16) {
  thread_pool two(2);
  for (isa i : tested_isas()) {
    INFO("path " << mlkv::cpu::name_of(i));
    // 1 token per chunk (most chunks of a row see a single token), 7 (chunks end inside a
    // SIMD tile), 32 (chunks of whole tiles).
    for (int split : {1, 7, 32}) {
      INFO("split_tokens " << split);
      auto one = [&](auto g) {
        mlkv_test::run_attention_scenario<decltype(g)::shape, TestType>(
            kernel({.isa = i, .exec = &two, .split_tokens = split}), mlkv_test::fresh_seed(), options_for<TestType>(i));
      };
      if (split == 7 && !reduced()) {
        mlkv_test::for_each_geometry<mlkv_test::awkward_list>(one);
      } else {
        one(mlkv_test::geometry<mlkv_test::group7_d96>{});
        one(mlkv_test::geometry<mlkv_test::tiny>{});
      }
    }
  }
}

namespace {
/// An engine's executor: its own threads, tasks handed out in reverse order, strided.
class reverse_executor final : public executor {
 public:
  explicit reverse_executor(int threads) : threads_(threads) {}
  int concurrency() const override { return threads_; }
  void parallel_for(int tasks, mlkv::cpu::task_ref body) override {
    std::vector<std::thread> ts;
    for (int w = 0; w < threads_; ++w) {
      ts.emplace_back([=, this] {
        for (int i = tasks - 1 - w; i >= 0; i -= threads_) body(i);
      });
    }
    for (auto& t : ts) t.join();
    ++calls;
  }
  int calls = 0;

 private:
  int threads_;
};
}  // namespace

TEST_CASE("an engine's own executor runs the kernels: same results as serial with the same plan", "[cpu][threads]") {
  constexpr mlkv::model_shape S = mlkv_test::llama_like;
  constexpr int Hq = S.q_heads, Hkv = S.kv_heads, D = S.head_dim, B = 3;
  mlkv_test::rng r(mlkv_test::fresh_seed());
  mlkv::kv_cache<S, mlkv::bf16> cache(B, 300);
  const std::int32_t ctx[B] = {300, 1, 177};
  std::vector<double> ks[B], vs[B];  // as stored, for the oracle
  for (int b = 0; b < B; ++b) {
    const auto k = r.vec(std::size_t{300} * Hkv * D), v = r.vec(std::size_t{300} * Hkv * D);
    cache.append(0, b, ctx[b], k.data(), v.data());
    ks[b] = stored<mlkv::bf16>(k.data(), static_cast<std::size_t>(ctx[b]) * Hkv * D);
    vs[b] = stored<mlkv::bf16>(v.data(), static_cast<std::size_t>(ctx[b]) * Hkv * D);
  }
  const auto q = r.vec(std::size_t{B} * Hq * D);
  const float scale = mlkv::cpu::default_scale(D);
  reverse_executor engine(3);
  for (isa i : tested_isas()) {
    INFO("path " << mlkv::cpu::name_of(i));
    for (int split : {16, 100}) {
      std::vector<float> serial(q.size()), threaded(q.size(), std::numeric_limits<float>::quiet_NaN());
      mlkv::cpu::decode(cache.slot_view(0), Hq, q.data(), serial.data(), B, ctx, scale, {.isa = i, .split_tokens = split});
      mlkv::cpu::decode(cache.slot_view(0), Hq, q.data(), threaded.data(), B, ctx, scale,
                        {.isa = i, .exec = &engine, .split_tokens = split});
      // The same tasks in any order on any threads: identical, bit for bit (the merge always
      // sums the chunks in order).
      REQUIRE(serial == threaded);
      // Against the oracle on the values the path reads (bf16 queries and weights for the BF16
      // dot product).
      std::vector<double> want(q.size()), slack(q.size());
      const std::size_t per_seq = std::size_t{Hq} * D;
      for (int b = 0; b < B; ++b) {
        const std::size_t o = static_cast<std::size_t>(b) * per_seq;
        oracle_for<mlkv::bf16>(i, std::vector<double>(q.begin() + static_cast<std::ptrdiff_t>(o), q.begin() + static_cast<std::ptrdiff_t>(o + per_seq)),
                               1, Hq, Hkv, D, ks[b].data(), vs[b].data(), ctx[b], scale, want.data() + o, slack.data() + o);
      }
      CHECK(mlkv_test::rel_err_slack(serial, want, slack) <= mlkv_test::tight_bound);
    }
  }
  REQUIRE(engine.calls > 0);
}

TEST_CASE("the thread pool runs every task exactly once, batch after batch", "[cpu][threads]") {
  for (int threads : {1, 2, 7}) {
    thread_pool pool(threads, std::chrono::microseconds(threads == 7 ? 0 : 50));
    REQUIRE(pool.concurrency() == threads);
    for (int tasks : {0, 1, 2, 3, 7, 64, 1000}) {
      for (int rep = 0; rep < 20; ++rep) {
        std::vector<std::atomic<int>> hits(static_cast<std::size_t>(tasks));
        std::atomic<int> total{0};
        auto body = [&](int i) {
          hits[static_cast<std::size_t>(i)].fetch_add(1, std::memory_order_relaxed);
          total.fetch_add(1, std::memory_order_relaxed);
        };
        pool.parallel_for(tasks, mlkv::cpu::task_ref(body));
        REQUIRE(total.load() == tasks);
        for (auto& h : hits) REQUIRE(h.load() == 1);
      }
    }
  }
  REQUIRE_THROWS_WITH(thread_pool(-1), "mlkv: thread pool size (-1) must be between 1 and 4096");
}
