// bench/cpu_model: decode speed of the CPU reference model (Pythia-160M shape, bf16 weights,
// bf16 paged cache) for the paper's nine configurations, against its bandwidth floor measured
// in the same run.
//
//   cpu_model [--quick] [--threads N] [--out FILE] [--configs NAME,...]
//
// A step is one decode step of the whole batch: one new token per sequence through all 12
// layers and the output projection, with `context` tokens already cached per sequence. Its floor
// is the bytes it must read (every weight once, plus the K/V each layer reads: L x Hkv x 2 x D x
// context x 2 bytes per sequence) over the read bandwidth measured here.
#include <mlkv/cache/paged.hpp>
#include <mlkv/cpu/executor.hpp>
#include <mlkv/io/convert.hpp>
#include <mlkv/model/gpt_neox.hpp>
#include <mlkv/model/weights.hpp>
#include <mlkv/presets.hpp>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "../common/machine.hpp"

namespace {

struct row {
  std::string config;
  int batch = 0, context = 0;
  double us_per_step = 0, tokens_per_s = 0, weight_bytes = 0, kv_bytes = 0, floor_us = 0;
};

template <mlkv::model_shape S>
void bench_config(std::string_view name, const std::vector<int>& batches, const std::vector<int>& contexts,
                  mlkv::cpu::executor& pool, double gbps, std::vector<row>& rows) {
  const auto mha = mlkv::io::pythia160m_config();
  auto cfg = mha;
  cfg.num_key_value_heads = S.kv_heads;
  cfg.num_key_value_layers = S.kv_layers;
  cfg.intermediate_size = mlkv::io::plan_conversion(mha, S.kv_heads, S.kv_layers).new_intermediate;
  const auto w = mlkv::model::random_weights<mlkv::bf16>(cfg, 7);
  mlkv::model::cpu_model<mlkv::bf16> model(w, {.exec = &pool});
  using cache_t = mlkv::paged_kv_cache<S, mlkv::bf16, 16>;
  constexpr int warmup = 2, reps = 7;
  for (int B : batches) {
    for (int ctx : contexts) {
      cache_t cache(B * cache_t::blocks_for(ctx + warmup + reps + 1));
      std::vector<mlkv::seq_id> ids;
      for (int b = 0; b < B; ++b) ids.push_back(cache.add());
      // The context: random K/V written straight into the reserved pages.
      cache.reserve(ids, ctx);
      {
        std::mt19937 g(11);
        std::vector<mlkv::bf16> pool_values(4099);
        for (auto& v : pool_values) v = mlkv::from_float<mlkv::bf16>(std::uniform_real_distribution<float>(-1, 1)(g));
        const std::size_t n = cache_t::elements(cache.pages());
        for (std::size_t i = 0; i < n; ++i) cache.data()[i] = pool_values[i % pool_values.size()];
      }
      cache.commit(ids, ctx);
      std::vector<std::int32_t> offs(static_cast<std::size_t>(B) + 1), toks(static_cast<std::size_t>(B));
      for (int b = 0; b <= B; ++b) offs[static_cast<std::size_t>(b)] = b;
      for (int b = 0; b < B; ++b) toks[static_cast<std::size_t>(b)] = (b * 7919) % w.vocab;
      std::vector<float> logits(static_cast<std::size_t>(B) * w.vocab);
      const double s = mlkv_bench::median_seconds(
          [&] { model.forward(cache, ids, offs, toks, mlkv::model::logits_rows::last, logits.data()); }, reps, warmup);
      row r;
      r.config = std::string(name);
      r.batch = B;
      r.context = ctx;
      r.us_per_step = s * 1e6;
      r.tokens_per_s = B / s;
      r.weight_bytes = static_cast<double>(w.step_bytes());
      r.kv_bytes = static_cast<double>(B) * ctx * S.layers * S.kv_heads * 2.0 * S.head_dim * sizeof(mlkv::bf16);
      r.floor_us = (r.weight_bytes + r.kv_bytes) / (gbps * 1e9) * 1e6;
      std::printf("%-8s %6d %8d %12.0f %10.1f %11.1f %11.1f %10.0f %8.1f%%\n", r.config.c_str(), B, ctx, r.us_per_step,
                  r.tokens_per_s, r.weight_bytes / 1e6, r.kv_bytes / 1e6, r.floor_us, 100.0 * r.floor_us / r.us_per_step);
      std::fflush(stdout);
      rows.push_back(r);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  int threads = 0;
  std::string out = "bench/results/cpu_model.json";
  std::vector<std::string> only;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "--quick") {
      quick = true;
    } else if (a == "--threads" && i + 1 < argc) {
      threads = std::atoi(argv[++i]);
    } else if (a == "--out" && i + 1 < argc) {
      out = argv[++i];
    } else if (a == "--configs" && i + 1 < argc) {
      std::string s = argv[++i];
      for (std::size_t p = 0; p != std::string::npos;) {
        const std::size_t q = s.find(',', p);
        only.push_back(s.substr(p, q == std::string::npos ? q : q - p));
        p = q == std::string::npos ? q : q + 1;
      }
    } else {
      std::fprintf(stderr, "usage: cpu_model [--quick] [--threads N] [--out FILE] [--configs NAME,...]\n");
      return 2;
    }
  }
  mlkv::cpu::thread_pool pool(threads);
  double gbps = mlkv_bench::read_gbps(pool);
  const std::string machine = mlkv_bench::machine_name();
  std::printf("machine: %s, %d threads; read bandwidth %.1f GB/s (1 GiB buffer, best of 5)\n", machine.c_str(),
              pool.concurrency(), gbps);
  std::printf("model: Pythia-160M shape, bf16 weights, bf16 paged cache (16 tokens per page); step = one decode token "
              "per sequence\n\n");
  std::printf("%-8s %6s %8s %12s %10s %11s %11s %10s %9s\n", "config", "batch", "context", "us/step", "tokens/s",
              "weights MB", "KV MB", "floor us", "of floor");
  const std::vector<int> batches = quick ? std::vector<int>{1} : std::vector<int>{1, 16};
  const std::vector<int> contexts = quick ? std::vector<int>{2048} : std::vector<int>{2048, 8192};
  std::vector<row> rows;
  mlkv::for_each_paper_config([&](auto i) {
    constexpr mlkv::named_shape c = mlkv::paper_configs[decltype(i)::value];
    if (!only.empty() && std::find(only.begin(), only.end(), std::string(c.name)) == only.end()) return;
    bench_config<c.shape>(c.name, batches, contexts, pool, gbps, rows);
  });
  // The VM's bandwidth moves with its neighbours: measure again after the rows and hold every row
  // to the larger figure (the smaller floor).
  const double gbps_after = mlkv_bench::read_gbps(pool);
  const double gbps_before = gbps;
  if (gbps_after > gbps) {
    for (row& r : rows) r.floor_us *= gbps / gbps_after;
    gbps = gbps_after;
  }
  std::printf("\nread bandwidth before the rows %.1f GB/s, after %.1f GB/s; floors use %.1f GB/s:\n", gbps_before,
              gbps_after, gbps);
  int met = 0, ones = 0;
  for (const row& r : rows) {
    std::printf("%-8s %6d %8d %12.0f us  floor %10.0f us  %6.1f%% of floor\n", r.config.c_str(), r.batch, r.context,
                r.us_per_step, r.floor_us, 100.0 * r.floor_us / r.us_per_step);
    if (r.batch == 1) {
      ++ones;
      met += r.floor_us / r.us_per_step >= 0.7;
    }
  }
  std::printf("batch-1 rows at >= 70%% of their floor: %d of %d\n", met, ones);

  std::ofstream f(out);
  f << "{\n  \"machine\": \"" << machine << "\",\n  \"threads\": " << pool.concurrency()
    << ",\n  \"read_gbps_limit\": " << gbps << ",\n  \"read_gbps_before\": " << gbps_before
    << ",\n  \"read_gbps_after\": " << gbps_after
    << ",\n  \"model\": \"Pythia-160M shape, random bf16 weights, bf16 paged KV cache (16-token pages)\""
    << ",\n  \"step\": \"one decode token per sequence through every layer and the output projection\""
    << ",\n  \"rows\": [\n";
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const row& r = rows[i];
    f << "    {\"config\": \"" << r.config << "\", \"batch\": " << r.batch << ", \"context\": " << r.context
      << ", \"us_per_step\": " << r.us_per_step << ", \"tokens_per_s\": " << r.tokens_per_s
      << ", \"weight_bytes\": " << r.weight_bytes << ", \"kv_bytes\": " << r.kv_bytes
      << ", \"floor_us\": " << r.floor_us << ", \"pct_of_floor\": " << 100.0 * r.floor_us / r.us_per_step << "}"
      << (i + 1 < rows.size() ? "," : "") << "\n";
  }
  f << "  ]\n}\n";
  std::printf("\nwrote %s\n", out.c_str());
  return 0;
}
