#include "cpu_run.hpp"

#include <mlkv/cache/paged.hpp>
#include <mlkv/cpu/executor.hpp>
#include <mlkv/dispatch.hpp>
#include <mlkv/io/convert.hpp>
#include <mlkv/model/gpt_neox.hpp>
#include <mlkv/model/weights.hpp>
#include <mlkv/presets.hpp>

#include <algorithm>
#include <cmath>
#include <span>

void cpu_run(const std::string& dir, const std::vector<std::int32_t>& toks, int prompt, std::vector<float>& logits,
             std::vector<std::int32_t>& argmax, int& vocab) {
  const auto w = mlkv::model::load_checkpoint<float>(dir);
  mlkv::cpu::thread_pool pool;
  mlkv::model::cpu_model<float> m(w, {.exec = &pool});
  const int V = w.vocab, n = static_cast<int>(toks.size());
  vocab = V;
  logits.assign(static_cast<std::size_t>(n) * V, NAN);
  argmax.assign(static_cast<std::size_t>(n), -1);
  mlkv::dispatch_in<mlkv::paper_configs>(w.shape, [&](auto g) {
    using cache_t = mlkv::paged_kv_cache<decltype(g)::shape, float, 16>;
    cache_t cache(cache_t::blocks_for(n) + 1);
    const mlkv::seq_id id = cache.add();
    m.forward(cache, id, std::span<const std::int32_t>(toks.data(), static_cast<std::size_t>(prompt)),
              mlkv::model::logits_rows::all, logits.data());
    for (int i = prompt; i < n; ++i) {
      m.forward(cache, id, std::span<const std::int32_t>(toks.data() + i, 1), mlkv::model::logits_rows::last,
                logits.data() + static_cast<std::size_t>(i) * V);
    }
  });
  for (int r = 0; r < n; ++r) {
    const float* row = logits.data() + static_cast<std::size_t>(r) * V;
    argmax[static_cast<std::size_t>(r)] = static_cast<std::int32_t>(std::max_element(row, row + V) - row);
  }
}

int paper_intermediate(const mlkv::io::gpt_neox_config& mha, int kv_heads, int kv_layers) {
  return mlkv::io::plan_conversion(mha, kv_heads, kv_layers).new_intermediate;
}
