#pragma once
/// \file shape.hpp
/// The model geometry: layers, query heads, KV heads, KV layers (groups), head dim, placement.
///
/// MLKV (Zuhri et al. 2024, "MLKV: Multi-Layer Key-Value Heads for Memory Efficient Transformer
/// Decoding") stores K/V for only `kv_layers` "owner" layers; every other layer attends over the
/// cache slot of an owner at or below it. Inside a layer, `q_heads / kv_heads` query heads share
/// one KV head (GQA/MQA). A `model_shape` is a literal type: it is used as a template argument
/// (the compile-time geometry) and as a plain value (a geometry read from a config file).
///
/// Placements (which layers own K/V, and which owner each layer reads):
///  - `placement::spread` (the paper's): owners {0} ∪ {floor((i+1)·L/Lkv) : i = 0..Lkv-2}, each
///    layer reads the nearest owner at or below it; groups may be uneven (L=12, Lkv=5 gives
///    owners 0,2,4,7,9). Computed in exact integer arithmetic.
///  - `placement::every_n(n)` (Cross-Layer Attention): owners are the layers with l % n == 0.
///  - `placement::suffix(s)` (YOCO / Gemma-3n style): layers 0..Lkv-1 own their K/V, every later
///    layer reads owner layer s.
///  - `placement::from_table({...})`: entry l names the layer whose K/V layer l reads.

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>

#include "dtype.hpp"
#include "error.hpp"

namespace mlkv {

/// Most layers a geometry may have (the size of a placement table).
inline constexpr int max_layers = 256;
/// Largest head dimension accepted by the geometry checks.
inline constexpr int max_head_dim = 512;

/// Which rule maps layers to owner layers.
enum class placement_kind : std::uint8_t { spread, every_n, suffix, table };

/// How owner layers are chosen and which owner each layer reads.
struct placement {
  placement_kind kind = placement_kind::spread;
  int period = 0;      ///< every_n: owners are layers with l % period == 0
  int source = -1;     ///< suffix: the owner layer that layers kv_layers..L-1 read
  int table_size = 0;  ///< table: number of entries (must equal the layer count)
  std::array<std::int16_t, max_layers> table{};  ///< table: layer l reads layer table[l]

  /// The paper's placement (the default).
  static const placement spread;
  /// Cross-Layer Attention: every n-th layer owns K/V, the n-1 above it read it.
  static constexpr placement every_n(int n) {
    placement p;
    p.kind = placement_kind::every_n;
    p.period = n;
    return p;
  }
  /// Layers 0..kv_layers-1 own K/V; all later layers read owner layer `source_layer`.
  static constexpr placement suffix(int source_layer) {
    placement p;
    p.kind = placement_kind::suffix;
    p.source = source_layer;
    return p;
  }
  /// An explicit table: entry l is the layer whose K/V layer l reads (l itself for an owner).
  static constexpr placement from_table(std::span<const int> reads) {
    placement p;
    p.kind = placement_kind::table;
    p.table_size = static_cast<int>(reads.size());
    for (std::size_t i = 0; i < reads.size() && i < p.table.size(); ++i) {
      const int r = reads[i];
      p.table[i] = static_cast<std::int16_t>(r < -1 ? -1 : r > 32767 ? 32767 : r);
    }
    return p;
  }
  static constexpr placement from_table(std::initializer_list<int> reads) {
    return from_table(std::span<const int>(reads.begin(), reads.size()));
  }

  friend constexpr bool operator==(const placement&, const placement&) = default;
};
inline constexpr placement placement::spread{};

/// A message built at compile time. A geometry error carries it in a type name, so the compiler
/// prints it with the offending values, e.g.
/// `geometry_error<shape_message{"mlkv: query heads (12) must be a multiple of KV heads (5)"}>`.
struct shape_message {
  char text[160]{};

  constexpr bool empty() const { return text[0] == '\0'; }
  constexpr std::string_view view() const {
    std::size_t n = 0;
    while (n < sizeof(text) && text[n] != '\0') ++n;
    return {text, n};
  }
  constexpr shape_message& operator<<(const char* s) {
    std::size_t n = view().size();
    while (*s != '\0' && n + 1 < sizeof(text)) text[n++] = *s++;
    return *this;
  }
  constexpr shape_message& operator<<(long long v) {
    char digits[24]{};
    int k = 0;
    const bool neg = v < 0;
    unsigned long long u = neg ? 0ull - static_cast<unsigned long long>(v) : static_cast<unsigned long long>(v);
    do {
      digits[k++] = static_cast<char>('0' + u % 10);
      u /= 10;
    } while (u != 0);
    char out[26]{};
    int j = 0;
    if (neg) out[j++] = '-';
    while (k > 0) out[j++] = digits[--k];
    return *this << static_cast<const char*>(out);
  }
  constexpr shape_message& operator<<(int v) { return *this << static_cast<long long>(v); }
  friend constexpr bool operator==(const shape_message&, const shape_message&) = default;
};

/// The model geometry. Aggregate and literal: usable as a template argument.
struct model_shape {
  int layers = 0;     ///< decoder layers, L
  int q_heads = 0;    ///< query heads per layer, Hq
  int kv_heads = 0;   ///< KV heads per owner layer, Hkv (Hq % Hkv == 0)
  int kv_layers = 0;  ///< owner layers that store K/V, Lkv (1..L)
  int head_dim = 0;   ///< values per head, D (multiple of 8)
  mlkv::placement placement = mlkv::placement::spread;

  friend constexpr bool operator==(const model_shape&, const model_shape&) = default;

  // ---- checks ------------------------------------------------------------------------------

  /// Why this geometry is invalid; empty when it is valid.
  constexpr shape_message check() const {
    shape_message m;
    if (layers < 1 || layers > max_layers) {
      m << "mlkv: layers (" << layers << ") must be between 1 and " << max_layers;
    } else if (q_heads < 1 || q_heads > 4096) {
      m << "mlkv: query heads (" << q_heads << ") must be between 1 and 4096";
    } else if (kv_heads < 1 || kv_heads > q_heads) {
      m << "mlkv: KV heads (" << kv_heads << ") must be between 1 and query heads (" << q_heads << ")";
    } else if (q_heads % kv_heads != 0) {
      m << "mlkv: query heads (" << q_heads << ") must be a multiple of KV heads (" << kv_heads << ")";
    } else if (kv_layers < 1 || kv_layers > layers) {
      m << "mlkv: KV layers (" << kv_layers << ") must be between 1 and layers (" << layers << ")";
    } else if (head_dim < 8 || head_dim > max_head_dim || head_dim % 8 != 0) {
      m << "mlkv: head dim (" << head_dim << ") must be a multiple of 8 between 8 and " << max_head_dim;
    } else {
      check_placement(m);
    }
    return m;
  }

  /// True when check() finds nothing wrong.
  constexpr bool valid() const { return check().empty(); }

  /// Throws mlkv::error with check()'s message when the geometry is invalid (run-time shapes).
  void validate() const {
    const shape_message m = check();
    if (!m.empty()) throw error(std::string(m.view()));
  }

  // ---- the layer -> slot map (valid shapes only) -------------------------------------------

  /// Query heads that share one KV head.
  constexpr int group_size() const { return q_heads / kv_heads; }

  /// The cache slot (0..kv_layers-1) that layer `l` reads; slots are numbered by owner order.
  constexpr int kv_slot(int l) const {
    switch (placement.kind) {
      case placement_kind::every_n:
        return l / placement.period;
      case placement_kind::suffix:
        return l < kv_layers ? l : placement.source;
      case placement_kind::table: {
        int slot = -1;
        const int src = placement.table[static_cast<std::size_t>(l)];
        for (int i = 0; i <= src; ++i) slot += placement.table[static_cast<std::size_t>(i)] == i ? 1 : 0;
        return slot;
      }
      case placement_kind::spread:
      default:
        // Largest j with floor(j*L/Lkv) <= l, i.e. j = ceil((l+1)*Lkv/L) - 1.
        return ((l + 1) * kv_layers + layers - 1) / layers - 1;
    }
  }

  /// The owner layer of cache slot `slot`.
  constexpr int owner_layer(int slot) const {
    switch (placement.kind) {
      case placement_kind::every_n:
        return slot * placement.period;
      case placement_kind::suffix:
        return slot;
      case placement_kind::table: {
        int seen = -1;
        for (int i = 0; i < layers; ++i) {
          if (placement.table[static_cast<std::size_t>(i)] == i && ++seen == slot) return i;
        }
        return -1;
      }
      case placement_kind::spread:
      default:
        return slot * layers / kv_layers;
    }
  }

  /// The owner layer whose K/V layer `l` reads (l itself when l is an owner).
  constexpr int source_layer(int l) const { return owner_layer(kv_slot(l)); }

  /// True when layer `l` projects and stores K/V.
  constexpr bool owner(int l) const { return source_layer(l) == l; }

  /// Layers that share slot `slot` (its owner included).
  constexpr int group_layers(int slot) const {
    int n = 0;
    for (int l = 0; l < layers; ++l) n += kv_slot(l) == slot ? 1 : 0;
    return n;
  }

  // ---- memory arithmetic -------------------------------------------------------------------

  /// KV heads stored per token over all owner layers (the paper's "total KV heads").
  constexpr int total_kv_heads() const { return kv_layers * kv_heads; }
  /// K and V values stored per token: 2 * Lkv * Hkv * D.
  constexpr std::size_t values_per_token() const {
    return 2u * static_cast<std::size_t>(kv_layers) * static_cast<std::size_t>(kv_heads) *
           static_cast<std::size_t>(head_dim);
  }
  /// Cache bytes per token for a storage type.
  constexpr std::size_t bytes_per_token(dtype t) const { return values_per_token() * size_of(t); }
  template <class T>
  constexpr std::size_t bytes_per_token() const {
    return values_per_token() * sizeof(T);
  }

 private:
  constexpr void check_placement(shape_message& m) const {
    switch (placement.kind) {
      case placement_kind::spread:
        return;
      case placement_kind::every_n: {
        const int n = placement.period;
        if (n < 1) {
          m << "mlkv: every-n placement period (" << n << ") must be at least 1";
        } else if ((layers + n - 1) / n != kv_layers) {
          m << "mlkv: every-n placement with period " << n << " over " << layers << " layers gives "
            << (layers + n - 1) / n << " KV layers, not " << kv_layers;
        }
        return;
      }
      case placement_kind::suffix: {
        const int s = placement.source;
        if (s < 0 || s >= kv_layers) {
          m << "mlkv: suffix placement reads layer " << s << ", which is not an owner layer 0.."
            << kv_layers - 1;
        }
        return;
      }
      case placement_kind::table: {
        if (placement.table_size != layers) {
          m << "mlkv: placement table has " << placement.table_size << " entries, the model has "
            << layers << " layers";
          return;
        }
        int owners = 0;
        for (int l = 0; l < layers; ++l) {
          const int r = placement.table[static_cast<std::size_t>(l)];
          if (r < 0 || r >= layers) {
            m << "mlkv: layer " << l << " reads layer " << r << ", outside 0.." << layers - 1;
            return;
          }
          if (r > l) {
            m << "mlkv: layer " << l << " reads layer " << r
              << ", a later layer; a layer may read only itself or an earlier owner";
            return;
          }
          const int rr = placement.table[static_cast<std::size_t>(r)];
          if (rr != r) {
            m << "mlkv: layer " << l << " reads layer " << r << ", which is not an owner (it reads layer "
              << rr << ")";
            return;
          }
          owners += r == l ? 1 : 0;
        }
        if (owners != kv_layers) {
          m << "mlkv: placement table has " << owners << " owner layers, KV layers is " << kv_layers;
        }
        return;
      }
    }
  }
};

namespace detail {
/// Never defined: instantiating it prints the geometry's message inside the type name.
template <shape_message Why>
struct geometry_error;

template <shape_message Why>
constexpr bool report_geometry_error() {
  if constexpr (!Why.empty()) {
    // The compiler prints `geometry_error<mlkv::shape_message{"mlkv: ..."}>`: that is the reason.
    static_assert(sizeof(geometry_error<Why>) != 0, "mlkv: invalid model geometry (reason above)");
  }
  return Why.empty();
}
}  // namespace detail

/// `S`, after a compile-time check; an invalid geometry fails to compile with a message that
/// names the values (`mlkv: query heads (12) must be a multiple of KV heads (5)`).
///     inline constexpr auto g = mlkv::checked<{.layers = 12, .q_heads = 12, .kv_heads = 1,
///                                              .kv_layers = 4, .head_dim = 64}>;
template <model_shape S>
  requires(detail::report_geometry_error<S.check()>())
inline constexpr model_shape checked = S;

/// Compile-time tables derived from a valid geometry: layer -> slot, owner flags, owner list.
template <model_shape S>
struct layer_map {
  static_assert(detail::report_geometry_error<S.check()>(), "mlkv: invalid model geometry");
  static constexpr model_shape shape = S;
  static constexpr int layers = S.layers;
  static constexpr int slots = S.kv_layers;

  /// slot[l]: the cache slot layer l reads.
  static constexpr std::array<int, S.layers> slot = [] {
    std::array<int, S.layers> a{};
    for (int l = 0; l < S.layers; ++l) a[static_cast<std::size_t>(l)] = S.kv_slot(l);
    return a;
  }();
  /// owner[l]: layer l projects and stores K/V.
  static constexpr std::array<bool, S.layers> owner = [] {
    std::array<bool, S.layers> a{};
    for (int l = 0; l < S.layers; ++l) a[static_cast<std::size_t>(l)] = S.owner(l);
    return a;
  }();
  /// owners[s]: the owner layer of slot s, ascending.
  static constexpr std::array<int, S.kv_layers> owners = [] {
    std::array<int, S.kv_layers> a{};
    for (int s = 0; s < S.kv_layers; ++s) a[static_cast<std::size_t>(s)] = S.owner_layer(s);
    return a;
  }();
};

}  // namespace mlkv
