#pragma once
/// \file cache/contiguous.hpp
/// A contiguous KV cache for a batch of sequences, laid out by the geometry.
///
/// Layout: one slab per owner slot, nothing for consumer layers:
///     [slot][K|V][batch][kv_head][capacity][head_dim]
/// so the rows a kernel reads for one (sequence, KV head) are consecutive in memory.
///
/// Appending is two-phase, because one new token is written by every owner layer in turn during
/// a forward step, and every layer must attend over it: `append` writes the new tokens' K/V for
/// one slot at positions length(seq) .. length(seq)+n-1 without changing the length, and
/// `commit` advances the length once the step is done. An append that would pass the capacity
/// throws before writing anything.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "../dtype.hpp"
#include "../error.hpp"
#include "../rope.hpp"
#include "../shape.hpp"
#include "buffer.hpp"
#include "view.hpp"

namespace mlkv {

/// Contiguous KV cache of geometry `S` with storage type `T` (float, f16 or bf16).
template <model_shape S, class T>
class kv_cache {
  static_assert(is_storage_v<T>, "mlkv: the cache storage type must be float, mlkv::f16 or mlkv::bf16");
  static_assert(detail::report_geometry_error<S.check()>(), "mlkv: invalid model geometry");

 public:
  using value_type = T;
  /// The (checked) geometry.
  static constexpr model_shape shape = S;
  static constexpr int slots = S.kv_layers;
  static constexpr int kv_heads = S.kv_heads;
  static constexpr int head_dim = S.head_dim;
  /// Cache bytes per token of one sequence.
  static constexpr std::size_t bytes_per_token = S.template bytes_per_token<T>();

  /// Values (of T) a cache of `batch` sequences x `capacity` tokens needs.
  static std::size_t elements(int batch, int capacity) {
    check_dims(batch, capacity);
    std::size_t n = detail::checked_mul(static_cast<std::size_t>(batch), static_cast<std::size_t>(capacity),
                                        "cache size");
    return detail::checked_mul(n, S.values_per_token(), "cache size");
  }
  /// Bytes a cache of `batch` x `capacity` needs.
  static std::size_t bytes(int batch, int capacity) {
    return detail::checked_mul(elements(batch, capacity), sizeof(T), "cache size");
  }

  /// A cache that owns its (zeroed, 64-byte aligned; past 2 MiB, on transparent huge pages where
  /// the system grants them: see detail::cache_memory) memory.
  kv_cache(int batch, int capacity)
      : batch_(batch), capacity_(capacity), owned_(elements(batch, capacity)), lengths_(static_cast<std::size_t>(batch), 0) {
    data_ = owned_.data();
  }

  /// A cache over memory the caller provides (at least elements(batch, capacity) values); the
  /// caller keeps it alive for the cache's lifetime.
  kv_cache(std::span<T> memory, int batch, int capacity) : batch_(batch), capacity_(capacity) {
    const std::size_t need = elements(batch, capacity);
    MLKV_CHECK(memory.size() >= need, "caller memory holds ", memory.size(), " values, a cache of batch ", batch,
               " x capacity ", capacity, " needs ", need);
    MLKV_CHECK(memory.data() != nullptr, "caller memory is null");
    data_ = memory.data();
    lengths_.assign(static_cast<std::size_t>(batch), 0);
  }

  kv_cache(kv_cache&&) noexcept = default;
  kv_cache& operator=(kv_cache&&) noexcept = default;
  kv_cache(const kv_cache&) = delete;
  kv_cache& operator=(const kv_cache&) = delete;

  int batch() const { return batch_; }
  int capacity() const { return capacity_; }
  /// Committed tokens of sequence `seq`.
  int length(int seq) const {
    check_seq(seq);
    return lengths_[static_cast<std::size_t>(seq)];
  }
  /// Committed tokens of every sequence: [batch].
  std::span<const std::int32_t> lengths() const { return lengths_; }
  /// Bytes of the cache memory (whether owned or viewed).
  std::size_t size_bytes() const { return bytes(batch_, capacity_); }

  /// Writes K/V of `n` new tokens of sequence `seq` into `slot` at positions length(seq)..+n-1,
  /// rotating keys by `rope` (when given) at those positions. Lengths do not change (see commit).
  /// k, v: [n, kv_heads, head_dim]
  void append(int slot, int seq, int n, const float* k, const float* v, const rotary* rope = nullptr) {
    check_slot(slot);
    check_room(seq, n);
    check_rope(rope);
    write_rows(slot, seq, n, k, v, rope);
  }

  /// append() through an owner layer, checked at compile time: a consumer layer has no K/V.
  template <int Layer>
  void append_layer(int seq, int n, const float* k, const float* v, const rotary* rope = nullptr) {
    static_assert(Layer >= 0 && Layer < S.layers, "mlkv: layer index out of range");
    static_assert(S.owner(Layer),
                  "mlkv: this layer is a consumer: it reads its owner's K/V and cannot append");
    append(S.kv_slot(Layer), seq, n, k, v, rope);
  }

  /// append() through a layer known at run time; throws for a consumer layer.
  void append_layer(int layer, int seq, int n, const float* k, const float* v, const rotary* rope = nullptr) {
    MLKV_CHECK(layer >= 0 && layer < S.layers, "layer ", layer, " is out of range [0, ", S.layers, ")");
    MLKV_CHECK(S.owner(layer), "layer ", layer, " is a consumer of owner layer ", S.source_layer(layer),
               " and cannot append K/V");
    append(S.kv_slot(layer), seq, n, k, v, rope);
  }

  /// One new token for every sequence (a decode step) into `slot`; checks every sequence
  /// before writing any. k, v: [batch, kv_heads, head_dim]
  void append_step(int slot, const float* k, const float* v, const rotary* rope = nullptr) {
    check_slot(slot);
    check_rope(rope);
    for (int b = 0; b < batch_; ++b) check_room(b, 1);
    const std::size_t row = static_cast<std::size_t>(kv_heads) * head_dim;
    for (int b = 0; b < batch_; ++b) {
      write_rows(slot, b, 1, k + static_cast<std::size_t>(b) * row, v + static_cast<std::size_t>(b) * row, rope);
    }
  }

  /// Advances the length of `seq` by `n` (after every owner slot has been written).
  void commit(int seq, int n) {
    check_room(seq, n);
    lengths_[static_cast<std::size_t>(seq)] += n;
  }
  /// Advances every sequence by `n`; checks all before changing any.
  void commit_all(int n) {
    for (int b = 0; b < batch_; ++b) check_room(b, n);
    for (auto& l : lengths_) l += n;
  }
  /// Forgets the tokens of `seq` (its memory is reused by later appends).
  void reset(int seq) {
    check_seq(seq);
    lengths_[static_cast<std::size_t>(seq)] = 0;
  }
  /// Shortens `seq` to `length` tokens (rollback after speculative decoding).
  void truncate(int seq, int length) {
    check_seq(seq);
    const int cur = lengths_[static_cast<std::size_t>(seq)];
    MLKV_CHECK(length >= 0 && length <= cur, "cannot truncate sequence ", seq, " of ", cur, " tokens to ", length,
               " (allowed 0..", cur, ")");
    lengths_[static_cast<std::size_t>(seq)] = length;
  }
  /// Forgets every sequence.
  void clear() { std::fill(lengths_.begin(), lengths_.end(), 0); }

  /// The view a kernel reads for cache slot `slot`.
  contiguous_slot_view<T> slot_view(int slot) const {
    check_slot(slot);
    contiguous_slot_view<T> v;
    v.k = data_ + slab() * (2 * static_cast<std::size_t>(slot));
    v.v = v.k + slab();
    v.batch = batch_;
    v.kv_heads = kv_heads;
    v.head_dim = head_dim;
    v.capacity = capacity_;
    return v;
  }
  /// The view of the slot that `layer` reads (its owner's).
  contiguous_slot_view<T> layer_view(int layer) const {
    MLKV_CHECK(layer >= 0 && layer < S.layers, "layer ", layer, " is out of range [0, ", S.layers, ")");
    return slot_view(S.kv_slot(layer));
  }

  /// Raw memory: [slots, 2, batch, kv_heads, capacity, head_dim].
  T* data() { return data_; }
  const T* data() const { return data_; }

 private:
  static void check_dims(int batch, int capacity) {
    MLKV_CHECK(batch >= 1, "cache batch (", batch, ") must be at least 1");
    MLKV_CHECK(capacity >= 1, "cache capacity (", capacity, ") must be at least 1 token");
  }
  std::size_t slab() const {
    return static_cast<std::size_t>(batch_) * kv_heads * static_cast<std::size_t>(capacity_) * head_dim;
  }
  void check_seq(int seq) const {
    MLKV_CHECK(seq >= 0 && seq < batch_, "sequence ", seq, " is out of range [0, ", batch_, ")");
  }
  void check_slot(int slot) const {
    MLKV_CHECK(slot >= 0 && slot < slots, "KV slot ", slot, " is out of range [0, ", slots, ")");
  }
  void check_room(int seq, int n) const {
    check_seq(seq);
    const int len = lengths_[static_cast<std::size_t>(seq)];
    MLKV_CHECK(n >= 0, "cannot append a negative number of tokens (", n, ") to sequence ", seq);
    MLKV_CHECK(n <= capacity_ - len, "sequence ", seq, " has ", len, " tokens; appending ", n,
               " would pass its capacity of ", capacity_);
  }
  void check_rope(const rotary* rope) const {
    if (rope != nullptr) {
      MLKV_CHECK(rope->config().head_dim == head_dim, "rotary head dim (", rope->config().head_dim,
                 ") differs from the cache's head dim (", head_dim, ")");
    }
  }
  void write_rows(int slot, int seq, int n, const float* k, const float* v, const rotary* rope) {
    const int len = lengths_[static_cast<std::size_t>(seq)];
    const contiguous_slot_view<T> view = slot_view(slot);
    T* const kbase = data_ + slab() * (2 * static_cast<std::size_t>(slot));
    T* const vbase = kbase + slab();
    std::vector<float> rotated;
    if (rope != nullptr) rotated.resize(static_cast<std::size_t>(kv_heads) * head_dim);
    for (int t = 0; t < n; ++t) {
      const float* krow = k + static_cast<std::size_t>(t) * kv_heads * head_dim;
      const float* vrow = v + static_cast<std::size_t>(t) * kv_heads * head_dim;
      if (rope != nullptr) {
        std::copy(krow, krow + rotated.size(), rotated.begin());
        rope->apply(rotated.data(), kv_heads, len + t);
        krow = rotated.data();
      }
      for (int h = 0; h < kv_heads; ++h) {
        T* kd = kbase + view.offset(seq, h, len + t);
        T* vd = vbase + view.offset(seq, h, len + t);
        for (int d = 0; d < head_dim; ++d) {
          kd[d] = from_float<T>(krow[h * head_dim + d]);
          vd[d] = from_float<T>(vrow[h * head_dim + d]);
        }
      }
    }
  }

  int batch_ = 0;
  int capacity_ = 0;
  detail::cache_memory<T> owned_;
  T* data_ = nullptr;
  std::vector<std::int32_t> lengths_;
};

}  // namespace mlkv
