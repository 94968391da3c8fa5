#pragma once
/// \file dispatch.hpp
/// The one dispatch point from a run-time geometry (read from a config.json) to a compiled one.
///
/// Engines are templates over a compile-time `model_shape` (the layer -> slot map, cache strides
/// and loop bounds are constexpr there). A program that learns its geometry at run time calls
///     mlkv::dispatch(config.shape(), [&](auto g) { run<decltype(g)::shape>(...); });
/// which calls the lambda with `mlkv::geometry<S>` for the compiled S equal to the run-time
/// geometry (placement included), or throws an mlkv::error that lists every compiled geometry.
/// The list is `mlkv::compiled_geometries` (compiled_geometries.hpp, selected by the CMake cache
/// variable MLKV_GEOMETRIES); `dispatch_in<List>` dispatches over another list.

#include <array>
#include <cstddef>
#include <string>
#include <utility>

#include "compiled_geometries.hpp"
#include "error.hpp"
#include "presets.hpp"
#include "shape.hpp"

namespace mlkv {

/// A compiled geometry as a type: `decltype(g)::shape` is the constexpr model_shape.
template <model_shape S>
struct geometry {
  static constexpr model_shape shape = S;
};

/// "L=12 Hq=12 Hkv=1 Lkv=4 D=64 spread" (every-n, suffix and table placements spelled out).
inline std::string describe(const model_shape& s) {
  std::string out = "L=" + std::to_string(s.layers) + " Hq=" + std::to_string(s.q_heads) +
                    " Hkv=" + std::to_string(s.kv_heads) + " Lkv=" + std::to_string(s.kv_layers) +
                    " D=" + std::to_string(s.head_dim);
  switch (s.placement.kind) {
    case placement_kind::spread: return out + " spread";
    case placement_kind::every_n: return out + " every-" + std::to_string(s.placement.period);
    case placement_kind::suffix: return out + " suffix(" + std::to_string(s.placement.source) + ")";
    default: {
      out += " table{";
      for (int l = 0; l < s.placement.table_size && l < max_layers; ++l) {
        out += (l != 0 ? "," : "") + std::to_string(s.placement.table[static_cast<std::size_t>(l)]);
      }
      return out + "}";
    }
  }
}

/// Index of `s` in `List` (an array of named_shape), or -1.
template <const auto& List>
constexpr int find_geometry(const model_shape& s) {
  for (std::size_t i = 0; i < List.size(); ++i) {
    if (List[i].shape == s) return static_cast<int>(i);
  }
  return -1;
}

/// Index of `s` in compiled_geometries, or -1.
constexpr int find_compiled(const model_shape& s) { return find_geometry<compiled_geometries>(s); }

/// True when `s` is compiled into this program.
constexpr bool is_compiled(const model_shape& s) { return find_compiled(s) >= 0; }

/// "MHA-144 (L=12 Hq=12 Hkv=12 Lkv=12 D=64 spread), GQA-48 (...), ..."
template <const auto& List = compiled_geometries>
std::string list_geometries() {
  std::string out;
  for (std::size_t i = 0; i < List.size(); ++i) {
    if (i != 0) out += ", ";
    out += std::string(List[i].name) + " (" + describe(List[i].shape) + ")";
  }
  return out.empty() ? std::string("none") : out;
}

namespace detail {
template <const auto& List, std::size_t I, class F>
decltype(auto) dispatch_from(std::size_t index, F& f) {
  if constexpr (I + 1 < List.size()) {
    if (index != I) return dispatch_from<List, I + 1>(index, f);
  }
  return f(geometry<List[I].shape>{});
}
}  // namespace detail

/// Calls f(geometry<S>{}) for the geometry S of `List` equal to `s`; throws an mlkv::error that
/// names `s` and lists `List` when there is none. f must return the same type for every S.
template <const auto& List, class F>
decltype(auto) dispatch_in(const model_shape& s, F&& f) {
  const int i = find_geometry<List>(s);
  if (i < 0) {
    ::mlkv::detail::fail("geometry ", describe(s), " is not compiled into this program; compiled geometries: ",
                         list_geometries<List>(),
                         ". Add it to the CMake cache variable MLKV_GEOMETRIES (name=L/Hq/Hkv/Lkv/D) or to "
                         "mlkv/compiled_geometries.hpp");
  }
  static_assert(List.size() > 0, "mlkv: dispatch over an empty geometry list");
  return detail::dispatch_from<List, 0>(static_cast<std::size_t>(i), f);
}

/// dispatch_in over the compiled geometries: the library's one run-time -> compile-time point.
template <class F>
decltype(auto) dispatch(const model_shape& s, F&& f) {
  return dispatch_in<compiled_geometries>(s, std::forward<F>(f));
}

}  // namespace mlkv
