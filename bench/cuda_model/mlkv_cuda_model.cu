// mlkv-cuda-model: the CUDA model (include/mlkv/cuda/model/gpt_neox.cuh) end to end.
//
//   mlkv-cuda-model bench [--configs NAME,...] [--batches 1,16,128,512,max] [--context 2048]
//                         [--mem-frac 0.8] [--out FILE.json]
//                         [--gemm-algos N] [--show-gemms] [--decode-splits N] [--logits-chunk N]
//                         [--branch-sms N] [--branch-priority -1|0|1] [--kv-evict-first 0|1]
//                         [--gemv-rows N]
//       Decode tokens/s of the paper's nine Pythia-160M configurations (random bf16 weights, bf16
//       cache in pages of 128 tokens, every sequence at `context` tokens), at each batch and at the
//       largest batch whose weights, cache, activations and logits chunk fit in mem-frac of the
//       GPU's memory; the step's bandwidth floor from the device's read bandwidth measured in the
//       same run by a read-only kernel (the one of bench/cuda/mlkv_cuda_bench.cu).
//       Variants for timing old against new in one call (NOTES.md): --gemm-algos (the model's
//       cuBLASLt algorithms timed per shape; 0: cublasGemmEx, which also runs a decode step's MLP
//       branch after the attention branch), --decode-splits (decode attention's split, forced),
//       --logits-chunk (cuda_model_options::logits_chunk; default 512: one logits GEMM over the
//       output embedding at batch 512), --branch-sms (cuda_model_options::branch_sms),
//       --branch-priority (model_detail::branch_priority: -1 by batch, 0 off, 1 on),
//       --kv-evict-first (model_detail::kv_evict_first: decode K/V copies with an L2 evict-first
//       policy; 0: off, as before v7, NOTES.md), --gemv-rows (cuda_model_options::gemv_rows; 0:
//       cuBLASLt for every decode GEMM, as before v10).
//       (The v4 comparisons of NOTES.md also switched the pre-v4 kernels in; those paths were
//       removed once v4 was kept.)
//   mlkv-cuda-model run --model DIR --tokens FILE --prompt N [--dtype f32|bf16|cpu] --out PREFIX
//       Teacher-forced run for the fidelity script: FILE holds int32 tokens; the first N are the
//       prompt (one prefill, every row's logits), each later token is fed by one decode step
//       (the graph). Writes PREFIX.logits (f32 [rows, vocab]: the prompt's rows, then one row per
//       decode step) and PREFIX.argmax (int32, the model's greedy choice of every row).
//       f32: f32 weights, f16 cache; bf16: bf16 weights and cache; cpu: the CPU model, f32.
#include <mlkv/cuda/model/gpt_neox.cuh>
#include <mlkv/dispatch.hpp>
#include <mlkv/presets.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "cpu_run.hpp"
#include "../common/read_kernel.cuh"

namespace {

using namespace mlkv;

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr,
               "mlkv-cuda-model: %s\n"
               "usage: mlkv-cuda-model bench [--configs NAME,...] [--batches 1,16,128,512,max] [--context N]\n"
               "                             [--mem-frac F] [--out FILE.json] [--steps N] [--no-bw]\n"
               "                             [--gemm-algos N] [--show-gemms] [--decode-splits N] [--logits-chunk N]\n"
               "                             [--branch-sms N] [--branch-priority -1|0|1] [--kv-evict-first 0|1]\n"
               "                             [--gemv-rows N]\n"
               "       mlkv-cuda-model run --model DIR --tokens FILE --prompt N [--dtype f32|bf16|cpu] --out PREFIX\n",
               why.c_str());
  std::exit(2);
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::size_t a = 0;
  while (a <= s.size()) {
    const std::size_t b = s.find(',', a);
    const std::string part = s.substr(a, b == std::string::npos ? std::string::npos : b - a);
    if (!part.empty()) out.push_back(part);
    if (b == std::string::npos) break;
    a = b + 1;
  }
  return out;
}

// ---- the device's read bandwidth (bench/cuda/mlkv_cuda_bench.cu's kernel) -----------------------

using mlkv_bench::read_kernel;

struct timer {
  cudaEvent_t a{}, b{};
  timer() {
    MLKV_CUDA_CHECK(cudaEventCreate(&a));
    MLKV_CUDA_CHECK(cudaEventCreate(&b));
  }
  ~timer() {
    cudaEventDestroy(a);
    cudaEventDestroy(b);
  }
  void start(cudaStream_t s) { MLKV_CUDA_CHECK(cudaEventRecord(a, s)); }
  double stop_ms(cudaStream_t s) {
    MLKV_CUDA_CHECK(cudaEventRecord(b, s));
    MLKV_CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    MLKV_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    return ms;
  }
};

/// Best read bandwidth (bytes/s) over a few launch shapes, 4 GiB buffer of random bits.
double read_bandwidth(cudaStream_t s, int sms, std::string& best_shape) {
  const std::size_t bytes = std::size_t{4} << 30;
  cuda::device_memory buf(bytes), sink(64);
  cuda::model_detail::fill_random_kernel<bf16><<<4096, 256, 0, s>>>(buf.as<bf16>(), bytes / 2, 99, 1.f);
  MLKV_CUDA_CHECK(cudaGetLastError());
  timer t;
  double best = 0;
  for (int unroll : {4, 8, 16}) {
    for (int per_sm : {2, 4, 8}) {
      for (int threads : {256, 512, 1024}) {
        if (per_sm * threads > 2048) continue;
        auto launch = [&] {
          const auto* p = buf.as<const uint4>();
          const unsigned blocks = static_cast<unsigned>(per_sm * sms);
          switch (unroll) {
            case 4: read_kernel<4><<<blocks, threads, 0, s>>>(p, bytes / 16, sink.as<unsigned>()); break;
            case 8: read_kernel<8><<<blocks, threads, 0, s>>>(p, bytes / 16, sink.as<unsigned>()); break;
            default: read_kernel<16><<<blocks, threads, 0, s>>>(p, bytes / 16, sink.as<unsigned>()); break;
          }
        };
        launch();
        std::vector<double> ms;
        for (int r = 0; r < 5; ++r) {
          t.start(s);
          launch();
          ms.push_back(t.stop_ms(s));
        }
        MLKV_CUDA_CHECK(cudaGetLastError());
        std::sort(ms.begin(), ms.end());
        const double bw = static_cast<double>(bytes) / (ms[2] * 1e-3);
        if (bw > best) {
          best = bw;
          best_shape = "unroll " + std::to_string(unroll) + ", " + std::to_string(per_sm) + " blocks/SM x " +
                       std::to_string(threads) + " threads";
        }
      }
    }
  }
  return best;
}

// ---- bench ------------------------------------------------------------------------------------

// Tokens per page of the benchmark's cache, an engine's choice (-DMLKV_BENCH_PAGE=N to try others).
// 128: one decode tile of a sequence is one run of K and one of V. Against 64 (NOTES.md v9, H100,
// three calls): MLKV-2 at batch 512 3% faster, MQA-12 up to 1%, the other rows within noise; each
// sequence holds up to 127 unused token slots instead of 63 (3% of a 2048-token sequence).
#ifndef MLKV_BENCH_PAGE
#define MLKV_BENCH_PAGE 128
#endif
constexpr int bench_page = MLKV_BENCH_PAGE;

struct bench_options {
  std::vector<std::string> configs;
  std::vector<std::string> batches{"1", "16", "128", "512", "max"};
  int context = 2048;
  double mem_frac = 0.8;
  std::string out = "cuda_model.json";
  int steps = 0;        ///< fixed timed steps (0: about 0.3 s worth)
  bool measure_bw = true;
  int gemm_algos = -1;  ///< cuda_model_options::gemm_algos (-1: the default)
  bool show_gemms = false;
  int logits_chunk = 512;  ///< cuda_model_options::logits_chunk
  int branch_sms = -2;     ///< cuda_model_options::branch_sms (-2: the default)
  int gemv_rows = -1;      ///< cuda_model_options::gemv_rows (-1: the default)
};

struct row {
  std::string config;
  int batch = 0;
  bool largest = false;
  double step_us = 0, tokens_per_s = 0;
  double weight_bytes = 0, kv_read_bytes = 0, kv_unique_bytes = 0;
  double floor_us = 0, floor_unique_us = 0;
  int steps = 0;
  int max_batch = 0;
  double bytes_per_seq = 0;
};

std::string json_row(const row& r) {
  char buf[1024];
  std::snprintf(buf, sizeof buf,
                "{\"config\": \"%s\", \"batch\": %d, \"largest\": %s, \"step_us\": %.2f, \"tokens_per_s\": %.1f, "
                "\"weight_bytes\": %.0f, \"kv_read_bytes\": %.0f, \"kv_unique_bytes\": %.0f, \"floor_us\": %.2f, "
                "\"floor_unique_us\": %.2f, \"step_over_floor\": %.3f, \"timed_steps\": %d}",
                r.config.c_str(), r.batch, r.largest ? "true" : "false", r.step_us, r.tokens_per_s, r.weight_bytes,
                r.kv_read_bytes, r.kv_unique_bytes, r.floor_us, r.floor_unique_us, r.step_us / r.floor_us, r.steps);
  return buf;
}

/// One configuration: every batch, the largest included.
template <model_shape S>
void bench_config(const char* name, const bench_options& o, double read_bw, std::size_t budget, cudaStream_t s,
                  std::vector<row>& rows, std::vector<std::string>& notes) {
  using cache_t = paged_kv_cache<S, bf16, bench_page>;
  io::gpt_neox_config cfg = io::pythia160m_config();
  cfg.num_key_value_heads = S.kv_heads;
  cfg.num_key_value_layers = S.kv_layers;
  // As the paper's converter does: the MLP widened to keep the parameter count.
  cfg.intermediate_size = paper_intermediate(io::pythia160m_config(), S.kv_heads, S.kv_layers);
  cfg.validate();
  const auto t0 = std::chrono::steady_clock::now();
  const auto w = model::random_weights<bf16>(cfg, 2024);
  const int ctx = o.context;
  const int max_steps = 64;
  // Tokens each sequence maps: the context, the timed steps and the warm-up/capture steps.
  const int seq_tokens = ctx + max_steps + 4;
  const std::size_t pages_per_seq = static_cast<std::size_t>(cache_t::blocks_for(seq_tokens));
  const std::size_t seq_bytes = pages_per_seq * cache_t::page_bytes;
  const std::size_t per_row = cuda::cuda_model<bf16, bf16>::scratch_bytes_per_row(w);
  const int chunk = o.logits_chunk;
  // Everything but the cache and the per-row scratch: the weights as uploaded (embed_in too),
  // the logits chunk, cuBLAS's workspace, a margin for the decode workspace and block tables.
  std::size_t fixed = w.embed_in.bytes() + w.step_bytes() + static_cast<std::size_t>(chunk) * cfg.vocab_size * 4 +
                      (32u << 20) + (64u << 20);
  const std::size_t per_seq = seq_bytes + per_row + 4 * (pages_per_seq + 8) + 64;
  constexpr std::size_t batch_cap = std::size_t{1} << 24;  // cuda_model_options::max_batch's limit
  int bmax = budget > fixed ? static_cast<int>(std::min<std::size_t>((budget - fixed) / per_seq, batch_cap)) : 0;
  if (static_cast<std::size_t>(bmax) >= batch_cap) {
    notes.push_back(std::string(name) + ": largest batch capped at " + std::to_string(batch_cap) + " (the model's limit)");
  }
  std::vector<int> batches;
  for (const auto& b : o.batches) {
    const int v = b == "max" ? bmax : std::atoi(b.c_str());
    if (v >= 1 && v <= bmax && std::find(batches.begin(), batches.end(), v) == batches.end()) batches.push_back(v);
  }
  const int max_b = batches.empty() ? 1 : *std::max_element(batches.begin(), batches.end());
  const int pages = static_cast<int>(pages_per_seq * static_cast<std::size_t>(max_b));
  cuda::device_paged_cache<cache_t> dc(pages, s);
  cuda::model_detail::fill_random_kernel<bf16><<<4096, 256, 0, s>>>(dc.data(), dc.bytes() / 2, 7, 1.f);
  MLKV_CUDA_CHECK(cudaGetLastError());
  cuda::cuda_model_options mo{.max_batch = max_b, .max_rows = 1, .max_context = seq_tokens, .logits_chunk = chunk};
  if (o.gemm_algos >= 0) mo.gemm_algos = o.gemm_algos;
  if (o.branch_sms >= -1) mo.branch_sms = o.branch_sms;
  if (o.gemv_rows >= 0) mo.gemv_rows = o.gemv_rows;
  cuda::cuda_model<bf16, bf16> m(w, mo, s);
  const double setup_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%-8s largest batch %d (%.2f MB per sequence at %d tokens, %.0f KB scratch per row); setup %.1f s\n",
              name, bmax, static_cast<double>(seq_bytes) / 1e6, seq_tokens, static_cast<double>(per_row) / 1e3,
              setup_s);
  std::fflush(stdout);
  auto& cache = dc.cache();
  timer t;
  for (const int B : batches) {
    std::vector<seq_id> ids;
    for (int b = 0; b < B; ++b) {
      const seq_id id = cache.add();
      cache.reserve(id, ctx - 1);  // pages already hold random K/V: no prefill needed for timing
      cache.commit(id, ctx - 1);
      ids.push_back(id);
    }
    std::vector<std::int32_t> tok(static_cast<std::size_t>(B));
    for (int b = 0; b < B; ++b) tok[static_cast<std::size_t>(b)] = (b * 7919) % cfg.vocab_size;
    m.decode(cache, ids, tok.data(), false);  // captures the graph (and runs the step twice)
    m.decode(cache, ids, m.next_tokens(), true);
    MLKV_CUDA_CHECK(cudaStreamSynchronize(s));
    // Enough steps for about 0.3 s, between 5 and max_steps.
    t.start(s);
    m.decode(cache, ids, m.next_tokens(), true);
    const double one_ms = t.stop_ms(s);
    const int steps = o.steps > 0 ? std::min(o.steps, max_steps - 4)
                                  : std::clamp(static_cast<int>(300.0 / std::max(one_ms, 1e-3)), 5, max_steps - 4);
    t.start(s);
    for (int i = 0; i < steps; ++i) m.decode(cache, ids, m.next_tokens(), true);
    const double ms = t.stop_ms(s);
    MLKV_CUDA_CHECK(cudaGetLastError());
    row r;
    r.config = name;
    r.batch = B;
    r.largest = B == bmax;
    r.steps = steps;
    r.step_us = ms * 1e3 / steps;
    r.tokens_per_s = B / (ms * 1e-3 / steps);
    const double mid_ctx = ctx + 3 + steps / 2.0;  // tokens attended, on average over the timed steps
    const double slot_bytes = 2.0 * S.kv_heads * S.head_dim * 2.0 * mid_ctx;  // K and V of one slot, one sequence
    r.weight_bytes = static_cast<double>(w.step_bytes());
    r.kv_read_bytes = slot_bytes * S.layers * B;       // every layer reads its owner's slot
    r.kv_unique_bytes = slot_bytes * S.kv_layers * B;  // each slot once (the cache's size)
    r.floor_us = (r.weight_bytes + r.kv_read_bytes) / read_bw * 1e6;
    r.floor_unique_us = (r.weight_bytes + r.kv_unique_bytes) / read_bw * 1e6;
    r.max_batch = bmax;
    r.bytes_per_seq = static_cast<double>(per_seq);
    rows.push_back(r);
    std::printf("  %-8s batch %6d: %10.1f us/step  %12.0f tokens/s  floor %9.1f us (x%.2f)  unique-bytes floor %9.1f us\n",
                name, B, r.step_us, r.tokens_per_s, r.floor_us, r.step_us / r.floor_us, r.floor_unique_us);
    std::fflush(stdout);
    for (const seq_id id : ids) cache.free(id);
    if (o.show_gemms) {
      for (const auto& [rows, in, out, cand, chosen, us] : m.gemm_choices()) {
        if (rows == B) std::printf("    gemm %5d x %5d -> %5d: algorithm %d of %d, %.2f us\n", rows, in, out, chosen, cand, us);
      }
    }
  }
}

int bench_main(int argc, char** argv) {
  bench_options o;
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) usage("missing value after " + a);
      return argv[++i];
    };
    if (a == "--configs") o.configs = split(next());
    else if (a == "--batches") o.batches = split(next());
    else if (a == "--context") o.context = std::atoi(next().c_str());
    else if (a == "--mem-frac") o.mem_frac = std::atof(next().c_str());
    else if (a == "--out") o.out = next();
    else if (a == "--steps") o.steps = std::atoi(next().c_str());
    else if (a == "--no-bw") o.measure_bw = false;
    else if (a == "--gemm-algos") o.gemm_algos = std::atoi(next().c_str());
    else if (a == "--show-gemms") o.show_gemms = true;
    else if (a == "--logits-chunk") o.logits_chunk = std::atoi(next().c_str());
    else if (a == "--branch-sms") o.branch_sms = std::atoi(next().c_str());
    else if (a == "--gemv-rows") o.gemv_rows = std::atoi(next().c_str());
    else if (a == "--branch-priority") cuda::model_detail::branch_priority.store(std::atoi(next().c_str()));
    else if (a == "--decode-splits") cuda::detail::decode_force_splits.store(std::atoi(next().c_str()));
    else if (a == "--kv-evict-first") cuda::model_detail::kv_evict_first.store(std::atoi(next().c_str()));
    else usage("unknown argument " + a);
  }
  if (o.context < 2 || o.context > 1 << 20) usage("--context must be in [2, 1048576]");
  if (!(o.mem_frac > 0.0 && o.mem_frac <= 0.95)) usage("--mem-frac must be in (0, 0.95]");
  if (o.logits_chunk < 1 || o.logits_chunk > 65535) usage("--logits-chunk must be in [1, 65535]");
  cudaStream_t s{};
  MLKV_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  cudaDeviceProp prop{};
  MLKV_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::size_t free_b = 0, total_b = 0;
  MLKV_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  std::string bw_shape;
  const double bw = o.measure_bw ? read_bandwidth(s, prop.multiProcessorCount, bw_shape) : 3e12;
  std::printf("%s: %d SMs, %.1f GiB (%.1f GiB free); read bandwidth %.3f TB/s (%s)\n", prop.name,
              prop.multiProcessorCount, total_b / 1073741824.0, free_b / 1073741824.0, bw / 1e12, bw_shape.c_str());
  const std::size_t budget = static_cast<std::size_t>(o.mem_frac * static_cast<double>(total_b));
  std::vector<row> rows;
  std::vector<std::string> notes;
  for_each_paper_config([&](auto i) {
    constexpr named_shape c = paper_configs[decltype(i)::value];
    const std::string n(c.name);
    if (!o.configs.empty() && std::find(o.configs.begin(), o.configs.end(), n) == o.configs.end()) return;
    bench_config<c.shape>(n.c_str(), o, bw, budget, s, rows, notes);
  });
  std::ofstream f(o.out);
  f << "{\n  \"gpu\": \"" << prop.name << "\",\n  \"sms\": " << prop.multiProcessorCount
    << ",\n  \"memory_bytes\": " << total_b << ",\n  \"memory_budget_bytes\": " << budget
    << ",\n  \"read_bw_bytes_per_s\": " << bw << ",\n  \"read_bw_kernel\": \"" << bw_shape
    << "\",\n  \"context\": " << o.context << ",\n  \"page_tokens\": " << bench_page
    << ",\n  \"weights\": \"bf16 random (seed 2024), MLP widened as the paper's converter does\",\n  \"cache\": \"bf16\","
    << "\n  \"notes\": [";
  for (std::size_t i = 0; i < notes.size(); ++i) f << (i ? ", " : "") << "\"" << notes[i] << "\"";
  f << "],\n  \"rows\": [\n";
  for (std::size_t i = 0; i < rows.size(); ++i) f << "    " << json_row(rows[i]) << (i + 1 < rows.size() ? ",\n" : "\n");
  f << "  ]\n}\n";
  std::printf("wrote %s\n", o.out.c_str());
  cudaStreamDestroy(s);
  return 0;
}

// ---- run (fidelity) -------------------------------------------------------------------------------

template <class W, class T, model_shape S>
void gpu_run(const std::string& dir, const std::vector<std::int32_t>& toks, int prompt, std::vector<float>& logits,
             std::vector<std::int32_t>& argmax, int& vocab) {
  using cache_t = paged_kv_cache<S, T, 16>;
  cudaStream_t s{};
  MLKV_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  {
    const auto w = model::load_checkpoint<W>(dir);
    const int V = w.vocab, n = static_cast<int>(toks.size());
    vocab = V;
    cuda::device_paged_cache<cache_t> dc(cache_t::blocks_for(n + 1) + 1, s);
    cuda::cuda_model<W, T> m(w, {.max_batch = 1, .max_rows = prompt, .max_context = n + 1, .logits_chunk = 64}, s);
    const seq_id id = dc.cache().add();
    const int steps = n - prompt;
    logits.assign(static_cast<std::size_t>(prompt + steps) * V, NAN);
    argmax.assign(static_cast<std::size_t>(prompt + steps), -1);
    const std::vector<std::int32_t> offs{0, prompt};
    m.forward(dc.cache(), std::span<const seq_id>(&id, 1), offs,
              std::span<const std::int32_t>(toks.data(), static_cast<std::size_t>(prompt)), model::logits_rows::all,
              logits.data());
    for (int i = 0; i < steps; ++i) {
      m.decode(dc.cache(), std::span<const seq_id>(&id, 1), toks.data() + prompt + i, false,
               logits.data() + static_cast<std::size_t>(prompt + i) * V);
      MLKV_CUDA_CHECK(cudaMemcpyAsync(argmax.data() + prompt + i, m.next_tokens(), 4, cudaMemcpyDeviceToHost, s));
    }
    MLKV_CUDA_CHECK(cudaStreamSynchronize(s));
    for (int r = 0; r < prompt; ++r) {
      const float* row = logits.data() + static_cast<std::size_t>(r) * V;
      argmax[static_cast<std::size_t>(r)] = static_cast<std::int32_t>(std::max_element(row, row + V) - row);
    }
  }
  cudaStreamDestroy(s);
}

int run_main(int argc, char** argv) {
  std::string dir, tokens_file, out, dtype = "f32";
  int prompt = 0;
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) usage("missing value after " + a);
      return argv[++i];
    };
    if (a == "--model") dir = next();
    else if (a == "--tokens") tokens_file = next();
    else if (a == "--prompt") prompt = std::atoi(next().c_str());
    else if (a == "--dtype") dtype = next();
    else if (a == "--out") out = next();
    else usage("unknown argument " + a);
  }
  if (dir.empty() || tokens_file.empty() || out.empty()) usage("run needs --model, --tokens and --out");
  std::ifstream tf(tokens_file, std::ios::binary);
  std::vector<std::int32_t> toks;
  std::int32_t v;
  while (tf.read(reinterpret_cast<char*>(&v), 4)) toks.push_back(v);
  if (prompt < 1 || prompt > static_cast<int>(toks.size())) usage("--prompt must be in [1, tokens in the file]");
  std::vector<float> logits;
  std::vector<std::int32_t> am;
  int vocab = 0;
  const auto cfg = io::read_gpt_neox_config(std::filesystem::path(dir) / "config.json");
  if (dtype == "cpu") {
    cpu_run(dir, toks, prompt, logits, am, vocab);
  } else if (dtype == "f32" || dtype == "bf16") {
    dispatch_in<paper_configs>(cfg.shape(), [&](auto g) {
      constexpr model_shape S = decltype(g)::shape;
      if (dtype == "f32") gpu_run<float, f16, S>(dir, toks, prompt, logits, am, vocab);
      else gpu_run<bf16, bf16, S>(dir, toks, prompt, logits, am, vocab);
    });
  } else {
    usage("--dtype must be f32, bf16 or cpu");
  }
  std::ofstream(out + ".logits", std::ios::binary)
      .write(reinterpret_cast<const char*>(logits.data()), static_cast<std::streamsize>(logits.size() * 4));
  std::ofstream(out + ".argmax", std::ios::binary)
      .write(reinterpret_cast<const char*>(am.data()), static_cast<std::streamsize>(am.size() * 4));
  std::printf("%s: %zu rows of %d logits -> %s.logits\n", dtype.c_str(), am.size(), vocab, out.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) usage("no command");
  const std::string cmd = argv[1];
  try {
    if (cmd == "bench") return bench_main(argc, argv);
    if (cmd == "run") return run_main(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mlkv-cuda-model: %s\n", e.what());
    return 1;
  }
  usage("unknown command " + cmd);
}
