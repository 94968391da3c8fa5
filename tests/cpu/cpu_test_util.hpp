#pragma once
// Shared by the CPU fast-path tests: the kernel under test as the harness calls it, the bounds
// of each path, and the reduced geometry list used under emulation (qemu) and the sanitizers.

#include <mlkv/cpu/attention.hpp>

#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "../attention_harness.hpp"
#include "../geometries.hpp"

namespace mlkv_cpu_test {

using mlkv::cpu::isa;

/// The paths these tests run: every path usable here, except the scalar one under emulation
/// (qemu, MLKV_TEST_EMULATED). The scalar path is the same portable C++ on every target and runs
/// natively in the host's build of these tests; under qemu it took half of the emulated time, so
/// there only the target's own SIMD path runs.
inline std::vector<isa> tested_isas() {
  std::vector<isa> v = mlkv::cpu::supported_isas();
#if defined(MLKV_TEST_EMULATED)
  if (v.size() > 1) std::erase(v, isa::scalar);
#endif
  return v;
}

/// True when path i multiplies in bf16 for storage T: the avx512_bf16 path multiplies bf16
/// queries with bf16 keys, and bf16 softmax weights with bf16 values, by VDPBF16PS (f32 sums).
/// The harness's oracle on the stored values rounds q and the weights the same way and keeps
/// its tight bound (plus the allowance of oracle::attention with bf16 weights), while the bound
/// against the exact inputs stays the storage type's.
template <class T>
bool rounds_queries(isa i) {
  return i == isa::avx512_bf16 && std::is_same_v<T, mlkv::bf16>;
}

/// The harness's options for path i and storage T.
template <class T>
mlkv_test::scenario_options options_for(isa i, mlkv_test::scenario_options o = {}) {
  o.bf16_queries = o.bf16_weights = rounds_queries<T>(i);
  return o;
}

/// The oracle for path i over storage T on the values as stored (q as given; the harness's
/// oracle_stored with path i's options). Compare with rel_err_slack.
template <class T>
void oracle_for(isa i, std::vector<double> q, int rows, int Hq, int Hkv, int D, const double* k, const double* v,
                int ctx, double scale, double* out, double* slack) {
  mlkv_test::oracle_stored(options_for<T>(i), std::move(q), rows, Hq, Hkv, D, k, v, ctx, scale, out, slack);
}

/// Values as storage T holds them, in double (the oracle's input).
template <class T>
std::vector<double> stored(const float* x, std::size_t n) {
  std::vector<double> out(n);
  for (std::size_t i = 0; i < n; ++i) out[i] = mlkv_test::quantized<T>(x[i]);
  return out;
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
