// libFuzzer target: the JSON reader and the GPT-NeoX config.json reader on arbitrary text.
// Every input must be refused with an mlkv::error or parse; a parsed value must write and read
// back to an equal value (compact and indented), and an accepted config must give a valid
// geometry and read back from its own JSON to the same configuration.

#include <mlkv/dispatch.hpp>
#include <mlkv/io/hf_config.hpp>
#include <mlkv/io/json.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace {
[[noreturn]] void property_failed() { __builtin_trap(); }
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace mlkv;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  json::value v;
  try {
    v = json::parse(text, "fuzz input");
  } catch (const error&) {
    return 0;
  }
  for (const int indent : {-1, 2}) {
    const std::string s = json::dump(v, indent);
    if (!(json::parse(s, "round trip") == v)) property_failed();
  }
  try {
    const io::gpt_neox_config c = io::parse_gpt_neox_config(v, "fuzz config");
    const model_shape s = c.shape();
    if (!s.valid()) property_failed();
    (void)find_compiled(s);
    (void)describe(s);
    const io::gpt_neox_config d = io::parse_gpt_neox_config(c.to_json(), "round trip");
    if (!(d.shape() == s) || d.intermediate_size != c.intermediate_size || d.vocab_size != c.vocab_size ||
        d.rotary_pct != c.rotary_pct || d.rotary_emb_base != c.rotary_emb_base || d.act != c.act ||
        d.use_parallel_residual != c.use_parallel_residual || d.layer_norm_eps != c.layer_norm_eps ||
        d.eos_token_ids != c.eos_token_ids || d.tie_word_embeddings != c.tie_word_embeddings) {
      property_failed();
    }
  } catch (const error&) {
    // Refused with a message.
  }
  return 0;
}
