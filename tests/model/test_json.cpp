// The strict JSON reader and writer: every value kind, escapes and Unicode, exact numbers, errors
// with line and column for each kind of malformed text, the depth limit, and a randomized round
// trip plus random corruption (which must be refused cleanly, never crash: the _asan build checks).

#include <catch.hpp>

#include <mlkv/io/json.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "model_test_util.hpp"
#include "test_util.hpp"

using mlkv::json::kind;
using mlkv::json::parse;
using mlkv::json::value;

namespace {

std::string parse_error(const std::string& text) {
  try {
    (void)parse(text, "t.json");
  } catch (const mlkv::error& e) {
    return e.what();
  }
  return "";
}

value random_value(mlkv_test::rng& r, int depth) {
  const int k = r.integer(0, depth > 3 ? 4 : 6);
  switch (k) {
    case 0: return value();
    case 1: return value(r.integer(0, 1) == 1);
    case 2: {
      const std::int64_t big = (static_cast<std::int64_t>(r.integer(-1 << 30, 1 << 30)) << 33) ^ r.integer(0, 1 << 30);
      return value(r.integer(0, 1) ? big : static_cast<std::int64_t>(r.integer(-1000, 1000)));
    }
    case 3: {
      double d = static_cast<double>(r.uniform(-1.f, 1.f)) * std::pow(10.0, r.integer(-300, 300));
      return value(d);
    }
    case 4: {
      std::string s;
      const int n = r.integer(0, 12);
      for (int i = 0; i < n; ++i) {
        switch (r.integer(0, 5)) {
          case 0: s += static_cast<char>(r.integer(0, 31)); break;      // control characters
          case 1: s += "\xC3\xA9"; break;                                 // é
          case 2: s += "\xF0\x9F\x98\x80"; break;                         // U+1F600
          case 3: s += r.integer(0, 1) ? '"' : '\\'; break;
          default: s += static_cast<char>(r.integer(32, 126)); break;
        }
      }
      return value(std::move(s));
    }
    case 5: {
      value a = value::array();
      const int n = r.integer(0, 4);
      for (int i = 0; i < n; ++i) a.push_back(random_value(r, depth + 1));
      return a;
    }
    default: {
      value o = value::object();
      const int n = r.integer(0, 4);
      for (int i = 0; i < n; ++i) o.set("k" + std::to_string(r.integer(0, 9)), random_value(r, depth + 1));
      return o;
    }
  }
}

}  // namespace

TEST_CASE("json: values, key order and exact numbers", "[model][json]") {
  const value v = parse(R"( {"b": [1, -2, 3.5, 1e-05, 768.0, true, false, null], "a": {"x": "y"}, "c": -0} )");
  REQUIRE(v.is_object());
  const auto& m = v.as_object();
  REQUIRE(m.size() == 3);
  CHECK(m[0].key == "b");  // file order kept
  CHECK(m[1].key == "a");
  const auto& a = v.find("b")->as_array();
  REQUIRE(a.size() == 8);
  CHECK(a[0].is_integer());
  CHECK(a[0].as_int() == 1);
  CHECK(a[1].as_int() == -2);
  CHECK_FALSE(a[2].is_integer());
  CHECK(a[2].as_double() == 3.5);
  CHECK(a[3].as_double() == 1e-05);
  CHECK_FALSE(a[4].is_integer());  // 768.0 is written as a float
  CHECK(a[4].as_double() == 768.0);
  CHECK(a[5].as_bool());
  CHECK_FALSE(a[6].as_bool());
  CHECK(a[7].is_null());
  CHECK(v.find("a")->find("x")->as_string() == "y");
  CHECK(v.find("missing") == nullptr);
  MLKV_CHECK_ERROR(a[2].as_int(), "not an integer");
  MLKV_CHECK_ERROR(a[0].as_string(), "expected a JSON string, found a number");

  const value big = parse("[9223372036854775807, -9223372036854775808, 9223372036854775808, 1e-400, -1e-400]");
  CHECK(big.as_array()[0].as_int() == std::numeric_limits<std::int64_t>::max());
  CHECK(big.as_array()[1].as_int() == std::numeric_limits<std::int64_t>::min());
  CHECK_FALSE(big.as_array()[2].is_integer());  // beyond int64: a double
  CHECK(big.as_array()[2].as_double() == 9223372036854775808.0);
  CHECK(big.as_array()[3].as_double() == 0.0);  // underflow reads as zero
  CHECK(std::signbit(big.as_array()[4].as_double()));
}

TEST_CASE("json: escapes, surrogate pairs and UTF-8", "[model][json]") {
  const value v = parse(R"(["\"\\\/\b\f\n\r\t", "\u00e9\u4e2d", "\ud83d\ude00", "é😀", "\u0000"])");
  const auto& a = v.as_array();
  CHECK(a[0].as_string() == "\"\\/\b\f\n\r\t");
  CHECK(a[1].as_string() == "\xC3\xA9\xE4\xB8\xAD");
  CHECK(a[2].as_string() == "\xF0\x9F\x98\x80");
  CHECK(a[3].as_string() == "\xC3\xA9\xF0\x9F\x98\x80");
  CHECK(a[4].as_string() == std::string(1, '\0'));
  // Written back: escapes where JSON needs them, UTF-8 as is, and it reads back the same.
  const std::string out = mlkv::json::dump(v);
  CHECK(out.find("\\u0000") != std::string::npos);
  CHECK(parse(out) == v);
}

TEST_CASE("json: malformed text is refused with line and column", "[model][json]") {
  struct bad {
    std::string text, expect;
  };
  const std::vector<bad> cases = {
      {"", "line 1, column 1: the text is empty"},
      {"{\"a\": 1,}", "line 1, column 9: unexpected character '}'; expected a string key"},
      {"[1, 2,]", "line 1, column 7"},
      {"{\"a\" 1}", "expected ':'"},
      {"{\n  \"a\": 1\n  \"b\": 2\n}", "line 3, column 3: unexpected character '\"'; expected ',' or '}'"},
      {"[1 2]", "expected ',' or ']'"},
      {"\"abc", "unterminated string"},
      {"\"a\tb\"", "control character"},
      {"\"\\x\"", "invalid escape"},
      {"\"\\u12\"", "four hexadecimal digits"},
      {"\"\\udc00\"", "lone low surrogate"},
      {"\"\\ud800\"", "must be followed by a low surrogate"},
      {"\"\\ud800\\u0041\"", "low surrogate (DC00-DFFF)"},
      {"01", "leading zeros"},
      {"1.", "decimal point must be followed by a digit"},
      {"1e", "exponent needs a digit"},
      {"-", "a number needs a digit"},
      {".5", "unexpected character '.'"},
      {"NaN", "NaN and Infinity are not JSON numbers"},
      {"Infinity", "NaN and Infinity"},
      {"1e999", "outside the double range"},
      {"tru", "unexpected character 't'"},
      {"// comment\n{}", "line 1, column 1"},
      {"{} x", "line 1, column 4: unexpected character 'x' after the JSON value"},
      {"{\"a\": 1, \"a\": 2}", "line 1, column 10: duplicate key \"a\""},
      {"\xEF\xBB\xBF{}", "byte-order mark"},
      {"\"\xC0\x80\"", "invalid UTF-8"},
      {"\"\xED\xA0\x80\"", "surrogate"},
      {"\"\xFF\"", "invalid UTF-8 (byte 0xff)"},
      {"\"\xE2\x82\"", "invalid UTF-8 continuation"},
      {"[\"\xF0\x9F\x98", "truncated UTF-8"},
  };
  for (const bad& b : cases) {
    INFO("input: " << b.text);
    const std::string e = parse_error(b.text);
    CHECK(e.find("t.json: invalid JSON at line") != std::string::npos);
    CHECK(e.find(b.expect) != std::string::npos);
  }
}

TEST_CASE("json: nesting is limited, not a stack overflow", "[model][json]") {
  const std::string ok = std::string(100, '[') + std::string(100, ']');
  CHECK_NOTHROW(parse(ok));
  const std::string deep = std::string(100000, '[');
  CHECK(parse_error(deep).find("nesting deeper than 128 levels") != std::string::npos);
  MLKV_CHECK_ERROR(parse("[[[1]]]", "t", 2), "nesting deeper than 2");
}

TEST_CASE("json: random values round-trip; corrupted text is refused cleanly", "[model][json]") {
  const std::uint64_t seed = mlkv_test::fresh_seed();
  INFO("seed " << seed << " (MLKV_TEST_SEED to replay)");
  mlkv_test::rng r(seed);
  const int rounds = mlkv_test::sanitized() ? 150 : 600;
  int refused = 0, accepted = 0;
  for (int i = 0; i < rounds; ++i) {
    const value v = random_value(r, 0);
    for (const int indent : {-1, 2}) {
      const std::string text = mlkv::json::dump(v, indent);
      INFO(text);
      REQUIRE(parse(text) == v);
      // Corrupt a few bytes: the reader must either accept or throw mlkv::error.
      std::string bad = text;
      const int edits = r.integer(1, 3);
      for (int e = 0; e < edits && !bad.empty(); ++e) {
        const auto at = static_cast<std::size_t>(r.integer(0, static_cast<int>(bad.size()) - 1));
        switch (r.integer(0, 2)) {
          case 0: bad[at] = static_cast<char>(r.integer(0, 255)); break;
          case 1: bad.erase(at, 1); break;
          default: bad.insert(at, 1, "{}[]\",:\\"[r.integer(0, 7)]); break;
        }
      }
      try {
        (void)parse(bad);
        ++accepted;
      } catch (const mlkv::error& e) {
        ++refused;
        CHECK(std::string(e.what()).find("invalid JSON at line") != std::string::npos);
      }
    }
  }
  CHECK(refused > 0);
  CHECK(accepted + refused == 2 * rounds);
}

TEST_CASE("json: writer layout", "[model][json]") {
  value o = value::object();
  o.set("n", value(3));
  o.set("f", value(10000.0));
  o.set("e", value(1e-05));
  value a = value::array();
  a.push_back(value("x"));
  o.set("a", std::move(a));
  o.set("n", value(4));  // replaced in place
  CHECK(mlkv::json::dump(o) == R"({"n":4,"f":10000.0,"e":1e-05,"a":["x"]})");
  CHECK(mlkv::json::dump(o, 2) == "{\n  \"n\": 4,\n  \"f\": 10000.0,\n  \"e\": 1e-05,\n  \"a\": [\n    \"x\"\n  ]\n}");
  MLKV_CHECK_ERROR(mlkv::json::dump(value(std::nan(""))), "cannot represent");
}
