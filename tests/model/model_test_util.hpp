#pragma once
// Helpers of the model-file tests: temporary directories, small configurations, error messages.

#include <mlkv/error.hpp>
#include <mlkv/io/hf_config.hpp>
#include <mlkv/shape.hpp>

#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

namespace mlkv_test {

/// The message of the mlkv::error that f throws, or "(no error)".
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const mlkv::error& e) {
    return e.what();
  }
  return "(no error)";
}

/// A fresh directory under the system's temporary directory, removed with its contents.
struct temp_dir {
  std::filesystem::path path;
  temp_dir() {
    std::random_device rd;
    path = std::filesystem::temp_directory_path() /
           ("mlkv_test_" + std::to_string(::getpid()) + "_" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(path);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::filesystem::path operator/(const std::string& name) const { return path / name; }
};

inline void write_bytes(const std::filesystem::path& p, const void* data, std::size_t n) {
  std::ofstream(p, std::ios::binary).write(static_cast<const char*>(data), static_cast<std::streamsize>(n));
}
inline void write_text(const std::filesystem::path& p, const std::string& s) { write_bytes(p, s.data(), s.size()); }

/// A GPT-NeoX configuration of geometry `s` (hidden = q_heads * head_dim), with small vocab and MLP.
inline mlkv::io::gpt_neox_config small_config(const mlkv::model_shape& s, int vocab = 37, int intermediate = 48) {
  mlkv::io::gpt_neox_config c;
  c.hidden_size = s.q_heads * s.head_dim;
  c.num_attention_heads = s.q_heads;
  c.num_hidden_layers = s.layers;
  c.num_key_value_heads = s.kv_heads;
  c.num_key_value_layers = s.kv_layers;
  c.intermediate_size = intermediate;
  c.vocab_size = vocab;
  c.max_position_embeddings = 128;
  c.rotary_pct = 0.5;
  c.eos_token_ids = {0};
  c.validate();
  return c;
}

}  // namespace mlkv_test

/// Checks that `expr` throws an mlkv::error whose message contains `part` (prints the message).
#define MLKV_CHECK_ERROR(expr, part)                                                  \
  do {                                                                                \
    const std::string mlkv_msg_ = ::mlkv_test::error_of([&] { (void)(expr); });       \
    INFO("message: " << mlkv_msg_);                                                   \
    CHECK(mlkv_msg_.find(part) != std::string::npos);                                 \
  } while (false)
