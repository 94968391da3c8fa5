// expect: deleted
// A view points into its batch's block table: a view of a temporary batch does not compile.
#include <mlkv/cache/paged.hpp>

inline constexpr mlkv::model_shape s{.layers = 2, .q_heads = 4, .kv_heads = 2, .kv_layers = 2, .head_dim = 16};

int main() {
  mlkv::paged_kv_cache<s, float, 16> pool(4);
  const mlkv::seq_id ids[1] = {pool.add()};
#if defined(MLKV_CONTROL)
  const auto batch = pool.make_batch(ids);
  const auto view = batch.slot_view(0);
#else
  const auto view = pool.make_batch(ids).slot_view(0);
#endif
  return view.batch == 1 ? 0 : 1;
}
