// mlkv-generate: MLKV end to end on the CPU. Generates a batch of tokens with the reference
// GPT-NeoX model over the paged KV cache, and prints what the cache costs and how fast it runs.
//
//   mlkv-generate                      Pythia-160M-shaped models with random weights (fixed seed),
//                                      one per configuration of the paper (Zuhri et al. 2024)
//   mlkv-generate --model DIR          a checkpoint directory (config.json + model.safetensors)
//
// Options: --batch B  --prompt-tokens P  --new-tokens N  --prompt 1,2,3 (token ids, every
// sequence)  --temperature T  --top-k K  --top-p P  --seed S  --threads N  --weights bf16|f32
// --configs MHA-144,MLKV-2,...  --rope cached|on-read. Bad arguments: a usage message, exit 2.
#include <mlkv/cache/paged.hpp>
#include <mlkv/cpu/executor.hpp>
#include <mlkv/dispatch.hpp>
#include <mlkv/io/convert.hpp>
#include <mlkv/model/generate.hpp>
#include <mlkv/model/gpt_neox.hpp>
#include <mlkv/model/weights.hpp>
#include <mlkv/presets.hpp>

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

using clock_type = std::chrono::steady_clock;
constexpr int page_tokens = 16;

struct options {
  std::string model_dir;
  int batch = 4;
  int prompt_tokens = 32;
  int new_tokens = 32;
  std::vector<std::int32_t> prompt;
  mlkv::model::sampling sample;
  int threads = 0;
  bool f32_weights = false;
  std::vector<std::string> configs;
  mlkv::model::key_rope rope = mlkv::model::key_rope::cached_rotated;
};

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr,
               "mlkv-generate: %s\n"
               "usage: mlkv-generate [--model DIR] [--batch B] [--prompt-tokens P] [--new-tokens N]\n"
               "                     [--prompt ID,ID,...] [--temperature T] [--top-k K] [--top-p P] [--seed S]\n"
               "                     [--threads N] [--weights bf16|f32] [--configs NAME,...] [--rope cached|on-read]\n"
               "  --model DIR        run a checkpoint (config.json + model.safetensors); without it, each of the\n"
               "                     paper's nine configurations with random Pythia-160M-shaped weights\n"
               "  --batch B          sequences generated together, 1..1024 (default 4)\n"
               "  --prompt-tokens P  random prompt length, 1..65536 (default 32; ignored with --prompt)\n"
               "  --new-tokens N     tokens generated per sequence, 1..65536 (default 32)\n"
               "  --temperature T    0 is greedy (default); top-k / top-p / seed as usual\n"
               "  --threads N        0 = every core (default)\n",
               why.c_str());
  std::exit(2);
}

long parse_long(std::string_view flag, const char* s, long lo, long hi) {
  char* end = nullptr;
  const long v = std::strtol(s, &end, 10);
  if (end == s || *end != '\0' || v < lo || v > hi) {
    usage(std::string(flag) + " takes an integer in " + std::to_string(lo) + ".." + std::to_string(hi) + ", got '" +
          s + "'");
  }
  return v;
}

float parse_float(std::string_view flag, const char* s, float lo, float hi) {
  char* end = nullptr;
  const float v = std::strtof(s, &end);
  if (end == s || *end != '\0' || !(v >= lo && v <= hi)) {
    usage(std::string(flag) + " takes a number in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got '" +
          s + "'");
  }
  return v;
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::size_t a = 0;
  while (a <= s.size()) {
    const std::size_t b = s.find(',', a);
    out.push_back(s.substr(a, b == std::string::npos ? std::string::npos : b - a));
    if (b == std::string::npos) break;
    a = b + 1;
  }
  return out;
}

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) usage(std::string(a) + " needs a value");
      return argv[++i];
    };
    if (a == "--model") {
      o.model_dir = value();
    } else if (a == "--batch") {
      o.batch = static_cast<int>(parse_long(a, value(), 1, 1024));
    } else if (a == "--prompt-tokens") {
      o.prompt_tokens = static_cast<int>(parse_long(a, value(), 1, 65536));
    } else if (a == "--new-tokens") {
      o.new_tokens = static_cast<int>(parse_long(a, value(), 1, 65536));
    } else if (a == "--prompt") {
      for (const auto& t : split(value())) o.prompt.push_back(static_cast<std::int32_t>(parse_long("--prompt", t.c_str(), 0, 1 << 30)));
    } else if (a == "--temperature") {
      o.sample.temperature = parse_float(a, value(), 0.f, 100.f);
    } else if (a == "--top-k") {
      o.sample.top_k = static_cast<int>(parse_long(a, value(), 0, 1 << 30));
    } else if (a == "--top-p") {
      o.sample.top_p = parse_float(a, value(), 1e-6f, 1.f);
    } else if (a == "--seed") {
      o.sample.seed = static_cast<std::uint64_t>(parse_long(a, value(), 0, 1L << 62));
    } else if (a == "--threads") {
      o.threads = static_cast<int>(parse_long(a, value(), 0, 4096));
    } else if (a == "--weights") {
      const std::string_view v = value();
      if (v != "bf16" && v != "f32") usage("--weights takes bf16 or f32, got '" + std::string(v) + "'");
      o.f32_weights = v == "f32";
    } else if (a == "--configs") {
      o.configs = split(value());
      for (const auto& c : o.configs) {
        bool known = false;
        for (const auto& p : mlkv::paper_configs) known = known || p.name == c;
        if (!known) usage("--configs: unknown configuration '" + c + "' (the paper's: MHA-144, GQA-48, MLKV-48, MQA-12, MLKV-12, MLKV-6, MLKV-4, MLKV-2, MLKV-1)");
      }
    } else if (a == "--rope") {
      const std::string_view v = value();
      if (v != "cached" && v != "on-read") usage("--rope takes cached or on-read, got '" + std::string(v) + "'");
      o.rope = v == "cached" ? mlkv::model::key_rope::cached_rotated : mlkv::model::key_rope::rotate_on_read;
    } else if (a == "--help" || a == "-h") {
      usage("generate tokens with MLKV caches");
    } else {
      usage("unknown argument '" + std::string(a) + "'");
    }
  }
  o.sample.max_new_tokens = o.new_tokens;
  return o;
}

struct run_stats {
  double prefill_ms = 0, decode_ms = 0;
  int decode_tokens = 0;
  std::size_t cache_bytes = 0, bytes_per_token = 0;
  std::vector<std::vector<std::int32_t>> out;
};

/// Generates with geometry S: prompts in, tokens out, with timing.
template <mlkv::model_shape S, class W>
run_stats generate(const mlkv::model::gpt_neox_weights<W>& w, const options& o,
                   const std::vector<std::vector<std::int32_t>>& prompts, mlkv::cpu::executor& pool,
                   const std::string& label) {
  using cache_t = mlkv::paged_kv_cache<S, mlkv::bf16, page_tokens>;
  int pages = 0;
  for (const auto& p : prompts) pages += cache_t::blocks_for(static_cast<int>(p.size()) + o.new_tokens);
  cache_t cache(pages);
  mlkv::model::cpu_model<W> model(w, {.exec = &pool, .keys = o.rope});
  mlkv::model::generator<W, cache_t> gen(model, cache);
  run_stats st;
  st.bytes_per_token = cache_t::bytes_per_token;
  st.out.resize(prompts.size());
  std::vector<int> ids;
  for (std::size_t b = 0; b < prompts.size(); ++b) {
    mlkv::model::sampling s = o.sample;
    s.seed = o.sample.seed + b;
    ids.push_back(gen.add(prompts[b], s));
  }
  const bool interactive = ::isatty(STDOUT_FILENO) != 0;  // progress on a terminal only
  int step = 0;
  while (!gen.idle()) {
    const auto t0 = clock_type::now();
    const auto events = gen.step();
    const double ms = std::chrono::duration<double, std::milli>(clock_type::now() - t0).count();
    if (step == 0) {
      st.prefill_ms = ms;  // the prompts, and the first new token of each sequence
      st.cache_bytes = static_cast<std::size_t>(cache.used_pages()) * cache_t::page_bytes;
    } else {
      st.decode_ms += ms;
      st.decode_tokens += static_cast<int>(events.size());
    }
    st.cache_bytes = std::max(st.cache_bytes, static_cast<std::size_t>(cache.used_pages()) * cache_t::page_bytes);
    for (const auto& e : events) st.out[static_cast<std::size_t>(e.request - ids[0])].push_back(e.token);
    ++step;
    if (interactive) {
      std::printf("\r  %-8s step %4d/%d", label.c_str(), step, o.new_tokens);
      std::fflush(stdout);
    }
  }
  if (interactive) std::printf("\r%*s\r", 60, "");
  return st;
}

std::vector<std::vector<std::int32_t>> make_prompts(const options& o, int vocab) {
  std::vector<std::vector<std::int32_t>> prompts(static_cast<std::size_t>(o.batch));
  std::mt19937 gen(1234);
  for (auto& p : prompts) {
    if (!o.prompt.empty()) {
      p = o.prompt;
    } else {
      for (int i = 0; i < o.prompt_tokens; ++i) p.push_back(std::uniform_int_distribution<int>(0, vocab - 1)(gen));
    }
  }
  return prompts;
}

void print_row(const std::string& name, const mlkv::model_shape& s, const run_stats& st) {
  std::string owners;
  for (int slot = 0; slot < s.kv_layers; ++slot) owners += (slot ? "," : "") + std::to_string(s.owner_layer(slot));
  const double tps = st.decode_ms > 0 ? st.decode_tokens / (st.decode_ms / 1000.0) : 0.0;
  std::printf("%-8s %-28s %9zu %12.3f %11.1f %11.1f   ", name.c_str(), owners.c_str(), st.bytes_per_token,
              static_cast<double>(st.cache_bytes) / (1024.0 * 1024.0), st.prefill_ms, tps);
  for (std::size_t i = 0; i < st.out[0].size() && i < 6; ++i) std::printf("%d ", st.out[0][i]);
  std::printf("...\n");
}

void print_header() {
  std::printf("%-8s %-28s %9s %12s %11s %11s   %s\n", "config", "owner layers", "KV B/tok", "cache MiB",
              "prefill ms", "decode t/s", "sequence 0");
}

template <class W>
int run_paper(const options& o, mlkv::cpu::executor& pool) {
  const mlkv::io::gpt_neox_config mha = mlkv::io::pythia160m_config();
  const auto prompts = make_prompts(o, mha.vocab_size);
  std::printf("Pythia-160M-shaped models with random weights (seed 2024), %s weights, bf16 cache in pages of %d "
              "tokens\nbatch %d, %zu prompt tokens, %d new tokens, %s, %d threads\n\n",
              sizeof(W) == 4 ? "f32" : "bf16", page_tokens, o.batch, prompts[0].size(), o.new_tokens,
              o.sample.temperature > 0 ? "sampled" : "greedy", pool.concurrency());
  print_header();
  mlkv::for_each_paper_config([&](auto i) {
    constexpr mlkv::named_shape c = mlkv::paper_configs[decltype(i)::value];
    if (!o.configs.empty() && std::find(o.configs.begin(), o.configs.end(), std::string(c.name)) == o.configs.end()) return;
    mlkv::io::gpt_neox_config cfg = mha;
    cfg.num_key_value_heads = c.shape.kv_heads;
    cfg.num_key_value_layers = c.shape.kv_layers;
    // The paper's converter widens the MLP to keep the parameter count.
    cfg.intermediate_size = mlkv::io::plan_conversion(mha, c.shape.kv_heads, c.shape.kv_layers).new_intermediate;
    cfg.validate();
    const bool interactive = ::isatty(STDOUT_FILENO) != 0;
    if (interactive) {
      std::printf("  %-8.*s building random weights...", static_cast<int>(c.name.size()), c.name.data());
      std::fflush(stdout);
    }
    const auto w = mlkv::model::random_weights<W>(cfg, 2024);
    const run_stats st = generate<c.shape, W>(w, o, prompts, pool, std::string(c.name));
    print_row(std::string(c.name), c.shape, st);
  });
  std::printf("\nKV B/tok: cache bytes per token (bf16); cache MiB: pages in use at the end; prefill ms: the first\n"
              "step (every prompt, and the first new token); decode t/s: generated tokens per second after it.\n");
  return 0;
}

template <class W>
int run_checkpoint(const options& o, mlkv::cpu::executor& pool) {
  const auto w = mlkv::model::load_checkpoint<W>(o.model_dir);
  for (std::int32_t t : o.prompt) {
    if (t >= w.vocab) usage("--prompt token " + std::to_string(t) + " is outside the vocabulary [0, " + std::to_string(w.vocab) + ")");
  }
  const auto prompts = make_prompts(o, w.vocab);
  std::printf("%s: %s, %d parameters, batch %d\n\n", o.model_dir.c_str(), mlkv::describe(w.shape).c_str(),
              static_cast<int>(w.parameters()), o.batch);
  print_header();
  return mlkv::dispatch(w.shape, [&](auto g) {
    constexpr mlkv::model_shape S = decltype(g)::shape;
    const run_stats st = generate<S, W>(w, o, prompts, pool, "model");
    print_row("model", S, st);
    for (std::size_t b = 0; b < st.out.size(); ++b) {
      std::printf("sequence %zu:", b);
      for (std::int32_t t : st.out[b]) std::printf(" %d", t);
      std::printf("\n");
    }
    return 0;
  });
}

}  // namespace

int main(int argc, char** argv) {
  const options o = parse(argc, argv);
  try {
    mlkv::cpu::thread_pool pool(o.threads);
    if (!o.model_dir.empty()) {
      return o.f32_weights ? run_checkpoint<float>(o, pool) : run_checkpoint<mlkv::bf16>(o, pool);
    }
    return o.f32_weights ? run_paper<float>(o, pool) : run_paper<mlkv::bf16>(o, pool);
  } catch (const mlkv::error& e) {
    std::fprintf(stderr, "mlkv-generate: %s\n", e.what());
    return 1;
  }
}
