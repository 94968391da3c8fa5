#pragma once
// The CUDA launchers as the (g++-compiled) tests see them: plain declarations, explicitly
// instantiated in kernels_<type>.cu (compiled by nvcc) for the contiguous and paged views of
// f16 and bf16. The tests themselves need no CUDA compiler, only the runtime API.

#include <cuda_runtime_api.h>

#include <mlkv/cache/view.hpp>
#include <mlkv/cuda/batch.hpp>
#include <mlkv/dtype.hpp>
#include <mlkv/rope.hpp>

#include <cstddef>

namespace mlkv_cuda_test {

using mlkv::cuda::attention_batch;

/// mlkv::cuda::append_kv with f32 rows.
template <class View>
void append(const View& kv, const float* k, const float* v, const attention_batch& ab, const mlkv::rotary* rope,
            cudaStream_t s);
/// mlkv::cuda::append_kv with rows of the storage type.
template <class View>
void append_t(const View& kv, const typename View::value_type* k, const typename View::value_type* v,
              const attention_batch& ab, const mlkv::rotary* rope, cudaStream_t s);
/// mlkv::cuda::decode_workspace_bytes
template <class View>
std::size_t decode_workspace(const View& kv, int q_heads, const attention_batch& ab);
/// mlkv::cuda::decode_attention
template <class View>
void decode(const View& kv, int q_heads, const typename View::value_type* q, typename View::value_type* out,
            const attention_batch& ab, float scale, void* ws, std::size_t ws_bytes, cudaStream_t s);
/// mlkv::cuda::prefill_attention
template <class View>
void prefill(const View& kv, int q_heads, const typename View::value_type* q, typename View::value_type* out,
             const attention_batch& ab, float scale, cudaStream_t s);

/// Sends every prefill to the mma.sync kernel (true) or lets the launcher choose (false), so the
/// tests cover the fallback on a GPU where the wgmma kernel would run.
void set_prefill_force_mma(bool on);
/// Picks the wgmma prefill's kernel variant (0: the default; prefill_sm90.cuh lists the others),
/// so the tests cover every variant the benchmark can time.
void set_prefill_sm90_variant(int variant);

}  // namespace mlkv_cuda_test
