#pragma once
/// \file plan.hpp
/// Capacity planning: how many sequences of a given length fit in a memory budget, for a
/// geometry and a storage type, in a contiguous cache or a paged one.
///
/// The arithmetic is the caches' own, exactly:
///  - contiguous (`kv_cache`): a sequence of `tokens` tokens takes tokens × bytes_per_token, the
///    cache is batch × that (cache/contiguous.hpp);
///  - paged (`paged_kv_cache`): a sequence maps ceil(tokens / P) pages of P × bytes_per_token
///    bytes, and its block table holds one 4-byte page index per page. Both count against the
///    budget (a device engine keeps the packed block tables in device memory too). Paging costs
///    at most one partly used page per sequence plus its block table; that is the
///    `overhead_bytes_per_sequence` below.
/// bytes_per_token = 2 × kv_layers × kv_heads × head_dim × sizeof(storage) (MLKV, Zuhri et al.
/// 2024, §3: only the Lkv owner layers store K/V).

#include <cstddef>
#include <cstdint>
#include <limits>

#include "dtype.hpp"
#include "error.hpp"
#include "shape.hpp"

namespace mlkv {

/// The answer of a capacity plan. Byte counts are exact.
struct capacity_plan {
  std::int64_t sequences = 0;                 ///< sequences of `tokens` tokens that fit in the budget
  std::int64_t tokens = 0;                    ///< tokens per sequence (the question)
  int page_tokens = 0;                        ///< P (0: contiguous)
  std::int64_t pages_per_sequence = 0;        ///< ceil(tokens / P) (0: contiguous)
  std::int64_t pages = 0;                     ///< sequences × pages_per_sequence: the pool to allocate
  std::uint64_t page_bytes = 0;               ///< P × bytes per token (0: contiguous)
  std::uint64_t token_bytes_per_sequence = 0; ///< tokens × bytes per token: what the K/V itself needs
  std::uint64_t table_bytes_per_sequence = 0; ///< 4 × pages_per_sequence
  std::uint64_t bytes_per_sequence = 0;       ///< everything one sequence takes (pages + block table)
  std::uint64_t overhead_bytes_per_sequence = 0; ///< bytes_per_sequence - token_bytes_per_sequence
  std::uint64_t bytes_used = 0;               ///< sequences × bytes_per_sequence (<= the budget)
};

namespace detail {
inline std::uint64_t plan_mul(std::uint64_t a, std::uint64_t b) {
  MLKV_CHECK(a == 0 || b <= std::numeric_limits<std::uint64_t>::max() / a, "capacity plan overflows: ", a, " x ", b);
  return a * b;
}
inline void plan_checks(const model_shape& s, std::int64_t tokens) {
  s.validate();
  MLKV_CHECK(tokens >= 1, "tokens per sequence (", tokens, ") must be at least 1");
}
}  // namespace detail

/// Bytes of one page of `page_tokens` tokens (all owner slots and KV heads).
inline std::uint64_t page_bytes(const model_shape& s, dtype t, int page_tokens) {
  s.validate();
  MLKV_CHECK(page_tokens >= 1 && page_tokens <= 65536, "tokens per page (", page_tokens, ") must be in 1..65536");
  return detail::plan_mul(s.bytes_per_token(t), static_cast<std::uint64_t>(page_tokens));
}

/// How many sequences of `tokens` tokens a contiguous cache of `budget` bytes holds.
inline capacity_plan plan_contiguous(const model_shape& s, dtype t, std::uint64_t budget, std::int64_t tokens) {
  detail::plan_checks(s, tokens);
  capacity_plan p;
  p.tokens = tokens;
  p.token_bytes_per_sequence = detail::plan_mul(s.bytes_per_token(t), static_cast<std::uint64_t>(tokens));
  p.bytes_per_sequence = p.token_bytes_per_sequence;
  p.sequences = static_cast<std::int64_t>(budget / p.bytes_per_sequence);
  p.bytes_used = static_cast<std::uint64_t>(p.sequences) * p.bytes_per_sequence;
  return p;
}

/// How many sequences of `tokens` tokens a paged cache with `page_tokens` tokens per page holds
/// in `budget` bytes, counting each sequence's pages and block table.
inline capacity_plan plan_paged(const model_shape& s, dtype t, int page_tokens, std::uint64_t budget,
                                std::int64_t tokens) {
  detail::plan_checks(s, tokens);
  capacity_plan p;
  p.tokens = tokens;
  p.page_tokens = page_tokens;
  p.page_bytes = page_bytes(s, t, page_tokens);
  p.pages_per_sequence = tokens / page_tokens + (tokens % page_tokens != 0 ? 1 : 0);
  const auto pps = static_cast<std::uint64_t>(p.pages_per_sequence);
  p.token_bytes_per_sequence = detail::plan_mul(s.bytes_per_token(t), static_cast<std::uint64_t>(tokens));
  p.table_bytes_per_sequence = detail::plan_mul(pps, sizeof(std::int32_t));
  p.bytes_per_sequence = detail::plan_mul(pps, p.page_bytes) + p.table_bytes_per_sequence;
  p.overhead_bytes_per_sequence = p.bytes_per_sequence - p.token_bytes_per_sequence;
  p.sequences = static_cast<std::int64_t>(budget / p.bytes_per_sequence);
  p.pages = p.sequences * p.pages_per_sequence;
  p.bytes_used = static_cast<std::uint64_t>(p.sequences) * p.bytes_per_sequence;
  return p;
}

/// 1 GiB.
inline constexpr std::uint64_t gib = std::uint64_t{1} << 30;

}  // namespace mlkv
