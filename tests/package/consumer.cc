// Built against an installed mapwright: grows a memfd region by stores and seals it, then
// writes a wrapper file and reads it back. Arg: a scratch directory for the wrapper.
#include <mapwright/mapwright.h>

#include <cstdio>
#include <cstring>
#include <string>

int main(int argc, char** argv) {
  auto region = mapwright::Region::memfd("consumer");
  std::memset(region.data(), 0x5a, 3 << 20);  // runs past the end: the handler grows the memfd
  region.finish(3 << 20);
  const mapwright::SealedImage image = std::move(region).seal();
  const auto bytes = image.map();
  bool ok = image.size() == (3u << 20) && bytes[12345] == std::byte{0x5a};

  const std::string path = std::string(argc > 1 ? argv[1] : ".") + "/consumer.mwr";
  mapwright::WrapperWriter writer(path);
  writer.add_data("sealed", bytes);
  writer.publish();
  const auto wrapper = mapwright::Wrapper::open(path);
  wrapper.verify();
  ok = ok && wrapper.entry("sealed").size == image.size();
  std::printf("consumer: %s (%llu bytes sealed, wrapper of %llu bytes)\n", ok ? "ok" : "WRONG",
              static_cast<unsigned long long>(image.size()),
              static_cast<unsigned long long>(wrapper.file_size()));
  return ok ? 0 : 1;
}
