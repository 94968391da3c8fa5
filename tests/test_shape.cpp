// The geometry: placements against the oracle's own definitions, the paper's nine
// configurations, memory arithmetic, and run-time validation messages.
#include <mlkv/presets.hpp>
#include <mlkv/shape.hpp>

#include <string>
#include <vector>

#include "catch.hpp"
#include "oracle.hpp"

using mlkv::model_shape;
using mlkv::placement;

// Compile-time answers, as a user writes them.
inline constexpr model_shape uneven =
    mlkv::checked<model_shape{.layers = 12, .q_heads = 12, .kv_heads = 1, .kv_layers = 5, .head_dim = 64}>;
static_assert(mlkv::layer_map<uneven>::owners == std::array<int, 5>{0, 2, 4, 7, 9});
static_assert(uneven.kv_slot(3) == 1 && uneven.kv_slot(8) == 3 && uneven.kv_slot(11) == 4);
static_assert(uneven.owner(7) && !uneven.owner(8) && uneven.source_layer(11) == 9);
static_assert(uneven.values_per_token() == 2 * 5 * 64);
static_assert(uneven.bytes_per_token<mlkv::bf16>() == 2 * 5 * 64 * 2);

namespace {
std::vector<int> sources_of(const model_shape& s) {
  std::vector<int> v;
  for (int l = 0; l < s.layers; ++l) v.push_back(s.source_layer(l));
  return v;
}
}  // namespace

TEST_CASE("spread placement equals the paper's formula for every L <= 64 and Lkv <= L") {
  for (int L = 1; L <= 64; ++L) {
    for (int K = 1; K <= L; ++K) {
      const model_shape s{.layers = L, .q_heads = 4, .kv_heads = 2, .kv_layers = K, .head_dim = 64};
      INFO("L=" << L << " Lkv=" << K);
      REQUIRE(s.valid());
      const auto want = oracle::sources(L, K, 0, 0);
      REQUIRE(sources_of(s) == want);
      int owners = 0;
      for (int l = 0; l < L; ++l) {
        owners += s.owner(l);
        REQUIRE(s.owner_layer(s.kv_slot(l)) == want[static_cast<std::size_t>(l)]);
        REQUIRE(s.kv_slot(l) >= 0);
        REQUIRE(s.kv_slot(l) < K);
      }
      REQUIRE(owners == K);
    }
  }
}

TEST_CASE("the paper's nine Pythia-160M configurations") {
  struct expect {
    const char* name;
    std::vector<int> owners;
    int total_heads;
  };
  const std::vector<expect> want = {
      {"MHA-144", {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, 144},
      {"GQA-48", {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, 48},
      {"MLKV-48", {0, 3, 6, 9}, 48},
      {"MQA-12", {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, 12},
      {"MLKV-12", {0, 3, 6, 9}, 12},
      {"MLKV-6", {0, 2, 4, 6, 8, 10}, 6},
      {"MLKV-4", {0, 3, 6, 9}, 4},
      {"MLKV-2", {0, 6}, 2},
      {"MLKV-1", {0}, 1},
  };
  // The paper's measured cache sizes (MiB) at batch 8, 2047 tokens, f32.
  const std::vector<double> mib = {1151.4375, 383.8125, 383.8125, 95.953125, 95.953125,
                                   47.9765625, 31.984375, 15.9921875, 7.99609375};
  REQUIRE(mlkv::paper_configs.size() == want.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    const auto& c = mlkv::paper_configs[i];
    INFO(c.name);
    REQUIRE(c.name == want[i].name);
    REQUIRE(c.shape.valid());
    std::vector<int> owners;
    for (int s = 0; s < c.shape.kv_layers; ++s) owners.push_back(c.shape.owner_layer(s));
    REQUIRE(owners == want[i].owners);
    REQUIRE(c.shape.total_kv_heads() == want[i].total_heads);
    const double bytes = static_cast<double>(c.shape.bytes_per_token(mlkv::dtype::f32)) * 8 * 2047;
    REQUIRE(bytes / (1024.0 * 1024.0) == mib[i]);
  }
}

TEST_CASE("every-n, suffix and table placements") {
  const model_shape cla{.layers = 7, .q_heads = 4, .kv_heads = 1, .kv_layers = 3, .head_dim = 64,
                        .placement = placement::every_n(3)};
  REQUIRE(cla.valid());
  REQUIRE(sources_of(cla) == oracle::sources(7, 3, 1, 3));
  REQUIRE(sources_of(cla) == std::vector<int>{0, 0, 0, 3, 3, 3, 6});

  const model_shape yoco{.layers = 6, .q_heads = 8, .kv_heads = 2, .kv_layers = 4, .head_dim = 128,
                         .placement = placement::suffix(2)};
  REQUIRE(yoco.valid());
  REQUIRE(sources_of(yoco) == std::vector<int>{0, 1, 2, 3, 2, 2});
  REQUIRE(yoco.kv_slot(5) == 2);
  REQUIRE(yoco.group_layers(2) == 3);

  const model_shape tab{.layers = 5, .q_heads = 6, .kv_heads = 3, .kv_layers = 2, .head_dim = 64,
                        .placement = placement::from_table({0, 0, 2, 2, 0})};
  REQUIRE(tab.valid());
  REQUIRE(sources_of(tab) == std::vector<int>{0, 0, 2, 2, 0});
  REQUIRE(tab.kv_slot(3) == 1);
  REQUIRE(tab.kv_slot(4) == 0);
  REQUIRE(tab.group_layers(0) == 3);
}

TEST_CASE("run-time validation names the bad value and the allowed range") {
  auto message = [](const model_shape& s) {
    try {
      s.validate();
    } catch (const mlkv::error& e) {
      return std::string(e.what());
    }
    return std::string("valid");
  };
  model_shape s{.layers = 12, .q_heads = 12, .kv_heads = 5, .kv_layers = 4, .head_dim = 64};
  REQUIRE(message(s) == "mlkv: query heads (12) must be a multiple of KV heads (5)");
  s.kv_heads = 4;
  REQUIRE(message(s) == "valid");
  s.kv_layers = 13;
  REQUIRE(message(s) == "mlkv: KV layers (13) must be between 1 and layers (12)");
  s.kv_layers = 4;
  s.head_dim = 72;
  REQUIRE(message(s) == "valid");
  s.head_dim = 0;
  REQUIRE(message(s) == "mlkv: head dim (0) must be a multiple of 8 between 8 and 512");
  s.head_dim = 64;
  s.placement = placement::from_table({0, 1, 2, 4, 4, 0, 0, 0, 0, 0, 0, 0});
  REQUIRE(message(s) == "mlkv: layer 3 reads layer 4, a later layer; a layer may read only itself or an earlier owner");
  s.placement = placement::from_table({0, 1, 2, -7, 4, 0, 0, 0, 0, 0, 0, 0});
  REQUIRE(message(s) == "mlkv: layer 3 reads layer -1, outside 0..11");
  s.placement = placement::every_n(0);
  REQUIRE(message(s) == "mlkv: every-n placement period (0) must be at least 1");
}
