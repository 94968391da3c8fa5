// expect: tokens per page must be between 1 and 65536
// The page size is a compile-time parameter in 1..65536.
#include <mlkv/cache/paged.hpp>

inline constexpr mlkv::model_shape s{.layers = 2, .q_heads = 4, .kv_heads = 2, .kv_layers = 2, .head_dim = 16};

int main() {
#if defined(MLKV_CONTROL)
  mlkv::paged_kv_cache<s, float, 1> pool(4);
#else
  mlkv::paged_kv_cache<s, float, 0> pool(4);
#endif
  return pool.pages() == 4 ? 0 : 1;
}
