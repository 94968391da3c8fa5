// expect: mlkv: layer 3 reads layer 1, which is not an owner \(it reads layer 0\)
// Compile-fail test (see check.cmake): the geometry below is invalid; with MLKV_CONTROL it is valid.
#include <mlkv/shape.hpp>
#ifdef MLKV_CONTROL
inline constexpr auto g = mlkv::checked<mlkv::model_shape{.layers = 4, .q_heads = 4, .kv_heads = 1, .kv_layers = 2, .head_dim = 64, .placement = mlkv::placement::from_table({0, 0, 2, 0})}>;
#else
inline constexpr auto g = mlkv::checked<mlkv::model_shape{.layers = 4, .q_heads = 4, .kv_heads = 1, .kv_layers = 1, .head_dim = 64, .placement = mlkv::placement::from_table({0, 0, 0, 1})}>;
#endif
int main() { return g.layers; }
