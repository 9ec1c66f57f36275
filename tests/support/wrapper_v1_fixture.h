// tests/support/wrapper_v1_fixture.h — a format version 1 wrapper, as the tool wrote it before
// whole-file integrity (format version 2), kept as bytes so that it stays version 1 whatever
// the writer does now. Made with mapwright 0.1.0 (format version 1):
//
//   printf 'hello, version 1\n' > g.txt; : > e.txt
//   mapwright pack -o v1.mwr --data greeting=g.txt --data empty=e.txt
//
// The file is 4336 bytes, zero but for the runs below (offset, bytes in hex).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

namespace mapwright::test {

inline std::vector<std::byte> wrapper_v1_fixture() {
  struct Run {
    std::size_t offset;
    std::string_view hex;
  };
  static constexpr Run kRuns[] = {
      {0,
       "100000001502"},
      {72,
       "e4070000020002"},
      {4096,
       "68656c6c6f2c2076657273696f6e20310a000000000000004d57524150504552"
       "0100000000000000050000008200000009000000670000006d61707772696768"
       "7420302e312e3000080000000200040001000000000000001100000000000000"
       "250000004a0000002900000082"},
      {4216,
       "290000000e00000001"},
      {4240,
       "21000000320000002100000082"},
      {4264,
       "21000000060000006772656574696e67"},
      {4288,
       "65ea14cd0c335b700303160836642f4a95ffffff8a000000656d707479000000"
       "99aa06d3014798d86001c324468d497f"},
  };
  std::vector<std::byte> bytes(4336);
  const auto nibble = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
  for (const Run& run : kRuns) {
    for (std::size_t i = 0; i + 1 < run.hex.size(); i += 2) {
      bytes[run.offset + i / 2] = static_cast<std::byte>(nibble(run.hex[i]) << 4 | nibble(run.hex[i + 1]));
    }
  }
  return bytes;
}

// The entries it holds.
inline constexpr std::string_view kWrapperV1Greeting = "hello, version 1\n";

}  // namespace mapwright::test
