// expect: mlkv: placement table has 2 owner layers, KV layers is 3
// Compile-fail test (see check.cmake): the geometry below is invalid; with MLKV_CONTROL it is valid.
#include <mlkv/shape.hpp>
#ifdef MLKV_CONTROL
inline constexpr auto g = mlkv::checked<mlkv::model_shape{.layers = 4, .q_heads = 4, .kv_heads = 1, .kv_layers = 2, .head_dim = 64, .placement = mlkv::placement::from_table({0, 0, 2, 2})}>;
#else
inline constexpr auto g = mlkv::checked<mlkv::model_shape{.layers = 4, .q_heads = 4, .kv_heads = 1, .kv_layers = 3, .head_dim = 64, .placement = mlkv::placement::from_table({0, 0, 2, 2})}>;
#endif
int main() { return g.layers; }
