#pragma once
// What the benchmarks measure about the machine in the same run: its name, and the read
// bandwidth of a buffer far larger than the last-level cache, every thread streaming its share.

#include <mlkv/cache/buffer.hpp>
#include <mlkv/cpu/executor.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace mlkv_bench {

/// "AMD EPYC ... (2 threads)" from /proc/cpuinfo.
inline std::string machine_name() {
  std::ifstream f("/proc/cpuinfo");
  std::string line, model = "unknown CPU";
  while (std::getline(f, line)) {
    if (line.rfind("model name", 0) == 0) {
      model = line.substr(line.find(':') + 2);
      break;
    }
  }
  return model + " (" + std::to_string(std::thread::hardware_concurrency()) + " threads)";
}

/// Sums `n` floats with several independent accumulators (16-byte+ loads, many in flight).
inline float read_sum(const float* p, std::size_t n) {
#if defined(__AVX512F__)
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  std::size_t i = 0;
  for (; i + 64 <= n; i += 64) {
    a0 = _mm512_add_ps(a0, _mm512_load_ps(p + i));
    a1 = _mm512_add_ps(a1, _mm512_load_ps(p + i + 16));
    a2 = _mm512_add_ps(a2, _mm512_load_ps(p + i + 32));
    a3 = _mm512_add_ps(a3, _mm512_load_ps(p + i + 48));
  }
  alignas(64) float t[16];
  _mm512_store_ps(t, _mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
  float s = 0;
  for (float x : t) s += x;
  for (; i < n; ++i) s += p[i];
  return s;
#else
  float s[8] = {};
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; ++k) s[k] += p[i + static_cast<std::size_t>(k)];
  for (; i < n; ++i) s[0] += p[i];
  return s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
#endif
}

/// Read bandwidth in GB/s (1e9 bytes/s): the best of `reps` passes over `bytes` (default 1 GiB,
/// far above a 32 MiB L3), split across the executor's threads. The buffer is on transparent
/// huge pages, as the library's caches and weight matrices are (detail::cache_memory): on the
/// Zen 4 VM a probe on 4 KiB pages read 24-29 GB/s where huge pages gave 36-58.
inline double read_gbps(mlkv::cpu::executor& ex, std::size_t bytes = std::size_t{1} << 30, int reps = 5) {
  const std::size_t n = bytes / sizeof(float);
  mlkv::detail::cache_memory<float> buf(n);
  for (std::size_t i = 0; i < n; ++i) buf[i] = static_cast<float>(i & 1023) * 1e-3f;
  const int tasks = ex.concurrency() * 4;
  const std::size_t per = (n / static_cast<std::size_t>(tasks)) & ~std::size_t{63};
  std::vector<float> sink(static_cast<std::size_t>(tasks));
  double best = 0;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    auto body = [&](int t) { sink[static_cast<std::size_t>(t)] = read_sum(buf.data() + per * static_cast<std::size_t>(t), per); };
    ex.parallel_for(tasks, mlkv::cpu::task_ref(body));
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, static_cast<double>(per * static_cast<std::size_t>(tasks) * sizeof(float)) / s / 1e9);
  }
  volatile float keep = sink[0];
  (void)keep;
  return best;
}

/// Seconds per call of f: the median of `reps` timed calls after `warmup` untimed ones.
template <class F>
double median_seconds(F&& f, int reps = 7, int warmup = 2) {
  for (int i = 0; i < warmup; ++i) f();
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace mlkv_bench
