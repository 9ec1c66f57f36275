// tests/bench/bench_main.h — what mapwright's benchmark programs share.
//
// Each program (fill_bench, growth_bench, range_table_bench) defines register_benchmarks(),
// which registers its benchmarks with benchmark::RegisterBenchmark and names the comparisons
// its RATIO table shows with compare(). The shared main (bench_main.cc):
//   * runs every benchmark with 5 repetitions unless --benchmark_repetitions=N is given, in
//     random order (--benchmark_enable_random_interleaving=true, so a baseline and its
//     subjects see the same machine noise), and displays only the aggregates (mean, median,
//     stddev, cv) of repeated benchmarks; each default can be overridden on the command line;
//   * after the run, prints a RATIO table: for each comparison, the subject's median time
//     over its baseline's median from the same run, so machine noise between runs cancels.
//     With a single repetition the one measurement stands in for the median.
// Google Benchmark's other flags work as usual (--benchmark_filter, --benchmark_min_time,
// --benchmark_out=FILE --benchmark_out_format=json); --benchmark_format is ignored, the
// console output is always this reporter's.
//
// Environment, read by the programs that write files:
//   MAPWRIGHT_BENCH_BYTES  bytes to fill (default 1 GiB; a positive multiple of 8)
//   MAPWRIGHT_BENCH_DIR    directory for disk files (default: the current directory)
#pragma once

#include <benchmark/benchmark.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace mapwright::bench {

// Which measured time a comparison uses.
enum class Clock {
  kReal,  // wall time per iteration (or the manual time, for UseManualTime benchmarks)
  kCpu,   // CPU time per iteration on the benchmark's threads: with ->Threads(n), the cost of
          // one operation on each thread while all n run
};

// Adds comparisons to the RATIO table: every benchmark named `subject` + rest (rest is empty
// or starts with '/', e.g. "/10000/threads:2") is compared with `baseline` + rest, when both
// ran. A subject may have several baselines.
void compare(std::string subject, std::string baseline, Clock clock = Clock::kReal);

// Defined by each benchmark program; called by main() after the flags are parsed.
void register_benchmarks();

// MAPWRIGHT_BENCH_BYTES, default 1 GiB. Throws std::invalid_argument on a bad value.
std::uint64_t bench_bytes();
// MAPWRIGHT_BENCH_DIR, default ".".
std::filesystem::path bench_dir();
// A path for a scratch file in bench_dir(), unique to this process: "mapwright-bench-<tag>-<pid>".
std::filesystem::path scratch_path(std::string_view tag);

// Where a benchmark's file lives.
enum class Target {
  kMemfd,  // memfd_create: shmem pages, no disk
  kDisk,   // a file in bench_dir() (ext4 on the reference machine), never fsynced
};

// An empty file to write: a new memfd, or `path` created (O_TRUNC), closed and unlinked by
// the destructor. Throws std::system_error.
class ScratchFile {
 public:
  ScratchFile(Target target, const std::filesystem::path& path);
  ~ScratchFile();
  ScratchFile(const ScratchFile&) = delete;
  ScratchFile& operator=(const ScratchFile&) = delete;

  int fd() const noexcept { return fd_; }

 private:
  int fd_ = -1;
  std::filesystem::path path_;  // empty for a memfd
};

// write(2) all of [data, data + size) to `fd`, retrying partial writes. Throws std::system_error.
void write_all(int fd, const void* data, std::uint64_t size);

// The objects the dynamic linker has loaded now (dl_iterate_phdr): a load that really
// happened adds one, its dlclose takes it away.
std::size_t loaded_objects();

// Runs `body`, turning an exception into state.SkipWithError(what) so that one failing
// benchmark (a full disk, a missing directory) is reported instead of ending the program.
// Single-threaded benchmarks only.
template <class Body>
void skip_on_error(benchmark::State& state, Body&& body) {
  try {
    body();
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

}  // namespace mapwright::bench
