// safetensors: random tensors of every dtype written to a real file and read back (bytes, value
// conversions, alignment); every kind of malformed file refused with a message naming the
// problem; the writer's checks; and an interrupted write that leaves no half file.

#include <catch.hpp>

#include <mlkv/io/safetensors.hpp>

#include <signal.h>
#include <sys/resource.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "model_test_util.hpp"
#include "test_util.hpp"

using namespace mlkv::io;
using mlkv_test::temp_dir;

namespace {

/// A file from a hand-written header and data section.
std::vector<std::byte> raw_file(const std::string& header, std::size_t data_bytes, std::uint64_t length_field = ~0ull) {
  std::vector<std::byte> f(8 + header.size() + data_bytes, std::byte{0x5a});
  const std::uint64_t n = length_field == ~0ull ? header.size() : length_field;
  std::memcpy(f.data(), &n, 8);
  std::memcpy(f.data() + 8, header.data(), header.size());
  return f;
}

std::string open_error(const std::vector<std::byte>& bytes) {
  return mlkv_test::error_of([&] { (void)safetensors_file::from_memory(bytes, "bad.safetensors"); });
}

}  // namespace

TEST_CASE("safetensors: random tensors round-trip through a file", "[model][safetensors]") {
  const std::uint64_t seed = mlkv_test::fresh_seed();
  INFO("seed " << seed);
  mlkv_test::rng r(seed);
  temp_dir dir;
  for (int round = 0; round < 4; ++round) {
    safetensors_writer w;
    struct expect {
      std::string name;
      st_dtype dtype;
      std::vector<std::int64_t> shape;
      std::vector<std::byte> bytes;
    };
    std::vector<expect> all;
    const int n = r.integer(1, 12);
    for (int i = 0; i < n; ++i) {
      const auto& dn = st_dtype_names[static_cast<std::size_t>(r.integer(0, static_cast<int>(std::size(st_dtype_names)) - 1))];
      std::vector<std::int64_t> shape;
      const int rank = r.integer(0, 3);
      for (int d = 0; d < rank; ++d) shape.push_back(r.integer(0, 5));
      std::vector<std::byte> b(element_count(shape, "t") * size_of(dn.first));
      for (auto& x : b) x = static_cast<std::byte>(r.integer(0, 255));
      const std::string name = "t" + std::to_string(i) + (i % 3 == 0 ? ".weight" : "");
      w.add(name, dn.first, shape, b);
      all.push_back({name, dn.first, shape, b});
    }
    w.set_metadata("format", "pt");
    w.set_metadata("note", "caf\xC3\xA9 \"quoted\"");
    const auto path = dir / "t.safetensors";
    w.write(path);

    const safetensors_file f = safetensors_file::open(path);
    CHECK(f.tensors().size() == all.size());
    CHECK(f.metadata().size() == 2);
    CHECK(f.metadata()[1].second == "caf\xC3\xA9 \"quoted\"");
    const mlkv::io::mapped_file map(path);
    const auto bytes = map.bytes();
    std::uint64_t hlen = 0;
    std::memcpy(&hlen, bytes.data(), 8);
    CHECK((8 + hlen) % 8 == 0);  // data section 8-byte aligned
    for (const expect& e : all) {
      const tensor_info& t = f.at(e.name);
      CHECK(t.dtype == e.dtype);
      CHECK(t.shape == e.shape);
      CHECK(t.begin % size_of(t.dtype) == 0);  // every tensor aligned to its element size
      const auto got = f.bytes(t);
      REQUIRE(got.size() == e.bytes.size());
      if (!got.empty()) CHECK(std::memcmp(got.data(), e.bytes.data(), got.size()) == 0);
    }
  }
}

TEST_CASE("safetensors: float tensors convert on read", "[model][safetensors]") {
  const std::uint64_t seed = mlkv_test::fresh_seed();
  INFO("seed " << seed);
  mlkv_test::rng r(seed);
  const std::vector<float> v = r.vec(257, -3.f, 3.f);
  safetensors_writer w;
  w.add("f32", {257}, std::span<const float>(v));
  w.add_converted("bf16", st_dtype::BF16, {257}, v);
  w.add_converted("f16", st_dtype::F16, {257}, v);
  std::vector<std::byte> d(257 * 8);
  for (std::size_t i = 0; i < v.size(); ++i) {
    const double x = v[i];
    std::memcpy(d.data() + 8 * i, &x, 8);
  }
  w.add("f64", st_dtype::F64, {257}, d);
  w.add("ints", st_dtype::I32, {2}, std::vector<std::byte>(8));
  const auto bytes = w.serialize();
  const auto f = safetensors_file::from_memory(bytes);
  const auto f32 = f.read<float>("f32");
  const auto as_bf16 = f.read<mlkv::bf16>("f32");
  const auto bf = f.read<float>("bf16");
  const auto hf = f.read<float>("f16");
  const auto f64 = f.read<float>("f64");
  for (std::size_t i = 0; i < v.size(); ++i) {
    CHECK(f32[i] == v[i]);
    CHECK(as_bf16[i].bits == mlkv::float_to_bf16_bits(v[i]));
    CHECK(bf[i] == mlkv::bf16_bits_to_float(mlkv::float_to_bf16_bits(v[i])));
    CHECK(hf[i] == mlkv::f16_bits_to_float(mlkv::float_to_f16_bits(v[i])));
    CHECK(f64[i] == v[i]);
  }
  MLKV_CHECK_ERROR(f.read<float>("ints"), "has dtype I32; only F32, F16, BF16 and F64");
  MLKV_CHECK_ERROR(f.read<float>("nope"), "missing tensor \"nope\"");
  std::vector<float> small(3);
  MLKV_CHECK_ERROR(f.read(f.at("f32"), std::span<float>(small)), "has 257 elements, the destination holds 3");
}

TEST_CASE("safetensors: malformed files are refused with a clear message", "[model][safetensors]") {
  const std::string one = R"({"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})";
  CHECK(open_error(raw_file(one, 16)) == "(no error)");

  // Truncated: shorter than the length field, then a data section cut short.
  CHECK(open_error(std::vector<std::byte>(5)).find("truncated: the file has 5 bytes") != std::string::npos);
  CHECK(open_error({}).find("truncated") != std::string::npos);
  CHECK(open_error(raw_file(one, 12)).find("tensor \"a\": data_offsets [0, 16] run past the end of the data section (12 bytes)") !=
        std::string::npos);
  // Header length larger than the file, and beyond the format's limit.
  CHECK(open_error(raw_file(one, 16, one.size() + 17)).find("is larger than the") != std::string::npos);
  CHECK(open_error(raw_file(one, 16, 200'000'000)).find("exceeds the limit") != std::string::npos);
  // Offsets out of range, overlapping, with a gap, with bytes left over.
  CHECK(open_error(raw_file(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[1000,1016]}})", 16))
            .find("run past the end") != std::string::npos);
  const std::string overlap =
      R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})";
  CHECK(open_error(raw_file(overlap, 24)).find("tensors \"a\" (bytes 0..16) and \"b\" (bytes 8..24) overlap") !=
        std::string::npos);
  const std::string gap =
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}})";
  CHECK(open_error(raw_file(gap, 20)).find("gap of 4 bytes before tensor \"b\"") != std::string::npos);
  CHECK(open_error(raw_file(one, 20)).find("the data section has 20 bytes but the tensors cover 16") !=
        std::string::npos);
  // Sizes that do not match dtype x shape; shapes that overflow; reversed offsets.
  CHECK(open_error(raw_file(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})", 16))
            .find("dtype F32 x shape [3] is 12 bytes but data_offsets [0, 16] span 16") != std::string::npos);
  CHECK(open_error(raw_file(R"({"a":{"dtype":"BF16","shape":[4611686018427387904,4],"data_offsets":[0,16]}})", 16))
            .find("overflows") != std::string::npos);
  CHECK(open_error(raw_file(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[16,8]}})", 16))
            .find("end before they begin") != std::string::npos);
  // Wrong types: dtype, shape, offsets, the header itself, metadata.
  CHECK(open_error(raw_file(R"({"a":{"dtype":"F7","shape":[4],"data_offsets":[0,16]}})", 16))
            .find("unsupported dtype \"F7\"") != std::string::npos);
  CHECK(open_error(raw_file(R"({"a":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}})", 16))
            .find("non-negative integers") != std::string::npos);
  CHECK(open_error(raw_file(R"({"a":{"dtype":"F32","shape":[4.0],"data_offsets":[0,16]}})", 16))
            .find("non-negative integers") != std::string::npos);
  CHECK(open_error(raw_file(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0]}})", 16))
            .find("\"data_offsets\" must be [begin, end]") != std::string::npos);
  CHECK(open_error(raw_file(R"({"a":{"dtype":"F32","shape":[4]}})", 16))
            .find("needs \"dtype\", \"shape\" and \"data_offsets\"") != std::string::npos);
  CHECK(open_error(raw_file(R"({"a":[1]})", 0)).find("must be described by an object") != std::string::npos);
  CHECK(open_error(raw_file("[]", 0)).find("the header is a JSON array, not an object") != std::string::npos);
  CHECK(open_error(raw_file(R"({"__metadata__":{"format":1}})", 0))
            .find("\"__metadata__\" entry \"format\" must be a string") != std::string::npos);
  // Invalid JSON and duplicate names: the JSON reader's message, with the position.
  CHECK(open_error(raw_file(R"({"a":{"dtype":"F32",)", 0)).find("bad.safetensors header: invalid JSON at line 1, column 21") !=
        std::string::npos);
  const std::string dup =
      R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})";
  CHECK(open_error(raw_file(dup, 8)).find("duplicate key \"a\"") != std::string::npos);
  // Files: missing, empty, a directory.
  temp_dir dir;
  MLKV_CHECK_ERROR(safetensors_file::open(dir / "missing.safetensors"), "cannot open");
  mlkv_test::write_text(dir / "empty.safetensors", "");
  MLKV_CHECK_ERROR(safetensors_file::open(dir / "empty.safetensors"), "truncated: the file has 0 bytes");
  MLKV_CHECK_ERROR(safetensors_file::open(dir.path), "is not a regular file");
}

TEST_CASE("safetensors: the writer checks what it is given", "[model][safetensors]") {
  safetensors_writer w;
  const std::vector<float> v(6, 1.f);
  w.add("a", {2, 3}, std::span<const float>(v));
  MLKV_CHECK_ERROR(w.add("a", {6}, std::span<const float>(v)), "tensor \"a\" was added twice");
  MLKV_CHECK_ERROR(w.add("b", {4}, std::span<const float>(v)), "dtype F32 x shape [4] is 16 bytes, 24 were given");
  MLKV_CHECK_ERROR(w.add("__metadata__", {6}, std::span<const float>(v)), "cannot be a tensor name");
  MLKV_CHECK_ERROR(w.add("c", st_dtype::F32, {-1}, {}), "is negative");
  MLKV_CHECK_ERROR(w.add_converted("d", st_dtype::I8, {6}, v), "not I8");
  CHECK(w.size() == 1);  // failed adds change nothing
}

TEST_CASE("safetensors: a failed write leaves no half file and keeps the old one", "[model][safetensors]") {
  temp_dir dir;
  const auto path = dir / "w.safetensors";
  safetensors_writer small;
  const std::vector<float> v(8, 2.f);
  small.add("x", {8}, std::span<const float>(v));
  small.write(path);
  const auto before = mlkv::io::read_file(path);

  // A write that fails midway: the file-size limit makes write() fail with EFBIG.
  safetensors_writer big;
  const std::vector<float> lots(1 << 16, 3.f);
  big.add("y", {1 << 16}, std::span<const float>(lots));
  struct rlimit old {};
  REQUIRE(::getrlimit(RLIMIT_FSIZE, &old) == 0);
  const auto old_handler = ::signal(SIGXFSZ, SIG_IGN);
  struct rlimit lim = old;
  lim.rlim_cur = 4096;
  REQUIRE(::setrlimit(RLIMIT_FSIZE, &lim) == 0);
  const std::string msg = mlkv_test::error_of([&] { big.write(path); });
  ::setrlimit(RLIMIT_FSIZE, &old);
  ::signal(SIGXFSZ, old_handler);
  INFO(msg);
  CHECK(msg.find("cannot write") != std::string::npos);
  CHECK(mlkv::io::read_file(path) == before);  // old file intact
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.path)) {
    ++files;
    CHECK(e.path().filename().string().find(".tmp.") == std::string::npos);  // no temporary left behind
  }
  CHECK(files == 1);

  // A directory that does not exist, and a target that is a directory.
  MLKV_CHECK_ERROR(small.write(dir / "no" / "such" / "dir.safetensors"), "cannot create");
  std::filesystem::create_directory(dir / "taken");
  MLKV_CHECK_ERROR(small.write(dir / "taken"), "cannot write");
  CHECK(std::filesystem::is_directory(dir / "taken"));
}
