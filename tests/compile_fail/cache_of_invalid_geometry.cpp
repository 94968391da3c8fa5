// expect: mlkv: query heads \(12\) must be a multiple of KV heads \(5\)
// Compile-fail test (see check.cmake): a cache of an invalid geometry does not compile either.
#include <mlkv/cache/contiguous.hpp>
#ifdef MLKV_CONTROL
inline constexpr mlkv::model_shape g{.layers = 12, .q_heads = 12, .kv_heads = 4, .kv_layers = 12, .head_dim = 64};
#else
inline constexpr mlkv::model_shape g{.layers = 12, .q_heads = 12, .kv_heads = 5, .kv_layers = 12, .head_dim = 64};
#endif
int main() {
  mlkv::kv_cache<g, float> cache(1, 8);
  return cache.length(0);
}
