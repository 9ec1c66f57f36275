// growth_bench — what one growth event costs, and how many a fill takes.
//
//   growth/memfd/region     A memfd Region with min_step = max_step = 64 KiB. Each iteration
//                           stores one byte at the start of the next 64 KiB step, past the end
//                           of the file: one SIGBUS, the handler's table lookup, one
//                           ftruncate(+64 KiB), the return, and the retried store's page fault.
//   growth/memfd/presized   The same stores into a memfd mapping that already has its full
//                           size: the page fault alone.
//   growth/disk/region      As growth/memfd/region for a file in MAPWRIGHT_BENCH_DIR: the
//                           handler grows it with fallocate(+64 KiB).
//   growth/disk/presized    The same stores into a file fallocate()d to its full size up
//                           front, so both store into allocated, unwritten blocks.
// In the RATIO table, delta = region - presized is the cost of one growth event.
//
// Timed: the stores only (real time). Every 4096 steps (256 MiB of address space) the region
// or mapping is replaced by a fresh one with the timer paused; that is not timed.
//
//   growth/events_per_fill  A memfd Region with default options filled with
//                           MAPWRIGHT_BENCH_BYTES (default 1 GiB) by 8-byte stores; counters
//                           growths and faults from region.stats(). One timed iteration.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <mapwright/mapwright.h>

#include <cerrno>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <system_error>

#include "bench_main.h"

namespace mapwright::bench {
namespace {

constexpr std::uint64_t kStep = 64 << 10;
constexpr std::uint64_t kSteps = 4096;  // stores per region before it is replaced
constexpr std::uint64_t kSpan = kStep * kSteps;

// One byte stored at `p`; volatile, so that it is neither merged nor dropped.
inline void touch(std::byte* p) noexcept { *reinterpret_cast<volatile unsigned char*>(p) = 1; }

const char* target_name(Target target) { return target == Target::kMemfd ? "memfd" : "disk"; }

struct RemoveOnExit {
  std::filesystem::path path;
  ~RemoveOnExit() {
    std::error_code ignored;
    std::filesystem::remove(path, ignored);
  }
};

// A file of kSpan bytes, all backed (ftruncate for a memfd, fallocate for a disk file),
// mapped MAP_SHARED.
class Presized {
 public:
  Presized(Target target, const std::filesystem::path& path) : file_(target, path) {
    const int err = target == Target::kMemfd
                        ? (::ftruncate(file_.fd(), kSpan) == 0 ? 0 : errno)
                        : ::posix_fallocate(file_.fd(), 0, kSpan);
    if (err != 0) throw std::system_error(err, std::generic_category(), "sizing the file");
    void* map = ::mmap(nullptr, kSpan, PROT_READ | PROT_WRITE, MAP_SHARED, file_.fd(), 0);
    if (map == MAP_FAILED) throw std::system_error(errno, std::generic_category(), "mmap");
    data_ = static_cast<std::byte*>(map);
  }
  ~Presized() { ::munmap(data_, kSpan); }
  Presized(const Presized&) = delete;
  Presized& operator=(const Presized&) = delete;

  std::byte* data() const noexcept { return data_; }

 private:
  ScratchFile file_;
  std::byte* data_ = nullptr;
};

void growth_region(benchmark::State& state, Target target) {
  skip_on_error(state, [&] {
    RegionOptions options;
    options.capacity = kSpan;
    options.min_step = kStep;
    options.max_step = kStep;
    const std::filesystem::path path = scratch_path("growth");
    const RemoveOnExit cleanup{path};
    auto make = [&] {
      return target == Target::kMemfd ? Region::memfd("mapwright-bench-growth", options)
                                       : Region::file(path, options);
    };
    std::optional<Region> region(make());
    std::uint64_t step = 0;
    std::uint64_t growths = 0;
    for (auto _ : state) {
      if (step == kSteps) {
        state.PauseTiming();
        growths += region->stats().growths;
        region.reset();
        region.emplace(make());
        step = 0;
        state.ResumeTiming();
      }
      touch(region->data() + step * kStep);
      ++step;
    }
    growths += region->stats().growths;
    // 1.0 when every timed store was one growth event, as intended.
    state.counters["growths_per_store"] =
        static_cast<double>(growths) / static_cast<double>(state.iterations());
  });
}

void growth_presized(benchmark::State& state, Target target) {
  skip_on_error(state, [&] {
    const std::filesystem::path path = scratch_path("growth-presized");
    auto mapping = std::make_unique<Presized>(target, path);
    std::uint64_t step = 0;
    for (auto _ : state) {
      if (step == kSteps) {
        state.PauseTiming();
        mapping.reset();
        mapping = std::make_unique<Presized>(target, path);
        step = 0;
        state.ResumeTiming();
      }
      touch(mapping->data() + step * kStep);
      ++step;
    }
  });
}

void growth_events_per_fill(benchmark::State& state) {
  skip_on_error(state, [&] {
    const std::uint64_t bytes = bench_bytes();
    RegionStats stats;
    for (auto _ : state) {
      Region region = Region::memfd("mapwright-bench-events");
      guarded([&] {
        auto* words = reinterpret_cast<std::uint64_t*>(region.data());
        for (std::uint64_t i = 0; i < bytes / 8; ++i) words[i] = i;
      });
      region.finish(bytes);
      stats = region.stats();
    }
    state.counters["growths"] = static_cast<double>(stats.growths);
    state.counters["faults"] = static_cast<double>(stats.faults);
    state.SetLabel("default options, filled " + std::to_string(bytes >> 20) + " MiB");
  });
}

}  // namespace

void register_benchmarks() {
  (void)bench_bytes();  // a bad MAPWRIGHT_BENCH_BYTES fails here, before anything runs
  for (const Target target : {Target::kMemfd, Target::kDisk}) {
    const std::string prefix = std::string("growth/") + target_name(target) + "/";
    benchmark::RegisterBenchmark((prefix + "presized").c_str(), growth_presized, target)
        ->UseRealTime()
        ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark((prefix + "region").c_str(), growth_region, target)
        ->UseRealTime()
        ->Unit(benchmark::kMicrosecond);
    compare(prefix + "region", prefix + "presized");
  }
  benchmark::RegisterBenchmark("growth/events_per_fill", growth_events_per_fill)
      ->Iterations(1)
      ->Repetitions(1)
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
}

}  // namespace mapwright::bench
