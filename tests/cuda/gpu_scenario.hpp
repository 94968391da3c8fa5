#pragma once
// The engine scenario of tests/attention_harness.hpp, on the GPU: a batch of sequences of uneven
// lengths (0, 1 and lengths that are multiples of nothing) runs a chunked prefill, decode steps
// and a second chunk through every layer. Owner layers append rotated K and V with the CUDA
// append kernel into a contiguous and a paged device cache; every layer attends over its owner's
// slot with the CUDA prefill kernel (every call) and the decode kernel (decode steps), over both
// caches. Checked after each call:
//  - append: each stored K is the host's f32 rotation rounded to T, within one unit in the last
//    place (cos/sin may differ by an f32 ulp), each V bit-exact; the paged pool holds the same
//    bits; tokens past the context are still poisoned (no stray write);
//  - attention: outputs (poisoned with NaN before the launch) against the double oracle, on the
//    values as stored (q as the kernel got it, K/V read back from the device) and on the exact
//    inputs, with the tensor-core bounds of gpu_util.hpp.

#include <mlkv/cache/contiguous.hpp>
#include <mlkv/cpu/reference.hpp>
#include <mlkv/rope.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <type_traits>
#include <utility>
#include <vector>

#include "catch.hpp"
#include "gpu_util.hpp"
#include "kernels.hpp"
#include "oracle.hpp"
#include "test_util.hpp"

namespace mlkv_cuda_test {

struct gpu_scenario_options {
  int batch = 4;
  int capacity = 64;
  int page_tokens = 5;                            // a page size that divides nothing
  std::vector<int> first_chunk = {0, 1, 13, 37};  // per sequence (cycled)
  int decode_steps = 3;
  int second_chunk = 9;
  float rotary_pct = 0.25f;
};

/// Checks the rows [len, ctx) of every sequence of a slot just appended, against the host's
/// expectation; and that the paged pool agrees and nothing past ctx was written.
template <class Cache, class T>
void check_appended(const Cache& dc, int slot, const std::vector<int>& len, const std::vector<int>& ctx,
                    const std::vector<float>& k_rot, const std::vector<float>& v, const std::vector<std::int32_t>& offsets) {
  constexpr int Hkv = Cache::Hkv, D = Cache::D;
  // One unit in the last place of T, relative (cos/sin may differ from the host's by an f32 ulp,
  // which can move the rounding of a stored key by one unit, or flip the sign of a key that is
  // zero up to rounding).
  constexpr double ulp = std::is_same_v<T, mlkv::bf16> ? 1.0 / 128 : 1.0 / 1024;
  const auto c = dc.download_contiguous(slot);
  const auto p = dc.gather_paged(slot, dc.pages.download());
  int k_rounded_apart = 0, k_bad = 0, v_bad = 0, paged_bad = 0, stray = 0;
  for (int b = 0; b < dc.batch; ++b) {
    for (int h = 0; h < Hkv; ++h) {
      for (int t = 0; t < dc.capacity; ++t) {
        for (int d = 0; d < D; ++d) {
          const std::size_t i = dc.at(b, h, t, d);
          const std::uint16_t kc = c.k[i].bits, vc = c.v[i].bits;
          if (t >= ctx[static_cast<std::size_t>(b)]) {  // never written
            stray += is_poison(kc) && is_poison(vc) ? 0 : 1;
            continue;
          }
          paged_bad += (p.k[i].bits == kc && p.v[i].bits == vc) ? 0 : 1;
          if (t < len[static_cast<std::size_t>(b)]) continue;  // written by an earlier chunk
          const std::size_t row = static_cast<std::size_t>(offsets[static_cast<std::size_t>(b)] + t - len[static_cast<std::size_t>(b)]);
          const std::size_t src = (row * Hkv + h) * D + d;
          v_bad += mlkv::from_float<T>(v[src]).bits == vc ? 0 : 1;
          const T ke = mlkv::from_float<T>(k_rot[src]);
          if (ke.bits != kc) {
            const double got = mlkv::to_float(c.k[i]), want = k_rot[src];
            if (std::abs(got - want) <= ulp * std::abs(want) + 1e-6) {
              ++k_rounded_apart;
            } else {
              ++k_bad;
            }
          }
        }
      }
    }
  }
  INFO("slot " << slot << ": keys rounded one unit apart from the host's rotation: " << k_rounded_apart
               << "; keys off " << k_bad << ", values off " << v_bad << ", paged copy off " << paged_bad
               << ", stray writes " << stray);
  CHECK(k_bad + v_bad + paged_bad + stray == 0);
}

/// Placement of S, as the oracle computes it from S's own fields (not from the library's map).
template <mlkv::model_shape S>
std::vector<int> oracle_sources() {
  const auto& p = S.placement;
  const int kind = static_cast<int>(p.kind);
  std::vector<int> tab(p.table.begin(), p.table.begin() + p.table_size);
  return oracle::sources(S.layers, S.kv_layers, kind, kind == 1 ? p.period : p.source, tab);
}

template <mlkv::model_shape S, class T>
void run_gpu_scenario(std::uint64_t seed, const gpu_scenario_options& opt = {}) {
  using mlkv_test::rng;
  constexpr int L = S.layers, Hq = S.q_heads, Hkv = S.kv_heads, D = S.head_dim;
  INFO("geometry L=" << L << " Hq=" << Hq << " Hkv=" << Hkv << " Lkv=" << S.kv_layers << " D=" << D
                     << " dtype=" << mlkv::name_of(mlkv::dtype_of<T>) << " seed=" << seed);
  rng r(seed);
  const int B = opt.batch, C = opt.capacity;
  device_cache<S, T> dc(B, C, opt.page_tokens, seed ^ 0x9e3779b97f4a7c15ull);
  const mlkv::rope_config rc = mlkv::rope_config::from_pct(D, opt.rotary_pct, 10000.f);
  const mlkv::rotary rope(rc);
  const float scale = mlkv::cpu::default_scale(D);
  const std::vector<int> src = oracle_sources<S>();
  std::map<std::pair<int, int>, std::pair<std::vector<double>, std::vector<double>>> exact;  // (owner, seq)
  std::vector<int> len(static_cast<std::size_t>(B), 0);
  stream st;
  dbuf<std::int32_t> d_ctx(static_cast<std::size_t>(B)), d_off(static_cast<std::size_t>(B) + 1);

  auto run_chunk = [&](const std::vector<int>& rows) {
    std::vector<std::int32_t> off(static_cast<std::size_t>(B) + 1, 0), ctx(static_cast<std::size_t>(B));
    std::vector<int> ctx_i(static_cast<std::size_t>(B));
    int max_rows = 0;
    bool all_one = true;
    for (int b = 0; b < B; ++b) {
      const auto ub = static_cast<std::size_t>(b);
      off[ub + 1] = off[ub] + rows[ub];
      ctx[ub] = len[ub] + rows[ub];
      ctx_i[ub] = ctx[ub];
      max_rows = std::max(max_rows, rows[ub]);
      all_one = all_one && rows[ub] == 1;
    }
    const int total = off.back();
    d_ctx.upload(ctx);
    d_off.upload(off);
    dc.set_tokens(ctx_i);
    const auto ab = mlkv::cuda::attention_batch::chunks(B, d_ctx.p, d_off.p, C, max_rows, total);
    for (int l = 0; l < L; ++l) {
      const int slot = S.kv_slot(l);
      if (src[static_cast<std::size_t>(l)] == l) {  // the oracle says l is an owner
        const auto k = r.vec(static_cast<std::size_t>(total) * Hkv * D), v = r.vec(static_cast<std::size_t>(total) * Hkv * D);
        dbuf<float> dk(k.size()), dv(v.size());
        dk.upload(k);
        dv.upload(v);
        append(dc.contiguous(slot), dk.p, dv.p, ab, &rope, st.s);
        append(dc.paged(slot), dk.p, dv.p, ab, &rope, st.s);
        st.sync();
        auto krot = k;
        for (int b = 0; b < B; ++b) {
          const auto ub = static_cast<std::size_t>(b);
          rope.apply_rows(krot.data() + static_cast<std::size_t>(off[ub]) * Hkv * D, rows[ub], Hkv, len[ub]);
          auto& ex = exact[{l, b}];
          for (int t = 0; t < rows[ub]; ++t) {
            const std::size_t first = (static_cast<std::size_t>(off[ub]) + t) * Hkv * D;
            std::vector<double> ke(k.begin() + static_cast<std::ptrdiff_t>(first),
                                   k.begin() + static_cast<std::ptrdiff_t>(first + static_cast<std::size_t>(Hkv) * D));
            oracle::rope(ke.data(), Hkv, D, rc.rotary_dims, rc.base, len[ub] + t);
            ex.first.insert(ex.first.end(), ke.begin(), ke.end());
            ex.second.insert(ex.second.end(), v.begin() + static_cast<std::ptrdiff_t>(first),
                             v.begin() + static_cast<std::ptrdiff_t>(first + static_cast<std::size_t>(Hkv) * D));
          }
        }
        INFO("append, owner layer " << l);
        check_appended<decltype(dc), T>(dc, slot, len, ctx_i, krot, v, off);
      }
      if (total == 0) continue;
      // Queries, rotated at their positions as an engine does, then rounded to T.
      auto q = r.vec(static_cast<std::size_t>(total) * Hq * D);
      std::vector<double> q_exact(q.begin(), q.end());
      for (int b = 0; b < B; ++b) {
        const auto ub = static_cast<std::size_t>(b);
        rope.apply_rows(q.data() + static_cast<std::size_t>(off[ub]) * Hq * D, rows[ub], Hq, len[ub]);
        for (int t = 0; t < rows[ub]; ++t) {
          oracle::rope(q_exact.data() + (static_cast<std::size_t>(off[ub]) + t) * Hq * D, Hq, D, rc.rotary_dims, rc.base,
                       len[ub] + t);
        }
      }
      const auto qt = quantize<T>(q);
      const auto q_stored = widen(qt);
      dbuf<T> dq(qt.size()), dout(qt.size());
      dq.upload(qt);
      // The oracle's K/V as stored: the owner's slot read back from the device.
      const int owner = src[static_cast<std::size_t>(l)];
      const auto stored = dc.download_contiguous(S.kv_slot(owner));

      auto check_out = [&](const char* what) {
        const auto got_t = dout.download();
        for (int b = 0; b < B; ++b) {
          const auto ub = static_cast<std::size_t>(b);
          const int n = rows[ub];
          if (n == 0) continue;
          const int cx = ctx[ub];
          std::vector<double> ks(static_cast<std::size_t>(cx) * Hkv * D), vs(ks.size());
          for (int t = 0; t < cx; ++t) {
            for (int h = 0; h < Hkv; ++h) {
              for (int d = 0; d < D; ++d) {
                ks[(static_cast<std::size_t>(t) * Hkv + h) * D + d] = mlkv::to_float(stored.k[dc.at(b, h, t, d)]);
                vs[(static_cast<std::size_t>(t) * Hkv + h) * D + d] = mlkv::to_float(stored.v[dc.at(b, h, t, d)]);
              }
            }
          }
          const std::size_t first = static_cast<std::size_t>(off[ub]) * Hq * D, count = static_cast<std::size_t>(n) * Hq * D;
          std::vector<double> want_s(count), want_e(count);
          oracle::attention(q_stored.data() + first, n, Hq, Hkv, D, ks.data(), vs.data(), cx, scale, want_s.data());
          const auto& ex = exact.at({owner, b});
          oracle::attention(q_exact.data() + first, n, Hq, Hkv, D, ex.first.data(), ex.second.data(), cx,
                            1.0 / std::sqrt(static_cast<double>(D)), want_e.data());
          std::vector<double> got(count);
          for (std::size_t i = 0; i < count; ++i) got[i] = mlkv::to_float(got_t[first + i]);
          INFO(what << ", layer " << l << ", sequence " << b << ", rows " << n << ", context " << cx);
          const double es = mlkv_test::rel_err(got, want_s), ee = mlkv_test::rel_err(got, want_e);
          CHECK(es <= stored_bound<T>);
          CHECK(ee <= exact_bound<T>);
          worst<T>().first = std::max(worst<T>().first, es);
          worst<T>().second = std::max(worst<T>().second, ee);
        }
      };
      dout.poison();
      prefill(dc.contiguous(slot), Hq, dq.p, dout.p, ab, scale, st.s);
      st.sync();
      check_out("prefill, contiguous");
      dout.poison();
      prefill(dc.paged(slot), Hq, dq.p, dout.p, ab, scale, st.s);
      st.sync();
      check_out("prefill, paged");
      if (all_one) {
        const auto dab = mlkv::cuda::attention_batch::decode(B, d_ctx.p, C);
        for (int paged = 0; paged < 2; ++paged) {
          const std::size_t ws_bytes = paged ? decode_workspace(dc.paged(slot), Hq, dab) : decode_workspace(dc.contiguous(slot), Hq, dab);
          dbuf<unsigned char> ws(ws_bytes);
          dout.poison();
          if (paged) {
            decode(dc.paged(slot), Hq, dq.p, dout.p, dab, scale, ws.p, ws_bytes, st.s);
          } else {
            decode(dc.contiguous(slot), Hq, dq.p, dout.p, dab, scale, ws.p, ws_bytes, st.s);
          }
          st.sync();
          check_out(paged ? "decode, paged" : "decode, contiguous");
        }
      }
    }
    for (int b = 0; b < B; ++b) len[static_cast<std::size_t>(b)] += rows[static_cast<std::size_t>(b)];
  };

  std::vector<int> rows(static_cast<std::size_t>(B));
  for (int b = 0; b < B; ++b) rows[static_cast<std::size_t>(b)] = opt.first_chunk[static_cast<std::size_t>(b) % opt.first_chunk.size()];
  run_chunk(rows);  // prefill, sequences of uneven lengths (some empty)
  for (int s = 0; s < opt.decode_steps; ++s) run_chunk(std::vector<int>(static_cast<std::size_t>(B), 1));
  for (int b = 0; b < B; ++b) rows[static_cast<std::size_t>(b)] = b % 2 == 0 ? opt.second_chunk : 0;
  run_chunk(rows);  // a second chunk over the cached tokens, for half the batch
}

}  // namespace mlkv_cuda_test
