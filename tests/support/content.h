// tests/support/content.h — the test size, the byte patterns the suites store, and checks of
// a file's contents through pread(2), a read path independent of any mapping of the file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace mapwright::test {

// Byte sizes.
constexpr std::uint64_t kKiB = 1ull << 10;
constexpr std::uint64_t kMiB = 1ull << 20;
constexpr std::uint64_t kGiB = 1ull << 30;

// The size of the big tests: MAPWRIGHT_TEST_BYTES ("67108864", "64M", "1G"; a k/m/g suffix
// multiplies by KiB/MiB/GiB), at least 1 MiB; 1 GiB when unset or empty.
std::uint64_t test_bytes();

// A word of the test pattern: distinct per index and per seed, never zero in practice.
std::uint64_t pattern(std::uint64_t index, std::uint64_t seed);

// Plain 8-byte stores of the pattern into words [first, last) of `base`.
void fill(std::byte* base, std::uint64_t first, std::uint64_t last, std::uint64_t seed);

// A byte of the single-byte test pattern, by offset (for stores one byte at a time).
unsigned char byte_pattern(std::uint64_t offset);

// pread exactly `length` bytes at `offset` (retrying on EINTR and short reads), or fewer at
// end of file. Returns the bytes read.
std::size_t pread_all(int fd, void* buffer, std::size_t length, std::uint64_t offset);

// Checks words [first, last) of the file behind `fd` against the pattern, by pread.
// Returns "" or a description of the first mismatch (or short read).
std::string check_words(int fd, std::uint64_t first, std::uint64_t last, std::uint64_t seed);

// The whole file's bytes (none if it cannot be read).
std::vector<std::byte> read_file_bytes(const std::filesystem::path& path);

// write_bytes from /proc/self/io: the bytes this process has caused to be sent to storage;
// -1 if it cannot be read.
long long proc_write_bytes();

}  // namespace mapwright::test
