// fill_bench — writing N bytes (MAPWRIGHT_BENCH_BYTES, default 1 GiB) into a file with the
// same loop of 8-byte stores, four ways, into a memfd and into a disk file in
// MAPWRIGHT_BENCH_DIR (default: the current directory):
//
//   fill/<target>/region    (a) a grow-on-fault mapwright Region: stores run past the end of
//                               the file, the SIGBUS handler grows it (x2 from 1 MiB), then
//                               finish(N) sets the exact size.
//   fill/<target>/presized  (b) the limit: ftruncate(N), mmap MAP_SHARED, stores. No growth.
//   fill/<target>/vector    (c) what a user writes today: push_back into a growing
//                               std::vector<uint64_t>, then one write(2) of it.
//   fill/<target>/write     (d) write(2) in 1 MiB chunks from one reused buffer, each chunk
//                               filled by the store loop first.
//
// RATIO rows compare (a), (c), (d) with (b). Target: (a) at >= 0.95x the speed of (b).
//
// Timed (manual time, steady_clock), from an empty open file to N bytes in it:
//   (a) the stores and finish(N); (b) ftruncate, mmap and the stores; (c) the push_backs
//   (with the vector's reallocations) and the write(2); (d) the chunk fills and writes.
// Not timed: creating the empty file (memfd_create / open O_TRUNC; for (a) the Region, which
// also reserves and registers its address range), and the teardown (munmap, freeing the
// vector, close, unlink). Files are deleted and recreated every iteration.
// No fsync or msync anywhere: this measures writing into the page cache. Write-back to the
// disk is not part of any variant (each file is unlinked before the kernel writes it back).
#include <sys/mman.h>
#include <unistd.h>

#include <mapwright/mapwright.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include "bench_main.h"

namespace mapwright::bench {
namespace {

using Clock = std::chrono::steady_clock;

constexpr std::uint64_t kPattern = 0x9E3779B97F4A7C15ull;
constexpr std::uint64_t kChunk = 1ull << 20;  // (d)'s write size

// The store loop every variant uses (never inlined, so it is literally the same code):
// dst[i] = word number (first + i), scrambled.
[[gnu::noinline]] void store_words(std::uint64_t* dst, std::uint64_t first,
                                   std::uint64_t count) noexcept {
  for (std::uint64_t i = 0; i < count; ++i) dst[i] = (first + i) ^ kPattern;
}

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Removes a file the Region created, also when the benchmark ends by an exception.
struct RemoveOnExit {
  std::filesystem::path path;
  ~RemoveOnExit() {
    std::error_code ignored;
    std::filesystem::remove(path, ignored);
  }
};

const char* target_name(Target target) { return target == Target::kMemfd ? "memfd" : "disk"; }

// (a) grow-on-fault Region, then finish().
void fill_region(benchmark::State& state, Target target) {
  skip_on_error(state, [&] {
    const std::uint64_t bytes = bench_bytes();
    const std::filesystem::path path = scratch_path("fill-region");
    const RemoveOnExit cleanup{path};
    RegionStats stats;
    for (auto _ : state) {
      std::optional<Region> region;
      region.emplace(target == Target::kMemfd ? Region::memfd("mapwright-bench-fill")
                                              : Region::file(path));
      const auto start = Clock::now();
      guarded([&] { store_words(reinterpret_cast<std::uint64_t*>(region->data()), 0, bytes / 8); });
      region->finish(bytes);
      state.SetIterationTime(seconds_since(start));
      stats = region->stats();
      region.reset();
      if (target == Target::kDisk) std::filesystem::remove(path);
    }
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * bytes));
    state.counters["growths"] = static_cast<double>(stats.growths);
    state.counters["faults"] = static_cast<double>(stats.faults);
  });
}

// (b) the limit: a mapping of a file that already has its final size.
void fill_presized(benchmark::State& state, Target target) {
  skip_on_error(state, [&] {
    const std::uint64_t bytes = bench_bytes();
    const std::filesystem::path path = scratch_path("fill-presized");
    for (auto _ : state) {
      const ScratchFile file(target, path);
      const auto start = Clock::now();
      if (::ftruncate(file.fd(), static_cast<off_t>(bytes)) != 0) {
        throw std::system_error(errno, std::generic_category(), "ftruncate");
      }
      void* map = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, file.fd(), 0);
      if (map == MAP_FAILED) throw std::system_error(errno, std::generic_category(), "mmap");
      store_words(static_cast<std::uint64_t*>(map), 0, bytes / 8);
      state.SetIterationTime(seconds_since(start));
      ::munmap(map, bytes);
    }
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * bytes));
  });
}

// (c) a growing std::vector, then one write(2).
void fill_vector(benchmark::State& state, Target target) {
  skip_on_error(state, [&] {
    const std::uint64_t bytes = bench_bytes();
    const std::filesystem::path path = scratch_path("fill-vector");
    for (auto _ : state) {
      const ScratchFile file(target, path);
      std::vector<std::uint64_t> words;  // freed after the timed part
      const auto start = Clock::now();
      for (std::uint64_t i = 0; i < bytes / 8; ++i) words.push_back(i ^ kPattern);
      write_all(file.fd(), words.data(), bytes);
      state.SetIterationTime(seconds_since(start));
    }
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * bytes));
  });
}

// (d) write(2) in 1 MiB chunks from one reused buffer.
void fill_write(benchmark::State& state, Target target) {
  skip_on_error(state, [&] {
    const std::uint64_t bytes = bench_bytes();
    const std::filesystem::path path = scratch_path("fill-write");
    std::vector<std::uint64_t> buffer(kChunk / 8);  // allocated and touched once, untimed
    for (auto _ : state) {
      const ScratchFile file(target, path);
      const auto start = Clock::now();
      for (std::uint64_t offset = 0; offset < bytes; offset += kChunk) {
        const std::uint64_t n = bytes - offset < kChunk ? bytes - offset : kChunk;
        store_words(buffer.data(), offset / 8, n / 8);
        write_all(file.fd(), buffer.data(), n);
      }
      state.SetIterationTime(seconds_since(start));
    }
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * bytes));
  });
}

}  // namespace

void register_benchmarks() {
  (void)bench_bytes();  // a bad MAPWRIGHT_BENCH_BYTES fails here, before anything runs
  for (const Target target : {Target::kMemfd, Target::kDisk}) {
    const std::string prefix = std::string("fill/") + target_name(target) + "/";
    benchmark::RegisterBenchmark((prefix + "presized").c_str(), fill_presized, target)
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark((prefix + "region").c_str(), fill_region, target)
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark((prefix + "vector").c_str(), fill_vector, target)
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark((prefix + "write").c_str(), fill_write, target)
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
    for (const char* variant : {"region", "vector", "write"}) {
      compare(prefix + variant, prefix + "presized");
    }
  }
}

}  // namespace mapwright::bench
