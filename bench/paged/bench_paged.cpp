// mlkv-bench-paged: paged versus contiguous decode attention on the same K/V, and the memory
// that paging costs.
//
//   mlkv-bench-paged [--reps N] [--threads N] [--out FILE] [--quick] [--note TEXT]
//
// For each geometry (bf16 storage, batch 8, context 4096) the same K/V rows are appended to a
// contiguous cache and to paged caches of 16 and 64 tokens per page whose pages were handed out
// in random order (a fragmented pool). One step is the decode attention over every owner slot
// once (what a decode step must read; consumer layers re-read their owner's slot), with the fast
// CPU kernel (cpu/attention.hpp, the best ISA path of this CPU, prefetching as in a model step).
// The caches run in rotating order within each repetition; the table reports the minimum over
// repetitions (the machine is shared, so the minimum is the least disturbed figure) and the
// median. P=16 is also timed with one KV head per decode task (the walk before the automatic
// choice of attention_options::kv_heads_per_task).
//  - cold: the last-level cache is flushed before each step (a 96 MiB sweep), as in a model
//    where weights stream through the caches between attention calls: K/V come from DRAM;
//  - warm: the same step repeated back to back.
// Bandwidth: K/V bytes a step reads over its time, next to a measured read bandwidth of this
// machine (a sum over 1 GiB on the same threads).
// Both caches own their memory, which asks for transparent huge pages (detail::cache_memory in
// cache/buffer.hpp), so the table compares paging with its contiguous counterpart and not with
// 4 KiB pages.
#include <mlkv/cache/contiguous.hpp>
#include <mlkv/cache/paged.hpp>
#include <mlkv/cpu/attention.hpp>
#include <mlkv/plan.hpp>
#include <mlkv/presets.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <memory>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

using clk = std::chrono::steady_clock;

struct options {
  int reps = 25;
  int threads = 1;
  std::string out = "bench/results/paged.json";
  bool quick = false;
  std::string note;
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "mlkv-bench-paged: %s\n"
               "usage: mlkv-bench-paged [--reps N] [--threads N] [--out FILE] [--quick] [--note TEXT]\n"
               "  --reps N     repetitions per measurement, 3..1000 (default 25)\n"
               "  --threads N  kernel threads, 1..256 (default 1; both 1 and N are measured when N > 1)\n"
               "  --out FILE   JSON results (default bench/results/paged.json)\n"
               "  --quick      context 1024 and 5 repetitions (a smoke run)\n"
               "  --note TEXT  a remark on the machine, stored in the JSON (e.g. that it was shared)\n",
               why);
  std::exit(2);
}

int parse_int(const char* flag, const char* s, int lo, int hi) {
  char* end = nullptr;
  const long v = std::strtol(s, &end, 10);
  if (end == s || *end != '\0' || v < lo || v > hi) {
    usage((std::string(flag) + " takes an integer in " + std::to_string(lo) + ".." + std::to_string(hi)).c_str());
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
    if (a == "--reps") {
      o.reps = parse_int("--reps", value(), 3, 1000);
    } else if (a == "--threads") {
      o.threads = parse_int("--threads", value(), 1, 256);
    } else if (a == "--out") {
      o.out = value();
    } else if (a == "--note") {
      o.note = value();
    } else if (a == "--quick") {
      o.quick = true;
      o.reps = 5;
    } else {
      usage((std::string("unknown argument '") + std::string(a) + "'").c_str());
    }
  }
  return o;
}

std::string cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  }
  return "unknown";
}

/// Touches `bytes` of memory so that the last-level cache holds none of the K/V.
struct flusher {
  std::vector<std::uint64_t> buf = std::vector<std::uint64_t>((96u << 20) / 8, 1);
  std::uint64_t sink = 0;
  void operator()() {
    std::uint64_t s = 0;
    for (std::size_t i = 0; i < buf.size(); i += 8) s += buf[i]++;
    sink += s;
  }
};

/// Measured read bandwidth (GB/s): a sum over 1 GiB (on huge pages, as the caches), on `threads`
/// threads, best of 5.
double read_bandwidth(int threads) {
  const std::size_t n = (std::size_t{1} << 30) / sizeof(std::uint64_t);
  mlkv::detail::cache_memory<std::uint64_t> a(n);  // huge pages, as the caches
  for (std::size_t i = 0; i < n; ++i) a[i] = i;
  double best = 1e30;
  std::vector<std::uint64_t> sums(static_cast<std::size_t>(threads));
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = clk::now();
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; ++t) {
      ts.emplace_back([&, t] {
        const std::size_t lo = n * static_cast<std::size_t>(t) / static_cast<std::size_t>(threads);
        const std::size_t hi = n * static_cast<std::size_t>(t + 1) / static_cast<std::size_t>(threads);
        std::uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        for (std::size_t i = lo; i + 4 <= hi; i += 4) {
          s0 += a[i];
          s1 += a[i + 1];
          s2 += a[i + 2];
          s3 += a[i + 3];
        }
        sums[static_cast<std::size_t>(t)] = s0 + s1 + s2 + s3;
      });
    }
    for (auto& t : ts) t.join();
    best = std::min(best, std::chrono::duration<double>(clk::now() - t0).count());
  }
  volatile std::uint64_t keep = std::accumulate(sums.begin(), sums.end(), std::uint64_t{0});
  (void)keep;
  return static_cast<double>(n * sizeof(std::uint64_t)) / best / 1e9;
}

struct timing {
  double min_us = 0, median_us = 0;
};
timing summarize(std::vector<double> us) {
  std::sort(us.begin(), us.end());
  return {us.front(), us[us.size() / 2]};
}

struct row {
  std::string geometry, kernel, mode;
  int page_tokens = 0, batch = 0, context = 0, threads = 0;
  timing contiguous, paged;
  timing paged_one_head;  // P=16 only: decode tasks of one KV head (attention_options::kv_heads_per_task = 1)
  double bytes = 0;  // K/V bytes one step reads
};

struct memory_row {
  std::string geometry, lengths;
  int page_tokens = 0, sequences = 0;
  std::uint64_t page_size = 0;  // bytes of one page
  std::uint64_t token_bytes = 0, page_bytes_used = 0, table_bytes = 0, contiguous_bytes = 0;
};

/// Runs one geometry: fills the caches, times the steps, appends rows.
template <mlkv::model_shape S>
void run_geometry(const char* name, const options& o, std::vector<row>& rows, std::vector<memory_row>& mem,
                  flusher& flush) {
  using T = mlkv::bf16;
  constexpr int Hq = S.q_heads, Hkv = S.kv_heads, D = S.head_dim, slots = S.kv_layers;
  const int B = 8, ctx = o.quick ? 1024 : 4096;
  std::printf("%s: %d layers, %d:%d heads, head dim %d, %d owner slots; batch %d, context %d, bf16\n", name, S.layers,
              Hq, Hkv, D, slots, B, ctx);
  std::fflush(stdout);

  mlkv::kv_cache<S, T> flat(B, ctx);
  using p16_t = mlkv::paged_kv_cache<S, T, 16>;
  using p64_t = mlkv::paged_kv_cache<S, T, 64>;
  p16_t p16(B * p16_t::blocks_for(ctx));
  p64_t p64(B * p64_t::blocks_for(ctx));
  std::vector<mlkv::seq_id> id16, id64;
  for (int b = 0; b < B; ++b) {
    id16.push_back(p16.add());
    id64.push_back(p64.add());
  }
  std::mt19937_64 gen(1234);
  // Fill: scatter pages first, then write every row through append at the same positions.
  {
    // Pages in random order: map one more page at a time for a random sequence, so that each
    // sequence's pages are scattered over the pool, as after a long-running server's churn.
    auto place = [&](auto& pool, const std::vector<mlkv::seq_id>& ids, int P) {
      std::vector<int> order;
      for (int b = 0; b < B; ++b) {
        for (int j = 0; j < (ctx + P - 1) / P; ++j) order.push_back(b);
      }
      std::shuffle(order.begin(), order.end(), gen);
      std::vector<int> mapped(static_cast<std::size_t>(B), 0);
      for (const int b : order) {
        const int n = std::min(P, ctx - mapped[static_cast<std::size_t>(b)]);
        pool.reserve(ids[static_cast<std::size_t>(b)], mapped[static_cast<std::size_t>(b)] + n);
        mapped[static_cast<std::size_t>(b)] += n;
      }
    };
    place(p16, id16, 16);
    place(p64, id64, 64);
    std::uniform_real_distribution<float> u(-1.f, 1.f);
    const mlkv::rotary rope(mlkv::rope_config{D, D / 4, 10000.f});
    const int chunk = 256;
    std::vector<float> k(static_cast<std::size_t>(chunk) * Hkv * D), v(k.size());
    for (int b = 0; b < B; ++b) {
      for (int t0 = 0; t0 < ctx; t0 += chunk) {
        const int n = std::min(chunk, ctx - t0);
        for (int s = 0; s < slots; ++s) {
          for (auto& x : k) x = u(gen);
          for (auto& x : v) x = u(gen);
          flat.append(s, b, n, k.data(), v.data(), &rope);
          p16.append(s, id16[static_cast<std::size_t>(b)], n, k.data(), v.data(), &rope);
          p64.append(s, id64[static_cast<std::size_t>(b)], n, k.data(), v.data(), &rope);
        }
        flat.commit(b, n);
        p16.commit(id16[static_cast<std::size_t>(b)], n);
        p64.commit(id64[static_cast<std::size_t>(b)], n);
      }
    }
  }
  const auto b16 = p16.make_batch(id16);
  const auto b64 = p64.make_batch(id64);
  // The same rows: check a few before timing anything.
  for (int s = 0; s < slots; ++s) {
    for (int t : {0, 15, 16, 63, 64, ctx - 1}) {
      for (int b : {0, B - 1}) {
        const auto* c = flat.slot_view(s).k_row(b, Hkv - 1, t);
        if (std::memcmp(c, b16.slot_view(s).k_row(b, Hkv - 1, t), D * sizeof(T)) != 0 ||
            std::memcmp(c, b64.slot_view(s).k_row(b, Hkv - 1, t), D * sizeof(T)) != 0) {
          std::fprintf(stderr, "mlkv-bench-paged: paged and contiguous rows differ (slot %d token %d)\n", s, t);
          std::exit(1);
        }
      }
    }
  }

  std::vector<float> q(static_cast<std::size_t>(B) * Hq * D), out(q.size());
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  for (auto& x : q) x = u(gen);
  std::vector<std::int32_t> context(static_cast<std::size_t>(B), ctx);
  const float scale = mlkv::cpu::default_scale(D);
  const double step_bytes = static_cast<double>(B) * ctx * S.template bytes_per_token<T>();

  std::vector<int> thread_counts{1};
  if (o.threads > 1) thread_counts.push_back(o.threads);
  for (const int threads : thread_counts) {
    std::unique_ptr<mlkv::cpu::thread_pool> tp;
    if (threads > 1) tp = std::make_unique<mlkv::cpu::thread_pool>(threads);
    // A step reads every owner slot (32 MiB and 256 MiB here, more than the last-level cache),
    // and a model streams its weights between steps: the K/V comes from DRAM, so prefetch, as
    // the CPU model does (attention_options::prefetch_min_bytes).
    const mlkv::cpu::attention_options opt{.isa = mlkv::cpu::best_isa(), .exec = tp.get(), .prefetch_min_bytes = 0};
    auto one_head = opt;
    one_head.kv_heads_per_task = 1;
    auto step = [&](auto view_of, const mlkv::cpu::attention_options& o) {
      for (int s = 0; s < slots; ++s) mlkv::cpu::decode(view_of(s), Hq, q.data(), out.data(), B, context.data(), scale, o);
    };
    auto step_flat = [&] { step([&](int s) { return flat.slot_view(s); }, opt); };
    auto step_16 = [&] { step([&](int s) { return b16.slot_view(s); }, opt); };
    auto step_64 = [&] { step([&](int s) { return b64.slot_view(s); }, opt); };
    auto step_16_one = [&] { step([&](int s) { return b16.slot_view(s); }, one_head); };
    for (const bool cold : {true, false}) {
      std::vector<double> t_flat, t16, t64, t16_one;
      auto time_one = [&](auto&& f, std::vector<double>& into) {
        if (cold) flush();
        const auto t0 = clk::now();
        f();
        into.push_back(std::chrono::duration<double, std::micro>(clk::now() - t0).count());
      };
      step_flat();  // warm-up: thread pool, thread-local scratch
      step_16();
      step_64();
      step_16_one();
      for (int rep = 0; rep < o.reps; ++rep) {
        switch (rep % 4) {  // rotate the order so no cache always runs first
          case 0: time_one(step_flat, t_flat); time_one(step_16, t16); time_one(step_64, t64); time_one(step_16_one, t16_one); break;
          case 1: time_one(step_16, t16); time_one(step_64, t64); time_one(step_16_one, t16_one); time_one(step_flat, t_flat); break;
          case 2: time_one(step_64, t64); time_one(step_16_one, t16_one); time_one(step_flat, t_flat); time_one(step_16, t16); break;
          default: time_one(step_16_one, t16_one); time_one(step_flat, t_flat); time_one(step_16, t16); time_one(step_64, t64); break;
        }
      }
      const timing tf = summarize(t_flat);
      for (const int P : {16, 64}) {
        row r;
        r.geometry = name;
        r.kernel = std::string("cpu::attention/") + std::string(mlkv::cpu::name_of(opt.isa));
        r.mode = cold ? "cold" : "warm";
        r.page_tokens = P;
        r.batch = B;
        r.context = ctx;
        r.threads = threads;
        r.contiguous = tf;
        r.paged = summarize(P == 16 ? t16 : t64);
        if (P == 16) r.paged_one_head = summarize(t16_one);
        r.bytes = step_bytes;
        rows.push_back(r);
        std::printf("  %-4s threads %d  P=%-3d contiguous %9.1f us  paged %9.1f us  overhead %+6.2f %%  "
                    "medians %9.1f %9.1f  %5.1f / %5.1f GB/s\n",
                    r.mode.c_str(), threads, P, r.contiguous.min_us, r.paged.min_us,
                    100.0 * (r.paged.min_us / r.contiguous.min_us - 1.0), r.contiguous.median_us,
                    r.paged.median_us, step_bytes / r.contiguous.min_us / 1e3,
                    step_bytes / r.paged.min_us / 1e3);
        if (P == 16) {
          std::printf("                      one KV head per task: paged %9.1f us  overhead %+6.2f %%\n",
                      r.paged_one_head.min_us, 100.0 * (r.paged_one_head.min_us / r.contiguous.min_us - 1.0));
        }
        std::fflush(stdout);
      }
    }
  }

  // Memory: these caches, exactly, and a pool of sequences of random lengths (1..context).
  for (const int P : {16, 64}) {
    memory_row m;
    m.geometry = name;
    m.lengths = "all " + std::to_string(ctx);
    m.page_tokens = P;
    m.sequences = B;
    m.token_bytes = static_cast<std::uint64_t>(B) * ctx * S.template bytes_per_token<T>();
    m.page_size = P == 16 ? p16_t::page_bytes : p64_t::page_bytes;
    m.page_bytes_used = P == 16 ? p16.bytes_used() : p64.bytes_used();
    m.table_bytes = P == 16 ? p16.table_bytes() : p64.table_bytes();
    m.contiguous_bytes = flat.size_bytes();
    mem.push_back(m);
  }
  auto ragged = [&](auto tag) {
    using pool_t = typename decltype(tag)::type;
    constexpr int P = pool_t::page_tokens;
    const int n = 256;
    std::mt19937_64 g(99);
    std::uniform_int_distribution<int> len(1, ctx);
    std::vector<int> lengths(static_cast<std::size_t>(n));
    std::uint64_t tokens = 0;
    int pages = 0;
    for (auto& l : lengths) {
      l = len(g);
      tokens += static_cast<std::uint64_t>(l);
      pages += pool_t::blocks_for(l);
    }
    // Caller memory left uninitialised: nothing writes K/V here, so the OS never backs it.
    std::unique_ptr<T[]> raw(new T[pool_t::elements(pages)]);
    pool_t pool(std::span<T>(raw.get(), pool_t::elements(pages)), pages);
    for (const int l : lengths) {
      const auto id = pool.add();
      pool.reserve(id, l);
      pool.commit(id, l);
    }
    memory_row m;
    m.geometry = name;
    m.lengths = "uniform 1.." + std::to_string(ctx);
    m.page_tokens = P;
    m.sequences = n;
    m.token_bytes = tokens * S.template bytes_per_token<T>();
    m.page_size = pool_t::page_bytes;
    m.page_bytes_used = pool.bytes_used();
    m.table_bytes = pool.table_bytes();
    m.contiguous_bytes = static_cast<std::uint64_t>(mlkv::kv_cache<S, T>::bytes(n, ctx));
    mem.push_back(m);
  };
  ragged(std::type_identity<p16_t>{});
  ragged(std::type_identity<p64_t>{});
}

std::string json_escape(const std::string& s) {
  std::string o;
  for (const char c : s) {
    if (c == '"' || c == '\\') o += '\\';
    o += c;
  }
  return o;
}

}  // namespace

inline constexpr mlkv::model_shape mlkv4_12_1_d64 = mlkv::paper_configs[6].shape;  // MLKV-4: 12 layers, 12:1, d64
inline constexpr mlkv::model_shape gqa_32_8_d128{.layers = 8, .q_heads = 32, .kv_heads = 8, .kv_layers = 2, .head_dim = 128};

int main(int argc, char** argv) {
  const options o = parse(argc, argv);
  std::printf("mlkv-bench-paged: paged vs contiguous decode attention (fast CPU kernel, path %s)\n",
              std::string(mlkv::cpu::name_of(mlkv::cpu::best_isa())).c_str());
  std::printf("CPU: %s, %u hardware threads\n", cpu_model().c_str(), std::thread::hardware_concurrency());
  const double bw1 = read_bandwidth(1), bwn = o.threads > 1 ? read_bandwidth(o.threads) : bw1;
  std::printf("measured read bandwidth: %.1f GB/s (1 thread), %.1f GB/s (%d threads)\n\n", bw1, bwn, o.threads);

  flusher flush;
  std::vector<row> rows;
  std::vector<memory_row> mem;
  run_geometry<mlkv4_12_1_d64>("MLKV-4 (12:1, d64, 4 slots)", o, rows, mem, flush);
  run_geometry<gqa_32_8_d128>("32:8, d128, 2 slots", o, rows, mem, flush);

  std::printf("\nmemory (bytes):\n");
  for (const auto& m : mem) {
    const double over = static_cast<double>(m.page_bytes_used + m.table_bytes - m.token_bytes);
    std::printf("  %-28s P=%-3d %3d seqs, lengths %-16s K/V %12llu  pages %12llu  tables %8llu  overhead %.3f %% "
                "(%.3f pages + table per sequence)  contiguous at full context %12llu\n",
                m.geometry.c_str(), m.page_tokens, m.sequences, m.lengths.c_str(),
                static_cast<unsigned long long>(m.token_bytes), static_cast<unsigned long long>(m.page_bytes_used),
                static_cast<unsigned long long>(m.table_bytes), 100.0 * over / static_cast<double>(m.token_bytes),
                static_cast<double>(m.page_bytes_used - m.token_bytes) / static_cast<double>(m.page_size) / m.sequences,
                static_cast<unsigned long long>(m.contiguous_bytes));
  }

  // JSON
  std::ostringstream js;
  const std::time_t now = std::time(nullptr);
  char date[32];
  std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  js << "{\n  \"benchmark\": \"paged vs contiguous decode attention (mlkv-bench-paged)\",\n";
  js << "  \"date\": \"" << date << "\",\n";
  js << "  \"machine\": {\"cpu\": \"" << json_escape(cpu_model()) << "\", \"hardware_threads\": "
     << std::thread::hardware_concurrency() << ", \"isa_path\": \"" << mlkv::cpu::name_of(mlkv::cpu::best_isa())
     << "\", \"compiler\": \"" << json_escape(__VERSION__) << "\", \"read_bandwidth_gbps_1_thread\": " << bw1
     << ", \"read_bandwidth_gbps_threads\": " << bwn << ", \"threads\": " << o.threads << ", \"note\": \""
     << json_escape(o.note) << "\"},\n";
  js << "  \"definition\": \"one step = decode attention (one query row per sequence) over every owner slot once; "
        "cold = last-level cache flushed before each step, warm = repeated back to back; us figures are minima over "
        "the repetitions; overhead_pct = paged / contiguous - 1 (the caches as built: both own memory that asks for "
        "transparent huge pages); every call prefetches (attention_options::prefetch_min_bytes = 0, as in the CPU "
        "model: a step reads more than the last-level cache); paged decode walks a sequence's KV heads together over "
        "16-token pages (attention_options::kv_heads_per_task, automatic); the *_one_kv_head_per_task figures force "
        "one KV head per task (the walk before that choice)\",\n";
  js << "  \"rows\": [\n";
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const row& r = rows[i];
    js << "    {\"geometry\": \"" << json_escape(r.geometry) << "\", \"dtype\": \"bf16\", \"page_tokens\": " << r.page_tokens
       << ", \"batch\": " << r.batch << ", \"context\": " << r.context << ", \"threads\": " << r.threads
       << ", \"mode\": \"" << r.mode << "\", \"kernel\": \"" << r.kernel << "\", \"us_per_step_contiguous\": "
       << r.contiguous.min_us
       << ", \"us_per_step_paged\": " << r.paged.min_us << ", \"median_us_contiguous\": " << r.contiguous.median_us
       << ", \"median_us_paged\": " << r.paged.median_us
       << ", \"overhead_pct\": " << 100.0 * (r.paged.min_us / r.contiguous.min_us - 1.0)
       << ", \"kv_bytes_per_step\": " << static_cast<std::uint64_t>(r.bytes);
    if (r.page_tokens == 16) {
      js << ", \"us_per_step_paged_one_kv_head_per_task\": " << r.paged_one_head.min_us
         << ", \"overhead_one_kv_head_per_task_pct\": " << 100.0 * (r.paged_one_head.min_us / r.contiguous.min_us - 1.0);
    }
    js << ", \"gbps_contiguous\": " << r.bytes / r.contiguous.min_us / 1e3 << ", \"gbps_paged\": " << r.bytes / r.paged.min_us / 1e3
       << "}" << (i + 1 < rows.size() ? "," : "") << "\n";
  }
  js << "  ],\n  \"memory\": [\n";
  for (std::size_t i = 0; i < mem.size(); ++i) {
    const memory_row& m = mem[i];
    const double over = static_cast<double>(m.page_bytes_used + m.table_bytes - m.token_bytes);
    js << "    {\"geometry\": \"" << json_escape(m.geometry) << "\", \"dtype\": \"bf16\", \"page_tokens\": " << m.page_tokens
       << ", \"sequences\": " << m.sequences << ", \"lengths\": \"" << m.lengths << "\", \"kv_bytes\": " << m.token_bytes
       << ", \"page_bytes_used\": " << m.page_bytes_used << ", \"block_table_bytes\": " << m.table_bytes
       << ", \"page_bytes\": " << m.page_size << ", \"unused_pages_per_sequence\": "
       << static_cast<double>(m.page_bytes_used - m.token_bytes) / static_cast<double>(m.page_size) / m.sequences
       << ", \"overhead_bytes\": " << static_cast<std::uint64_t>(over) << ", \"overhead_pct\": "
       << 100.0 * over / static_cast<double>(m.token_bytes) << ", \"contiguous_bytes_at_full_context\": " << m.contiguous_bytes
       << "}" << (i + 1 < mem.size() ? "," : "") << "\n";
  }
  js << "  ]\n}\n";
  std::ofstream f(o.out);
  if (!f) {
    std::fprintf(stderr, "mlkv-bench-paged: cannot write %s\n", o.out.c_str());
    return 1;
  }
  f << js.str();
  std::printf("\nwrote %s\n", o.out.c_str());
  return 0;
}
