// expect: mlkv: KV layers \(13\) must be between 1 and layers \(12\)
// Compile-fail test (see check.cmake): the geometry below is invalid; with MLKV_CONTROL it is valid.
#include <mlkv/shape.hpp>
#ifdef MLKV_CONTROL
inline constexpr auto g = mlkv::checked<mlkv::model_shape{.layers = 12, .q_heads = 12, .kv_heads = 1, .kv_layers = 12, .head_dim = 64}>;
#else
inline constexpr auto g = mlkv::checked<mlkv::model_shape{.layers = 12, .q_heads = 12, .kv_heads = 1, .kv_layers = 13, .head_dim = 64}>;
#endif
int main() { return g.layers; }
