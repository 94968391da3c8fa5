#pragma once
/// \file cache/paged.hpp
/// A paged KV cache: a pool of fixed-size pages shared by many sequences of any length, with
/// per-sequence block tables, copy-on-write forks and rollback.
///
/// Layout. A page holds `PageTokens` consecutive tokens of one sequence for *every* owner slot
/// and KV head: [slot][K|V][kv_head][PageTokens][head_dim] (the layout `paged_slot_view` reads).
/// MLKV makes this cheap: with Lkv owner layers of Hkv heads a token needs 2·Lkv·Hkv·D values
/// (Zuhri et al. 2024, §3), so one page allocation serves all layers and a sequence needs one
/// block table, not one per layer. Block j of a sequence (tokens j·P .. j·P+P-1) lives in page
/// `block_table[j]`.
///
/// Sequences. `add()` gives a handle (`seq_id`: an index and a generation, so a handle kept after
/// `free()` is recognised as stale). Appending is two-phase, exactly as in the contiguous cache:
/// `append(slot, seq, n, k, v, rope)` writes positions length..length+n-1 of one owner slot
/// (keys rotated at those positions) without moving the length; `commit(seq, n)` moves it once
/// every owner slot has been written. `reserve(seq, n)` maps (and makes private) the pages those
/// positions need; `append` reserves implicitly, so a host engine never calls it, but a device
/// engine that writes K/V with its own kernels calls `reserve` and then writes through
/// `block_table()`. `fork(seq)` makes a new sequence that shares the parent's pages (reference
/// counts; shared prompts, beam search); the first write into a shared page copies it
/// (copy-on-write). `truncate(seq, length)` shortens a sequence (rollback after speculative
/// decoding) and drops its uncommitted appends; `free(seq)` releases it.
///
/// Failure. Every check happens before the first change: an exhausted pool throws an mlkv::error
/// that names the sequence, the tokens asked for, the pages they need and the pages free, and
/// leaves every sequence as it was; a freed or unknown handle throws an error that says so.
///
/// Memory. The pool owns its pages or works over memory the caller provides, on the host or on
/// a device. Its bookkeeping never touches page contents: the only writes are `append` (host
/// memory only; a device engine writes K/V itself) and the copy-on-write page copy, which goes
/// through a copy function the caller may replace (e.g. a cudaMemcpyAsync on the engine's
/// stream). Bytes in use and free are exact: see `usage()` and mlkv/plan.hpp.
///
/// Concurrency (what may run at the same time; everything else needs external
/// synchronisation, the pool takes no locks):
///  - Any number of readers: const member functions (length, blocks, usage, make_batch, ...) and
///    kernels reading views of a batch, concurrently with each other.
///  - `append` calls for *different* sequences whose tokens were already `reserve`d (or appended
///    through another slot in the same step), concurrently with each other and with readers of
///    other sequences' tokens: such an append only reads the bookkeeping and writes pages its
///    sequence owns alone. Two appends to the same sequence must not overlap.
///  - Every other mutation (add, free, fork, reserve, commit, truncate, and an append that must
///    map pages) runs alone: no other call on the same pool may overlap it, and a batch made
///    before it may be stale after it (a batch is a snapshot of the block tables; make it after
///    the step's reserve and before its appends/kernels).
/// tests/paged/test_paged_concurrency.cpp checks each of these (also under ThreadSanitizer).

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <new>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../dtype.hpp"
#include "../error.hpp"
#include "../rope.hpp"
#include "../shape.hpp"
#include "buffer.hpp"
#include "view.hpp"

namespace mlkv {

/// Handle of a sequence in a paged cache: a slot index and the generation of that slot when the
/// handle was issued. Freeing a sequence bumps its slot's generation, so an old handle is stale.
struct seq_id {
  std::uint32_t index = 0xffffffffu;  ///< slot in the cache's sequence table
  std::uint32_t generation = 0;       ///< 0 is never issued: a default handle is always invalid
  friend constexpr bool operator==(const seq_id&, const seq_id&) = default;
};

/// Where the pages of a paged cache live. With `device` the cache never dereferences its memory:
/// `append` throws and copy-on-write uses the caller's copy function.
enum class memory_kind : std::uint8_t { host, device };

/// Bytes of one block-table entry (a page index).
inline constexpr std::size_t block_entry_bytes = sizeof(std::int32_t);

/// Exact memory accounting of a paged cache.
struct paged_usage {
  std::int64_t pages = 0;        ///< pages in the pool
  std::int64_t used_pages = 0;   ///< pages referenced by at least one sequence
  std::int64_t free_pages = 0;   ///< pages - used_pages
  std::int64_t shared_pages = 0; ///< pages referenced by two or more sequences (forks not yet written)
  std::int64_t sequences = 0;    ///< live sequences
  std::int64_t tokens = 0;       ///< committed tokens over all live sequences (a shared token counts per sequence)
  std::size_t page_bytes = 0;    ///< bytes of one page
  std::size_t bytes_used = 0;    ///< used_pages * page_bytes
  std::size_t bytes_free = 0;    ///< free_pages * page_bytes
  std::size_t table_bytes = 0;   ///< block-table entries of live sequences * 4 (what a kernel reads)
};


/// Paged KV cache of geometry `S`, storage type `T` and `PageTokens` tokens per page.
template <model_shape S, class T, int PageTokens>
class paged_kv_cache {
  static_assert(is_storage_v<T>, "mlkv: the cache storage type must be float, mlkv::f16 or mlkv::bf16");
  static_assert(detail::report_geometry_error<S.check()>(), "mlkv: invalid model geometry");
  static_assert(PageTokens >= 1 && PageTokens <= 65536, "mlkv: tokens per page must be between 1 and 65536");

 public:
  using value_type = T;
  /// The (checked) geometry.
  static constexpr model_shape shape = S;
  static constexpr int slots = S.kv_layers;
  static constexpr int kv_heads = S.kv_heads;
  static constexpr int head_dim = S.head_dim;
  /// Tokens per page (P).
  static constexpr int page_tokens = PageTokens;
  /// Cache bytes per token of one sequence.
  static constexpr std::size_t bytes_per_token = S.template bytes_per_token<T>();
  /// Values of one slot's K (or V) inside a page: [kv_heads, P, head_dim].
  static constexpr std::size_t half_values = static_cast<std::size_t>(kv_heads) * PageTokens * head_dim;
  /// Values of one slot inside a page: K then V.
  static constexpr std::size_t slot_values = 2 * half_values;
  /// Values of one page: [slots, 2, kv_heads, P, head_dim].
  static constexpr std::size_t page_values = slots * slot_values;
  /// Bytes of one page.
  static constexpr std::size_t page_bytes = page_values * sizeof(T);
  /// log2(P) when P is a power of two, else -1 (the views then address pages by shifts).
  static constexpr int page_shift = (PageTokens & (PageTokens - 1)) == 0 ? std::countr_zero(static_cast<unsigned>(PageTokens)) : -1;
  /// Most tokens one sequence can hold (its block count times P must fit an int).
  static constexpr int max_sequence_tokens = std::numeric_limits<int>::max() / PageTokens * PageTokens;

  /// Copies `values` values of one page to another (copy-on-write). The default is std::memcpy;
  /// a device engine passes its own (the pointers are then device pointers).
  using copy_fn = std::function<void(T* dst, const T* src, std::size_t values)>;

  /// Values (of T) a pool of `pages` pages needs.
  static std::size_t elements(int pages) {
    check_pages(pages);
    return detail::checked_mul(static_cast<std::size_t>(pages), page_values, "paged cache size");
  }
  /// Bytes a pool of `pages` pages needs.
  static std::size_t bytes(int pages) { return detail::checked_mul(elements(pages), sizeof(T), "paged cache size"); }
  /// Pages that fit in `budget` bytes (at most the largest pool size, INT32_MAX pages).
  static int pages_in(std::uint64_t budget) {
    const std::uint64_t n = budget / page_bytes;
    return static_cast<int>(std::min<std::uint64_t>(n, static_cast<std::uint64_t>(std::numeric_limits<std::int32_t>::max())));
  }
  /// Pages a sequence of `tokens` tokens maps: ceil(tokens / P).
  static constexpr int blocks_for(int tokens) { return tokens / PageTokens + (tokens % PageTokens != 0 ? 1 : 0); }

  /// A pool of `pages` pages that owns its zeroed host memory (64-byte aligned; 2 MiB aligned and
  /// backed by transparent huge pages where Linux allows, beyond 2 MiB).
  explicit paged_kv_cache(int pages, copy_fn copy = {}) : owned_(elements(pages)) {
    init(owned_.data(), pages, memory_kind::host, std::move(copy));
  }

  /// A pool over memory the caller provides (at least elements(pages) values) and keeps alive for
  /// the cache's lifetime. Device memory needs a copy function (copy-on-write) and is never
  /// dereferenced by the cache.
  paged_kv_cache(std::span<T> memory, int pages, memory_kind kind = memory_kind::host, copy_fn copy = {}) {
    const std::size_t need = elements(pages);
    MLKV_CHECK(memory.data() != nullptr, "caller memory is null");
    MLKV_CHECK(memory.size() >= need, "caller memory holds ", memory.size(), " values, a paged cache of ", pages,
               " pages of ", PageTokens, " tokens needs ", need);
    MLKV_CHECK(kind == memory_kind::host || copy,
               "a paged cache over device memory needs a copy function for copy-on-write pages");
    init(memory.data(), pages, kind, std::move(copy));
  }

  paged_kv_cache(paged_kv_cache&&) noexcept = default;
  paged_kv_cache& operator=(paged_kv_cache&&) noexcept = default;
  paged_kv_cache(const paged_kv_cache&) = delete;
  paged_kv_cache& operator=(const paged_kv_cache&) = delete;

  // ---- sequences ---------------------------------------------------------------------------

  /// A new, empty sequence (no pages until something is appended).
  seq_id add() {
    std::uint32_t index;
    if (free_seqs_.empty()) {
      MLKV_CHECK(seqs_.size() < max_handles, "paged cache: ", seqs_.size(), " sequence handles are in use, the most is ",
                 max_handles);
      // Grow both tables first (may throw: nothing changed), so that free() never allocates.
      if (seqs_.size() == seqs_.capacity()) seqs_.reserve(std::max<std::size_t>(16, 2 * seqs_.capacity()));
      free_seqs_.reserve(seqs_.capacity());
      seqs_.emplace_back();
      index = static_cast<std::uint32_t>(seqs_.size() - 1);
    } else {
      index = free_seqs_.back();
      free_seqs_.pop_back();
    }
    sequence& s = seqs_[index];
    s.live = true;
    s.length = 0;
    s.reserved = 0;
    ++live_;
    return seq_id{index, s.generation};
  }

  /// Releases `id` and every page only it references; the handle becomes stale.
  void free(seq_id id) {
    sequence& s = at(id, "free");
    release_blocks(s, 0);
    s.live = false;
    s.length = 0;
    std::vector<std::int32_t>().swap(s.blocks);
    --live_;
    // A slot whose generation would wrap is retired, so no handle is ever issued twice.
    if (++s.generation != 0) free_seqs_.push_back(id.index);  // capacity reserved in add()
  }

  /// A new sequence with the committed tokens of `parent`, sharing its pages (copy-on-write):
  /// no page is copied until one of them writes into a shared page.
  seq_id fork(seq_id parent) {
    const sequence& p = at(parent, "fork");
    const int n = blocks_for(p.length);
    std::vector<std::int32_t> blocks(p.blocks.begin(), p.blocks.begin() + n);  // may throw: nothing changed
    const int length = p.length;
    const seq_id child = add();  // may throw: nothing changed (and may move seqs_: `p` is not used after)
    sequence& c = seqs_[child.index];
    c.blocks = std::move(blocks);
    c.length = length;
    c.reserved = length;
    for (const std::int32_t page : c.blocks) ++refs_[static_cast<std::size_t>(page)];
    table_entries_ += c.blocks.size();
    return child;
  }

  /// Maps pages for positions length(id) .. length(id)+n-1 and makes them private to `id`
  /// (copying a shared page first), without writing K/V or moving the length. Throws, changing
  /// nothing, when the pool has too few free pages.
  void reserve(seq_id id, int n) {
    const seq_id one[1] = {id};
    reserve(std::span<const seq_id>(one), n, "reserve");
  }

  /// reserve(id, n) for every sequence of `ids`, all or nothing (a decode step: either every
  /// sequence gets its page or none changes). A sequence may appear only once.
  void reserve(std::span<const seq_id> ids, int n) { reserve(ids, n, "reserve"); }

  /// Writes K/V of `n` new tokens of `id` into owner slot `slot` at positions
  /// length(id)..length(id)+n-1, rotating keys by `rope` (when given) at those positions; the
  /// length does not change (see commit). Reserves the positions first when needed.
  /// k, v: [n, kv_heads, head_dim]
  void append(int slot, seq_id id, int n, const float* k, const float* v, const rotary* rope = nullptr) {
    check_slot(slot);
    (void)at(id, "append");
    check_rope(rope);
    MLKV_CHECK(kind_ == memory_kind::host, "paged cache: append writes on the host, but this cache's pages are "
                                           "device memory; reserve() the tokens and write them through block_table()");
    MLKV_CHECK(n <= 0 || (k != nullptr && v != nullptr), "paged cache: append of ", n, " tokens with null K or V");
    const seq_id one[1] = {id};
    reserve(std::span<const seq_id>(one), n, "append");
    write_rows(slot, seqs_[id.index], n, k, v, rope);
  }

  /// append() through an owner layer, checked at compile time: a consumer layer has no K/V.
  template <int Layer>
  void append_layer(seq_id id, int n, const float* k, const float* v, const rotary* rope = nullptr) {
    static_assert(Layer >= 0 && Layer < S.layers, "mlkv: layer index out of range");
    static_assert(S.owner(Layer), "mlkv: this layer is a consumer: it reads its owner's K/V and cannot append");
    append(S.kv_slot(Layer), id, n, k, v, rope);
  }

  /// append() through a layer known at run time; throws for a consumer layer.
  void append_layer(int layer, seq_id id, int n, const float* k, const float* v, const rotary* rope = nullptr) {
    MLKV_CHECK(layer >= 0 && layer < S.layers, "layer ", layer, " is out of range [0, ", S.layers, ")");
    MLKV_CHECK(S.owner(layer), "layer ", layer, " is a consumer of owner layer ", S.source_layer(layer),
               " and cannot append K/V");
    append(S.kv_slot(layer), id, n, k, v, rope);
  }

  /// Advances the length of `id` by `n` (after every owner slot has been written).
  void commit(seq_id id, int n) {
    sequence& s = at(id, "commit");
    check_commit(id, s, n);
    s.length += n;
    s.reserved = std::max(s.reserved, s.length);
  }

  /// commit(id, n) for every sequence of `ids`; checks all before changing any.
  void commit(std::span<const seq_id> ids, int n) {
    for (std::size_t i = 0; i < ids.size(); ++i) {
      check_commit(ids[i], at(ids[i], "commit"), n);
      for (std::size_t j = 0; j < i; ++j) {
        MLKV_CHECK(ids[j].index != ids[i].index, "paged cache: commit: sequence ", describe(ids[i]),
                   " appears twice in one commit");
      }
    }
    for (const seq_id id : ids) {
      sequence& s = seqs_[id.index];
      s.length += n;
      s.reserved = std::max(s.reserved, s.length);
    }
  }

  /// Shortens `id` to `length` committed tokens (rollback after speculative decoding), drops its
  /// uncommitted appends and releases the pages it no longer needs.
  void truncate(seq_id id, int length) {
    sequence& s = at(id, "truncate");
    MLKV_CHECK(length >= 0 && length <= s.length, "paged cache: cannot truncate sequence ", describe(id), " of ",
               s.length, " tokens to ", length, " (allowed 0..", s.length, ")");
    s.length = length;
    s.reserved = length;
    release_blocks(s, blocks_for(length));
  }

  // ---- queries -----------------------------------------------------------------------------

  /// True when `id` names a live sequence (false for a stale or unknown handle; never throws).
  bool contains(seq_id id) const {
    return id.index < seqs_.size() && seqs_[id.index].live && seqs_[id.index].generation == id.generation;
  }
  /// Committed tokens of `id`.
  int length(seq_id id) const { return at(id, "length").length; }
  /// Tokens `id` has pages for (blocks × P): committed, reserved and the rest of its last page.
  int mapped_tokens(seq_id id) const { return static_cast<int>(at(id, "mapped_tokens").blocks.size()) * PageTokens; }
  /// The block table of `id`: entry j is the page of tokens j·P .. j·P+P-1. [blocks]
  std::span<const std::int32_t> block_table(seq_id id) const { return at(id, "block_table").blocks; }
  /// Live sequences.
  int sequences() const { return live_; }
  /// Pages in the pool.
  int pages() const { return pages_; }
  /// Pages no sequence references.
  int free_pages() const { return static_cast<int>(free_.size()); }
  /// Pages referenced by at least one sequence.
  int used_pages() const { return pages_ - free_pages(); }
  /// Sequences referencing `page` (its reference count).
  int page_refs(int page) const {
    MLKV_CHECK(page >= 0 && page < pages_, "page ", page, " is out of range [0, ", pages_, ")");
    return refs_[static_cast<std::size_t>(page)];
  }
  /// Bytes of the pages in use.
  std::size_t bytes_used() const { return static_cast<std::size_t>(used_pages()) * page_bytes; }
  /// Bytes of the free pages.
  std::size_t bytes_free() const { return static_cast<std::size_t>(free_pages()) * page_bytes; }
  /// Bytes of the live sequences' block tables (4 per mapped block).
  std::size_t table_bytes() const { return table_entries_ * block_entry_bytes; }
  /// Everything above in one snapshot (O(pages + sequences)).
  paged_usage usage() const {
    paged_usage u;
    u.pages = pages_;
    u.free_pages = free_pages();
    u.used_pages = used_pages();
    for (const std::int32_t r : refs_) u.shared_pages += r > 1 ? 1 : 0;
    u.sequences = live_;
    for (const sequence& s : seqs_) u.tokens += s.live ? s.length : 0;
    u.page_bytes = page_bytes;
    u.bytes_used = bytes_used();
    u.bytes_free = bytes_free();
    u.table_bytes = table_bytes();
    return u;
  }
  /// Where the pages live.
  memory_kind memory() const { return kind_; }
  /// Raw memory: [pages, slots, 2, kv_heads, P, head_dim].
  T* data() { return data_; }
  const T* data() const { return data_; }
  /// The first value of page `page`.
  const T* page_data(int page) const {
    MLKV_CHECK(page >= 0 && page < pages_, "page ", page, " is out of range [0, ", pages_, ")");
    return data_ + static_cast<std::size_t>(page) * page_values;
  }

  // ---- batches for kernels -----------------------------------------------------------------

  /// Block tables of a list of sequences packed for kernels: [batch, max_blocks] and [batch],
  /// plus committed lengths. A snapshot: rebuild it (fill_batch) after a mutation that maps,
  /// copies or releases pages; appends to reserved tokens do not change it.
  class batch {
   public:
    /// Sequences in the batch.
    int size() const { return size_; }
    /// Row length of the packed block table (the longest sequence's blocks, at least 1).
    int max_blocks() const { return max_blocks_; }
    /// [batch, max_blocks]: page of block j of sequence b; entries past seq_blocks[b] are 0.
    std::span<const std::int32_t> block_table() const { return table_; }
    /// [batch]: blocks mapped for each sequence (committed and reserved).
    std::span<const std::int32_t> seq_blocks() const { return blocks_; }
    /// [batch]: committed tokens of each sequence when the batch was made.
    std::span<const std::int32_t> lengths() const { return lengths_; }

    /// The view a kernel reads for owner slot `slot`. It points into this batch's block table,
    /// so a view of a temporary batch does not compile.
    paged_slot_view<T> slot_view(int slot) const& {
      MLKV_CHECK(slot >= 0 && slot < slots, "KV slot ", slot, " is out of range [0, ", slots, ")");
      return paged_slot_view<T>::over_pool(pages_, table_.data(), blocks_.data(), size_, kv_heads, head_dim, PageTokens,
                                           max_blocks_, slots, slot);
    }
    paged_slot_view<T> slot_view(int slot) const&& = delete;
    /// The view of the slot that `layer` reads (its owner's).
    paged_slot_view<T> layer_view(int layer) const& {
      MLKV_CHECK(layer >= 0 && layer < S.layers, "layer ", layer, " is out of range [0, ", S.layers, ")");
      return slot_view(S.kv_slot(layer));
    }
    paged_slot_view<T> layer_view(int layer) const&& = delete;

   private:
    friend class paged_kv_cache;
    const T* pages_ = nullptr;
    int size_ = 0;
    int max_blocks_ = 1;
    std::vector<std::int32_t> table_ = std::vector<std::int32_t>(1, 0);
    std::vector<std::int32_t> blocks_, lengths_;
  };

  /// A batch of `ids` (any lengths, empty sequences included; a sequence may appear twice).
  batch make_batch(std::span<const seq_id> ids) const {
    batch b;
    fill_batch(ids, b);
    return b;
  }

  /// Refills `out` with `ids`, reusing its storage (no allocation once it is large enough).
  void fill_batch(std::span<const seq_id> ids, batch& out) const {
    MLKV_CHECK(ids.size() <= static_cast<std::size_t>(std::numeric_limits<int>::max()), "batch of ", ids.size(),
               " sequences is too large");
    int max_blocks = 1;
    for (const seq_id id : ids) max_blocks = std::max(max_blocks, static_cast<int>(at(id, "make_batch").blocks.size()));
    const std::size_t n = ids.size();
    const std::size_t cells = detail::checked_mul(n == 0 ? 1 : n, static_cast<std::size_t>(max_blocks), "block table");
    out.table_.assign(cells, 0);
    out.blocks_.resize(n);
    out.lengths_.resize(n);
    for (std::size_t b = 0; b < n; ++b) {
      const sequence& s = seqs_[ids[b].index];
      std::copy(s.blocks.begin(), s.blocks.end(), out.table_.begin() + static_cast<std::ptrdiff_t>(b * static_cast<std::size_t>(max_blocks)));
      out.blocks_[b] = static_cast<std::int32_t>(s.blocks.size());
      out.lengths_[b] = s.length;
    }
    out.pages_ = data_;
    out.size_ = static_cast<int>(n);
    out.max_blocks_ = max_blocks;
  }

 private:
  /// Most sequence handles one cache issues (slot indices fit an int for messages and batches).
  static constexpr std::size_t max_handles = static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max());

  struct sequence {
    std::uint32_t generation = 1;
    bool live = false;
    int length = 0;                     ///< committed tokens
    int reserved = 0;                   ///< tokens appended or reserved (>= length); commit may reach it
    std::vector<std::int32_t> blocks;   ///< page of each mapped block (committed + reserved)
  };

  static void check_pages(int pages) {
    MLKV_CHECK(pages >= 1, "paged cache: pages (", pages, ") must be at least 1");
  }

  void init(T* data, int pages, memory_kind kind, copy_fn copy) {
    data_ = data;
    pages_ = pages;
    kind_ = kind;
    copy_ = std::move(copy);
    refs_.assign(static_cast<std::size_t>(pages), 0);
    // The free list is a stack: page 0 is handed out first. Its capacity is every page, so
    // releasing pages never allocates (truncate and free cannot fail half-way).
    free_.reserve(static_cast<std::size_t>(pages));
    for (int p = pages - 1; p >= 0; --p) free_.push_back(p);
  }

  static std::string describe(seq_id id) { return detail::concat("{index ", id.index, ", generation ", id.generation, "}"); }

  const sequence& at(seq_id id, const char* op) const {
    if (id.index >= seqs_.size()) {
      detail::fail("paged cache: ", op, ": unknown sequence handle ", describe(id), "; this cache has issued handles for ",
                   seqs_.size(), " slots");
    }
    const sequence& s = seqs_[id.index];
    if (s.generation != id.generation || !s.live) {
      if (id.generation == 0 || id.generation > s.generation) {
        detail::fail("paged cache: ", op, ": unknown sequence handle ", describe(id), "; slot ", id.index,
                     " is at generation ", s.generation);
      }
      detail::fail("paged cache: ", op, ": stale sequence handle ", describe(id), ": that sequence was freed (slot ",
                   id.index, " is at generation ", s.generation, s.live ? ", a newer sequence" : ", free", ")");
    }
    return s;
  }
  sequence& at(seq_id id, const char* op) { return const_cast<sequence&>(std::as_const(*this).at(id, op)); }

  void check_slot(int slot) const {
    MLKV_CHECK(slot >= 0 && slot < slots, "KV slot ", slot, " is out of range [0, ", slots, ")");
  }
  void check_rope(const rotary* rope) const {
    if (rope != nullptr) {
      MLKV_CHECK(rope->config().head_dim == head_dim, "rotary head dim (", rope->config().head_dim,
                 ") differs from the cache's head dim (", head_dim, ")");
    }
  }
  void check_commit(seq_id id, const sequence& s, int n) const {
    MLKV_CHECK(n >= 0, "paged cache: cannot commit a negative number of tokens (", n, ") to sequence ", describe(id));
    MLKV_CHECK(n <= s.reserved - s.length, "paged cache: sequence ", describe(id), " has ", s.length, " tokens and ",
               s.reserved - s.length, " more appended or reserved; committing ", n,
               " needs them appended (or reserved) first");
  }

  /// A shared block that a reservation must copy before writing into it.
  struct cow_block {
    std::uint32_t seq;   ///< sequence slot
    int block;           ///< block index in its table
    std::int32_t page;   ///< the shared page
  };

  void reserve(std::span<const seq_id> ids, int n, const char* op) {
    // 1. Plan and check: handles, counts, duplicates, the pages to map and to copy, free pages.
    //    Nothing changes before all pass. A block needs a copy when it covers a position to be
    //    written and another sequence still references its page; when several sequences of one
    //    reservation share a page, the last of them to plan keeps it (no needless copy).
    //    When nothing is needed, this path reads the bookkeeping only (see Concurrency).
    std::int64_t grow = 0;
    std::vector<cow_block> cows;  // allocates only when a copy is needed
    for (std::size_t i = 0; i < ids.size(); ++i) {
      const sequence& s = at(ids[i], op);
      MLKV_CHECK(n >= 0, "paged cache: ", op, ": cannot append a negative number of tokens (", n, ") to sequence ",
                 describe(ids[i]));
      MLKV_CHECK(n <= max_sequence_tokens - s.length, "paged cache: ", op, ": sequence ", describe(ids[i]), " has ",
                 s.length, " tokens; ", n, " more would pass the most a sequence holds (", max_sequence_tokens, ")");
      for (std::size_t j = 0; j < i; ++j) {
        MLKV_CHECK(ids[j].index != ids[i].index, "paged cache: ", op, ": sequence ", describe(ids[i]),
                   " appears twice in one reservation");
      }
      if (n == 0) continue;
      const int have = static_cast<int>(s.blocks.size());
      const int want = blocks_for(s.length + n);
      grow += std::max(0, want - have);
      for (int j = s.length / PageTokens; j < std::min(have, want); ++j) {
        const std::int32_t page = s.blocks[static_cast<std::size_t>(j)];
        std::int32_t refs = refs_[static_cast<std::size_t>(page)];
        for (const cow_block& c : cows) refs -= c.page == page ? 1 : 0;  // sharers that copy earlier
        if (refs > 1) cows.push_back({ids[i].index, j, page});
      }
    }
    const auto cow = static_cast<std::int64_t>(cows.size());
    if (grow == 0 && cow == 0) {
      // Everything is mapped and private. Only the reservation mark may move, and only in the
      // sequence's own record (appends to distinct sequences may run concurrently).
      for (const seq_id id : ids) {
        sequence& s = seqs_[id.index];
        if (s.reserved < s.length + n) s.reserved = s.length + n;
      }
      return;
    }
    if (grow + cow > static_cast<std::int64_t>(free_.size())) {
      if (ids.size() == 1) {
        const sequence& s = seqs_[ids[0].index];
        detail::fail("paged cache: ", op, ": sequence ", describe(ids[0]), " at length ", s.length, " needs ",
                     grow + cow, " free pages (", grow, " new, ", cow, " copy-on-write) for ", n,
                     " more tokens, but only ", free_.size(), " of ", pages_, " pages are free");
      }
      detail::fail("paged cache: ", op, ": ", ids.size(), " sequences need ", grow + cow, " free pages (", grow,
                   " new, ", cow, " copy-on-write) for ", n, " more tokens each, but only ", free_.size(), " of ",
                   pages_, " pages are free");
    }
    // 2. Room for the new block-table entries (may throw bad_alloc: nothing changed yet).
    for (const seq_id id : ids) {
      sequence& s = seqs_[id.index];
      s.blocks.reserve(static_cast<std::size_t>(blocks_for(s.length + n)));
    }
    // 3. Copy-on-write: copy k goes into the free page that the k-th pop below will hand out. A
    //    copy function that throws leaves every sequence as it was (only free pages were written).
    for (std::size_t k = 0; k < cows.size(); ++k) copy_page(free_[free_.size() - 1 - k], cows[k].page);
    // 4. Apply, copies first (in the planned order, so each gets its copied page), then the new
    //    blocks. Nothing below can throw.
    for (const cow_block& c : cows) {
      std::int32_t& page = seqs_[c.seq].blocks[static_cast<std::size_t>(c.block)];
      --refs_[static_cast<std::size_t>(page)];  // still referenced by the other sharers
      page = take_page();
    }
    for (const seq_id id : ids) {
      sequence& s = seqs_[id.index];
      if (n == 0) continue;
      const int have = static_cast<int>(s.blocks.size());
      const int want = blocks_for(s.length + n);
      for (int j = have; j < want; ++j) s.blocks.push_back(take_page());
      table_entries_ += static_cast<std::size_t>(std::max(0, want - have));
      s.reserved = std::max(s.reserved, s.length + n);
    }
  }

  std::int32_t take_page() {
    const std::int32_t p = free_.back();
    free_.pop_back();
    refs_[static_cast<std::size_t>(p)] = 1;
    return p;
  }

  void copy_page(std::int32_t dst, std::int32_t src) {
    T* d = data_ + static_cast<std::size_t>(dst) * page_values;
    const T* s = data_ + static_cast<std::size_t>(src) * page_values;
    if (copy_) {
      copy_(d, s, page_values);
    } else {
      std::memcpy(static_cast<void*>(d), static_cast<const void*>(s), page_bytes);
    }
  }

  /// Drops blocks keep.. of `s`; pages nobody references any more go back to the free list.
  void release_blocks(sequence& s, int keep) noexcept {
    const std::size_t k = static_cast<std::size_t>(keep);
    if (s.blocks.size() <= k) return;
    for (std::size_t j = k; j < s.blocks.size(); ++j) {
      const std::int32_t page = s.blocks[j];
      if (--refs_[static_cast<std::size_t>(page)] == 0) free_.push_back(page);  // capacity: every page
    }
    table_entries_ -= s.blocks.size() - k;
    s.blocks.resize(k);
  }

  void write_rows(int slot, const sequence& s, int n, const float* k, const float* v, const rotary* rope) {
    std::vector<float> rotated;
    if (rope != nullptr && n > 0) rotated.resize(static_cast<std::size_t>(kv_heads) * head_dim);
    for (int t = 0; t < n; ++t) {
      const int pos = s.length + t;
      const float* krow = k + static_cast<std::size_t>(t) * kv_heads * head_dim;
      const float* vrow = v + static_cast<std::size_t>(t) * kv_heads * head_dim;
      if (rope != nullptr) {
        std::copy(krow, krow + rotated.size(), rotated.begin());
        rope->apply(rotated.data(), kv_heads, pos);
        krow = rotated.data();
      }
      const std::int32_t page = s.blocks[static_cast<std::size_t>(pos / PageTokens)];
      T* const kbase = data_ + static_cast<std::size_t>(page) * page_values + static_cast<std::size_t>(slot) * slot_values;
      T* const vbase = kbase + half_values;
      for (int h = 0; h < kv_heads; ++h) {
        const std::size_t row = (static_cast<std::size_t>(h) * PageTokens + static_cast<std::size_t>(pos % PageTokens)) * head_dim;
        for (int d = 0; d < head_dim; ++d) {
          kbase[row + static_cast<std::size_t>(d)] = from_float<T>(krow[h * head_dim + d]);
          vbase[row + static_cast<std::size_t>(d)] = from_float<T>(vrow[h * head_dim + d]);
        }
      }
    }
  }

  detail::cache_memory<T> owned_;
  T* data_ = nullptr;
  int pages_ = 0;
  memory_kind kind_ = memory_kind::host;
  copy_fn copy_;
  std::vector<std::int32_t> refs_;       ///< [pages] sequences referencing each page
  std::vector<std::int32_t> free_;       ///< stack of free pages (capacity: all pages)
  std::vector<sequence> seqs_;           ///< sequence table, indexed by seq_id::index
  std::vector<std::uint32_t> free_seqs_; ///< stack of free sequence slots (capacity: seqs_.size())
  std::size_t table_entries_ = 0;        ///< block-table entries of live sequences
  int live_ = 0;
};

}  // namespace mlkv
