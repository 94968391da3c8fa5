#pragma once
/// \file io/safetensors.hpp
/// safetensors files (the format Hugging Face writes model weights in): a memory-mapped reader
/// that checks every offset and size, and a writer that writes atomically.
///
/// Format: an 8-byte little-endian header length N, N bytes of JSON, then the data section.
/// The JSON object maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]}
/// (offsets relative to the data section); the optional "__metadata__" entry is a string-to-
/// string map. The reader enforces what the reference implementation enforces: N at most
/// 100 MB and within the file; known dtypes; shapes of non-negative integers whose element
/// count times the dtype size equals end - begin (no overflow); offsets inside the data
/// section; tensors that tile the data section exactly (no overlap, no gap, no trailing bytes);
/// unique names. Each violation is an mlkv::error that names the file, the tensor and the
/// offending numbers. Tensor bytes are never reinterpreted in place (they may be unaligned):
/// reads copy and convert.
///
/// A file opened with open() is mapped, not read: it must not be truncated or rewritten in place
/// while open (writers here replace files by rename, which is safe).
///
/// The writer orders tensors by element size (largest first) and pads the header with spaces
/// to a multiple of 8 bytes, so every tensor is aligned to its element size in the file.

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "../cache/buffer.hpp"
#include "../dtype.hpp"
#include "../error.hpp"
#include "file.hpp"
#include "json.hpp"

namespace mlkv::io {

static_assert(std::endian::native == std::endian::little, "mlkv: safetensors I/O assumes a little-endian host");

/// The element types of the safetensors format.
enum class st_dtype : std::uint8_t { BOOL, U8, I8, F8_E5M2, F8_E4M3, I16, U16, F16, BF16, I32, U32, F32, I64, U64, F64 };

/// Every st_dtype with its name, for parsing and printing.
inline constexpr std::pair<st_dtype, std::string_view> st_dtype_names[] = {
    {st_dtype::BOOL, "BOOL"}, {st_dtype::U8, "U8"},     {st_dtype::I8, "I8"},     {st_dtype::F8_E5M2, "F8_E5M2"},
    {st_dtype::F8_E4M3, "F8_E4M3"}, {st_dtype::I16, "I16"}, {st_dtype::U16, "U16"}, {st_dtype::F16, "F16"},
    {st_dtype::BF16, "BF16"}, {st_dtype::I32, "I32"},   {st_dtype::U32, "U32"},   {st_dtype::F32, "F32"},
    {st_dtype::I64, "I64"},   {st_dtype::U64, "U64"},   {st_dtype::F64, "F64"}};

/// The format's name of a dtype ("F32", "BF16", ...).
constexpr std::string_view name_of(st_dtype t) {
  for (const auto& [d, n] : st_dtype_names) {
    if (d == t) return n;
  }
  return "?";
}

/// Bytes per element.
constexpr std::size_t size_of(st_dtype t) {
  switch (t) {
    case st_dtype::BOOL:
    case st_dtype::U8:
    case st_dtype::I8:
    case st_dtype::F8_E5M2:
    case st_dtype::F8_E4M3: return 1;
    case st_dtype::I16:
    case st_dtype::U16:
    case st_dtype::F16:
    case st_dtype::BF16: return 2;
    case st_dtype::I32:
    case st_dtype::U32:
    case st_dtype::F32: return 4;
    default: return 8;
  }
}

/// Parses a dtype name; false when the name is not one of the format's dtypes.
constexpr bool parse_st_dtype(std::string_view s, st_dtype& out) {
  for (const auto& [d, n] : st_dtype_names) {
    if (n == s) {
      out = d;
      return true;
    }
  }
  return false;
}

/// True for the floating-point dtypes the readers convert from: F32, F16, BF16, F64.
constexpr bool is_float_dtype(st_dtype t) {
  return t == st_dtype::F32 || t == st_dtype::F16 || t == st_dtype::BF16 || t == st_dtype::F64;
}

/// The safetensors dtype that stores a library storage type.
template <class T>
inline constexpr st_dtype st_dtype_of = std::is_same_v<T, float> ? st_dtype::F32
                                        : std::is_same_v<T, f16> ? st_dtype::F16
                                                                 : st_dtype::BF16;

/// Element count of a shape, or an mlkv::error naming `what` when it overflows.
inline std::size_t element_count(std::span<const std::int64_t> shape, std::string_view what) {
  std::size_t n = 1;
  for (const std::int64_t d : shape) {
    MLKV_CHECK(d >= 0, what, ": dimension ", d, " is negative");
    const auto ud = static_cast<std::uint64_t>(d);
    if (ud != 0 && n > std::numeric_limits<std::size_t>::max() / ud) {
      ::mlkv::detail::fail(what, ": the element count of its shape overflows");
    }
    n *= static_cast<std::size_t>(ud);
  }
  return n;
}

/// "[3, 768]"
inline std::string shape_string(std::span<const std::int64_t> shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i != 0) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

/// One tensor of a file: name, dtype, shape and its byte range in the data section.
struct tensor_info {
  std::string name;
  st_dtype dtype = st_dtype::F32;
  std::vector<std::int64_t> shape;
  std::uint64_t begin = 0;  ///< first byte, relative to the data section
  std::uint64_t end = 0;    ///< one past the last byte

  std::size_t numel() const { return element_count(shape, name); }
  std::size_t nbytes() const { return static_cast<std::size_t>(end - begin); }
};

namespace detail {

/// Converts `n` packed little-endian values of dtype `from` at `src` into T (float, f16, bf16).
template <class T>
void convert_elements(const std::byte* src, st_dtype from, std::size_t n, T* dst) {
  static_assert(is_storage_v<T>, "mlkv: tensors are read as float, mlkv::f16 or mlkv::bf16");
  if (n == 0) return;  // empty tensors may come with null pointers
  if (from == st_dtype_of<T>) {  // same representation: one copy
    std::memcpy(static_cast<void*>(dst), src, n * sizeof(T));
    return;
  }
  for (std::size_t i = 0; i < n; ++i) {
    float x = 0.f;
    switch (from) {
      case st_dtype::F32:
        std::memcpy(&x, src + 4 * i, 4);
        break;
      case st_dtype::F64: {
        double d = 0.0;
        std::memcpy(&d, src + 8 * i, 8);
        x = static_cast<float>(d);
        break;
      }
      case st_dtype::F16: {
        std::uint16_t b = 0;
        std::memcpy(&b, src + 2 * i, 2);
        x = f16_bits_to_float(b);
        break;
      }
      default: {  // BF16 (callers check the dtype first)
        std::uint16_t b = 0;
        std::memcpy(&b, src + 2 * i, 2);
        x = bf16_bits_to_float(b);
        break;
      }
    }
    dst[i] = from_float<T>(x);
  }
}

}  // namespace detail

/// A safetensors file: its tensor table and (read-only) bytes. Copies share the mapping.
class safetensors_file {
 public:
  /// Largest header accepted (as the reference implementation).
  static constexpr std::uint64_t max_header_bytes = 100'000'000;

  /// Maps and validates a file.
  static safetensors_file open(const std::filesystem::path& path) {
    auto map = std::make_shared<mapped_file>(path);
    safetensors_file f(map->bytes(), path.string());
    f.map_ = std::move(map);
    return f;
  }

  /// Validates bytes held by the caller (they must outlive the returned object and its copies).
  static safetensors_file from_memory(std::span<const std::byte> bytes, std::string source = "safetensors data") {
    return safetensors_file(bytes, std::move(source));
  }

  /// The file name (or the source given to from_memory), for messages.
  const std::string& source() const { return source_; }
  /// Tensors in header order.
  const std::vector<tensor_info>& tensors() const { return tensors_; }
  /// "__metadata__" entries in header order.
  const std::vector<std::pair<std::string, std::string>>& metadata() const { return metadata_; }
  /// Bytes of the data section.
  std::size_t data_size() const { return data_.size(); }

  /// The tensor named `name`, or nullptr.
  const tensor_info* find(std::string_view name) const {
    const auto it = std::lower_bound(by_name_.begin(), by_name_.end(), name,
                                     [&](std::size_t i, std::string_view n) { return tensors_[i].name < n; });
    if (it == by_name_.end() || tensors_[*it].name != name) return nullptr;
    return &tensors_[*it];
  }
  /// The tensor named `name`; throws an mlkv::error naming it when it is missing.
  const tensor_info& at(std::string_view name) const {
    const tensor_info* t = find(name);
    if (t == nullptr) ::mlkv::detail::fail(source_, ": missing tensor \"", name, "\"");
    return *t;
  }

  /// The raw bytes of a tensor of this file (little-endian, possibly unaligned).
  std::span<const std::byte> bytes(const tensor_info& t) const {
    return data_.subspan(static_cast<std::size_t>(t.begin), t.nbytes());
  }

  /// Converts a floating-point tensor (F32, F16, BF16, F64) into `out` (float, f16 or bf16,
  /// rounding to nearest even); `out` must hold exactly its element count.
  template <class T>
  void read(const tensor_info& t, std::span<T> out) const {
    MLKV_CHECK(is_float_dtype(t.dtype), source_, ": tensor \"", t.name, "\" has dtype ", name_of(t.dtype),
               "; only F32, F16, BF16 and F64 tensors can be read as numbers");
    const std::size_t n = t.numel();
    MLKV_CHECK(out.size() == n, source_, ": tensor \"", t.name, "\" has ", n, " elements, the destination holds ",
               out.size());
    detail::convert_elements(bytes(t).data(), t.dtype, n, out.data());
  }

  /// Reads a floating-point tensor into a new vector of T.
  template <class T = float>
  std::vector<T> read(std::string_view name) const {
    const tensor_info& t = at(name);
    std::vector<T> v(t.numel());
    read(t, std::span<T>(v));
    return v;
  }

 private:
  safetensors_file(std::span<const std::byte> bytes, std::string source) : source_(std::move(source)) { parse(bytes); }

  [[noreturn]] void fail(const auto&... what) const { ::mlkv::detail::fail(source_, ": ", what...); }

  void parse(std::span<const std::byte> all) {
    if (all.size() < 8) {
      fail("truncated: the file has ", all.size(),
           " bytes; a safetensors file starts with an 8-byte header length");
    }
    std::uint64_t n = 0;
    std::memcpy(&n, all.data(), 8);
    if (n > max_header_bytes) fail("header length ", n, " exceeds the limit of ", max_header_bytes, " bytes");
    if (n > all.size() - 8) {
      fail("header length ", n, " is larger than the ", all.size() - 8,
           " bytes that follow it (truncated file, or not a safetensors file)");
    }
    const std::string_view text(reinterpret_cast<const char*>(all.data() + 8), static_cast<std::size_t>(n));
    const json::value header = json::parse(text, source_ + " header");
    if (!header.is_object()) fail("the header is a JSON ", json::kind_name(header.type()), ", not an object");
    data_ = all.subspan(8 + static_cast<std::size_t>(n));

    for (const json::member& m : header.as_object()) {
      if (m.key == "__metadata__") {
        parse_metadata(m.val);
        continue;
      }
      tensors_.push_back(parse_tensor(m.key, m.val));
    }

    // The tensors must tile the data section: sorted by offset, each starts where the last
    // ended (no overlap, no gap) and the last ends at the end of the file.
    std::vector<std::size_t> order(tensors_.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
      return tensors_[a].begin != tensors_[b].begin ? tensors_[a].begin < tensors_[b].begin
                                                    : tensors_[a].end < tensors_[b].end;
    });
    std::uint64_t at = 0;
    const tensor_info* prev = nullptr;
    for (const std::size_t i : order) {
      const tensor_info& t = tensors_[i];
      if (t.begin < at) {
        fail("tensors \"", prev->name, "\" (bytes ", prev->begin, "..", prev->end, ") and \"", t.name, "\" (bytes ",
             t.begin, "..", t.end, ") overlap");
      }
      if (t.begin > at) {
        fail("gap of ", t.begin - at, " bytes before tensor \"", t.name, "\" (data_offsets start at ", t.begin,
             ", the previous tensor ends at ", at, ")");
      }
      at = t.end;
      prev = &t;
    }
    if (at != data_.size()) {
      fail("the data section has ", data_.size(), " bytes but the tensors cover ", at,
           " (trailing bytes, or a truncated header)");
    }

    by_name_.resize(tensors_.size());
    for (std::size_t i = 0; i < by_name_.size(); ++i) by_name_[i] = i;
    std::sort(by_name_.begin(), by_name_.end(),
              [&](std::size_t a, std::size_t b) { return tensors_[a].name < tensors_[b].name; });
  }

  void parse_metadata(const json::value& v) {
    if (!v.is_object()) fail("\"__metadata__\" must be an object of strings, found ", json::a_kind_name(v.type()));
    for (const json::member& m : v.as_object()) {
      if (!m.val.is_string()) {
        fail("\"__metadata__\" entry \"", m.key, "\" must be a string, found ", json::a_kind_name(m.val.type()));
      }
      metadata_.emplace_back(m.key, m.val.as_string());
    }
  }

  tensor_info parse_tensor(const std::string& name, const json::value& v) const {
    if (!v.is_object()) fail("tensor \"", name, "\" must be described by an object, found ", json::a_kind_name(v.type()));
    tensor_info t;
    t.name = name;
    const json::value* dt = v.find("dtype");
    const json::value* shape = v.find("shape");
    const json::value* offs = v.find("data_offsets");
    if (dt == nullptr || shape == nullptr || offs == nullptr) {
      fail("tensor \"", name, "\" needs \"dtype\", \"shape\" and \"data_offsets\"");
    }
    if (!dt->is_string()) fail("tensor \"", name, "\": \"dtype\" must be a string");
    if (!parse_st_dtype(dt->as_string(), t.dtype)) {
      fail("tensor \"", name, "\" has unsupported dtype \"", dt->as_string(),
           "\" (supported: BOOL, U8, I8, F8_E5M2, F8_E4M3, I16, U16, F16, BF16, I32, U32, F32, I64, U64, F64)");
    }
    if (!shape->is_array()) fail("tensor \"", name, "\": \"shape\" must be an array of non-negative integers");
    for (const json::value& d : shape->as_array()) {
      if (!d.is_integer() || d.as_int() < 0) {
        fail("tensor \"", name, "\": \"shape\" must be an array of non-negative integers");
      }
      t.shape.push_back(d.as_int());
    }
    if (!offs->is_array() || offs->as_array().size() != 2 || !offs->as_array()[0].is_integer() ||
        !offs->as_array()[1].is_integer() || offs->as_array()[0].as_int() < 0 || offs->as_array()[1].as_int() < 0) {
      fail("tensor \"", name, "\": \"data_offsets\" must be [begin, end] with non-negative integers");
    }
    t.begin = static_cast<std::uint64_t>(offs->as_array()[0].as_int());
    t.end = static_cast<std::uint64_t>(offs->as_array()[1].as_int());
    if (t.end < t.begin) fail("tensor \"", name, "\": data_offsets [", t.begin, ", ", t.end, "] end before they begin");
    const std::size_t numel = element_count(t.shape, source_ + ": tensor \"" + name + "\"");
    const std::size_t want = ::mlkv::detail::checked_mul(numel, size_of(t.dtype), "tensor size");
    if (t.end - t.begin != want) {
      fail("tensor \"", name, "\": dtype ", name_of(t.dtype), " x shape ", shape_string(t.shape), " is ", want,
           " bytes but data_offsets [", t.begin, ", ", t.end, "] span ", t.end - t.begin);
    }
    if (t.end > data_.size()) {
      fail("tensor \"", name, "\": data_offsets [", t.begin, ", ", t.end, "] run past the end of the data section (",
           data_.size(), " bytes)");
    }
    return t;
  }

  std::string source_;
  std::shared_ptr<const mapped_file> map_;
  std::span<const std::byte> data_;
  std::vector<tensor_info> tensors_;
  std::vector<std::size_t> by_name_;  // indices of tensors_ sorted by name
  std::vector<std::pair<std::string, std::string>> metadata_;
};

/// Collects tensors and writes a safetensors file (atomically) or its bytes.
class safetensors_writer {
 public:
  /// Adds a tensor whose bytes the writer keeps (little-endian, `shape` elements of `dtype`).
  void add(std::string name, st_dtype dtype, std::vector<std::int64_t> shape, std::vector<std::byte> bytes) {
    check_new(name, dtype, shape, bytes.size());
    entries_.push_back(entry{std::move(name), dtype, std::move(shape), std::move(bytes), {}, false});
  }

  /// Adds a tensor whose bytes the caller keeps alive until write()/serialize() returns.
  void add_view(std::string name, st_dtype dtype, std::vector<std::int64_t> shape, std::span<const std::byte> bytes) {
    check_new(name, dtype, shape, bytes.size());
    entries_.push_back(entry{std::move(name), dtype, std::move(shape), {}, bytes, true});
  }

  /// Adds a tensor of float, mlkv::f16 or mlkv::bf16 values (copied), stored as that type.
  template <class T>
  void add(std::string name, std::vector<std::int64_t> shape, std::span<const T> values) {
    static_assert(is_storage_v<T>, "mlkv: tensors are written from float, mlkv::f16 or mlkv::bf16");
    std::vector<std::byte> b(values.size() * sizeof(T));
    if (!b.empty()) std::memcpy(b.data(), values.data(), b.size());
    add(std::move(name), st_dtype_of<T>, std::move(shape), std::move(b));
  }

  /// Adds float values converted (round to nearest even) to `dtype` (F32, F16 or BF16).
  void add_converted(std::string name, st_dtype dtype, std::vector<std::int64_t> shape, std::span<const float> values) {
    MLKV_CHECK(dtype == st_dtype::F32 || dtype == st_dtype::F16 || dtype == st_dtype::BF16,
               "tensor \"", name, "\": values can be converted to F32, F16 or BF16, not ", name_of(dtype));
    std::vector<std::byte> b(values.size() * size_of(dtype));
    for (std::size_t i = 0; i < values.size(); ++i) {
      if (dtype == st_dtype::F32) {
        std::memcpy(b.data() + 4 * i, &values[i], 4);
      } else {
        const std::uint16_t h =
            dtype == st_dtype::F16 ? float_to_f16_bits(values[i]) : float_to_bf16_bits(values[i]);
        std::memcpy(b.data() + 2 * i, &h, 2);
      }
    }
    add(std::move(name), dtype, std::move(shape), std::move(b));
  }

  /// Sets a "__metadata__" entry.
  void set_metadata(std::string key, std::string value) {
    for (auto& [k, v] : metadata_) {
      if (k == key) {
        v = std::move(value);
        return;
      }
    }
    metadata_.emplace_back(std::move(key), std::move(value));
  }

  /// Tensors added so far.
  std::size_t size() const { return entries_.size(); }

  /// The whole file as bytes.
  std::vector<std::byte> serialize() const {
    const auto order = layout();
    const std::string header = header_text(order);
    std::size_t total = 8 + header.size();
    for (const std::size_t i : order) total += entries_[i].bytes().size();
    std::vector<std::byte> out;
    out.reserve(total);
    append_prefix(out, header);
    for (const std::size_t i : order) {
      const auto b = entries_[i].bytes();
      out.insert(out.end(), b.begin(), b.end());
    }
    return out;
  }

  /// Writes the file atomically (temporary file + rename): on failure `path` is unchanged.
  void write(const std::filesystem::path& path) const {
    const auto order = layout();
    const std::string header = header_text(order);
    std::vector<std::byte> prefix;
    append_prefix(prefix, header);
    std::vector<std::span<const std::byte>> pieces;
    pieces.reserve(order.size() + 1);
    pieces.emplace_back(prefix);
    for (const std::size_t i : order) pieces.push_back(entries_[i].bytes());
    write_file_atomic(path, pieces);
  }

 private:
  struct entry {
    std::string name;
    st_dtype dtype;
    std::vector<std::int64_t> shape;
    std::vector<std::byte> owned;
    std::span<const std::byte> view;
    bool is_view;
    std::span<const std::byte> bytes() const { return is_view ? view : std::span<const std::byte>(owned); }
  };

  void check_new(const std::string& name, st_dtype dtype, const std::vector<std::int64_t>& shape,
                 std::size_t nbytes) const {
    MLKV_CHECK(name != "__metadata__", "\"__metadata__\" cannot be a tensor name");
    for (const entry& e : entries_) MLKV_CHECK(e.name != name, "tensor \"", name, "\" was added twice");
    const std::size_t want =
        ::mlkv::detail::checked_mul(element_count(shape, "tensor \"" + name + "\""), size_of(dtype), "tensor size");
    MLKV_CHECK(want == nbytes, "tensor \"", name, "\": dtype ", name_of(dtype), " x shape ", shape_string(shape), " is ",
               want, " bytes, ", nbytes, " were given");
  }

  /// Write order: larger elements first (alignment), then by name.
  std::vector<std::size_t> layout() const {
    std::vector<std::size_t> order(entries_.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
      const std::size_t sa = size_of(entries_[a].dtype), sb = size_of(entries_[b].dtype);
      return sa != sb ? sa > sb : entries_[a].name < entries_[b].name;
    });
    return order;
  }

  std::string header_text(const std::vector<std::size_t>& order) const {
    json::value h = json::value::object();
    if (!metadata_.empty()) {
      json::value m = json::value::object();
      for (const auto& [k, v] : metadata_) m.set(k, json::value(v));
      h.set("__metadata__", std::move(m));
    }
    std::uint64_t at = 0;
    for (const std::size_t i : order) {
      const entry& e = entries_[i];
      json::value t = json::value::object();
      t.set("dtype", json::value(std::string(name_of(e.dtype))));
      json::value shape = json::value::array();
      for (const std::int64_t d : e.shape) shape.push_back(json::value(d));
      t.set("shape", std::move(shape));
      json::value offs = json::value::array();
      offs.push_back(json::value(static_cast<std::int64_t>(at)));
      at += e.bytes().size();
      offs.push_back(json::value(static_cast<std::int64_t>(at)));
      t.set("data_offsets", std::move(offs));
      h.set(e.name, std::move(t));
    }
    std::string text = json::dump(h);
    while ((8 + text.size()) % 8 != 0) text += ' ';  // data section starts 8-byte aligned
    return text;
  }

  static void append_prefix(std::vector<std::byte>& out, const std::string& header) {
    const std::uint64_t n = header.size();
    const auto* p = reinterpret_cast<const std::byte*>(&n);
    out.insert(out.end(), p, p + 8);
    const auto* h = reinterpret_cast<const std::byte*>(header.data());
    out.insert(out.end(), h, h + header.size());
  }

  std::vector<entry> entries_;
  std::vector<std::pair<std::string, std::string>> metadata_;
};

}  // namespace mlkv::io
