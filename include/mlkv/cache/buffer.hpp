#pragma once
/// \file cache/buffer.hpp
/// Cache-line aligned storage for caches and kernels, and overflow-checked size arithmetic.

#include <cstddef>
#include <cstdint>
#include <limits>
#include <new>
#include <utility>

#include "../error.hpp"

namespace mlkv {

/// Alignment of every buffer the library allocates (one cache line, one AVX-512 vector).
inline constexpr std::size_t buffer_alignment = 64;

namespace detail {
/// a * b, or an mlkv::error naming `what` when the product does not fit in size_t.
inline std::size_t checked_mul(std::size_t a, std::size_t b, const char* what) {
  if (a != 0 && b > std::numeric_limits<std::size_t>::max() / a) {
    fail(what, " overflows: ", a, " x ", b);
  }
  return a * b;
}
}  // namespace detail

/// An owning, 64-byte aligned array of trivially copyable T, zero-initialised.
template <class T>
class aligned_buffer {
 public:
  aligned_buffer() = default;
  explicit aligned_buffer(std::size_t n) : size_(n) {
    if (n == 0) return;
    const std::size_t bytes = detail::checked_mul(n, sizeof(T), "buffer size");
    data_ = static_cast<T*>(::operator new(bytes, std::align_val_t{buffer_alignment}));
    for (std::size_t i = 0; i < n; ++i) new (data_ + i) T{};
  }
  aligned_buffer(const aligned_buffer&) = delete;
  aligned_buffer& operator=(const aligned_buffer&) = delete;
  aligned_buffer(aligned_buffer&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  aligned_buffer& operator=(aligned_buffer&& o) noexcept {
    if (this != &o) {
      release();
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }
  ~aligned_buffer() { release(); }

  T* data() { return data_; }
  const T* data() const { return data_; }
  std::size_t size() const { return size_; }
  T& operator[](std::size_t i) { return data_[i]; }
  const T& operator[](std::size_t i) const { return data_[i]; }

 private:
  void release() {
    if (data_ != nullptr) ::operator delete(data_, std::align_val_t{buffer_alignment});
    data_ = nullptr;
    size_ = 0;
  }
  T* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace mlkv
