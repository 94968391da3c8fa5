#pragma once
/// \file error.hpp
/// The one exception type of the library and the check macro that builds its messages.
///
/// Every message names the bad value and the allowed range, so that a user reading a log
/// knows what to change without opening the source.

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace mlkv {

/// Thrown for bad input (arguments, shapes, files) and exhausted resources.
class error : public std::runtime_error {
 public:
  explicit error(const std::string& what) : std::runtime_error(what) {}
};

namespace detail {
template <class... Args>
[[nodiscard]] std::string concat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}

template <class... Args>
[[noreturn]] void fail(Args&&... args) {
  throw error(concat("mlkv: ", std::forward<Args>(args)...));
}
}  // namespace detail

}  // namespace mlkv

/// Throws mlkv::error("mlkv: " + the streamed arguments) when `cond` is false.
/// Example: MLKV_CHECK(seq < batch, "sequence ", seq, " is out of range [0, ", batch, ")");
#define MLKV_CHECK(cond, ...)                         \
  do {                                                \
    if (!(cond)) ::mlkv::detail::fail(__VA_ARGS__);   \
  } while (false)
