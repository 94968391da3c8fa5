// expect: mlkv: suffix placement reads layer 6, which is not an owner layer 0..5
// Compile-fail test (see check.cmake): the geometry below is invalid; with MLKV_CONTROL it is valid.
#include <mlkv/shape.hpp>
#ifdef MLKV_CONTROL
inline constexpr auto g = mlkv::checked<mlkv::model_shape{.layers = 12, .q_heads = 12, .kv_heads = 1, .kv_layers = 6, .head_dim = 64, .placement = mlkv::placement::suffix(5)}>;
#else
inline constexpr auto g = mlkv::checked<mlkv::model_shape{.layers = 12, .q_heads = 12, .kv_heads = 1, .kv_layers = 6, .head_dim = 64, .placement = mlkv::placement::suffix(6)}>;
#endif
int main() { return g.layers; }
