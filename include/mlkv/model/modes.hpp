#pragma once
/// \file model/modes.hpp
/// The choices a model's forward pass takes (shared by the CPU model, model/gpt_neox.hpp, and the
/// CUDA model, cuda/model/gpt_neox.cuh), in a header of their own so CUDA code need not include
/// the CPU kernels.

#include <cstdint>

namespace mlkv::model {

/// Where the keys are rotated (see the file comment).
enum class key_rope : std::uint8_t {
  cached_rotated,  ///< keys are rotated when appended (Hugging Face GPT-NeoX; the default)
  rotate_on_read,  ///< keys are cached before rotation; owner layers rotate them when read
};

/// Which rows of a forward pass get logits.
enum class logits_rows : std::uint8_t {
  none,      ///< no logits (a prefill whose output is not needed)
  last,      ///< the last new row of each sequence: [batch, vocab] (rows of sequences with no new
             ///< tokens are left untouched)
  all,       ///< every new row: [rows, vocab]
};

}  // namespace mlkv::model
