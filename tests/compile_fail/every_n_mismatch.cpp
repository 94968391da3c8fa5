// expect: mlkv: every-n placement with period 3 over 12 layers gives 4 KV layers, not 5
// Compile-fail test (see check.cmake): the geometry below is invalid; with MLKV_CONTROL it is valid.
#include <mlkv/shape.hpp>
#ifdef MLKV_CONTROL
inline constexpr auto g = mlkv::checked<mlkv::model_shape{.layers = 12, .q_heads = 12, .kv_heads = 1, .kv_layers = 4, .head_dim = 64, .placement = mlkv::placement::every_n(3)}>;
#else
inline constexpr auto g = mlkv::checked<mlkv::model_shape{.layers = 12, .q_heads = 12, .kv_heads = 1, .kv_layers = 5, .head_dim = 64, .placement = mlkv::placement::every_n(3)}>;
#endif
int main() { return g.layers; }
