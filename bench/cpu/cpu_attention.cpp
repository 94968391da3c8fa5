// bench/cpu_attention: the CPU fast path against the machine's limits, measured in the same run.
//
// A step is one layer's attention over one owner slot for the whole batch:
//  - decode: one new query row per sequence attends over `context` cached tokens (all
//    sequences of the batch have that context);
//  - prefill: `context` query rows of one sequence attend causally (row i sees tokens 0..i).
// Per row it reports microseconds per step (best of repeated steps: other programs share the
// machine), KV bytes read per step over the time (GB/s), FLOPs over the time (GFLOP/s), and the
// percentage of the measured read bandwidth and of the measured compute peak. KV bytes are the
// compulsory traffic: every K and V row of the context read once (prefill included). FLOPs are
// 4 * q_heads * head_dim per (query row, visible token): 2 for q.k, 2 for p.v; the softmax is
// not counted. The compute peak of a row is that of the arithmetic its kernel uses: f32 FMA,
// or for bf16 storage on the avx512_bf16 path the measured VDPBF16PS rate (both products, q.k
// and p.v, run on it). The roofline time is max(bytes / bandwidth, FLOPs / peak).
//
// Peers: llama.cpp and PyTorch are not installed here, so the comparison is with the library's
// own reference attention (plain loops, one thread) and its other paths (scalar, avx2, avx512
// without the BF16 dot product) on a few rows, in the same run.
//
// The K/V of a row live in one buffer per K and V, laid out as the contiguous cache's slot
// ([batch, kv_heads, context, head_dim]), on transparent huge pages where Linux offers them.
//
// Usage: cpu_attention [--quick] [--threads N] [--isa NAME] [--out FILE] [--no-peers]
// Writes bench/results/cpu_attention.json (or FILE).

#include <mlkv/cache/buffer.hpp>
#include <mlkv/cache/view.hpp>
#include <mlkv/cpu/attention.hpp>
#include <mlkv/cpu/executor.hpp>
#include <mlkv/cpu/isa.hpp>
#include <mlkv/cpu/reference.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <new>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#if defined(MLKV_CPU_X86)
#include <immintrin.h>
#endif
#if defined(__linux__)
#include <sys/mman.h>
#endif

#ifndef MLKV_SOURCE_DIR
#define MLKV_SOURCE_DIR "."
#endif

namespace {

using clk = std::chrono::steady_clock;
using mlkv::cpu::isa;

double seconds_since(clk::time_point t0) { return std::chrono::duration<double>(clk::now() - t0).count(); }

// ---- the machine ---------------------------------------------------------------------------------

std::string read_first_line_with(const char* path, const char* key) {
  std::ifstream f(path);
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind(key, 0) == 0) {
      const auto c = line.find(':');
      return c == std::string::npos ? line : line.substr(c + 2);
    }
  }
  return "unknown";
}

std::string read_file_trim(const char* path) {
  std::ifstream f(path);
  std::string s;
  std::getline(f, s);
  return s;
}

std::string machine_description(int threads) {
  std::ostringstream os;
  os << read_first_line_with("/proc/cpuinfo", "model name") << ", " << std::thread::hardware_concurrency()
     << " hardware threads, L3 " << read_file_trim("/sys/devices/system/cpu/cpu0/cache/index3/size") << ", "
     << threads << " threads used, compiler "
#if defined(__clang__)
     << "clang " << __clang_major__ << "." << __clang_minor__
#elif defined(__GNUC__)
     << "gcc " << __GNUC__ << "." << __GNUC_MINOR__
#endif
     ;
  return os.str();
}

// ---- limits: read bandwidth and arithmetic peaks, all threads ------------------------------------

#if defined(MLKV_CPU_X86)
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
// GCC 12's AVX-512 intrinsics read _mm512_undefined_ps() (GCC bug 105593); see simd_avx512.hpp.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
__attribute__((target("avx512f"), noinline)) float read_avx512(const float* p, std::size_t n) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (std::size_t i = 0; i + 64 <= n; i += 64) {
    a0 = _mm512_add_ps(a0, _mm512_load_ps(p + i));
    a1 = _mm512_add_ps(a1, _mm512_load_ps(p + i + 16));
    a2 = _mm512_add_ps(a2, _mm512_load_ps(p + i + 32));
    a3 = _mm512_add_ps(a3, _mm512_load_ps(p + i + 48));
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}
__attribute__((target("avx512f,fma"), noinline)) float fma_avx512(long iters) {
  __m512 a[12];
  for (int i = 0; i < 12; ++i) a[i] = _mm512_set1_ps(0.01f * static_cast<float>(i));
  const __m512 b = _mm512_set1_ps(0.999f), c = _mm512_set1_ps(1e-3f);
  for (long k = 0; k < iters; ++k) {
    for (int i = 0; i < 12; ++i) a[i] = _mm512_fmadd_ps(a[i], b, c);
  }
  __m512 s = a[0];
  for (int i = 1; i < 12; ++i) s = _mm512_add_ps(s, a[i]);
  return _mm512_reduce_add_ps(s);
}
__attribute__((target("avx512f,avx512bf16,avx512vl"), noinline)) float dot_avx512bf16(long iters) {
  __m512 a[12];
  for (int i = 0; i < 12; ++i) a[i] = _mm512_set1_ps(0.01f * static_cast<float>(i));
  const __m512i b = _mm512_set1_epi32(0x3f7f3f7f), c = _mm512_set1_epi32(0x3a833a83);
  for (long k = 0; k < iters; ++k) {
    for (int i = 0; i < 12; ++i) a[i] = _mm512_dpbf16_ps(a[i], (__m512bh)b, (__m512bh)c);
  }
  __m512 s = a[0];
  for (int i = 1; i < 12; ++i) s = _mm512_add_ps(s, a[i]);
  return _mm512_reduce_add_ps(s);
}
__attribute__((target("avx2"), noinline)) float read_avx2(const float* p, std::size_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (std::size_t i = 0; i + 32 <= n; i += 32) {
    a0 = _mm256_add_ps(a0, _mm256_load_ps(p + i));
    a1 = _mm256_add_ps(a1, _mm256_load_ps(p + i + 8));
    a2 = _mm256_add_ps(a2, _mm256_load_ps(p + i + 16));
    a3 = _mm256_add_ps(a3, _mm256_load_ps(p + i + 24));
  }
  float o[8];
  _mm256_storeu_ps(o, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  return o[0] + o[1] + o[2] + o[3] + o[4] + o[5] + o[6] + o[7];
}
__attribute__((target("avx2,fma"), noinline)) float fma_avx2(long iters) {
  __m256 a[12];
  for (int i = 0; i < 12; ++i) a[i] = _mm256_set1_ps(0.01f * static_cast<float>(i));
  const __m256 b = _mm256_set1_ps(0.999f), c = _mm256_set1_ps(1e-3f);
  for (long k = 0; k < iters; ++k) {
    for (int i = 0; i < 12; ++i) a[i] = _mm256_fmadd_ps(a[i], b, c);
  }
  float o[8];
  __m256 s = a[0];
  for (int i = 1; i < 12; ++i) s = _mm256_add_ps(s, a[i]);
  _mm256_storeu_ps(o, s);
  return o[0];
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif

float read_plain(const float* p, std::size_t n) {
  float a[8] = {};
  for (std::size_t i = 0; i + 8 <= n; i += 8) {
    for (int j = 0; j < 8; ++j) a[j] += p[i + static_cast<std::size_t>(j)];
  }
  return a[0] + a[1] + a[2] + a[3] + a[4] + a[5] + a[6] + a[7];
}

/// Runs f(thread) on every pool thread at once; returns the wall time of the slowest.
template <class F>
double on_all_threads(mlkv::cpu::executor& pool, F&& f) {
  const int n = pool.concurrency();
  const auto t0 = clk::now();
  auto body = [&](int t) { f(t); };
  pool.parallel_for(n, mlkv::cpu::task_ref(body));
  return seconds_since(t0);
}

volatile float sink;

/// Read bandwidth over a buffer far larger than the last-level cache, GB/s, best of `reps`.
/// The buffer is on transparent huge pages, as the K/V buffers are: on 4 KiB pages the same
/// loop read 24-29 GB/s on the 2-core Zen 4 VM against 55-58 GB/s on huge pages (a probe on 4 KiB
/// pages understates the machine, and the kernels then read above "100%").
class read_probe {
 public:
  read_probe(mlkv::cpu::executor& pool, std::size_t bytes) : pool_(pool), n_(bytes / sizeof(float)), mem_(n_) {
    float* const buf = mem_.data();
    const std::size_t n = n_;
    const int T = pool.concurrency();
    // First touch by the reading threads.
    on_all_threads(pool, [&](int t) {
      const std::size_t lo = n / T * t, hi = t == T - 1 ? n : n / T * (t + 1);
      for (std::size_t i = lo; i < hi; ++i) buf[i] = 1.0f;
    });
  }
  double gbps(int reps) {
    const int T = pool_.concurrency();
    const std::size_t chunk = n_ / T / 64 * 64;
    double best = 0;
    for (int r = 0; r < reps; ++r) {
      const double s = on_all_threads(pool_, [&](int t) {
        const float* p = mem_.data() + chunk * static_cast<std::size_t>(t);
#if defined(MLKV_CPU_X86)
        if (mlkv::cpu::supported(isa::avx512)) {
          sink = read_avx512(p, chunk);
        } else if (mlkv::cpu::supported(isa::avx2)) {
          sink = read_avx2(p, chunk);
        } else {
          sink = read_plain(p, chunk);
        }
#else
        sink = read_plain(p, chunk);
#endif
      });
      best = std::max(best, static_cast<double>(chunk * T * sizeof(float)) / s * 1e-9);
    }
    return best;
  }

 private:
  mlkv::cpu::executor& pool_;
  std::size_t n_;
  mlkv::detail::cache_memory<float> mem_;
};

double measure_read_gbps(mlkv::cpu::executor& pool, std::size_t bytes, int reps) {
  read_probe probe(pool, bytes);
  return probe.gbps(reps);
}

/// Peak GFLOP/s of f32 FMA (or of VDPBF16PS) on every thread at once, best of `reps`.
double measure_peak(mlkv::cpu::executor& pool, bool bf16_dot, int reps) {
  const long iters = 20'000'000;
  double best = 0;
  for (int r = 0; r < reps; ++r) {
    double flops_per_iter = 0;
    const double s = on_all_threads(pool, [&](int) {
#if defined(MLKV_CPU_X86)
      if (bf16_dot) {
        sink = dot_avx512bf16(iters);
      } else if (mlkv::cpu::supported(isa::avx512)) {
        sink = fma_avx512(iters);
      } else {
        sink = fma_avx2(iters);
      }
#else
      float a = 1.f;
      for (long k = 0; k < iters; ++k) a = std::fma(a, 0.999f, 1e-3f);
      sink = a;
#endif
    });
#if defined(MLKV_CPU_X86)
    flops_per_iter = bf16_dot ? 12 * 64 : mlkv::cpu::supported(isa::avx512) ? 12 * 32 : 12 * 16;
#else
    flops_per_iter = 2;
#endif
    best = std::max(best, flops_per_iter * static_cast<double>(iters) * pool.concurrency() / s * 1e-9);
  }
  return best;
}

// ---- rows ----------------------------------------------------------------------------------------

struct geometry {
  int q_heads, kv_heads, head_dim;
};

struct row {
  std::string phase;
  geometry g;
  int batch, context;
  mlkv::dtype dtype;
  int threads;
  isa path;
  std::string label;  // the path's name, or "reference"
  bool dot = false;   // q.k and p.v on VDPBF16PS (compute limit: the BF16-dot peak)
  double us, kv_bytes, flops, compute_limit;
  double bw_adjacent = 0;  // read bandwidth measured just before and after the row (best), DRAM-bound rows
};

/// Fills n values with a cheap deterministic pattern in [-1, 1], in parallel.
template <class T>
void fill(mlkv::cpu::executor& pool, T* p, std::size_t n, std::uint64_t seed) {
  const int T_ = pool.concurrency();
  on_all_threads(pool, [&](int t) {
    const std::size_t lo = n / T_ * t, hi = t == T_ - 1 ? n : n / T_ * (t + 1);
    std::uint64_t x = seed * 0x9e3779b97f4a7c15ull + static_cast<std::uint64_t>(t) * 0x632be59bd9b4e019ull + 1;
    for (std::size_t i = lo; i < hi; ++i) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      const float f = static_cast<float>(static_cast<std::int32_t>(x >> 32)) * (1.0f / 2147483648.0f);
      p[i] = mlkv::from_float<T>(f);
    }
  });
}

struct options {
  bool quick = false;
  bool peers = true;
  int threads = 0;
  isa path = mlkv::cpu::best_isa();
  std::string out = std::string(MLKV_SOURCE_DIR) + "/bench/results/cpu_attention.json";
};

/// Times `step` (best of repeats, at least `min_reps` and about `budget` seconds).
template <class F>
double best_us(F&& step, int min_reps, double budget) {
  step();  // warm-up (first touch of scratch, page faults)
  double best = 1e30;
  const auto start = clk::now();
  for (int r = 0; r < min_reps || seconds_since(start) < budget; ++r) {
    const auto t0 = clk::now();
    step();
    best = std::min(best, seconds_since(t0));
    if (r >= 200) break;
  }
  return best * 1e6;
}

template <class T>
row run_row(mlkv::cpu::executor& pool, const options& o, const std::string& phase, geometry g, int batch, int context,
            isa path, double fma_peak, double dot_peak, bool reference_peer = false) {
  const int Hkv = g.kv_heads, D = g.head_dim, Hq = g.q_heads;
  const std::size_t per_head = static_cast<std::size_t>(context) * D;
  const std::size_t values = static_cast<std::size_t>(batch) * Hkv * per_head;
  // The K/V of a row: the caches' own memory (2 MiB aligned, transparent huge pages).
  mlkv::detail::cache_memory<T> k(values), v(values);
  fill(pool, k.data(), values, 1);
  fill(pool, v.data(), values, 2);
  mlkv::contiguous_slot_view<T> view;
  view.k = k.data();
  view.v = v.data();
  view.batch = batch;
  view.kv_heads = Hkv;
  view.head_dim = D;
  view.capacity = context;
  const bool decode = phase == "decode";
  const int rows = decode ? batch : context;
  mlkv::aligned_buffer<float> q(static_cast<std::size_t>(rows) * Hq * D), out(q.size());
  fill(pool, q.data(), q.size(), 3);
  std::vector<std::int32_t> ctx(static_cast<std::size_t>(batch), context);
  const std::int32_t offs[2] = {0, context};
  const mlkv::cpu::attention_batch ab{batch, ctx.data(), decode ? nullptr : offs};
  const float scale = mlkv::cpu::default_scale(D);
  const mlkv::cpu::attention_options opt{.isa = path, .exec = &pool};

  row r;
  r.phase = phase;
  r.g = g;
  r.batch = batch;
  r.context = context;
  r.dtype = mlkv::dtype_of<T>;
  r.threads = reference_peer ? 1 : pool.concurrency();
  r.path = path;
  r.label = reference_peer ? "reference" : std::string(mlkv::cpu::name_of(path));
  r.kv_bytes = static_cast<double>(values) * 2 * sizeof(T);
  const double visible = decode ? static_cast<double>(batch) * context : 0.5 * context * (context + 1.0);
  r.flops = 4.0 * Hq * D * visible;
  r.dot = path == isa::avx512_bf16 && std::is_same_v<T, mlkv::bf16> && !reference_peer;
  r.compute_limit = r.dot ? dot_peak : fma_peak;
  const double budget = o.quick ? 0.15 : 0.5;
  const int min_reps = o.quick ? 3 : 5;
  if (reference_peer) {
    r.us = best_us([&] { mlkv::cpu::reference_attention(view, Hq, q.data(), out.data(), ab, scale); }, 2, 0.2);
  } else {
    r.us = best_us([&] { mlkv::cpu::attention(view, Hq, q.data(), out.data(), ab, scale, opt); }, min_reps, budget);
  }
  return r;
}

template <class F>
void for_dtype(mlkv::dtype t, F&& f) {
  mlkv::visit_dtype(t, f);
}

std::string row_json(const row& r, double bw) {
  const double s = r.us * 1e-6;
  const double gbps = r.kv_bytes / s * 1e-9, gflops = r.flops / s * 1e-9;
  const double roof_us = std::max(r.kv_bytes / (bw * 1e9), r.flops / (r.compute_limit * 1e9)) * 1e6;
  char buf[1024];
  std::snprintf(buf, sizeof buf,
                "{\"phase\": \"%s\", \"q_heads\": %d, \"kv_heads\": %d, \"head_dim\": %d, \"batch\": %d, "
                "\"context\": %d, \"dtype\": \"%s\", \"threads\": %d, \"us_per_step\": %.2f, \"kv_gbps\": %.3f, "
                "\"gflops\": %.3f, \"pct_bandwidth\": %.1f, \"pct_compute\": %.1f, \"isa\": \"%s\", "
                "\"compute_limit_gflops\": %.1f, \"roofline_us\": %.2f, \"pct_roofline\": %.1f}",
                r.phase.c_str(), r.g.q_heads, r.g.kv_heads, r.g.head_dim, r.batch, r.context,
                std::string(mlkv::name_of(r.dtype)).c_str(), r.threads, r.us, gbps, gflops, 100 * gbps / bw,
                100 * gflops / r.compute_limit, r.label.c_str(), r.compute_limit,
                roof_us, 100 * roof_us / r.us);
  std::string j = buf;
  if (r.bw_adjacent > 0) {
    const double roof_adj = std::max(r.kv_bytes / (r.bw_adjacent * 1e9), r.flops / (r.compute_limit * 1e9)) * 1e6;
    std::snprintf(buf, sizeof buf, ", \"read_gbps_adjacent\": %.2f, \"pct_roofline_adjacent\": %.1f}", r.bw_adjacent,
                  100 * roof_adj / r.us);
    j.pop_back();  // the closing brace
    j += buf;
  }
  return j;
}

void print_header() {
  std::printf("%-7s %-13s %5s %6s %-4s %-11s %11s %8s %8s %6s %6s %6s\n", "phase", "geometry", "batch", "ctx", "type",
              "path", "us/step", "KV GB/s", "GFLOP/s", "%bw", "%comp", "%roof");
}

void print_row(const row& r, double bw) {
  const double s = r.us * 1e-6;
  const double gbps = r.kv_bytes / s * 1e-9, gflops = r.flops / s * 1e-9;
  const double roof_us = std::max(r.kv_bytes / (bw * 1e9), r.flops / (r.compute_limit * 1e9)) * 1e6;
  char geo[32];
  std::snprintf(geo, sizeof geo, "%d:%d d%d", r.g.q_heads, r.g.kv_heads, r.g.head_dim);
  char adj[48] = "";
  if (r.bw_adjacent > 0) {
    const double roof_adj = std::max(r.kv_bytes / (r.bw_adjacent * 1e9), r.flops / (r.compute_limit * 1e9)) * 1e6;
    std::snprintf(adj, sizeof adj, "  (%.1f GB/s by it: %.1f%%)", r.bw_adjacent, 100 * roof_adj / r.us);
  }
  std::printf("%-7s %-13s %5d %6d %-4s %-11s %11.1f %8.2f %8.1f %6.1f %6.1f %6.1f%s\n", r.phase.c_str(), geo, r.batch,
              r.context, std::string(mlkv::name_of(r.dtype)).c_str(),
              (r.label + (r.threads == 1 ? "/1t" : "")).c_str(), r.us, gbps, gflops,
              100 * gbps / bw, 100 * gflops / r.compute_limit, 100 * roof_us / r.us, adj);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quick") {
      o.quick = true;
    } else if (a == "--no-peers") {
      o.peers = false;
    } else if (a == "--threads" && i + 1 < argc) {
      o.threads = std::atoi(argv[++i]);
    } else if (a == "--isa" && i + 1 < argc) {
      if (!mlkv::cpu::parse_isa(argv[++i], o.path)) {
        std::fprintf(stderr, "unknown path %s\n", argv[i]);
        return 2;
      }
    } else if (a == "--out" && i + 1 < argc) {
      o.out = argv[++i];
    } else {
      std::fprintf(stderr, "usage: %s [--quick] [--threads N] [--isa NAME] [--out FILE] [--no-peers]\n", argv[0]);
      return 2;
    }
  }
  mlkv::cpu::require(o.path);
  mlkv::cpu::thread_pool pool(o.threads);
  const int T = pool.concurrency();
  const std::string machine = machine_description(T);
  std::printf("machine: %s\npath: %s (best here: %s; VDPBF16PS over FMA, FLOP rate: %.2fx)\n", machine.c_str(),
              std::string(mlkv::cpu::name_of(o.path)).c_str(), std::string(mlkv::cpu::name_of(mlkv::cpu::best_isa())).c_str(),
              mlkv::cpu::bf16_dot_gain());

  // Limits, measured now, on every thread at once.
  double bw = measure_read_gbps(pool, o.quick ? (std::size_t{512} << 20) : (std::size_t{2} << 30), o.quick ? 3 : 6);
  double fma_peak = measure_peak(pool, false, o.quick ? 3 : 5);
  const bool have_dot = mlkv::cpu::supported(isa::avx512_bf16);
  double dot_peak = have_dot ? measure_peak(pool, true, o.quick ? 3 : 5) : 0.0;
  std::printf("read bandwidth: %.2f GB/s (%s buffer, best of runs)\n", bw, o.quick ? "512 MiB" : "2 GiB");
  std::printf("peak f32 FMA: %.1f GFLOP/s; peak BF16 dot (VDPBF16PS): %.1f GFLOP/s (all %d threads, best of runs)\n",
              fma_peak, dot_peak, T);
  std::printf("step = one layer's attention over one owner slot for the whole batch (decode: one row per sequence;\n"
              "prefill: `ctx` causal rows of one sequence); times are the best of repeated steps\n\n");

  const std::vector<geometry> geos = {{12, 12, 64}, {12, 4, 64}, {12, 1, 64}, {32, 8, 128}, {32, 1, 128}};
  const std::vector<int> batches = o.quick ? std::vector<int>{1, 8} : std::vector<int>{1, 8, 32};
  const std::vector<int> contexts = o.quick ? std::vector<int>{512, 4096} : std::vector<int>{512, 4096, 32768};
  const std::vector<int> prefill_lengths = o.quick ? std::vector<int>{512} : std::vector<int>{512, 4096};
  const std::vector<mlkv::dtype> dtypes = {mlkv::dtype::f32, mlkv::dtype::bf16, mlkv::dtype::f16};

  read_probe probe(pool, o.quick ? (std::size_t{256} << 20) : (std::size_t{512} << 20));
  std::vector<row> rows;
  print_header();
  for (const geometry& g : geos) {
    for (mlkv::dtype t : dtypes) {
      for (int b : batches) {
        for (int c : contexts) {
          // DRAM-bound rows (K/V past the last-level cache): the limit once more, right before and
          // right after the row, since this VM's bandwidth moves with its neighbours within minutes.
          const double kv = 2.0 * b * g.kv_heads * c * g.head_dim * static_cast<double>(mlkv::size_of(t));
          const bool dram = kv >= 64.0 * (1 << 20);
          const double before = dram ? probe.gbps(4) : 0.0;
          for_dtype(t, [&](auto tag) {
            using T_ = decltype(tag);
            rows.push_back(run_row<T_>(pool, o, "decode", g, b, c, o.path, fma_peak, dot_peak));
          });
          if (dram) rows.back().bw_adjacent = std::max(before, probe.gbps(4));
          print_row(rows.back(), bw);
        }
      }
    }
  }
  for (const geometry& g : geos) {
    for (mlkv::dtype t : dtypes) {
      for (int s : prefill_lengths) {
        for_dtype(t, [&](auto tag) {
          using T_ = decltype(tag);
          rows.push_back(run_row<T_>(pool, o, "prefill", g, 1, s, o.path, fma_peak, dot_peak));
        });
        print_row(rows.back(), bw);
      }
    }
  }

  // Peers, same run: the reference attention (one thread) and every other path.
  std::vector<row> peers;
  if (o.peers) {
    std::printf("\npeers (same run): reference attention on one thread, and each compiled path\n");
    print_header();
    struct peer_case {
      const char* phase;
      geometry g;
      int batch, context;
      mlkv::dtype t;
    };
    const std::vector<peer_case> cases = {{"decode", {12, 1, 64}, 1, 4096, mlkv::dtype::bf16},
                                          {"decode", {12, 12, 64}, 8, 4096, mlkv::dtype::bf16},
                                          {"decode", {32, 8, 128}, 8, 4096, mlkv::dtype::f16},
                                          {"prefill", {12, 1, 64}, 1, 512, mlkv::dtype::bf16}};
    for (const auto& pc : cases) {
      for_dtype(pc.t, [&](auto tag) {
        using T_ = decltype(tag);
        peers.push_back(run_row<T_>(pool, o, pc.phase, pc.g, pc.batch, pc.context, isa::scalar, fma_peak, dot_peak, true));
        print_row(peers.back(), bw);
        for (isa p : mlkv::cpu::supported_isas()) {
          peers.push_back(run_row<T_>(pool, o, pc.phase, pc.g, pc.batch, pc.context, p, fma_peak, dot_peak));
          print_row(peers.back(), bw);
        }
      });
    }
  }

  // The limits once more: a program sharing the machine lowers a measurement, never raises it,
  // so the best of the two runs (before and after the rows) is the machine's.
  {
    const double bw2 = measure_read_gbps(pool, o.quick ? (std::size_t{512} << 20) : (std::size_t{2} << 30), o.quick ? 3 : 6);
    const double fma2 = measure_peak(pool, false, o.quick ? 3 : 5);
    const double dot2 = have_dot ? measure_peak(pool, true, o.quick ? 3 : 5) : 0.0;
    std::printf("\nlimits measured again after the rows: %.2f GB/s, FMA %.1f, BF16 dot %.1f GFLOP/s\n", bw2, fma2, dot2);
    if (bw2 > bw || fma2 > fma_peak || dot2 > dot_peak) {
      bw = std::max(bw, bw2);
      const double fma_new = std::max(fma_peak, fma2), dot_new = std::max(dot_peak, dot2);
      for (auto* list : {&rows, &peers}) {
        for (row& r : *list) r.compute_limit = r.dot ? dot_new : fma_new;
      }
      fma_peak = fma_new;
      dot_peak = dot_new;
      std::printf("limits used for the percentages (best of both): %.2f GB/s, FMA %.1f, BF16 dot %.1f GFLOP/s\n", bw,
                  fma_peak, dot_peak);
      std::printf("the rows against these limits:\n");
      print_header();
      for (const row& r : rows) print_row(r, bw);
      for (const row& r : peers) print_row(r, bw);
    }
  }

  // JSON.
  std::ofstream f(o.out);
  if (!f) {
    std::fprintf(stderr, "cannot write %s\n", o.out.c_str());
    return 1;
  }
  f << "{\n  \"machine\": \"" << machine << "\",\n";
  f << "  \"read_gbps_limit\": " << bw << ",\n";
  f << "  \"compute_gflops_limit\": " << fma_peak << ",\n";
  f << "  \"bf16_dot_gflops_limit\": " << dot_peak << ",\n";
  f << "  \"isa\": \"" << mlkv::cpu::name_of(o.path) << "\",\n";
  f << "  \"bf16_dot_gain\": " << mlkv::cpu::bf16_dot_gain() << ",\n";
  f << "  \"quick\": " << (o.quick ? "true" : "false") << ",\n";
  f << "  \"kv_memory\": \"K and V buffers laid out as the contiguous cache's slot, 2 MiB aligned, "
       "madvise(MADV_HUGEPAGE)\",\n";
  f << "  \"step\": \"one layer's attention over one owner slot for the whole batch; decode: one query row per "
       "sequence over `context` cached tokens; prefill: `context` causal rows of one sequence. us_per_step is the "
       "best of repeated steps. kv_gbps: K and V bytes of the context (read once) per step time. gflops: 4 * q_heads "
       "* head_dim per (row, visible token). compute_gflops_limit: measured f32 FMA peak; rows on the avx512_bf16 "
       "path over bf16 use compute_limit_gflops = the BF16-dot peak (q.k and p.v both on VDPBF16PS). "
       "pct_roofline: max(bytes/bandwidth, flops/limit) over the step time. Decode rows whose K/V exceed 64 MiB also "
       "carry read_gbps_adjacent, the read bandwidth measured right before and right after the row (best of 4 + 4 reads, "
       "512 MiB buffer), and pct_roofline_adjacent, the roofline percentage against it: the VM's bandwidth moves "
       "with its neighbours within minutes, and this limit is the one the row ran under.\",\n";
  f << "  \"rows\": [\n";
  for (std::size_t i = 0; i < rows.size(); ++i) f << "    " << row_json(rows[i], bw) << (i + 1 < rows.size() ? ",\n" : "\n");
  f << "  ],\n  \"peers\": [\n";
  for (std::size_t i = 0; i < peers.size(); ++i) {
    f << "    " << row_json(peers[i], bw) << (i + 1 < peers.size() ? ",\n" : "\n");
  }
  f << "  ]\n}\n";
  std::printf("\nwrote %s\n", o.out.c_str());
  return 0;
}
