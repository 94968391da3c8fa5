// mlkv-memory: the KV cache of the paper's nine Pythia-160M configurations (Zuhri et al. 2024),
// and a few decode steps of attention over each.
//
//   mlkv-memory [--batch B] [--tokens T] [--dtype f32|f16|bf16] [--steps N] [--csv]
//               [--plan] [--budget-gib G] [--plan-tokens N]
//
// Defaults (batch 8, 2047 tokens, f32) are the paper's measurement: cache_mib then equals the
// paper's measured cache sizes. --csv prints machine-readable rows only.
//
// After the table, capacity planning (mlkv/plan.hpp): how many sequences of --plan-tokens tokens
// (default 2048) of each configuration fit in --budget-gib GiB (default 80, one H100), in a
// contiguous cache and in paged caches of 16 and 64 tokens per page (pages and block tables
// counted). --plan prints only that table.
#include <mlkv/mlkv.hpp>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace {

struct options {
  int batch = 8;
  int tokens = 2047;
  mlkv::dtype dtype = mlkv::dtype::f32;
  int steps = 2;
  bool csv = false;
  bool plan_only = false;
  int budget_gib = 80;
  int plan_tokens = 2048;
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "mlkv-memory: %s\n"
               "usage: mlkv-memory [--batch B] [--tokens T] [--dtype f32|f16|bf16] [--steps N] [--csv]\n"
               "                   [--plan] [--budget-gib G] [--plan-tokens N]\n"
               "  --batch B    sequences in the batch, 1..65536 (default 8)\n"
               "  --tokens T   tokens per sequence, 1..1048576 (default 2047)\n"
               "  --dtype      cache storage type (default f32)\n"
               "  --steps N    decode steps timed per configuration, 0..1000 (default 2; 0 skips them)\n"
               "  --csv        print CSV rows only, no decode steps\n"
               "  --plan       print only the capacity plan (sequences that fit in the budget)\n"
               "  --budget-gib G   memory budget of the capacity plan in GiB, 1..1048576 (default 80)\n"
               "  --plan-tokens N  tokens per sequence of the capacity plan, 1..1048576 (default 2048)\n",
               why);
  std::exit(2);
}

int parse_int(const char* flag, const char* s, int lo, int hi) {
  char* end = nullptr;
  const long v = std::strtol(s, &end, 10);
  if (end == s || *end != '\0' || v < lo || v > hi) {
    usage((std::string(flag) + " takes an integer in " + std::to_string(lo) + ".." + std::to_string(hi) +
           ", got '" + s + "'").c_str());
  }
  return static_cast<int>(v);
}

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) usage((std::string(a) + " needs a value").c_str());
      return argv[++i];
    };
    if (a == "--batch") {
      o.batch = parse_int("--batch", value(), 1, 65536);
    } else if (a == "--tokens") {
      o.tokens = parse_int("--tokens", value(), 1, 1 << 20);
    } else if (a == "--steps") {
      o.steps = parse_int("--steps", value(), 0, 1000);
    } else if (a == "--dtype") {
      const char* v = value();
      if (!mlkv::parse_dtype(v, o.dtype)) usage((std::string("--dtype takes f32, f16 or bf16, got '") + v + "'").c_str());
    } else if (a == "--csv") {
      o.csv = true;
    } else if (a == "--plan") {
      o.plan_only = true;
    } else if (a == "--budget-gib") {
      o.budget_gib = parse_int("--budget-gib", value(), 1, 1 << 20);
    } else if (a == "--plan-tokens") {
      o.plan_tokens = parse_int("--plan-tokens", value(), 1, 1 << 20);
    } else if (a == "--help" || a == "-h") {
      usage("KV cache sizes of the paper's configurations");
    } else {
      usage((std::string("unknown argument '") + std::string(a) + "'").c_str());
    }
  }
  return o;
}

double mib(const mlkv::model_shape& s, const options& o) {
  return static_cast<double>(s.bytes_per_token(o.dtype)) * o.batch * o.tokens / (1024.0 * 1024.0);
}

// Decode steps of the reference attention through all 12 layers; returns ms per step.
template <mlkv::model_shape S, class T>
double time_decode(const options& o) {
  const int steps = o.steps;
  const int capacity = o.tokens;
  const int prefix = capacity > steps ? capacity - steps : 0;
  mlkv::kv_cache<S, T> cache(o.batch, capacity);
  // The prefix: random K/V written straight into the slabs (cheaper than appending through rope).
  {
    std::mt19937 gen(42);
    std::uniform_real_distribution<float> u(-1.f, 1.f);
    std::vector<T> pool(4093);
    for (auto& x : pool) x = mlkv::from_float<T>(u(gen));
    const std::size_t n = cache.elements(o.batch, capacity);
    for (std::size_t i = 0; i < n; ++i) cache.data()[i] = pool[i % pool.size()];
    cache.commit_all(prefix);
  }
  const int D = S.head_dim, Hq = S.q_heads, Hkv = S.kv_heads;
  const mlkv::rotary rope(mlkv::rope_config::from_pct(D, 0.25, 10000.f));
  std::vector<float> k(static_cast<std::size_t>(o.batch) * Hkv * D, 0.25f), v(k.size(), -0.5f);
  std::vector<float> q(static_cast<std::size_t>(o.batch) * Hq * D, 0.125f), out(q.size());
  std::vector<std::int32_t> ctx(static_cast<std::size_t>(o.batch));
  const int run = capacity - prefix;
  const auto t0 = std::chrono::steady_clock::now();
  for (int s = 0; s < run; ++s) {
    for (int b = 0; b < o.batch; ++b) ctx[static_cast<std::size_t>(b)] = cache.length(b) + 1;
    for (int l = 0; l < S.layers; ++l) {
      if (S.owner(l)) cache.append_step(S.kv_slot(l), k.data(), v.data(), &rope);
      mlkv::cpu::reference_decode(cache.layer_view(l), Hq, q.data(), out.data(), o.batch, ctx.data(),
                                  mlkv::cpu::default_scale(D));
    }
    cache.commit_all(1);
  }
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  return run > 0 ? ms / run : 0.0;
}

// How many sequences of o.plan_tokens tokens fit in o.budget_gib GiB: contiguous, and paged with
// 16 and 64 tokens per page (mlkv/plan.hpp; pages and block tables both count).
void print_plan(const options& o) {
  const std::uint64_t budget = static_cast<std::uint64_t>(o.budget_gib) * mlkv::gib;
  const auto dt = mlkv::name_of(o.dtype);
  std::printf("Capacity plan: %d-token sequences in %d GiB, %.*s\n\n", o.plan_tokens, o.budget_gib,
              static_cast<int>(dt.size()), dt.data());
  std::printf("%-8s %11s %14s %14s %14s %15s %15s\n", "config", "bytes/tok", "contiguous", "paged P=16", "paged P=64",
              "overhead P=16", "overhead P=64");
  for (const auto& c : mlkv::paper_configs) {
    const auto flat = mlkv::plan_contiguous(c.shape, o.dtype, budget, o.plan_tokens);
    const auto p16 = mlkv::plan_paged(c.shape, o.dtype, 16, budget, o.plan_tokens);
    const auto p64 = mlkv::plan_paged(c.shape, o.dtype, 64, budget, o.plan_tokens);
    std::printf("%-8.*s %11zu %14lld %14lld %14lld %13.3f %% %13.3f %%\n", static_cast<int>(c.name.size()), c.name.data(),
                c.shape.bytes_per_token(o.dtype), static_cast<long long>(flat.sequences),
                static_cast<long long>(p16.sequences), static_cast<long long>(p64.sequences),
                100.0 * static_cast<double>(p16.overhead_bytes_per_sequence) / static_cast<double>(p16.token_bytes_per_sequence),
                100.0 * static_cast<double>(p64.overhead_bytes_per_sequence) / static_cast<double>(p64.token_bytes_per_sequence));
  }
  std::printf("\noverhead: what paging adds to a sequence's K/V bytes (its last page's unused tokens and its block\n"
              "table of 4 bytes per page), as a share of the K/V bytes.\n");
}

}  // namespace

int main(int argc, char** argv) {
  const options o = parse(argc, argv);
  const auto& mha = mlkv::paper_configs[0].shape;
  const auto& mqa = mlkv::paper_configs[3].shape;
  if (o.csv) {
    std::printf("config,layers,q_heads,kv_heads,kv_layers,total_kv_heads,bytes_per_token,cache_mib,ratio_vs_mha,ratio_vs_mqa\n");
    for (const auto& c : mlkv::paper_configs) {
      const auto& s = c.shape;
      std::printf("%.*s,%d,%d,%d,%d,%d,%zu,%.10g,%.10g,%.10g\n", static_cast<int>(c.name.size()), c.name.data(), s.layers,
                  s.q_heads, s.kv_heads, s.kv_layers, s.total_kv_heads(), s.bytes_per_token(o.dtype), mib(s, o),
                  mib(s, o) / mib(mha, o), mib(s, o) / mib(mqa, o));
    }
    return 0;
  }
  if (o.plan_only) {
    print_plan(o);
    return 0;
  }

  std::printf("MLKV KV cache of Pythia-160M (12 layers, 12 heads, head dim 64): batch %d, %d tokens, %.*s\n\n", o.batch,
              o.tokens, static_cast<int>(mlkv::name_of(o.dtype).size()), mlkv::name_of(o.dtype).data());
  std::printf("%-8s  %-30s %9s %11s %12s %8s %8s %12s\n", "config", "owner layers", "KV heads", "bytes/tok", "cache MiB",
              "vs MHA", "vs MQA", "ms/step");
  mlkv::for_each_paper_config([&](auto i) {
    constexpr mlkv::named_shape c = mlkv::paper_configs[decltype(i)::value];
    constexpr mlkv::model_shape s = c.shape;
    std::string owners;
    for (int slot = 0; slot < s.kv_layers; ++slot) owners += (slot ? "," : "") + std::to_string(s.owner_layer(slot));
    std::printf("%-8.*s  %-30s %9d %11zu %12.4f %7.4fx %7.4fx ", static_cast<int>(c.name.size()), c.name.data(),
                owners.c_str(), s.total_kv_heads(), s.bytes_per_token(o.dtype), mib(s, o), mib(s, o) / mib(mha, o),
                mib(s, o) / mib(mqa, o));
    std::fflush(stdout);
    double ms = 0;
    if (o.steps > 0) {
      ms = mlkv::visit_dtype(o.dtype, [&](auto t) { return time_decode<s, decltype(t)>(o); });
      std::printf("%12.2f\n", ms);
    } else {
      std::printf("%12s\n", "-");
    }
  });
  std::printf("\nms/step: one decode step (all 12 layers, every sequence) of the CPU reference attention.\n\n");
  print_plan(o);
  return 0;
}
