// expect: mlkv: KV heads \(0\) must be between 1 and query heads \(12\)
// Compile-fail test (see check.cmake): the geometry below is invalid; with MLKV_CONTROL it is valid.
#include <mlkv/shape.hpp>
#ifdef MLKV_CONTROL
inline constexpr auto g = mlkv::checked<mlkv::model_shape{.layers = 12, .q_heads = 12, .kv_heads = 12, .kv_layers = 2, .head_dim = 64}>;
#else
inline constexpr auto g = mlkv::checked<mlkv::model_shape{.layers = 12, .q_heads = 12, .kv_heads = 0, .kv_layers = 2, .head_dim = 64}>;
#endif
int main() { return g.layers; }
