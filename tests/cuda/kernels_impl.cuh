#pragma once
// Definitions of the wrappers of kernels.hpp; each kernels_<type>.cu instantiates one type, so
// the two compile in parallel.
#include <mlkv/cuda/attention.cuh>

#include "kernels.hpp"

namespace mlkv_cuda_test {

template <class View>
void append(const View& kv, const float* k, const float* v, const attention_batch& ab, const mlkv::rotary* rope,
            cudaStream_t s) {
  mlkv::cuda::append_kv(kv, k, v, ab, rope, s);
}
template <class View>
void append_t(const View& kv, const typename View::value_type* k, const typename View::value_type* v,
              const attention_batch& ab, const mlkv::rotary* rope, cudaStream_t s) {
  mlkv::cuda::append_kv(kv, k, v, ab, rope, s);
}
template <class View>
std::size_t decode_workspace(const View& kv, int q_heads, const attention_batch& ab) {
  return mlkv::cuda::decode_workspace_bytes(kv, q_heads, ab);
}
template <class View>
void decode(const View& kv, int q_heads, const typename View::value_type* q, typename View::value_type* out,
            const attention_batch& ab, float scale, void* ws, std::size_t ws_bytes, cudaStream_t s) {
  mlkv::cuda::decode_attention(kv, q_heads, q, out, ab, scale, ws, ws_bytes, s);
}
template <class View>
void prefill(const View& kv, int q_heads, const typename View::value_type* q, typename View::value_type* out,
             const attention_batch& ab, float scale, cudaStream_t s) {
  mlkv::cuda::prefill_attention(kv, q_heads, q, out, ab, scale, s);
}

}  // namespace mlkv_cuda_test

#define MLKV_CUDA_TEST_INSTANTIATE(V)                                                                          \
  template void mlkv_cuda_test::append<V>(const V&, const float*, const float*, const attention_batch&,        \
                                          const mlkv::rotary*, cudaStream_t);                                  \
  template void mlkv_cuda_test::append_t<V>(const V&, const V::value_type*, const V::value_type*,              \
                                            const attention_batch&, const mlkv::rotary*, cudaStream_t);        \
  template std::size_t mlkv_cuda_test::decode_workspace<V>(const V&, int, const attention_batch&);             \
  template void mlkv_cuda_test::decode<V>(const V&, int, const V::value_type*, V::value_type*,                 \
                                          const attention_batch&, float, void*, std::size_t, cudaStream_t);    \
  template void mlkv_cuda_test::prefill<V>(const V&, int, const V::value_type*, V::value_type*,                \
                                           const attention_batch&, float, cudaStream_t);
