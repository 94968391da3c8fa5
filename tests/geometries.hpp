#pragma once
// The geometry list every attention test runs over: the paper's nine configurations and the
// awkward ones (uneven groups, Hkv = Hq, Hkv = 1, Lkv = 1, Lkv = L, every placement, group
// sizes 7 and 4, head dims 8, 64, 80, 96 and 128). The optimised build runs them all; the
// ASan + UBSan build (MLKV_TEST_SANITIZED_BUILD) compiles a subset of each list, which keeps the
// suite's compile time in bounds (each geometry is an instantiation of a test scenario).

#include <mlkv/presets.hpp>
#include <mlkv/shape.hpp>

#include <tuple>
#include <utility>

namespace mlkv_test {

template <mlkv::model_shape S>
struct geometry {
  static constexpr mlkv::model_shape shape = S;
};

using mlkv::model_shape;
using mlkv::placement;

inline constexpr model_shape uneven_mqa_d80{.layers = 12, .q_heads = 12, .kv_heads = 1, .kv_layers = 5, .head_dim = 80};
inline constexpr model_shape uneven_gqa{.layers = 12, .q_heads = 12, .kv_heads = 4, .kv_layers = 5, .head_dim = 64};
inline constexpr model_shape mha_full_d128{.layers = 3, .q_heads = 4, .kv_heads = 4, .kv_layers = 3, .head_dim = 128};
inline constexpr model_shape single_owner_d80{.layers = 5, .q_heads = 6, .kv_heads = 2, .kv_layers = 1, .head_dim = 80};
inline constexpr model_shape cla3{.layers = 7, .q_heads = 4, .kv_heads = 1, .kv_layers = 3, .head_dim = 64,
                                  .placement = placement::every_n(3)};
inline constexpr model_shape yoco{.layers = 6, .q_heads = 8, .kv_heads = 2, .kv_layers = 4, .head_dim = 128,
                                  .placement = placement::suffix(2)};
inline constexpr model_shape table5{.layers = 5, .q_heads = 6, .kv_heads = 3, .kv_layers = 2, .head_dim = 64,
                                    .placement = placement::from_table({0, 0, 2, 2, 0})};
inline constexpr model_shape group7_d96{.layers = 2, .q_heads = 7, .kv_heads = 1, .kv_layers = 2, .head_dim = 96};
inline constexpr model_shape tiny{.layers = 1, .q_heads = 1, .kv_heads = 1, .kv_layers = 1, .head_dim = 8};
inline constexpr model_shape llama_like{.layers = 4, .q_heads = 32, .kv_heads = 8, .kv_layers = 2, .head_dim = 128};
/// 32 and 16 query heads per KV head: the AVX-512 kernels put the queries in the lanes for these
/// groups (kt_heads_*; two vectors of queries per block, resp. one), whatever the storage type.
inline constexpr model_shape heads32_d128{.layers = 3, .q_heads = 32, .kv_heads = 1, .kv_layers = 2, .head_dim = 128};
inline constexpr model_shape heads16_d64{.layers = 2, .q_heads = 32, .kv_heads = 2, .kv_layers = 1, .head_dim = 64};

template <std::size_t... I>
auto paper_geometries(std::index_sequence<I...>) -> std::tuple<geometry<mlkv::paper_configs[I].shape>...>;

#if defined(MLKV_TEST_SANITIZED_BUILD)
// The ASan + UBSan build compiles three of the nine (MHA-144; MLKV-12: 3 KV heads over 4 owner
// layers; MLKV-4: one KV head over 4 owner layers); the optimised build runs all nine. Every
// attention test instantiates its scenario once per geometry, and under the sanitizers each
// instantiation costs seconds of compile time for no extra memory-safety coverage.
using paper_list = std::tuple<geometry<mlkv::paper_configs[0].shape>, geometry<mlkv::paper_configs[4].shape>,
                              geometry<mlkv::paper_configs[6].shape>>;
#else
using paper_list = decltype(paper_geometries(std::make_index_sequence<mlkv::paper_configs.size()>{}));
#endif
#if defined(MLKV_TEST_SANITIZED_BUILD)
// Under the sanitizers, five of the ten: uneven groups with one KV head, one owner layer, the
// suffix placement, a group of 7 with head dim 96, and the 1-head head-dim-8 corner.
using awkward_list = std::tuple<geometry<uneven_mqa_d80>, geometry<single_owner_d80>, geometry<yoco>,
                                geometry<group7_d96>, geometry<tiny>>;
#else
using awkward_list = std::tuple<geometry<uneven_mqa_d80>, geometry<uneven_gqa>, geometry<mha_full_d128>,
                                geometry<single_owner_d80>, geometry<cla3>, geometry<yoco>, geometry<table5>,
                                geometry<group7_d96>, geometry<tiny>, geometry<llama_like>>;
#endif

/// Calls f(geometry<S>{}) for every geometry of a list.
template <class List, class F>
void for_each_geometry(F&& f) {
  std::apply([&](auto... g) { (f(g), ...); }, List{});
}

}  // namespace mlkv_test
