#pragma once
/// \file io/file.hpp
/// File plumbing shared by the readers and writers: a read-only memory map, whole-file reads
/// with a size limit, and atomic writes (a temporary file in the same directory, renamed over
/// the target only once everything is written and flushed, so a failed write leaves no half
/// file and an existing file untouched). POSIX.

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "../error.hpp"

namespace mlkv::io {

namespace detail {
inline std::string errno_text(int e) { return std::string(std::strerror(e)); }

/// Closes a descriptor on scope exit unless released.
struct fd_guard {
  int fd = -1;
  ~fd_guard() {
    if (fd >= 0) ::close(fd);
  }
};
}  // namespace detail

/// A whole file mapped read-only. Move-only; unmapped on destruction.
class mapped_file {
 public:
  mapped_file() = default;
  /// Maps `path`; throws mlkv::error naming the path and the system's reason.
  explicit mapped_file(const std::filesystem::path& path) {
    detail::fd_guard g{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
    if (g.fd < 0) ::mlkv::detail::fail("cannot open ", path.string(), ": ", detail::errno_text(errno));
    struct stat st {};
    if (::fstat(g.fd, &st) != 0) ::mlkv::detail::fail("cannot stat ", path.string(), ": ", detail::errno_text(errno));
    MLKV_CHECK(S_ISREG(st.st_mode), path.string(), " is not a regular file");
    size_ = static_cast<std::size_t>(st.st_size);
    if (size_ == 0) return;  // nothing to map; bytes() is empty
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, g.fd, 0);
    if (p == MAP_FAILED) ::mlkv::detail::fail("cannot map ", path.string(), ": ", detail::errno_text(errno));
    addr_ = p;
  }
  mapped_file(mapped_file&& o) noexcept : addr_(std::exchange(o.addr_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  mapped_file& operator=(mapped_file&& o) noexcept {
    if (this != &o) {
      unmap();
      addr_ = std::exchange(o.addr_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }
  mapped_file(const mapped_file&) = delete;
  mapped_file& operator=(const mapped_file&) = delete;
  ~mapped_file() { unmap(); }

  /// The file's bytes (valid while this object lives).
  std::span<const std::byte> bytes() const { return {static_cast<const std::byte*>(addr_), addr_ ? size_ : 0}; }
  std::size_t size() const { return size_; }

 private:
  void unmap() {
    if (addr_ != nullptr) ::munmap(addr_, size_);
    addr_ = nullptr;
    size_ = 0;
  }
  void* addr_ = nullptr;
  std::size_t size_ = 0;
};

/// Reads a whole (text) file; refuses files larger than `max_bytes`.
inline std::string read_file(const std::filesystem::path& path, std::size_t max_bytes = std::size_t{64} << 20) {
  mapped_file m(path);
  MLKV_CHECK(m.size() <= max_bytes, path.string(), " is ", m.size(), " bytes; at most ", max_bytes, " are read");
  const auto b = m.bytes();
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

/// Writes a file atomically from pieces: everything goes to a temporary file next to `path`,
/// which is flushed to disk and then renamed over `path`. On any failure the temporary file is
/// removed and `path` is left as it was.
inline void write_file_atomic(const std::filesystem::path& path, std::span<const std::span<const std::byte>> pieces) {
  static std::atomic<unsigned> counter{0};
  const std::filesystem::path dir = path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
  const std::filesystem::path tmp =
      dir / ("." + path.filename().string() + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++));
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) ::mlkv::detail::fail("cannot create ", tmp.string(), " (to write ", path.string(), "): ", detail::errno_text(errno));
  auto abandon = [&](const std::string& why) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    ::mlkv::detail::fail("cannot write ", path.string(), ": ", why);
  };
  for (std::span<const std::byte> piece : pieces) {
    const std::byte* p = piece.data();
    std::size_t left = piece.size();
    while (left > 0) {
      const ::ssize_t n = ::write(fd, p, left);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) abandon(n < 0 ? detail::errno_text(errno) : std::string("write returned 0"));
      p += n;
      left -= static_cast<std::size_t>(n);
    }
  }
  if (::fsync(fd) != 0) abandon(detail::errno_text(errno));
  const int fd_closed = ::close(fd);
  fd = -1;
  if (fd_closed != 0) abandon(detail::errno_text(errno));
  if (::rename(tmp.c_str(), path.c_str()) != 0) abandon(detail::errno_text(errno));
}

/// write_file_atomic for one text.
inline void write_file_atomic(const std::filesystem::path& path, std::string_view text) {
  const std::span<const std::byte> piece(reinterpret_cast<const std::byte*>(text.data()), text.size());
  write_file_atomic(path, std::span<const std::span<const std::byte>>(&piece, 1));
}

}  // namespace mlkv::io
