// The CUDA launchers for bf16 caches, instantiated for the tests.
#include "kernels_impl.cuh"
using mlkv_cuda_test::attention_batch;
MLKV_CUDA_TEST_INSTANTIATE(mlkv::contiguous_slot_view<mlkv::bf16>)
MLKV_CUDA_TEST_INSTANTIATE(mlkv::paged_slot_view<mlkv::bf16>)

void mlkv_cuda_test::set_prefill_force_mma(bool on) { mlkv::cuda::detail::prefill_force_mma.store(on ? 1 : 0); }
void mlkv_cuda_test::set_prefill_sm90_variant(int variant) { mlkv::cuda::detail::prefill_sm90_variant.store(variant); }
