// expect: this layer is a consumer
// A consumer layer has no K/V: appending through it does not compile (paged cache).
#include <mlkv/cache/paged.hpp>

inline constexpr mlkv::model_shape s{.layers = 12, .q_heads = 12, .kv_heads = 1, .kv_layers = 4, .head_dim = 64};

int main() {
  mlkv::paged_kv_cache<s, float, 16> pool(4);
  const auto id = pool.add();
  float k[64] = {}, v[64] = {};
#if defined(MLKV_CONTROL)
  pool.append_layer<3>(id, 1, k, v);  // layer 3 owns slot 1
#else
  pool.append_layer<4>(id, 1, k, v);  // layer 4 reads layer 3's slot
#endif
}
