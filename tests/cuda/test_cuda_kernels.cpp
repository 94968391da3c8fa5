// The CUDA kernels beyond the engine scenario: long contexts (split decode and its merge, group
// sizes that need two tiles or several head blocks), long prefill chunks over a cache, rows of the
// storage type into append, a CUDA graph capture replayed with new data, and bad arguments (host
// errors with their messages; out-of-range device lengths give NaN rows and no stray access).
#include <mlkv/cpu/reference.hpp>
#include <mlkv/cuda/batch.hpp>
#include <mlkv/presets.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "catch.hpp"
#include "gpu_util.hpp"
#include "kernels.hpp"
#include "oracle.hpp"
#include "test_util.hpp"

namespace {

using mlkv::model_shape;
using mlkv::cuda::attention_batch;
using mlkv_cuda_test::dbuf;
using mlkv_cuda_test::device_cache;

constexpr model_shape mqa_d64{.layers = 2, .q_heads = 12, .kv_heads = 1, .kv_layers = 1, .head_dim = 64};
constexpr model_shape mqa32_d128{.layers = 2, .q_heads = 32, .kv_heads = 1, .kv_layers = 1, .head_dim = 128};
constexpr model_shape gqa32_8_d128{.layers = 2, .q_heads = 32, .kv_heads = 8, .kv_layers = 1, .head_dim = 128};
constexpr model_shape group48_d64{.layers = 1, .q_heads = 96, .kv_heads = 2, .kv_layers = 1, .head_dim = 64};
constexpr model_shape mha_d96{.layers = 1, .q_heads = 3, .kv_heads = 3, .kv_layers = 1, .head_dim = 96};

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const mlkv::error& e) {
    return e.what();
  }
  return "no error";
}

/// A filled slot 0: `cached[b]` tokens of random K/V appended (rotated) per sequence.
template <model_shape S, class T>
struct filled {
  static constexpr int Hq = S.q_heads, Hkv = S.kv_heads, D = S.head_dim;
  int B, C;
  device_cache<S, T> dc;
  mlkv::rotary rope;
  typename device_cache<S, T>::slot_rows stored;

  filled(std::uint64_t seed, const std::vector<int>& cached, int capacity, int page_tokens)
      : B(static_cast<int>(cached.size())),
        C(capacity),
        dc(static_cast<int>(cached.size()), capacity, page_tokens, seed),
        rope(mlkv::rope_config{D, D / 2, 10000.f}) {
    mlkv_test::rng r(seed);
    std::vector<std::int32_t> off(cached.size() + 1, 0), ctx(cached.begin(), cached.end());
    int max_rows = 0;
    for (std::size_t b = 0; b < cached.size(); ++b) {
      off[b + 1] = off[b] + cached[b];
      max_rows = std::max(max_rows, cached[b]);
    }
    const auto k = r.vec(static_cast<std::size_t>(off.back()) * Hkv * D), v = r.vec(k.size());
    dbuf<float> dk(k.size()), dv(v.size());
    dk.upload(k);
    dv.upload(v);
    dbuf<std::int32_t> dctx(ctx.size()), doff(off.size());
    dctx.upload(ctx);
    doff.upload(off);
    dc.set_tokens(cached);
    const auto ab = attention_batch::chunks(B, dctx.p, doff.p, C, max_rows, off.back());
    mlkv_cuda_test::stream st;
    mlkv_cuda_test::append(dc.contiguous(0), dk.p, dv.p, ab, &rope, st.s);
    mlkv_cuda_test::append(dc.paged(0), dk.p, dv.p, ab, &rope, st.s);
    st.sync();
    stored = dc.download_contiguous(0);
  }
  /// The oracle over the stored values for `n` query rows (already in T) of sequence b.
  std::vector<double> oracle(int b, const std::vector<double>& q, int n, int ctx, float scale) const {
    std::vector<double> ks(static_cast<std::size_t>(ctx) * Hkv * D), vs(ks.size()), out(static_cast<std::size_t>(n) * Hq * D);
    for (int t = 0; t < ctx; ++t) {
      for (int h = 0; h < Hkv; ++h) {
        for (int d = 0; d < D; ++d) {
          ks[(static_cast<std::size_t>(t) * Hkv + h) * D + d] = mlkv::to_float(stored.k[dc.at(b, h, t, d)]);
          vs[(static_cast<std::size_t>(t) * Hkv + h) * D + d] = mlkv::to_float(stored.v[dc.at(b, h, t, d)]);
        }
      }
    }
    oracle::attention(q.data(), n, Hq, Hkv, D, ks.data(), vs.data(), ctx, scale, out.data());
    return out;
  }
};

template <class T>
double check_rows(const std::vector<T>& got_t, std::size_t first, const std::vector<double>& want) {
  std::vector<double> got(want.size());
  for (std::size_t i = 0; i < want.size(); ++i) got[i] = mlkv::to_float(got_t[first + i]);
  const double e = mlkv_test::rel_err(got, want);
  mlkv_cuda_test::worst<T>().first = std::max(mlkv_cuda_test::worst<T>().first, e);
  return e;
}

/// Decode over long contexts, contiguous and paged; `split` asks that the plan splits them.
/// plan_context > 0: the cache holds and the call plans for that many tokens (max_context), far
/// more than the sequences hold (an engine's graph captured for long contexts).
template <model_shape S, class T>
void long_decode(const std::vector<int>& contexts, int page_tokens, bool split, int plan_context = 0) {
  const std::uint64_t seed = mlkv_test::fresh_seed();
  INFO("Hq=" << S.q_heads << " Hkv=" << S.kv_heads << " D=" << S.head_dim << " dtype=" << mlkv::name_of(mlkv::dtype_of<T>)
             << " seed=" << seed);
  const int C = std::max(plan_context, *std::max_element(contexts.begin(), contexts.end()) + 3);
  INFO("max_context " << C);
  filled<S, T> f(seed, contexts, C, page_tokens);
  constexpr int Hq = S.q_heads, D = S.head_dim;
  const int B = f.B;
  mlkv_test::rng r(seed + 1);
  const auto qt = mlkv_cuda_test::quantize<T>(r.vec(static_cast<std::size_t>(B) * Hq * D));
  const auto qd = mlkv_cuda_test::widen(qt);
  dbuf<T> q(qt.size()), out(qt.size());
  q.upload(qt);
  dbuf<std::int32_t> ctx(static_cast<std::size_t>(B));
  ctx.upload(std::vector<std::int32_t>(contexts.begin(), contexts.end()));
  const float scale = mlkv::cpu::default_scale(D);
  const auto ab = attention_batch::decode(B, ctx.p, C);
  mlkv_cuda_test::stream st;
  for (int paged = 0; paged < 2; ++paged) {
    INFO((paged ? "paged" : "contiguous"));
    const std::size_t ws_bytes = paged ? mlkv_cuda_test::decode_workspace(f.dc.paged(0), Hq, ab)
                                       : mlkv_cuda_test::decode_workspace(f.dc.contiguous(0), Hq, ab);
    if (split) REQUIRE(ws_bytes > 0);  // the long contexts are split and merged
    dbuf<unsigned char> ws(ws_bytes);
    out.poison();
    if (paged) {
      mlkv_cuda_test::decode(f.dc.paged(0), Hq, q.p, out.p, ab, scale, ws.p, ws_bytes, st.s);
    } else {
      mlkv_cuda_test::decode(f.dc.contiguous(0), Hq, q.p, out.p, ab, scale, ws.p, ws_bytes, st.s);
    }
    st.sync();
    const auto got = out.download();
    for (int b = 0; b < B; ++b) {
      const std::size_t first = static_cast<std::size_t>(b) * Hq * D;
      const std::vector<double> qb(qd.begin() + static_cast<std::ptrdiff_t>(first),
                                   qd.begin() + static_cast<std::ptrdiff_t>(first + static_cast<std::size_t>(Hq) * D));
      INFO("sequence " << b << " context " << contexts[static_cast<std::size_t>(b)]);
      CHECK(check_rows(got, first, f.oracle(b, qb, 1, contexts[static_cast<std::size_t>(b)], scale)) <=
            mlkv_cuda_test::stored_bound<T>);
    }
  }
}

/// A prefill chunk of rows[b] new tokens over contexts[b] tokens (the chunk's own included).
template <model_shape S, class T>
void long_prefill(const std::vector<int>& contexts, const std::vector<int>& rows, int page_tokens,
                  float scale_override = 0.f) {
  const std::uint64_t seed = mlkv_test::fresh_seed();
  INFO("Hq=" << S.q_heads << " Hkv=" << S.kv_heads << " D=" << S.head_dim << " dtype=" << mlkv::name_of(mlkv::dtype_of<T>)
             << " seed=" << seed);
  const int C = *std::max_element(contexts.begin(), contexts.end()) + 5;
  filled<S, T> f(seed, contexts, C, page_tokens);
  constexpr int Hq = S.q_heads, D = S.head_dim;
  const int B = f.B;
  std::vector<std::int32_t> off(static_cast<std::size_t>(B) + 1, 0);
  int max_rows = 0;
  for (int b = 0; b < B; ++b) {
    off[static_cast<std::size_t>(b) + 1] = off[static_cast<std::size_t>(b)] + rows[static_cast<std::size_t>(b)];
    max_rows = std::max(max_rows, rows[static_cast<std::size_t>(b)]);
  }
  mlkv_test::rng r(seed + 7);
  const auto qt = mlkv_cuda_test::quantize<T>(r.vec(static_cast<std::size_t>(off.back()) * Hq * D));
  const auto qd = mlkv_cuda_test::widen(qt);
  dbuf<T> q(qt.size()), out(qt.size());
  q.upload(qt);
  dbuf<std::int32_t> ctx(static_cast<std::size_t>(B)), doff(off.size());
  ctx.upload(std::vector<std::int32_t>(contexts.begin(), contexts.end()));
  doff.upload(off);
  const float scale = scale_override != 0.f ? scale_override : mlkv::cpu::default_scale(D);
  INFO("scale " << scale);
  const auto ab = attention_batch::chunks(B, ctx.p, doff.p, C, max_rows, off.back());
  mlkv_cuda_test::stream st;
  for (int paged = 0; paged < 2; ++paged) {
    INFO((paged ? "paged" : "contiguous"));
    out.poison();
    if (paged) {
      mlkv_cuda_test::prefill(f.dc.paged(0), Hq, q.p, out.p, ab, scale, st.s);
    } else {
      mlkv_cuda_test::prefill(f.dc.contiguous(0), Hq, q.p, out.p, ab, scale, st.s);
    }
    st.sync();
    const auto got = out.download();
    for (int b = 0; b < B; ++b) {
      const int n = rows[static_cast<std::size_t>(b)];
      if (n == 0) continue;
      const std::size_t first = static_cast<std::size_t>(off[static_cast<std::size_t>(b)]) * Hq * D;
      const std::vector<double> qb(qd.begin() + static_cast<std::ptrdiff_t>(first),
                                   qd.begin() + static_cast<std::ptrdiff_t>(first + static_cast<std::size_t>(n) * Hq * D));
      INFO("sequence " << b << " rows " << n << " context " << contexts[static_cast<std::size_t>(b)]);
      CHECK(check_rows(got, first, f.oracle(b, qb, n, contexts[static_cast<std::size_t>(b)], scale)) <=
            mlkv_cuda_test::stored_bound<T>);
    }
  }
}

}  // namespace

TEST_CASE("CUDA decode over long contexts: split, merged, any group size", "[cuda]") {
  long_decode<mqa_d64, mlkv::bf16>({5000, 1, 777, 3001}, 16, true);        // 12:1, one 16-row tile
  long_decode<mqa32_d128, mlkv::f16>({4100, 64, 65, 2000}, 7, true);       // 32:1, two 16-row tiles
  long_decode<group48_d64, mlkv::bf16>({2500, 130}, 16, true);             // 48 heads: blocks of 32 + 16
  long_decode<gqa32_8_d128, mlkv::bf16>({3000, 1, 2500}, 16, false);       // 32:8
  long_decode<mha_d96, mlkv::f16>({1500, 2, 63}, 3, false);                // MHA, head dim 96
  // One work item per SM (12:1): the plan splits in four for balance, but only the sequences of
  // at least 128 tiles (16384 tokens in 128-token tiles); the others keep one split.
  int dev = 0, sms = 0;
  REQUIRE(cudaGetDevice(&dev) == cudaSuccess);
  REQUIRE(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) == cudaSuccess);
  // (A GPU of fewer than 14 SMs gets 14 sequences; the rule may not apply there.)
  std::vector<int> per_sm(static_cast<std::size_t>(std::max(sms, 14)));
  for (std::size_t b = 0; b < per_sm.size(); ++b) per_sm[b] = 1 + static_cast<int>((b * 37u) % 300u);
  per_sm[3] = 16400;   // 129 tiles: four splits
  per_sm[7] = 16384;   // 128 tiles: four splits
  per_sm[11] = 16256;  // 127 tiles: one split of 127 tiles
  per_sm[13] = 9000;
  long_decode<mqa_d64, mlkv::bf16>(per_sm, 64, /*split=*/sms >= 14);
  // Planned for far longer contexts than any sequence holds: every sequence's splits come from
  // its own length (one tile up to the plan's chunk).
  long_decode<mqa_d64, mlkv::bf16>({700, 1, 64, 33, 129}, 16, true, 16384);
  long_decode<mqa32_d128, mlkv::f16>({900, 17, 2}, 5, true, 9000);
}

TEST_CASE("CUDA append and decode over more than 65535 sequences (the grid's limit per launch)", "[cuda]") {
  // 65535 + 600 sequences of 1-7 tokens: append and decode walk the batch in launches of at most
  // 65535 sequences; every sequence is checked, those of the second launch included.
  std::vector<int> contexts(65535 + 600);
  for (std::size_t b = 0; b < contexts.size(); ++b) contexts[b] = 1 + static_cast<int>((b * 7919u) % 7u);
  long_decode<mqa_d64, mlkv::bf16>(contexts, 4, false);
}

TEST_CASE("CUDA prefill of long chunks over a cache (causal, uneven, several row blocks)", "[cuda]") {
  long_prefill<mqa_d64, mlkv::bf16>({1000, 257, 50}, {300, 257, 0}, 16);
  long_prefill<gqa32_8_d128, mlkv::f16>({600, 130}, {200, 1}, 9);
  long_prefill<group48_d64, mlkv::f16>({300}, {45}, 16);
}

TEST_CASE("CUDA prefill fallback (mma.sync) on the head dims the wgmma kernel takes", "[cuda]") {
  struct restore {
    ~restore() { mlkv_cuda_test::set_prefill_force_mma(false); }
  } r;
  mlkv_cuda_test::set_prefill_force_mma(true);
  long_prefill<mqa_d64, mlkv::bf16>({700, 129, 1}, {200, 129, 1}, 16);
  long_prefill<gqa32_8_d128, mlkv::f16>({300, 40}, {100, 3}, 8);
}

TEST_CASE("CUDA prefill: the other variants of the wgmma kernels (without producer; without ping-pong; without TMA)", "[cuda]") {
  struct restore {
    ~restore() { mlkv_cuda_test::set_prefill_sm90_variant(0); }
  } r;
  for (int variant : {2, 3, 4}) {
    INFO("variant " << variant);
    mlkv_cuda_test::set_prefill_sm90_variant(variant);
    long_prefill<mqa_d64, mlkv::bf16>({700, 129, 1}, {200, 129, 1}, 16);
    long_prefill<gqa32_8_d128, mlkv::f16>({300, 40}, {100, 3}, 8);
  }
  // A negative scale (the warp-specialised kernel folds only positive ones into its exponentials;
  // the launcher sends others to the kernel without producer).
  mlkv_cuda_test::set_prefill_sm90_variant(0);
  long_prefill<mqa_d64, mlkv::bf16>({500, 64}, {300, 64}, 16, -0.07f);
  long_prefill<gqa32_8_d128, mlkv::bf16>({400}, {200}, 8, -0.05f);
}

TEST_CASE("CUDA append takes rows of the storage type too", "[cuda]") {
  using T = mlkv::bf16;
  constexpr model_shape S = mqa32_d128;
  constexpr int Hkv = S.kv_heads, D = S.head_dim;
  const std::uint64_t seed = mlkv_test::fresh_seed();
  INFO("seed " << seed);
  mlkv_test::rng r(seed);
  device_cache<S, T> dc(2, 40, 8, seed);
  const std::vector<int> rows = {17, 3};
  const std::vector<std::int32_t> ctx = {17, 3}, off = {0, 17, 20};
  const auto k = mlkv_cuda_test::quantize<T>(r.vec(20u * Hkv * D)), v = mlkv_cuda_test::quantize<T>(r.vec(20u * Hkv * D));
  dbuf<T> dk(k.size()), dv(v.size());
  dk.upload(k);
  dv.upload(v);
  dbuf<std::int32_t> dctx(2), doff(3);
  dctx.upload(ctx);
  doff.upload(off);
  dc.set_tokens(rows);
  const mlkv::rotary rope(mlkv::rope_config{D, 32, 500.f});
  mlkv_cuda_test::stream st;
  const auto ab = attention_batch::chunks(2, dctx.p, doff.p, 40, 17, 20);
  mlkv_cuda_test::append_t(dc.contiguous(0), dk.p, dv.p, ab, &rope, st.s);
  st.sync();
  const auto got = dc.download_contiguous(0);
  std::vector<float> kf(k.size());
  for (std::size_t i = 0; i < k.size(); ++i) kf[i] = mlkv::to_float(k[i]);
  int far = 0;
  for (int b = 0; b < 2; ++b) {
    rope.apply_rows(kf.data() + static_cast<std::size_t>(off[static_cast<std::size_t>(b)]) * Hkv * D, rows[static_cast<std::size_t>(b)], Hkv, 0);
    for (int t = 0; t < 40; ++t) {
      for (int d = 0; d < D; ++d) {
        const std::size_t i = dc.at(b, 0, t, d);
        if (t >= rows[static_cast<std::size_t>(b)]) {
          far += mlkv_cuda_test::is_poison(got.k[i].bits) && mlkv_cuda_test::is_poison(got.v[i].bits) ? 0 : 1;
          continue;
        }
        const std::size_t s = (static_cast<std::size_t>(off[static_cast<std::size_t>(b)] + t) * Hkv) * D + d;
        far += got.v[i].bits == v[s].bits ? 0 : 1;
        // one unit in the last place of bf16 apart at most (cos/sin may differ by an f32 ulp)
        far += std::abs(mlkv::to_float(got.k[i]) - kf[s]) <= std::abs(kf[s]) / 128 + 1e-6f ? 0 : 1;
      }
    }
  }
  CHECK(far == 0);
}

TEST_CASE("CUDA append, decode and prefill replay from a captured CUDA graph", "[cuda]") {
  using T = mlkv::bf16;
  constexpr model_shape S = mqa_d64;
  constexpr int Hq = S.q_heads, Hkv = S.kv_heads, D = S.head_dim;
  const std::uint64_t seed = mlkv_test::fresh_seed();
  INFO("seed " << seed);
  const std::vector<int> cached = {2000, 10, 1500};
  const int B = 3, C = 2100;
  filled<S, T> f(seed, cached, C, 16);
  mlkv_test::rng r(seed + 3);
  const float scale = mlkv::cpu::default_scale(D);
  dbuf<std::int32_t> ctx(3), off(4);
  dbuf<float> dk(static_cast<std::size_t>(B) * Hkv * D), dv(dk.n);
  dbuf<T> q(static_cast<std::size_t>(B) * Hq * D), out_dec(q.n), out_pre(q.n);
  const auto dab = attention_batch::decode(B, ctx.p, C);
  const auto pab = attention_batch::chunks(B, ctx.p, off.p, C, 1, B);
  off.upload({0, 1, 2, 3});
  const std::size_t ws_bytes = mlkv_cuda_test::decode_workspace(f.dc.contiguous(0), Hq, dab);
  REQUIRE(ws_bytes > 0);
  dbuf<unsigned char> ws(ws_bytes);
  f.dc.set_tokens({C, C, C});  // the paged cache maps every block once, as a graph needs fixed pointers

  mlkv_cuda_test::stream st;
  cudaGraph_t graph = nullptr;
  CUDA_OK(cudaStreamBeginCapture(st.s, cudaStreamCaptureModeGlobal));
  mlkv_cuda_test::append(f.dc.contiguous(0), dk.p, dv.p, dab, &f.rope, st.s);
  mlkv_cuda_test::append(f.dc.paged(0), dk.p, dv.p, dab, &f.rope, st.s);
  mlkv_cuda_test::decode(f.dc.contiguous(0), Hq, q.p, out_dec.p, dab, scale, ws.p, ws_bytes, st.s);
  mlkv_cuda_test::prefill(f.dc.paged(0), Hq, q.p, out_pre.p, pab, scale, st.s);
  CUDA_OK(cudaStreamEndCapture(st.s, &graph));
  cudaGraphExec_t exec = nullptr;
  CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));

  std::vector<int> len = cached;
  for (int step = 0; step < 3; ++step) {
    INFO("replay " << step);
    std::vector<std::int32_t> c(3);
    for (int b = 0; b < B; ++b) c[static_cast<std::size_t>(b)] = len[static_cast<std::size_t>(b)] + 1;
    ctx.upload(c);
    const auto k = r.vec(dk.n), v = r.vec(dv.n);
    dk.upload(k);
    dv.upload(v);
    const auto qt = mlkv_cuda_test::quantize<T>(r.vec(q.n));
    q.upload(qt);
    out_dec.poison();
    out_pre.poison();
    CUDA_OK(cudaGraphLaunch(exec, st.s));
    st.sync();
    f.stored = f.dc.download_contiguous(0);
    const auto qd = mlkv_cuda_test::widen(qt);
    const auto gd = out_dec.download(), gp = out_pre.download();
    for (int b = 0; b < B; ++b) {
      const std::size_t first = static_cast<std::size_t>(b) * Hq * D;
      const std::vector<double> qb(qd.begin() + static_cast<std::ptrdiff_t>(first),
                                   qd.begin() + static_cast<std::ptrdiff_t>(first + static_cast<std::size_t>(Hq) * D));
      const auto want = f.oracle(b, qb, 1, c[static_cast<std::size_t>(b)], scale);
      INFO("sequence " << b);
      CHECK(check_rows(gd, first, want) <= mlkv_cuda_test::stored_bound<T>);
      CHECK(check_rows(gp, first, want) <= mlkv_cuda_test::stored_bound<T>);
      len[static_cast<std::size_t>(b)] += 1;
    }
  }
  CUDA_OK(cudaGraphExecDestroy(exec));
  CUDA_OK(cudaGraphDestroy(graph));
}

TEST_CASE("CUDA launchers reject bad host arguments with the value and the range", "[cuda]") {
  using T = mlkv::f16;
  constexpr model_shape S{.layers = 1, .q_heads = 12, .kv_heads = 4, .kv_layers = 1, .head_dim = 64};
  device_cache<S, T> dc(2, 10, 4, 1);
  dbuf<std::int32_t> ctx(2);
  ctx.upload({1, 1});
  dbuf<T> q(2 * 12 * 64 + 8), out(q.n);
  const auto view = dc.contiguous(0);
  const auto ab = attention_batch::decode(2, ctx.p, 10);
  auto dec = [&](int hq, const attention_batch& a, const T* qp, float scale = 0.125f) {
    return error_of([&] { mlkv_cuda_test::decode(view, hq, qp, out.p, a, scale, nullptr, 0, nullptr); });
  };
  CHECK(dec(12, ab, q.p) == "no error");
  CHECK(dec(10, ab, q.p) == "mlkv: query heads (10) must be a positive multiple of KV heads (4)");
  CHECK(dec(12, attention_batch::decode(3, ctx.p, 10), q.p) == "mlkv: attention batch (3) must be in [0, 2]");
  CHECK(dec(12, attention_batch::decode(2, ctx.p, 11), q.p) ==
        "mlkv: max context (11) must be in [1, 10] (the view's capacity)");
  CHECK(dec(12, attention_batch::decode(2, nullptr, 10), q.p) == "mlkv: context lengths are null");
  CHECK(dec(12, ab, q.p + 1) == "mlkv: query and output must be 16-byte aligned device pointers");
  CHECK(dec(12, ab, q.p, NAN) == "mlkv: softmax scale (nan) must be finite");
  CHECK(dec(12, attention_batch::chunks(2, ctx.p, ctx.p, 10, 1, 2), q.p) ==
        "mlkv: decode takes one query row per sequence (q_offsets must be null); use prefill_attention for chunks "
        "of rows");
  CHECK(error_of([&] {
          mlkv_cuda_test::prefill(view, 12, q.p, out.p, attention_batch::chunks(2, ctx.p, nullptr, 10, 1, 1), 0.1f, nullptr);
        }) == "mlkv: total rows (1) must cover one row per sequence (2) when q_offsets is null");
  // A split decode needs its workspace.
  device_cache<S, T> big(1, 5000, 16, 2);
  const auto lab = attention_batch::decode(1, ctx.p, 5000);
  const std::size_t need = mlkv_cuda_test::decode_workspace(big.contiguous(0), 12, lab);
  REQUIRE(need > 0);
  CHECK(error_of([&] {
          mlkv_cuda_test::decode(big.contiguous(0), 12, q.p, out.p, lab, 0.1f, q.p, need - 1, nullptr);
        }) == "mlkv: decode workspace holds " + std::to_string(need - 1) + " bytes; this call needs " +
                  std::to_string(need) + " (decode_workspace_bytes)");
  // Append: the rotary table must fit the cache.
  const mlkv::rotary rope(mlkv::rope_config{32, 32, 10000.f});
  dbuf<float> kv(2 * 4 * 64);
  CHECK(error_of([&] { mlkv_cuda_test::append(view, kv.p, kv.p, ab, &rope, nullptr); }) ==
        "mlkv: rotary head dim (32) differs from the cache's head dim (64)");
  CUDA_OK(cudaDeviceSynchronize());
}

TEST_CASE("CUDA kernels turn out-of-range device lengths into NaN rows and leave the cache alone", "[cuda]") {
  using T = mlkv::bf16;
  constexpr model_shape S = mqa_d64;
  constexpr int Hq = S.q_heads, D = S.head_dim;
  const std::uint64_t seed = mlkv_test::fresh_seed();
  INFO("seed " << seed);
  const int C = 50;
  filled<S, T> f(seed, {40, 30, 20, 25}, C, 8);
  const float scale = mlkv::cpu::default_scale(D);
  mlkv_test::rng r(seed + 5);
  const auto qt = mlkv_cuda_test::quantize<T>(r.vec(6u * Hq * D));
  const auto qd = mlkv_cuda_test::widen(qt);
  dbuf<T> q(qt.size()), out(qt.size());
  q.upload(qt);
  dbuf<std::int32_t> ctx(4), off(5);
  mlkv_cuda_test::stream st;
  auto nan_rows = [&](const std::vector<T>& got, int first, int n) {
    int nan = 0;
    for (std::size_t i = static_cast<std::size_t>(first) * Hq * D; i < static_cast<std::size_t>(first + n) * Hq * D; ++i) {
      nan += std::isnan(mlkv::to_float(got[i])) ? 1 : 0;
    }
    return nan == n * Hq * D;
  };
  auto good_row = [&](const std::vector<T>& got, int row, int b, int n, int cx) {
    const std::size_t first = static_cast<std::size_t>(row) * Hq * D;
    const std::vector<double> qb(qd.begin() + static_cast<std::ptrdiff_t>(first),
                                 qd.begin() + static_cast<std::ptrdiff_t>(first + static_cast<std::size_t>(n) * Hq * D));
    return check_rows(got, first, f.oracle(b, qb, n, cx, scale)) <= mlkv_cuda_test::stored_bound<T>;
  };

  // Decode: sequence 1 past its capacity, sequence 2 empty; the paged cache also loses sequence 3's
  // block count (past max_blocks).
  ctx.upload({40, C + 1, 0, 25});
  const auto dab = attention_batch::decode(4, ctx.p, C);
  for (int paged = 0; paged < 2; ++paged) {
    INFO((paged ? "paged" : "contiguous"));
    if (paged) f.dc.d_seq_blocks.upload({5, 4, 3, 1000});
    out.poison();
    const std::size_t ws_bytes = paged ? mlkv_cuda_test::decode_workspace(f.dc.paged(0), Hq, dab)
                                       : mlkv_cuda_test::decode_workspace(f.dc.contiguous(0), Hq, dab);
    dbuf<unsigned char> ws(ws_bytes);
    if (paged) {
      mlkv_cuda_test::decode(f.dc.paged(0), Hq, q.p, out.p, dab, scale, ws.p, ws_bytes, st.s);
    } else {
      mlkv_cuda_test::decode(f.dc.contiguous(0), Hq, q.p, out.p, dab, scale, ws.p, ws_bytes, st.s);
    }
    st.sync();
    const auto got = out.download();
    CHECK(good_row(got, 0, 0, 1, 40));
    CHECK(nan_rows(got, 1, 1));
    CHECK(nan_rows(got, 2, 1));
    if (paged) {
      CHECK(nan_rows(got, 3, 1));
    } else {
      CHECK(good_row(got, 3, 3, 1, 25));
    }
  }
  f.dc.set_tokens({40, 30, 20, 25});

  // Prefill: sequence 1 has more rows than context, sequence 2 none; then offsets past total_rows.
  ctx.upload({40, 1, 20, 25});
  off.upload({0, 2, 4, 4, 6});
  out.poison();
  mlkv_cuda_test::prefill(f.dc.contiguous(0), Hq, q.p, out.p, attention_batch::chunks(4, ctx.p, off.p, C, 2, 6), scale, st.s);
  st.sync();
  auto got = out.download();
  CHECK(good_row(got, 0, 0, 2, 40));
  CHECK(nan_rows(got, 2, 2));
  CHECK(good_row(got, 4, 3, 2, 25));
  off.upload({0, 2, 4, 4, 7});  // sequence 3 claims rows 4..6 of 6: not written at all
  out.poison();
  mlkv_cuda_test::prefill(f.dc.contiguous(0), Hq, q.p, out.p, attention_batch::chunks(4, ctx.p, off.p, C, 3, 6), scale, st.s);
  st.sync();
  got = out.download();
  int untouched = 0;
  for (std::size_t i = 4u * Hq * D; i < got.size(); ++i) untouched += mlkv_cuda_test::is_poison(got[i].bits) ? 1 : 0;
  CHECK(untouched == 2 * Hq * D);
  CHECK(good_row(got, 0, 0, 2, 40));

  // Append: a sequence whose context passes its capacity is not written at all.
  const auto before = f.dc.download_contiguous(0);
  ctx.upload({C + 1, 31, 0, 26});
  dbuf<float> kv(4u * S.kv_heads * D);
  kv.upload(r.vec(kv.n));
  mlkv_cuda_test::append(f.dc.contiguous(0), kv.p, kv.p, attention_batch::decode(4, ctx.p, C), &f.rope, st.s);
  st.sync();
  const auto after = f.dc.download_contiguous(0);
  int changed_0 = 0, changed_1 = 0;
  for (int t = 0; t < C; ++t) {
    for (int d = 0; d < D; ++d) {
      changed_0 += before.k[f.dc.at(0, 0, t, d)].bits != after.k[f.dc.at(0, 0, t, d)].bits ? 1 : 0;
      changed_1 += before.v[f.dc.at(1, 0, t, d)].bits != after.v[f.dc.at(1, 0, t, d)].bits ? 1 : 0;
    }
  }
  CHECK(changed_0 == 0);
  CHECK(changed_1 > 0);  // sequence 1 (in range) did get its token 30
}
