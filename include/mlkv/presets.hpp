#pragma once
/// \file presets.hpp
/// Named geometries: the paper's nine Pythia-160M configurations (12 layers, 12 heads, head dim
/// 64; Zuhri et al. 2024, Table 1), named by their total KV heads (Lkv * Hkv).

#include <array>
#include <cstddef>
#include <string_view>
#include <utility>

#include "shape.hpp"

namespace mlkv {

/// A geometry with a name.
struct named_shape {
  std::string_view name;
  model_shape shape;
};

/// Pythia-160M with `kv_layers` owner layers of `kv_heads` KV heads each, spread placement.
constexpr model_shape pythia160m(int kv_layers, int kv_heads) {
  return model_shape{.layers = 12, .q_heads = 12, .kv_heads = kv_heads, .kv_layers = kv_layers, .head_dim = 64};
}

/// The paper's nine configurations, in the paper's order.
inline constexpr std::array<named_shape, 9> paper_configs{{
    {"MHA-144", pythia160m(12, 12)},
    {"GQA-48", pythia160m(12, 4)},
    {"MLKV-48", pythia160m(4, 12)},
    {"MQA-12", pythia160m(12, 1)},
    {"MLKV-12", pythia160m(4, 3)},
    {"MLKV-6", pythia160m(6, 1)},
    {"MLKV-4", pythia160m(4, 1)},
    {"MLKV-2", pythia160m(2, 1)},
    {"MLKV-1", pythia160m(1, 1)},
}};

/// Calls f(std::integral_constant<std::size_t, i>{}) for each paper configuration, so that
/// `paper_configs[i].shape` can be used as a template argument inside f.
template <class F>
constexpr void for_each_paper_config(F&& f) {
  [&]<std::size_t... I>(std::index_sequence<I...>) {
    (f(std::integral_constant<std::size_t, I>{}), ...);
  }(std::make_index_sequence<paper_configs.size()>{});
}

}  // namespace mlkv
