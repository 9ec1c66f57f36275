// signal/line.h — formatting a message without malloc, locale or stdio.
//
// The handler writes its one line to stderr and fills FaultFailure texts with this: appends
// into a fixed, always NUL-terminated buffer, truncating silently. Every member function is
// async-signal-safe.
#pragma once

#include <cstddef>
#include <cstdint>

namespace mapwright::detail {

class LineWriter {
 public:
  // Writes into buffer[0, capacity); capacity must be at least 1. Async-signal-safe.
  LineWriter(char* buffer, std::size_t capacity) noexcept : buffer_(buffer), capacity_(capacity) {
    buffer_[0] = '\0';
  }

  // Appends a NUL-terminated string. Async-signal-safe.
  LineWriter& text(const char* s) noexcept {
    while (s != nullptr && *s != '\0') put(*s++);
    return *this;
  }
  // Appends a decimal number. Async-signal-safe.
  LineWriter& number(std::uint64_t value) noexcept {
    char digits[20];
    int n = 0;
    do {
      digits[n++] = static_cast<char>('0' + value % 10);
      value /= 10;
    } while (value != 0);
    while (n > 0) put(digits[--n]);
    return *this;
  }
  // Appends a byte count the way a person reads it: "8 GiB", "3 MiB", "12 KiB" when it is an
  // exact multiple, else "12345 bytes". Async-signal-safe.
  LineWriter& bytes(std::uint64_t value) noexcept {
    constexpr std::uint64_t kKiB = 1024;
    if (value != 0 && value % (kKiB * kKiB * kKiB) == 0) return number(value >> 30).text(" GiB");
    if (value != 0 && value % (kKiB * kKiB) == 0) return number(value >> 20).text(" MiB");
    if (value != 0 && value % kKiB == 0) return number(value >> 10).text(" KiB");
    return number(value).text(" bytes");
  }
  // Appends the description of an errno value ("No space left on device") from glibc's
  // static table (strerrordesc_np: no locale, no allocation). Async-signal-safe.
  LineWriter& error_text(int error) noexcept;

  const char* c_str() const noexcept { return buffer_; }
  std::size_t size() const noexcept { return length_; }

 private:
  void put(char c) noexcept {
    if (length_ + 1 < capacity_) {
      buffer_[length_++] = c;
      buffer_[length_] = '\0';
    }
  }

  char* buffer_;
  std::size_t capacity_;
  std::size_t length_ = 0;
};

}  // namespace mapwright::detail
