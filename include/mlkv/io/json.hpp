#pragma once
/// \file io/json.hpp
/// A small, strict JSON reader and writer (RFC 8259) for config.json files and safetensors
/// headers.
///
/// Reader: objects, arrays, strings (all escapes, \u with surrogate pairs, UTF-8 validated),
/// numbers, true/false/null. Strict: no comments, no trailing commas, no NaN/Infinity, no
/// duplicate object keys, no control characters inside strings, no byte-order mark, nesting at
/// most `max_depth` levels. Every error is an mlkv::error that names the source, the line and
/// the column (1-based, in bytes). No input, however malformed, reads out of bounds.
///
/// Numbers keep whether they were written as integers: `768` is an integer (exact in int64),
/// `768.0` and `1e-05` are not. Objects keep their key order, so a file read and written back
/// keeps its layout (the converter rewrites config.json this way, as Python's json module does).

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "../error.hpp"

namespace mlkv::json {

/// The six JSON value kinds.
enum class kind : std::uint8_t { null, boolean, number, string, array, object };

/// "null", "boolean", "number", "string", "array" or "object".
constexpr const char* kind_name(kind k) {
  switch (k) {
    case kind::null: return "null";
    case kind::boolean: return "boolean";
    case kind::number: return "number";
    case kind::string: return "string";
    case kind::array: return "array";
    default: return "object";
  }
}

/// The kind with its article, for messages: "an object", "a number", "null", ...
constexpr const char* a_kind_name(kind k) {
  switch (k) {
    case kind::null: return "null";
    case kind::boolean: return "a boolean";
    case kind::number: return "a number";
    case kind::string: return "a string";
    case kind::array: return "an array";
    default: return "an object";
  }
}

struct member;

/// A JSON value. Copyable; objects keep key order.
class value {
 public:
  // Constructors are defined after `member` is complete (an object holds a vector of members).
  /// null
  value();
  value(std::nullptr_t);
  explicit value(bool b);
  /// A non-integer number (written with a decimal point or exponent). Must be finite.
  explicit value(double d);
  /// An integer number.
  explicit value(std::int64_t i);
  explicit value(int i);
  explicit value(std::string s);
  explicit value(std::string_view s);
  explicit value(const char* s);
  value(const value&);
  value(value&&) noexcept;
  value& operator=(const value&);
  value& operator=(value&&) noexcept;
  ~value();

  /// An empty array.
  static value array();
  /// An empty object.
  static value object();

  kind type() const { return kind_; }
  bool is_null() const { return kind_ == kind::null; }
  bool is_bool() const { return kind_ == kind::boolean; }
  bool is_number() const { return kind_ == kind::number; }
  /// A number written as an integer literal that fits in int64.
  bool is_integer() const { return kind_ == kind::number && is_int_; }
  bool is_string() const { return kind_ == kind::string; }
  bool is_array() const { return kind_ == kind::array; }
  bool is_object() const { return kind_ == kind::object; }

  /// The boolean; throws when this is not a boolean.
  bool as_bool() const {
    expect(kind::boolean);
    return bool_;
  }
  /// The number (integer or not) as a double; throws when this is not a number.
  double as_double() const {
    expect(kind::number);
    return num_;
  }
  /// The integer; throws when this is not an integer literal within int64.
  std::int64_t as_int() const {
    expect(kind::number);
    MLKV_CHECK(is_int_, "JSON number ", num_, " is not an integer (or is outside the 64-bit range)");
    return int_;
  }
  /// The string (UTF-8); throws when this is not a string.
  const std::string& as_string() const {
    expect(kind::string);
    return str_;
  }
  /// The elements; throws when this is not an array.
  const std::vector<value>& as_array() const {
    expect(kind::array);
    return arr_;
  }
  std::vector<value>& as_array() {
    expect(kind::array);
    return arr_;
  }
  /// The members in file order; throws when this is not an object.
  const std::vector<member>& as_object() const;
  std::vector<member>& as_object();

  /// The member named `key`, or nullptr (also nullptr when this is not an object).
  const value* find(std::string_view key) const;
  /// Sets member `key` (replacing its value in place, or appending it); this must be an object.
  void set(std::string key, value v);
  /// Appends an element; this must be an array.
  void push_back(value v) {
    expect(kind::array);
    arr_.push_back(std::move(v));
  }

  friend bool operator==(const value& a, const value& b);

 private:
  void expect(kind k) const {
    if (kind_ != k) detail::fail("expected a JSON ", kind_name(k), ", found ", a_kind_name(kind_));
  }

  kind kind_ = kind::null;
  bool bool_ = false;
  double num_ = 0.0;
  std::int64_t int_ = 0;
  bool is_int_ = false;
  std::string str_;
  std::vector<value> arr_;
  std::vector<member> obj_;
};

/// One key/value pair of an object.
struct member {
  std::string key;
  value val;
};

inline value::value() = default;
inline value::value(std::nullptr_t) {}
inline value::value(bool b) : kind_(kind::boolean), bool_(b) {}
inline value::value(double d) : kind_(kind::number), num_(d) {}
inline value::value(std::int64_t i) : kind_(kind::number), num_(static_cast<double>(i)), int_(i), is_int_(true) {}
inline value::value(int i) : value(static_cast<std::int64_t>(i)) {}
inline value::value(std::string s) : kind_(kind::string), str_(std::move(s)) {}
inline value::value(std::string_view s) : kind_(kind::string), str_(s) {}
inline value::value(const char* s) : kind_(kind::string), str_(s) {}
inline value::value(const value&) = default;
inline value::value(value&&) noexcept = default;
inline value& value::operator=(const value&) = default;
inline value& value::operator=(value&&) noexcept = default;
inline value::~value() = default;
inline value value::array() {
  value v;
  v.kind_ = kind::array;
  return v;
}
inline value value::object() {
  value v;
  v.kind_ = kind::object;
  return v;
}

inline const std::vector<member>& value::as_object() const {
  expect(kind::object);
  return obj_;
}
inline std::vector<member>& value::as_object() {
  expect(kind::object);
  return obj_;
}
inline const value* value::find(std::string_view key) const {
  if (kind_ != kind::object) return nullptr;
  for (const member& m : obj_) {
    if (m.key == key) return &m.val;
  }
  return nullptr;
}
inline void value::set(std::string key, value v) {
  expect(kind::object);
  for (member& m : obj_) {
    if (m.key == key) {
      m.val = std::move(v);
      return;
    }
  }
  obj_.push_back(member{std::move(key), std::move(v)});
}
inline bool operator==(const value& a, const value& b) {
  if (a.kind_ != b.kind_) return false;
  switch (a.kind_) {
    case kind::null: return true;
    case kind::boolean: return a.bool_ == b.bool_;
    case kind::number:
      return a.is_int_ == b.is_int_ && (a.is_int_ ? a.int_ == b.int_ : a.num_ == b.num_);
    case kind::string: return a.str_ == b.str_;
    case kind::array: return a.arr_ == b.arr_;
    default:
      if (a.obj_.size() != b.obj_.size()) return false;
      for (std::size_t i = 0; i < a.obj_.size(); ++i) {
        if (a.obj_[i].key != b.obj_[i].key || !(a.obj_[i].val == b.obj_[i].val)) return false;
      }
      return true;
  }
}

/// Nesting limit of the reader: deeper input is an error, never a stack overflow.
inline constexpr int default_max_depth = 128;

namespace detail {

/// Recursive-descent reader over a byte range; every access is bounds-checked.
class reader {
 public:
  reader(std::string_view text, std::string_view source, int max_depth)
      : s_(text), source_(source), max_depth_(max_depth) {}

  value document() {
    if (s_.size() >= 3 && static_cast<unsigned char>(s_[0]) == 0xEF && static_cast<unsigned char>(s_[1]) == 0xBB &&
        static_cast<unsigned char>(s_[2]) == 0xBF) {
      fail_at(0, "the text starts with a UTF-8 byte-order mark, which JSON does not allow");
    }
    skip_ws();
    if (pos_ == s_.size()) fail_at(pos_, "the text is empty; expected a JSON value");
    value v = parse_value(0);
    skip_ws();
    if (pos_ != s_.size()) fail_at(pos_, "unexpected ", describe(pos_), " after the JSON value");
    return v;
  }

 private:
  [[noreturn]] void fail_at(std::size_t at, const auto&... what) const {
    // Line and column of byte `at` (1-based; columns count bytes).
    std::size_t line = 1, col = 1;
    for (std::size_t i = 0; i < at && i < s_.size(); ++i) {
      if (s_[i] == '\n') {
        ++line;
        col = 1;
      } else {
        ++col;
      }
    }
    ::mlkv::detail::fail(source_, ": invalid JSON at line ", line, ", column ", col, ": ", what...);
  }

  std::string describe(std::size_t at) const {
    if (at >= s_.size()) return "end of input";
    const unsigned char c = static_cast<unsigned char>(s_[at]);
    if (c >= 0x20 && c < 0x7f) return std::string("character '") + static_cast<char>(c) + "'";
    constexpr char hex[] = "0123456789abcdef";
    return std::string("byte 0x") + hex[c >> 4] + hex[c & 15];
  }

  void skip_ws() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) ++pos_;
  }

  bool literal(std::string_view word) {
    if (s_.substr(pos_, word.size()) != word) return false;
    pos_ += word.size();
    return true;
  }

  value parse_value(int depth) {
    if (pos_ >= s_.size()) fail_at(pos_, "unexpected end of input; expected a value");
    const char c = s_[pos_];
    switch (c) {
      case '{': return parse_object(depth + 1);
      case '[': return parse_array(depth + 1);
      case '"': return value(parse_string());
      case 't':
        if (literal("true")) return value(true);
        break;
      case 'f':
        if (literal("false")) return value(false);
        break;
      case 'n':
        if (literal("null")) return value();
        break;
      case 'N':
      case 'I':
        fail_at(pos_, "NaN and Infinity are not JSON numbers");
      default:
        if (c == '-' || (c >= '0' && c <= '9')) return parse_number();
        break;
    }
    fail_at(pos_, "unexpected ", describe(pos_), "; expected a value (object, array, string, number, true, "
            "false or null)");
  }

  void enter(int depth, std::size_t at) const {
    if (depth > max_depth_) fail_at(at, "nesting deeper than ", max_depth_, " levels");
  }

  value parse_object(int depth) {
    enter(depth, pos_);
    ++pos_;  // '{'
    value obj = value::object();
    std::vector<member>& members = obj.as_object();
    std::vector<std::size_t> key_pos;
    skip_ws();
    if (pos_ < s_.size() && s_[pos_] == '}') {
      ++pos_;
      return obj;
    }
    for (;;) {
      skip_ws();
      if (pos_ >= s_.size() || s_[pos_] != '"') {
        fail_at(pos_, "unexpected ", describe(pos_), "; expected a string key");
      }
      key_pos.push_back(pos_);
      std::string key = parse_string();
      skip_ws();
      if (pos_ >= s_.size() || s_[pos_] != ':') fail_at(pos_, "unexpected ", describe(pos_), "; expected ':'");
      ++pos_;
      skip_ws();
      value v = parse_value(depth);
      members.push_back(member{std::move(key), std::move(v)});
      skip_ws();
      if (pos_ < s_.size() && s_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (pos_ < s_.size() && s_[pos_] == '}') {
        ++pos_;
        break;
      }
      fail_at(pos_, "unexpected ", describe(pos_), "; expected ',' or '}' after an object member");
    }
    // Duplicate keys: sort indices by key (n log n, so large headers stay fast).
    std::vector<std::size_t> order(members.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
      return members[a].key < members[b].key || (members[a].key == members[b].key && a < b);
    });
    for (std::size_t i = 1; i < order.size(); ++i) {
      if (members[order[i]].key == members[order[i - 1]].key) {
        fail_at(key_pos[order[i]], "duplicate key \"", members[order[i]].key, "\" in an object");
      }
    }
    return obj;
  }

  value parse_array(int depth) {
    enter(depth, pos_);
    ++pos_;  // '['
    value arr = value::array();
    skip_ws();
    if (pos_ < s_.size() && s_[pos_] == ']') {
      ++pos_;
      return arr;
    }
    for (;;) {
      skip_ws();
      arr.push_back(parse_value(depth));
      skip_ws();
      if (pos_ < s_.size() && s_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (pos_ < s_.size() && s_[pos_] == ']') {
        ++pos_;
        break;
      }
      fail_at(pos_, "unexpected ", describe(pos_), "; expected ',' or ']' after an array element");
    }
    return arr;
  }

  unsigned hex4(std::size_t at) const {
    if (at + 4 > s_.size()) fail_at(at, "a \\u escape needs four hexadecimal digits");
    unsigned u = 0;
    for (std::size_t i = at; i < at + 4; ++i) {
      const char c = s_[i];
      unsigned d = 0;
      if (c >= '0' && c <= '9') {
        d = static_cast<unsigned>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        d = static_cast<unsigned>(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        d = static_cast<unsigned>(c - 'A' + 10);
      } else {
        fail_at(i, "a \\u escape needs four hexadecimal digits, found ", describe(i));
      }
      u = u * 16 + d;
    }
    return u;
  }

  static void put_utf8(std::string& out, unsigned cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  /// Length of the valid UTF-8 sequence at pos_ (2..4 bytes), or an error naming the byte.
  std::size_t utf8_length(std::size_t at) const {
    const unsigned char c = static_cast<unsigned char>(s_[at]);
    std::size_t n = 0;
    unsigned cp = 0, min = 0;
    if (c >= 0xC2 && c <= 0xDF) {
      n = 2, cp = c & 0x1Fu, min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
      n = 3, cp = c & 0x0Fu, min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
      n = 4, cp = c & 0x07u, min = 0x10000;
    } else {
      fail_at(at, "invalid UTF-8 (", describe(at), ") in a string");
    }
    if (at + n > s_.size()) fail_at(at, "truncated UTF-8 sequence in a string");
    for (std::size_t i = 1; i < n; ++i) {
      const unsigned char d = static_cast<unsigned char>(s_[at + i]);
      if ((d & 0xC0u) != 0x80u) fail_at(at + i, "invalid UTF-8 continuation (", describe(at + i), ") in a string");
      cp = (cp << 6) | (d & 0x3Fu);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
      fail_at(at, "invalid UTF-8 (overlong, surrogate or beyond U+10FFFF) in a string");
    }
    return n;
  }

  std::string parse_string() {
    const std::size_t start = pos_;
    ++pos_;  // opening quote
    std::string out;
    for (;;) {
      if (pos_ >= s_.size()) fail_at(start, "unterminated string");
      const unsigned char c = static_cast<unsigned char>(s_[pos_]);
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (c < 0x20) fail_at(pos_, "control character (", describe(pos_), ") inside a string; it must be escaped");
      if (c >= 0x80) {
        const std::size_t n = utf8_length(pos_);
        out.append(s_.data() + pos_, n);
        pos_ += n;
        continue;
      }
      if (c != '\\') {
        out += static_cast<char>(c);
        ++pos_;
        continue;
      }
      if (pos_ + 1 >= s_.size()) fail_at(pos_, "unterminated escape sequence");
      const char e = s_[pos_ + 1];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          unsigned cp = hex4(pos_ + 2);
          std::size_t used = 6;
          if (cp >= 0xDC00 && cp <= 0xDFFF) fail_at(pos_, "a lone low surrogate \\u escape");
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (pos_ + 7 >= s_.size() || s_[pos_ + 6] != '\\' || s_[pos_ + 7] != 'u') {
              fail_at(pos_, "a high surrogate \\u escape must be followed by a low surrogate \\u escape");
            }
            const unsigned lo = hex4(pos_ + 8);
            if (lo < 0xDC00 || lo > 0xDFFF) {
              fail_at(pos_ + 6, "a high surrogate \\u escape must be followed by a low surrogate (DC00-DFFF)");
            }
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            used = 12;
          }
          put_utf8(out, cp);
          pos_ += used;
          continue;
        }
        default:
          fail_at(pos_, "invalid escape '\\", describe(pos_ + 1), "'");
      }
      pos_ += 2;
    }
  }

  /// True when a (syntactically valid) number literal is below 1 in magnitude: its decimal
  /// exponent, with saturating arithmetic, is negative.
  static bool tiny_magnitude(const char* p, const char* last) {
    if (*p == '-') ++p;
    long long order = 0;  // value ~ 0.d... x 10^order
    bool seen_nonzero = false;
    for (; p != last && *p >= '0' && *p <= '9'; ++p) {
      if (*p != '0') seen_nonzero = true;
      if (seen_nonzero && order < 1000000) ++order;
    }
    if (p != last && *p == '.') {
      for (++p; p != last && *p >= '0' && *p <= '9'; ++p) {
        if (seen_nonzero) continue;
        if (*p != '0') {
          seen_nonzero = true;
        } else if (order > -1000000) {
          --order;
        }
      }
    }
    if (p != last && (*p == 'e' || *p == 'E')) {
      ++p;
      const bool neg = p != last && *p == '-';
      if (p != last && (*p == '+' || *p == '-')) ++p;
      long long e = 0;
      for (; p != last; ++p) e = std::min<long long>(e * 10 + (*p - '0'), 1000000000);
      order += neg ? -e : e;
    }
    return order < 0;
  }

  value parse_number() {
    const std::size_t start = pos_;
    std::size_t p = pos_;
    auto digit = [&](std::size_t i) { return i < s_.size() && s_[i] >= '0' && s_[i] <= '9'; };
    if (p < s_.size() && s_[p] == '-') ++p;
    if (!digit(p)) fail_at(p, "a number needs a digit here, found ", describe(p));
    if (s_[p] == '0') {
      ++p;
      if (digit(p)) fail_at(p, "a number may not have leading zeros");
    } else {
      while (digit(p)) ++p;
    }
    bool integer = true;
    if (p < s_.size() && s_[p] == '.') {
      integer = false;
      ++p;
      if (!digit(p)) fail_at(p, "a decimal point must be followed by a digit, found ", describe(p));
      while (digit(p)) ++p;
    }
    if (p < s_.size() && (s_[p] == 'e' || s_[p] == 'E')) {
      integer = false;
      ++p;
      if (p < s_.size() && (s_[p] == '+' || s_[p] == '-')) ++p;
      if (!digit(p)) fail_at(p, "an exponent needs a digit, found ", describe(p));
      while (digit(p)) ++p;
    }
    pos_ = p;
    const char* first = s_.data() + start;
    const char* last = s_.data() + p;
    if (integer) {
      std::int64_t i = 0;
      const auto r = std::from_chars(first, last, i);
      if (r.ec == std::errc() && r.ptr == last) return value(i);
      // Outside int64: kept as a (non-integer) double below.
    }
    double d = 0.0;
    const auto r = std::from_chars(first, last, d);
    if (r.ec == std::errc::result_out_of_range) {
      // Underflow reads as zero (as Python does); overflow is an error (Python would read inf).
      if (!tiny_magnitude(first, last)) {
        fail_at(start, "number ", std::string(first, last), " is outside the double range");
      }
      d = *first == '-' ? -0.0 : 0.0;
    } else if (r.ec != std::errc() || r.ptr != last) {
      fail_at(start, "malformed number");
    }
    return value(d);
  }

  std::string_view s_;
  std::string_view source_;
  int max_depth_;
  std::size_t pos_ = 0;
};

inline void escape_into(std::string& out, std::string_view s) {
  out += '"';
  for (const char ch : s) {
    const unsigned char c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          constexpr char hex[] = "0123456789abcdef";
          out += "\\u00";
          out += hex[c >> 4];
          out += hex[c & 15];
        } else {
          out += ch;  // UTF-8 passes through (strings from the reader are valid UTF-8)
        }
    }
  }
  out += '"';
}

inline void dump_into(std::string& out, const value& v, int indent, int level) {
  auto newline = [&](int lvl) {
    if (indent < 0) return;
    out += '\n';
    out.append(static_cast<std::size_t>(indent) * static_cast<std::size_t>(lvl), ' ');
  };
  switch (v.type()) {
    case kind::null: out += "null"; return;
    case kind::boolean: out += v.as_bool() ? "true" : "false"; return;
    case kind::number: {
      char buf[64];
      if (v.is_integer()) {
        const auto r = std::to_chars(buf, buf + sizeof(buf), v.as_int());
        out.append(buf, r.ptr);
        return;
      }
      const double d = v.as_double();
      MLKV_CHECK(std::isfinite(d), "JSON cannot represent the number ", d);
      const auto r = std::to_chars(buf, buf + sizeof(buf), d);  // shortest round-trip form
      std::string_view t(buf, static_cast<std::size_t>(r.ptr - buf));
      out += t;
      // Keep it a non-integer on re-reading (Python writes 10000.0 as "10000.0" too).
      if (t.find_first_of(".eE") == std::string_view::npos) out += ".0";
      return;
    }
    case kind::string: escape_into(out, v.as_string()); return;
    case kind::array: {
      const auto& a = v.as_array();
      out += '[';
      for (std::size_t i = 0; i < a.size(); ++i) {
        if (i != 0) out += ',';
        newline(level + 1);
        dump_into(out, a[i], indent, level + 1);
      }
      if (!a.empty()) newline(level);
      out += ']';
      return;
    }
    default: {
      const auto& o = v.as_object();
      out += '{';
      for (std::size_t i = 0; i < o.size(); ++i) {
        if (i != 0) out += ',';
        newline(level + 1);
        escape_into(out, o[i].key);
        out += indent < 0 ? ":" : ": ";
        dump_into(out, o[i].val, indent, level + 1);
      }
      if (!o.empty()) newline(level);
      out += '}';
      return;
    }
  }
}

}  // namespace detail

/// Parses a whole JSON text; throws mlkv::error "<source>: invalid JSON at line L, column C: ...".
inline value parse(std::string_view text, std::string_view source = "JSON text", int max_depth = default_max_depth) {
  return detail::reader(text, source, max_depth).document();
}

/// Writes a value as JSON text: compact when indent < 0, else one member per line indented by
/// `indent` spaces. Non-integer numbers use the shortest form that reads back to the same double.
inline std::string dump(const value& v, int indent = -1) {
  std::string out;
  detail::dump_into(out, v, indent, 0);
  return out;
}

}  // namespace mlkv::json
