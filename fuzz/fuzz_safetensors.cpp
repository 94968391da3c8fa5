// libFuzzer target: the safetensors reader on arbitrary bytes. Every input must either be
// refused with an mlkv::error or give tensors whose byte ranges lie inside the input, that read
// without fault, and that survive a write/read round trip unchanged. Any other outcome (a crash,
// a sanitizer report, a failed property) is a bug.

#include <mlkv/io/safetensors.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

namespace {
[[noreturn]] void property_failed() { __builtin_trap(); }
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace mlkv::io;
  const auto* first = reinterpret_cast<const std::byte*>(data);
  try {
    const safetensors_file f = safetensors_file::from_memory(std::span<const std::byte>(first, size), "fuzz input");
    safetensors_writer w;
    for (const tensor_info& t : f.tensors()) {
      const auto b = f.bytes(t);
      if (!b.empty() && (b.data() < first || b.data() + b.size() > first + size)) property_failed();
      if (f.find(t.name) != &t) property_failed();
      if (is_float_dtype(t.dtype) && t.numel() <= (std::size_t{1} << 16)) {
        std::vector<float> v(t.numel());
        f.read(t, std::span<float>(v));
        std::vector<mlkv::bf16> h(t.numel());
        f.read(t, std::span<mlkv::bf16>(h));
      }
      w.add_view(t.name, t.dtype, t.shape, b);
    }
    for (const auto& [k, v] : f.metadata()) w.set_metadata(k, v);
    const std::vector<std::byte> again = w.serialize();
    const safetensors_file g = safetensors_file::from_memory(again, "round trip");
    if (g.tensors().size() != f.tensors().size() || g.metadata() != f.metadata()) property_failed();
    for (const tensor_info& t : f.tensors()) {
      const tensor_info* u = g.find(t.name);
      if (u == nullptr || u->dtype != t.dtype || u->shape != t.shape) property_failed();
      const auto a = f.bytes(t), b = g.bytes(*u);
      if (a.size() != b.size() || (!a.empty() && std::memcmp(a.data(), b.data(), a.size()) != 0)) property_failed();
    }
  } catch (const mlkv::error&) {
    // Refused with a message: the expected outcome for malformed input.
  }
  return 0;
}
