// A program built with its own MLKV_GEOMETRIES selection (see CMakeLists.txt): exactly those
// geometries are compiled in, dispatch reaches them, and refuses the rest listing only them.

#include <catch.hpp>

#include <mlkv/dispatch.hpp>

#include <string>

#include "model_test_util.hpp"

using namespace mlkv;

TEST_CASE("dispatch: a program's own geometry selection", "[model][dispatch]") {
  REQUIRE(compiled_geometries.size() == 2);
  CHECK(compiled_geometries[0].name == "MLKV-2");
  CHECK(compiled_geometries[0].shape == paper_configs[7].shape);
  CHECK(compiled_geometries[1].name == "pythia410m");
  const model_shape p410{.layers = 24, .q_heads = 16, .kv_heads = 16, .kv_layers = 24, .head_dim = 64};
  CHECK(compiled_geometries[1].shape == p410);
  CHECK(dispatch(p410, [](auto g) { return decltype(g)::shape.layers; }) == 24);
  CHECK(dispatch(paper_configs[7].shape, [](auto g) { return decltype(g)::shape.kv_layers; }) == 2);
  const std::string msg = mlkv_test::error_of([] { dispatch(paper_configs[0].shape, [](auto) {}); });
  INFO(msg);
  CHECK(msg.find("compiled geometries: MLKV-2 (L=12 Hq=12 Hkv=1 Lkv=2 D=64 spread), pythia410m (L=24 Hq=16 Hkv=16 "
                 "Lkv=24 D=64 spread). Add it") != std::string::npos);
}
