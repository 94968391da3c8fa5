// The mlkv-generate command line: a checkpoint directory runs through the dispatch point and
// generates what the library generates in-process; an uncompiled geometry is refused with the
// list of compiled ones; bad arguments get the usage text and exit code 2.
#include <mlkv/cache/paged.hpp>
#include <mlkv/compiled_geometries.hpp>
#include <mlkv/io/file.hpp>
#include <mlkv/model/generate.hpp>
#include <mlkv/model/weights.hpp>

#include <sys/wait.h>

#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "catch.hpp"
#include "model/model_test_util.hpp"
#include "test_util.hpp"

#ifndef MLKV_GENERATE_EXE
#error "the build passes the path of mlkv-generate"
#endif

namespace {
int run(const std::string& cmd) {
  const int st = std::system(cmd.c_str());
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/// The token ids printed after "sequence <b>:".
std::vector<std::int32_t> printed_tokens(const std::string& out, int b) {
  const std::string key = "sequence " + std::to_string(b) + ":";
  const auto at = out.find(key);
  if (at == std::string::npos) return {};
  std::istringstream line(out.substr(at + key.size(), out.find('\n', at) - at - key.size()));
  std::vector<std::int32_t> v;
  for (int t; line >> t;) v.push_back(t);
  return v;
}
}  // namespace

TEST_CASE("mlkv-generate --model runs a checkpoint and generates what the library generates") {
  constexpr mlkv::model_shape S = mlkv::test_geometries[4].shape;
  mlkv_test::temp_dir dir;
  const auto cfg = mlkv_test::small_config(S, 41, 40);
  const auto w = mlkv::model::random_weights<float>(cfg, mlkv_test::fresh_seed(), 0.25f);
  mlkv::model::save_checkpoint(w, dir / "ckpt");
  const std::string exe = MLKV_GENERATE_EXE, out = (dir / "out.txt").string(), err = (dir / "err.txt").string();
  REQUIRE(run(exe + " --model " + (dir / "ckpt").string() + " --weights f32 --batch 2 --prompt 3,1,4,1,5 --new-tokens 6 --threads 1 >" +
              out + " 2>" + err) == 0);
  const std::string text = mlkv::io::read_file(out);
  INFO(text << mlkv::io::read_file(err));
  // The same request in-process (greedy).
  mlkv::model::cpu_model<float> model(w);
  using cache_t = mlkv::paged_kv_cache<S, mlkv::bf16, 16>;
  cache_t cache(4);
  mlkv::model::generator<float, cache_t> gen(model, cache);
  mlkv::model::sampling s;
  s.max_new_tokens = 6;
  gen.add(std::vector<std::int32_t>{3, 1, 4, 1, 5}, s);
  std::vector<std::int32_t> want;
  while (!gen.idle())
    for (const auto& e : gen.step()) want.push_back(e.token);
  CHECK(printed_tokens(text, 0) == want);
  CHECK(printed_tokens(text, 1) == want);
}

TEST_CASE("mlkv-generate refuses an uncompiled geometry with the list, and bad arguments") {
  mlkv_test::temp_dir dir;
  const mlkv::model_shape odd{.layers = 2, .q_heads = 2, .kv_heads = 1, .kv_layers = 1, .head_dim = 16};
  const auto w = mlkv::model::random_weights<float>(mlkv_test::small_config(odd, 41, 40), 1);
  mlkv::model::save_checkpoint(w, dir / "ckpt");
  const std::string exe = MLKV_GENERATE_EXE, err = (dir / "err.txt").string();
  CHECK(run(exe + " --model " + (dir / "ckpt").string() + " >/dev/null 2>" + err) == 1);
  const std::string msg = mlkv::io::read_file(err);
  INFO(msg);
  CHECK(msg.find("L=2 Hq=2 Hkv=1 Lkv=1 D=16") != std::string::npos);
  CHECK(msg.find("MLKV-2") != std::string::npos);  // the list of compiled geometries
  for (const char* bad : {"--batch 0", "--new-tokens x", "--weights f16", "--configs MLKV-3", "--frobnicate", "--top-p 2"}) {
    INFO(bad);
    CHECK(run(exe + " " + bad + " >/dev/null 2>" + err) == 2);
    CHECK(mlkv::io::read_file(err).find("usage: mlkv-generate") != std::string::npos);
  }
  CHECK(run(exe + " --model " + (dir / "missing").string() + " >/dev/null 2>" + err) == 1);
}

TEST_CASE("mlkv-generate runs a paper configuration") {
  mlkv_test::temp_dir dir;
  const std::string exe = MLKV_GENERATE_EXE, out = (dir / "out.txt").string();
  REQUIRE(run(exe + " --configs MLKV-2 --batch 1 --prompt-tokens 3 --new-tokens 2 >" + out) == 0);
  const std::string text = mlkv::io::read_file(out);
  INFO(text);
  CHECK(text.find("MLKV-2   0,6") != std::string::npos);
  CHECK(text.find("MHA-144") == std::string::npos);
}
