// instance_pool — a "runtime" that instantiates the same 64 MiB table many times (100,000 by
// default; the first argument changes it), each instance looking up a few entries and
// writing a few pages of its own, as a request handler with a private copy would. The table
// is a sealed image; each instance is a copy-on-write slot of an InstancePool, reset on
// return by dropping only the pages it wrote. For comparison it times a few instances made
// the plain way: a fresh mapping and a copy of the whole table.
//
//   build/release/examples/instance_pool [COUNT]
#include <sys/mman.h>

#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include <mapwright/error.h>
#include <mapwright/pool.h>
#include <mapwright/region.h>

namespace {

constexpr std::uint64_t kEntries = 8u << 20;  // 8 Mi entries of 8 bytes: 64 MiB

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

std::uint64_t entry_value(std::uint64_t i) { return i * 0x9e3779b97f4a7c15ull; }

}  // namespace

int main(int argc, char** argv) {
  const long count = argc > 1 ? std::strtol(argv[1], nullptr, 10) : 100000;
  if (count <= 0) {
    std::fprintf(stderr, "usage: instance_pool [COUNT > 0]\n");
    return 2;
  }
  try {
    // The table, built in place and sealed: nobody can change it from here on.
    mapwright::Region region = mapwright::Region::memfd("lookup-table");
    region.ensure(kEntries * 8);
    auto* entries = reinterpret_cast<std::uint64_t*>(region.data());
    for (std::uint64_t i = 0; i < kEntries; ++i) entries[i] = entry_value(i);
    region.finish(kEntries * 8);
    const mapwright::SealedImage table = std::move(region).seal();

    // Lookups read pages all over the table, so after a while each slot has all of it
    // mapped: write-protect tracking finds the few written pages without looking at every
    // mapped one (pool.h). Where userfaultfd is not allowed, the automatic method.
    mapwright::InstancePoolOptions options;
    options.slots = 4;
    options.slot_size = 128ull << 20;
    options.reset = mapwright::ResetMethod::kWriteProtect;
    options.name = "lookup tables";
    mapwright::InstancePool pool = [&] {
      try {
        return mapwright::InstancePool(options);
      } catch (const mapwright::Error& e) {
        if (e.error() != ENOTSUP) throw;
        std::printf("(%s: using the automatic method)\n", e.what());
        options.reset = mapwright::ResetMethod::kAutomatic;
        return mapwright::InstancePool(options);
      }
    }();

    std::uint64_t random = 88172645463325252ull;
    const auto next = [&] {
      random ^= random << 13;
      random ^= random >> 7;
      random ^= random << 17;
      return random;
    };
    std::uint64_t checksum = 0;
    long wrong = 0;
    const Clock::time_point start = Clock::now();
    for (long n = 0; n < count; ++n) {
      mapwright::Instance instance = pool.instantiate(table);
      auto* t = reinterpret_cast<std::uint64_t*>(instance.base());
      // A few lookups: every instance must see the table as built, whatever the ones
      // before it wrote.
      for (int i = 0; i < 4; ++i) {
        const std::uint64_t at = next() % kEntries;
        if (t[at] != entry_value(at)) ++wrong;
        checksum += t[at];
      }
      // ... and a few pages of its own changes.
      for (int i = 0; i < 3; ++i) t[next() % kEntries] = n;
    }
    const double pooled = seconds_since(start);

    // The plain way, a few times: mmap + memcpy of the whole table.
    constexpr int kPlain = 5;
    const std::span<const std::byte> bytes = table.map();
    const Clock::time_point plain_start = Clock::now();
    for (int n = 0; n < kPlain; ++n) {
      void* p = ::mmap(nullptr, bytes.size(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED) return 1;
      std::memcpy(p, bytes.data(), bytes.size());
      static_cast<std::uint64_t*>(p)[next() % kEntries] = n;
      ::munmap(p, bytes.size());
    }
    const double plain = seconds_since(plain_start) / kPlain;

    const mapwright::InstancePoolStats stats = pool.stats();
    std::printf("table: %" PRIu64 " MiB sealed image; pool of %zu slots, reset by %s\n",
                table.size() >> 20, stats.slots, mapwright::to_string(stats.reset_method));
    std::printf("%ld instances (4 lookups, 3 pages written each) in %.3f s: %.1f us per instance\n",
                count, pooled, pooled / static_cast<double>(count) * 1e6);
    std::printf("image mappings made: %" PRIu64 "; instances in a slot that held the table: %" PRIu64 "\n",
                stats.mappings, stats.same_image);
    std::printf("pages restored at reset: %.2f per instance\n",
                static_cast<double>(stats.pages_restored) / static_cast<double>(stats.resets));
    std::printf("mmap + memcpy of the table: %.1f ms per instance, %.0fx slower\n", plain * 1e3,
                plain / (pooled / static_cast<double>(count)));
    std::printf("lookups that saw another instance's writes: %ld (checksum %016" PRIx64 ")\n",
                wrong, checksum);
    return wrong == 0 ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "instance_pool: %s\n", e.what());
    return 1;
  }
}
