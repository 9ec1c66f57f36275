// grow_in_place: writes a large file by plain stores, with no capacity checks and no copy,
// and prints its size, the growth steps the SIGBUS handler took, and the throughput.
//
//     grow_in_place [PATH] [MiB]      (defaults: grow_in_place.out, 1024 MiB)
#include <mapwright/mapwright.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

int main(int argc, char** argv) {
  const std::string path = argc > 1 ? argv[1] : "grow_in_place.out";
  const std::uint64_t mib = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 1024;
  const std::uint64_t bytes = mib << 20;

  try {
    // A staged region: the file appears at `path` only when publish() succeeds.
    mapwright::Region region = mapwright::Region::staged(path);
    std::printf("reserved %llu GiB of address space at %p over an unnamed file beside %s\n",
                static_cast<unsigned long long>(region.capacity() >> 30),
                static_cast<void*>(region.data()), path.c_str());

    const auto start = std::chrono::steady_clock::now();
    mapwright::guarded([&] {
      // Plain stores, 8 bytes at a time, straight into the file's pages. Every time they run
      // past the end of the file, the handler extends it and the store retries.
      auto* words = reinterpret_cast<std::uint64_t*>(region.data());
      for (std::uint64_t i = 0; i < bytes / 8; ++i) words[i] = i * 0x9E3779B97F4A7C15ull;
    });
    const auto stored = std::chrono::steady_clock::now();
    region.finish(bytes);  // exact size: drop the last step's slack
    region.publish();      // fsync, then link into place atomically
    const auto published = std::chrono::steady_clock::now();

    const mapwright::RegionStats stats = region.stats();
    const double store_s = std::chrono::duration<double>(stored - start).count();
    const double publish_s = std::chrono::duration<double>(published - stored).count();
    std::printf("wrote %llu MiB by plain stores in %.3f s (%.0f MiB/s)\n",
                static_cast<unsigned long long>(mib), store_s, static_cast<double>(mib) / store_s);
    std::printf("growth: %llu steps, %llu SIGBUS faults resolved, final size %llu bytes\n",
                static_cast<unsigned long long>(stats.growths),
                static_cast<unsigned long long>(stats.faults),
                static_cast<unsigned long long>(region.size()));
    std::printf("published %s (fsync + link + rename) in %.3f s\n", path.c_str(), publish_s);
  } catch (const mapwright::Error& e) {
    std::fprintf(stderr, "grow_in_place: %s\n", e.what());
    return 1;
  }
  return 0;
}
