#pragma once
/// \file model/modes.hpp
/// The choices a model's forward pass takes, and the cache bookkeeping of a step, shared by the
/// CPU model (model/gpt_neox.hpp) and the CUDA model (cuda/model/gpt_neox.cuh), in a header of
/// their own so CUDA code need not include the CPU kernels.

#include <cstdint>
#include <span>

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

/// Reserves offsets[b + 1] - offsets[b] new tokens for every sequence of a step, all or nothing:
/// if one reservation fails (pool exhausted, bad handle), the sequences reserved before it are
/// truncated back to their lengths and the error propagates, so the cache is as it was.
template <class Cache, class Seq>
void reserve_rows(Cache& cache, std::span<const Seq> seqs, std::span<const std::int32_t> offsets) {
  int done = 0;
  try {
    for (; done < static_cast<int>(seqs.size()); ++done) {
      const int n = offsets[done + 1] - offsets[done];
      if (n > 0) cache.reserve(seqs[done], n);
    }
  } catch (...) {
    for (int b = 0; b < done; ++b) cache.truncate(seqs[b], cache.length(seqs[b]));
    throw;
  }
}

}  // namespace mlkv::model
