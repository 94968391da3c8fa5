#pragma once
// Shared by the CPU fast-path tests: the kernel under test as the harness calls it, the bounds
// of each path, and the reduced geometry list used under emulation (qemu) and the sanitizers.

#include <mlkv/cpu/attention.hpp>

#include <tuple>
#include <type_traits>

#include "../attention_harness.hpp"
#include "../geometries.hpp"

namespace mlkv_cpu_test {

using mlkv::cpu::isa;


/// True when path i reads the queries as bf16 for storage T: the avx512_bf16 path multiplies
/// bf16 queries with bf16 keys by VDPBF16PS (f32 sums), so it computes exact-f32 attention of
/// bf16(q); the harness's oracle on the stored values rounds q the same way (like K and V) and
/// keeps its tight bound, while the bound against the exact inputs stays the storage type's.
template <class T>
bool rounds_queries(isa i) {
  return i == isa::avx512_bf16 && std::is_same_v<T, mlkv::bf16>;
}

/// The harness's options for path i and storage T.
template <class T>
mlkv_test::scenario_options options_for(isa i, mlkv_test::scenario_options o = {}) {
  o.bf16_queries = rounds_queries<T>(i);
  return o;
}

/// The fast kernel with fixed options, callable as the harness's kernel.
inline auto kernel(const mlkv::cpu::attention_options& opt) {
  return [opt](const auto& view, int q_heads, const float* q, float* out, const mlkv::cpu::attention_batch& ab,
               float scale) { mlkv::cpu::attention(view, q_heads, q, out, ab, scale, opt); };
}

/// Under emulation or the sanitizers the geometry lists shrink to the awkward shapes that cover
/// every code path (group sizes 1, 2, 3, 4, 7, 8, 12, 32; head dims 8, 64, 80, 96, 128).
inline bool reduced() {
#if defined(MLKV_TEST_EMULATED)
  return true;
#else
  return mlkv_test::sanitized();
#endif
}

using reduced_list = std::tuple<mlkv_test::geometry<mlkv_test::uneven_mqa_d80>, mlkv_test::geometry<mlkv_test::yoco>,
                                mlkv_test::geometry<mlkv_test::group7_d96>, mlkv_test::geometry<mlkv_test::tiny>,
                                mlkv_test::geometry<mlkv_test::llama_like>>;

}  // namespace mlkv_cpu_test
