// A user's program: a compile-time geometry, a cache, one decode step of the reference attention.
#include <mlkv/mlkv.hpp>

#include <cstdio>
#include <vector>

inline constexpr mlkv::model_shape mlkv4 =
    mlkv::checked<mlkv::model_shape{.layers = 12, .q_heads = 12, .kv_heads = 1, .kv_layers = 4, .head_dim = 64}>;
static_assert(mlkv4.kv_slot(5) == 1 && mlkv4.owner(6));

int main() {
  mlkv::kv_cache<mlkv4, mlkv::bf16> cache(2, 16);
  std::vector<float> k(2 * 64, 0.5f), v(2 * 64, 1.0f), q(2 * 12 * 64, 0.1f), out(q.size());
  for (int slot = 0; slot < cache.slots; ++slot) cache.append_step(slot, k.data(), v.data());
  std::vector<int> ctx = {1, 1};
  mlkv::cpu::reference_decode(cache.layer_view(7), 12, q.data(), out.data(), 2, ctx.data(), 0.125f);
  cache.commit_all(1);
  if (out[0] != 1.0f || cache.length(1) != 1) return 1;
  std::printf("consumer ok: MLKV-4 owners");
  for (int s = 0; s < cache.slots; ++s) std::printf(" %d", mlkv4.owner_layer(s));
  std::printf("\n");
  return 0;
}
