// The CUDA append, prefill and decode kernels against the double oracle, over the same geometry
// list as the CPU tests (tests/geometries.hpp), both storage types, contiguous and paged caches.
#include <mlkv/cuda/batch.hpp>

#include <string>

#include "geometries.hpp"
#include "gpu_scenario.hpp"

namespace {

/// The message of the mlkv::error that f throws, or "no error".
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const mlkv::error& e) {
    return e.what();
  }
  return "no error";
}

template <class List, class T>
void run_list() {
  mlkv_test::for_each_geometry<List>([](auto g) {
    constexpr mlkv::model_shape S = decltype(g)::shape;
    if constexpr (mlkv::cuda::cuda_head_dim_supported(S.head_dim)) {
      mlkv_cuda_test::run_gpu_scenario<S, T>(mlkv_test::fresh_seed());
    } else {
      // A head dim without a tensor-core kernel (the list's D = 8): refused with a clear message.
      INFO("geometry with head dim " << S.head_dim);
      mlkv_cuda_test::device_cache<S, T> dc(2, 16, 4, 1);
      mlkv_cuda_test::dbuf<std::int32_t> ctx(2);
      mlkv_cuda_test::dbuf<T> q(2 * S.q_heads * S.head_dim), out(q.n);
      const auto ab = mlkv::cuda::attention_batch::decode(2, ctx.p, 16);
      const std::string want = "mlkv: head dim " + std::to_string(S.head_dim) +
                               " has no CUDA kernel; compiled head dims: 64, 80, 96, 128";
      CHECK(error_of([&] { mlkv_cuda_test::prefill(dc.contiguous(0), S.q_heads, q.p, out.p, ab, 1.f, nullptr); }) == want);
      CHECK(error_of([&] {
              mlkv_cuda_test::decode(dc.paged(0), S.q_heads, q.p, out.p, ab, 1.f, nullptr, 0, nullptr);
            }) == want);
    }
  });
}

}  // namespace

TEMPLATE_TEST_CASE("CUDA append, prefill and decode match the oracle on the paper's configurations", "[cuda]",
                   mlkv::f16, mlkv::bf16) {
  run_list<mlkv_test::paper_list, TestType>();
}

TEMPLATE_TEST_CASE("CUDA append, prefill and decode match the oracle on awkward geometries", "[cuda]", mlkv::f16,
                   mlkv::bf16) {
  run_list<mlkv_test::awkward_list, TestType>();
}
