// Built against an installed mapwright: grows a memfd region by stores and seals it.
#include <mapwright/mapwright.h>

#include <cstdio>
#include <cstring>

int main() {
  auto region = mapwright::Region::memfd("consumer");
  std::memset(region.data(), 0x5a, 3 << 20);  // runs past the end: the handler grows the memfd
  region.finish(3 << 20);
  const mapwright::SealedImage image = std::move(region).seal();
  const auto bytes = image.map();
  const bool ok = image.size() == (3u << 20) && bytes[12345] == std::byte{0x5a};
  std::printf("consumer: %s (%llu bytes sealed)\n", ok ? "ok" : "WRONG",
              static_cast<unsigned long long>(image.size()));
  return ok ? 0 : 1;
}
