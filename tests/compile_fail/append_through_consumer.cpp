// expect: this layer is a consumer: it reads its owner's K/V and cannot append
// Compile-fail test (see check.cmake): layer 1 of MLKV-4 is a consumer of layer 0; appending
// through it must not compile. With MLKV_CONTROL it appends through owner layer 3.
#include <mlkv/cache/contiguous.hpp>
inline constexpr mlkv::model_shape g{.layers = 12, .q_heads = 12, .kv_heads = 1, .kv_layers = 4, .head_dim = 64};
int main() {
  mlkv::kv_cache<g, mlkv::bf16> cache(1, 8);
  float k[64] = {}, v[64] = {};
#ifdef MLKV_CONTROL
  cache.append_layer<3>(0, 1, k, v);
#else
  cache.append_layer<1>(0, 1, k, v);
#endif
  return cache.length(0);
}
