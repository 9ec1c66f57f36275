#include "content.h"

#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <vector>

namespace mapwright::test {

std::uint64_t test_bytes() {
  const char* env = std::getenv("MAPWRIGHT_TEST_BYTES");
  if (env == nullptr || *env == '\0') return kGiB;
  char* end = nullptr;
  std::uint64_t value = std::strtoull(env, &end, 10);
  switch (end != nullptr ? *end : '\0') {
    case 'k': case 'K': value *= kKiB; break;
    case 'm': case 'M': value *= kMiB; break;
    case 'g': case 'G': value *= kGiB; break;
    default: break;
  }
  return std::max<std::uint64_t>(value, kMiB);
}

std::uint64_t pattern(std::uint64_t index, std::uint64_t seed) {
  std::uint64_t z = index * 0x9E3779B97F4A7C15ull + seed * 0xBF58476D1CE4E5B9ull + 1;
  z = (z ^ (z >> 31)) * 0x94D049BB133111EBull;
  return z ^ (z >> 29);
}

void fill(std::byte* base, std::uint64_t first, std::uint64_t last, std::uint64_t seed) {
  auto* words = reinterpret_cast<std::uint64_t*>(base);
  for (std::uint64_t i = first; i < last; ++i) words[i] = pattern(i, seed);
}

unsigned char byte_pattern(std::uint64_t offset) {
  return static_cast<unsigned char>((offset * 131 + 7) & 0xff);
}

std::size_t pread_all(int fd, void* buffer, std::size_t length, std::uint64_t offset) {
  auto* p = static_cast<char*>(buffer);
  std::size_t done = 0;
  while (done < length) {
    const ssize_t n = ::pread(fd, p + done, length - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    done += static_cast<std::size_t>(n);
  }
  return done;
}

std::string check_words(int fd, std::uint64_t first, std::uint64_t last, std::uint64_t seed) {
  constexpr std::uint64_t kChunkWords = 128 * 1024;  // 1 MiB
  std::vector<std::uint64_t> buffer(kChunkWords);
  for (std::uint64_t w = first; w < last; w += kChunkWords) {
    const std::uint64_t n = std::min(kChunkWords, last - w);
    if (pread_all(fd, buffer.data(), n * 8, w * 8) != n * 8) {
      return "short pread at offset " + std::to_string(w * 8);
    }
    for (std::uint64_t i = 0; i < n; ++i) {
      if (buffer[i] != pattern(w + i, seed)) {
        return "mismatch at offset " + std::to_string((w + i) * 8);
      }
    }
  }
  return "";
}

std::vector<std::byte> read_file_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  const std::vector<char> chars((std::istreambuf_iterator<char>(in)),
                                std::istreambuf_iterator<char>());
  std::vector<std::byte> bytes(chars.size());
  if (!chars.empty()) std::memcpy(bytes.data(), chars.data(), chars.size());
  return bytes;
}

long long proc_write_bytes() {
  std::ifstream in("/proc/self/io");
  std::string key;
  long long value = 0;
  while (in >> key >> value) {
    if (key == "write_bytes:") return value;
  }
  return -1;
}

}  // namespace mapwright::test
