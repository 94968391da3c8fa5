#pragma once
/// \file compiled_geometries.hpp
/// The one list of geometries compiled into programs that learn their geometry at run time
/// (from a config.json), and the one knob that selects from it.
///
/// `known_geometries` holds the paper's nine Pythia-160M configurations and the small
/// geometries the model tests use. A build chooses which of them its engines instantiate with
/// the CMake cache variable `MLKV_GEOMETRIES` (passed to the compiler as the macro of the same
/// name by the `mlkv_geometries` target): a list, separated by ',' or ';', of
///   - `all` (the default), `paper` (the nine) or `test` (the small ones),
///   - a name from `known_geometries` (`MHA-144`, `MLKV-2`, `test-gqa`, ...),
///   - a new geometry `name=L/Hq/Hkv/Lkv/D` (spread placement), e.g. `pythia410m=24/16/16/24/64`.
/// A bad entry fails to compile with the reason in the diagnostic. `mlkv::dispatch()`
/// (dispatch.hpp) maps a run-time geometry onto `compiled_geometries` and refuses any other,
/// listing what is compiled in. Nothing else in the library lists geometries.

#include <array>
#include <cstddef>
#include <string_view>

#include "presets.hpp"
#include "shape.hpp"

#ifndef MLKV_GEOMETRIES
/// The geometry selection (see above); CMake's MLKV_GEOMETRIES cache variable overrides it.
#define MLKV_GEOMETRIES "all"
#endif

namespace mlkv {

/// Small geometries for tests of the model and its files (hidden size = q_heads * head_dim):
/// MHA, GQA, MQA, MLKV with even and uneven groups, and a single owner layer.
inline constexpr std::array<named_shape, 6> test_geometries{{
    {"test-mha", model_shape{.layers = 2, .q_heads = 4, .kv_heads = 4, .kv_layers = 2, .head_dim = 16}},
    {"test-gqa", model_shape{.layers = 3, .q_heads = 4, .kv_heads = 2, .kv_layers = 3, .head_dim = 16}},
    {"test-mqa", model_shape{.layers = 3, .q_heads = 4, .kv_heads = 1, .kv_layers = 3, .head_dim = 16}},
    {"test-mlkv", model_shape{.layers = 4, .q_heads = 4, .kv_heads = 1, .kv_layers = 2, .head_dim = 16}},
    {"test-mlkv-uneven", model_shape{.layers = 5, .q_heads = 6, .kv_heads = 2, .kv_layers = 3, .head_dim = 8}},
    {"test-mlkv-1", model_shape{.layers = 3, .q_heads = 4, .kv_heads = 2, .kv_layers = 1, .head_dim = 16}},
}};

/// Every geometry this header names: the paper's nine, then the test geometries.
inline constexpr auto known_geometries = [] {
  std::array<named_shape, paper_configs.size() + test_geometries.size()> a{};
  std::size_t n = 0;
  for (const auto& g : paper_configs) a[n++] = g;
  for (const auto& g : test_geometries) a[n++] = g;
  return a;
}();

namespace detail {

/// Most geometries a selection may hold.
inline constexpr std::size_t max_compiled_geometries = 64;

/// The result of reading a selection string at compile time.
struct geometry_selection {
  std::array<named_shape, max_compiled_geometries> items{};
  std::size_t count = 0;
  shape_message error{};
};

constexpr bool is_separator(char c) { return c == ',' || c == ';' || c == ' ' || c == '\t' || c == '\n'; }

/// Parses "name=L/Hq/Hkv/Lkv/D" numbers; false on malformed text.
constexpr bool parse_spec(std::string_view spec, model_shape& out) {
  int v[5]{};
  std::size_t field = 0;
  bool digits = false;
  for (const char c : spec) {
    if (c >= '0' && c <= '9') {
      if (v[field] > 100000) return false;
      v[field] = v[field] * 10 + (c - '0');
      digits = true;
    } else if (c == '/' && digits && field < 4) {
      ++field;
      digits = false;
    } else {
      return false;
    }
  }
  if (field != 4 || !digits) return false;
  out = model_shape{.layers = v[0], .q_heads = v[1], .kv_heads = v[2], .kv_layers = v[3], .head_dim = v[4]};
  return true;
}

/// Appends a string_view to a message (shape_message streams only NUL-terminated text).
constexpr void append(shape_message& m, std::string_view t) {
  std::size_t n = m.view().size();
  for (const char c : t) {
    if (n + 1 >= sizeof(m.text)) break;
    m.text[n++] = c;
  }
}

constexpr void add_geometry(geometry_selection& s, const named_shape& g) {
  for (std::size_t i = 0; i < s.count; ++i) {
    if (s.items[i].shape == g.shape) return;  // already selected (a name and a group may overlap)
  }
  if (s.count == max_compiled_geometries) {
    if (s.error.empty()) s.error << "mlkv: MLKV_GEOMETRIES selects more than " << static_cast<int>(max_compiled_geometries)
                                 << " geometries";
    return;
  }
  s.items[s.count++] = g;
}

/// Reads a selection string (see the file comment) at compile time.
constexpr geometry_selection select_geometries(std::string_view text) {
  geometry_selection s;
  std::size_t i = 0;
  while (i < text.size() && s.error.empty()) {
    while (i < text.size() && is_separator(text[i])) ++i;
    std::size_t j = i;
    while (j < text.size() && !is_separator(text[j])) ++j;
    if (j == i) break;
    const std::string_view item = text.substr(i, j - i);
    i = j;
    if (item == "all" || item == "paper" || item == "test") {
      for (const auto& g : known_geometries) {
        const bool is_test = g.name.starts_with("test-");
        if (item == "all" || (item == "test") == is_test) add_geometry(s, g);
      }
      continue;
    }
    if (const std::size_t eq = item.find('='); eq != std::string_view::npos) {
      model_shape shape{};
      if (eq == 0 || !parse_spec(item.substr(eq + 1), shape)) {
        s.error << "mlkv: MLKV_GEOMETRIES entry '";
        append(s.error, item);
        s.error << "' must read name=L/Hq/Hkv/Lkv/D, e.g. pythia410m=24/16/16/24/64";
        break;
      }
      if (const shape_message m = shape.check(); !m.empty()) {
        s.error = m;
        break;
      }
      add_geometry(s, named_shape{item.substr(0, eq), shape});
      continue;
    }
    bool found = false;
    for (const auto& g : known_geometries) {
      if (g.name == item) {
        add_geometry(s, g);
        found = true;
      }
    }
    if (!found) {
      s.error << "mlkv: MLKV_GEOMETRIES names unknown geometry '";
      append(s.error, item);
      s.error << "'; use all, paper, test, a name from mlkv/compiled_geometries.hpp or name=L/Hq/Hkv/Lkv/D";
    }
  }
  if (s.error.empty() && s.count == 0) s.error << "mlkv: MLKV_GEOMETRIES selects no geometry";
  return s;
}

inline constexpr geometry_selection compiled_selection = select_geometries(MLKV_GEOMETRIES);
static_assert(report_geometry_error<compiled_selection.error>(), "mlkv: bad MLKV_GEOMETRIES (reason above)");

}  // namespace detail

/// The geometries compiled into this program's engines (selected by MLKV_GEOMETRIES).
inline constexpr auto compiled_geometries = [] {
  std::array<named_shape, detail::compiled_selection.count> a{};
  for (std::size_t i = 0; i < a.size(); ++i) a[i] = detail::compiled_selection.items[i];
  return a;
}();

}  // namespace mlkv
