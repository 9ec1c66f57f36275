// tests/support/wrapper_helpers.h — small helpers the wrapper, loader and integrity tests
// share: writing bytes to a file, deterministic pseudo-random bytes, an entry's chunks joined,
// and expecting a mapwright::Error with a given code and message parts.
#pragma once

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <span>
#include <string>
#include <vector>

#include "mapwright/error.h"
#include "mapwright/wrapper.h"

namespace mapwright::test {

inline void write_file(const std::filesystem::path& path, std::span<const std::byte> bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

// `size` pseudo-random bytes (xorshift), the same for the same seed.
inline std::vector<std::byte> pattern_bytes(std::size_t size, unsigned seed) {
  std::vector<std::byte> bytes(size);
  std::uint64_t x = 0x9e3779b97f4a7c15ull * (seed + 1);
  for (std::byte& b : bytes) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    b = static_cast<std::byte>(x);
  }
  return bytes;
}

// The entry's bytes, its chunks joined.
inline std::vector<std::byte> joined(const WrapperEntry& entry) {
  std::vector<std::byte> bytes;
  for (const auto& chunk : entry.chunks) bytes.insert(bytes.end(), chunk.begin(), chunk.end());
  return bytes;
}

// Expects `body` to throw a mapwright::Error with `code` whose message contains each of `parts`.
template <class Body>
void expect_error(Body&& body, int code, std::initializer_list<std::string> parts) {
  try {
    body();
    ADD_FAILURE() << "no error thrown; expected one containing '" << *parts.begin() << "'";
  } catch (const Error& e) {
    EXPECT_EQ(e.error(), code) << e.what();
    for (const std::string& part : parts) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos)
          << "'" << e.what() << "' does not contain '" << part << "'";
    }
  }
}

}  // namespace mapwright::test
