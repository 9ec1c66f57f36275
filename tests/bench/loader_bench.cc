// loader_bench — loading a shared library that is not a file of its own, four ways, for a
// ~16 KB library (tests/fixtures libmwfixture_a.so, fixture_answer) and an ~8 MB one
// (libmwfixture_big.so, fixture_big_answer: an 8 MiB .rodata blob):
//
//   loader/<size>/sealed        (a) the bytes already in a SealedImage (Region::memfd, copy,
//                                   finish, seal — once, untimed) → load_library(image):
//                                   strategy 1, the memfd itself is dlopen()ed, no copy.
//   loader/<size>/offset        (b) the bytes at an offset (1 MiB) inside a larger disk file in
//                                   MAPWRIGHT_BENCH_DIR (default: the current directory) →
//                                   load_library(fd, offset, size): strategy 2, a copy into a
//                                   sealed memfd, with the MemfdPool reserved for the library's
//                                   size before the loop (untimed; 4 of the 8 MiB library, 64 of
//                                   the 16 KiB one) and refilling in the background as the
//                                   back-to-back loads take its memfds ("prepared": the share
//                                   of loads that found one ready).
//   loader/big/offset_prepared      the same, each load waiting (untimed) until the pool is
//                                   full again: the latency of a load that finds its memfd
//                                   prepared, as when loads are spaced out by other work.
//   loader/<size>/offset_nopool     the same without a pool: each load makes its memfd.
//   loader/<size>/iree_mkstemp  (c) what IREE's dynamic_library_posix.c does: mkstemp() in
//                                   MAPWRIGHT_BENCH_DIR (a disk directory), write(2) the bytes,
//                                   close, dlopen() the path, unlink(); dlclose() at the end.
//   loader/<size>/plain_dlopen  (d) the floor: dlopen() of the library's own file (page cache,
//                                   no copy at all).
//
// Each iteration (timed, wall clock): load + resolve the answer symbol + call it + unload
// (dlclose, close). Not timed: reading the library's bytes, making the SealedImage (a) and
// the offset file (b), and one verification pass per run.
//
// Every iteration is a real load. glibc hands back the already loaded object when a path is
// dlopen()ed again, so each variant unloads before the next iteration, and (c) uses a fresh
// mkstemp() name each time. The verification pass checks it: twice in a row, it loads, calls
// the answer (must be 42) and unloads, and counts the loaded objects (dl_iterate_phdr) before,
// during and after: one more while loaded, back to the start after. Anything else ends the
// benchmark with SkipWithError. (a) must report strategy "sealed memfd", (b) "memfd copy".
//
// Counters (per load unless said otherwise):
//   disk_B       (a), (b): LoadReport::bytes_written_to_disk (the loader's own account; 0)
//   io_write_B   every variant: /proc/self/io write_bytes over the whole timed loop, per load:
//                bytes this process dirtied in page cache of a storage-backed file system
//                (counted when dirtied, so write-back lag does not hide them; memfd/shmem
//                pages are not counted). Must be 0 for (a) and (b).
//   io_cancel_B  cancelled_write_bytes: of those, dropped before write-back (file unlinked).
//   wchar_B      bytes passed to write-like system calls (write, copy_file_range...), to
//                any file including memfds.
//
// RATIO rows: sealed, offset, offset_nopool (and offset_prepared) over iree_mkstemp, sealed
// over plain_dlopen, for both sizes.
// Target (issue): sealed >= 3x faster than iree_mkstemp for the small library (ratio <= 0.33),
// with 0 bytes written to disk.
#include <dlfcn.h>
#include <fcntl.h>
#include <link.h>
#include <unistd.h>

#include <mapwright/loader.h>
#include <mapwright/memfd_pool.h>
#include <mapwright/region.h>
#include <mapwright/sealed_image.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include "bench_main.h"

#ifndef MAPWRIGHT_BENCH_FIXTURE_SMALL
#error "MAPWRIGHT_BENCH_FIXTURE_SMALL (path of libmwfixture_a.so) must be defined"
#endif
#ifndef MAPWRIGHT_BENCH_FIXTURE_BIG
#error "MAPWRIGHT_BENCH_FIXTURE_BIG (path of libmwfixture_big.so) must be defined"
#endif

namespace mapwright::bench {
namespace {

constexpr std::uint64_t kOffset = 1ull << 20;  // (b): the library starts 1 MiB into its file
constexpr int kAnswer = 42;

struct Fixture {
  const char* size_name;  // "small", "big"
  const char* path;
  const char* symbol;
};

const Fixture kFixtures[] = {
    {"small", MAPWRIGHT_BENCH_FIXTURE_SMALL, "fixture_answer"},
    {"big", MAPWRIGHT_BENCH_FIXTURE_BIG, "fixture_big_answer"},
};

[[noreturn]] void throw_errno(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

std::vector<std::byte> read_bytes(const char* path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(std::string("cannot open ") + path);
  std::vector<char> chars((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::byte> bytes(chars.size());
  std::memcpy(bytes.data(), chars.data(), chars.size());
  if (bytes.empty()) throw std::runtime_error(std::string("empty library ") + path);
  return bytes;
}

// /proc/self/io.
struct IoCounters {
  std::uint64_t wchar = 0;
  std::uint64_t write_bytes = 0;
  std::uint64_t cancelled_write_bytes = 0;
};

std::optional<IoCounters> read_io() {
  std::ifstream in("/proc/self/io");
  if (!in) return std::nullopt;
  IoCounters io;
  std::string key;
  std::uint64_t value = 0;
  bool any = false;
  while (in >> key >> value) {
    if (key == "wchar:") io.wchar = value, any = true;
    if (key == "write_bytes:") io.write_bytes = value;
    if (key == "cancelled_write_bytes:") io.cancelled_write_bytes = value;
  }
  if (!any) return std::nullopt;
  return io;
}

// Measures /proc/self/io around the timed loop and reports the deltas per load.
class IoProbe {
 public:
  IoProbe() : start_(read_io()) {}
  void report(benchmark::State& state) const {
    const auto end = read_io();
    if (!start_ || !end) return;  // no /proc/self/io (no task I/O accounting): no counters
    const auto per_load = [&](std::uint64_t a, std::uint64_t b) {
      return benchmark::Counter(static_cast<double>(b - a), benchmark::Counter::kAvgIterations);
    };
    state.counters["io_write_B"] = per_load(start_->write_bytes, end->write_bytes);
    state.counters["io_cancel_B"] =
        per_load(start_->cancelled_write_bytes, end->cancelled_write_bytes);
    state.counters["wchar_B"] = per_load(start_->wchar, end->wchar);
  }

 private:
  std::optional<IoCounters> start_;
};

// The verification pass: `once(on_loaded)` must load, call on_loaded() while loaded, return
// the answer, and unload. Twice, so that a second load of the same source is also checked to
// be a fresh one. False (and the benchmark skipped) if anything is off.
template <class Once>
bool verify(benchmark::State& state, Once&& once) {
  for (int pass = 0; pass < 2; ++pass) {
    const std::size_t before = loaded_objects();
    std::size_t during = 0;
    const int answer = once([&] { during = loaded_objects(); });
    const std::size_t after = loaded_objects();
    if (answer != kAnswer) {
      state.SkipWithError(("wrong answer: " + std::to_string(answer)).c_str());
      return false;
    }
    if (during != before + 1 || after != before) {
      state.SkipWithError(("not a fresh load and unload: objects " + std::to_string(before) +
                           " -> " + std::to_string(during) + " -> " + std::to_string(after))
                              .c_str());
      return false;
    }
  }
  return true;
}

void no_hook() {}

// (a) load_library(SealedImage).
void load_sealed(benchmark::State& state, const Fixture* fixture) {
  skip_on_error(state, [&] {
    const std::vector<std::byte> bytes = read_bytes(fixture->path);
    Region region = Region::memfd("mapwright-bench-loader");
    region.ensure(bytes.size());
    std::memcpy(region.data(), bytes.data(), bytes.size());
    region.finish(bytes.size());
    const SealedImage image = std::move(region).seal();

    std::string strategy;
    const auto once = [&](auto&& on_loaded) {
      const Library lib = load_library(image);
      on_loaded();
      strategy = to_string(lib.strategy());
      return lib.function<int()>(fixture->symbol)();
    };
    if (!verify(state, once)) return;
    if (strategy != to_string(LoadStrategy::kSealedMemfd)) {
      state.SkipWithError(("unexpected strategy: " + strategy).c_str());
      return;
    }

    std::uint64_t disk_bytes = 0;
    const IoProbe io;
    for (auto _ : state) {
      const Library lib = load_library(image);
      benchmark::DoNotOptimize(lib.function<int()>(fixture->symbol)());
      disk_bytes += lib.report().bytes_written_to_disk;
    }
    io.report(state);
    state.counters["disk_B"] =
        benchmark::Counter(static_cast<double>(disk_bytes), benchmark::Counter::kAvgIterations);
    state.SetLabel(strategy);
  });
}

// (b) load_library(fd, offset, size) from a disk file; with a pool, memfds of the library's
// size reserved in the MemfdPool (and prepared) before the timed loop, released after it:
// as many as fit in kPoolBytes, at most kPoolCount (4 of the 8 MiB library, 64 of the 16 KiB
// one).
constexpr std::uint64_t kPoolBytes = 32 << 20;
constexpr std::size_t kPoolCount = 64;

enum class Pool {
  kNone,      // offset_nopool: no reservation
  kReserved,  // offset: reserved; the loop runs back to back, the pool refills as it can
  kPaced,     // offset_prepared: reserved, and each load waits (untimed) until the pool is
              // full again and nothing is left to free: the latency of a load that finds a
              // prepared memfd, as when loads are spaced out by other work
};

void load_offset(benchmark::State& state, const Fixture* fixture, Pool pool_mode) {
  const bool pool = pool_mode != Pool::kNone;
  skip_on_error(state, [&] {
    const std::vector<std::byte> bytes = read_bytes(fixture->path);
    const std::filesystem::path path = scratch_path(std::string("loader-offset-") + fixture->size_name);
    const ScratchFile file(Target::kDisk, path);
    {
      const std::vector<std::byte> other(kOffset, std::byte{0x5a});  // "other data" before it
      write_all(file.fd(), other.data(), other.size());
      write_all(file.fd(), bytes.data(), bytes.size());
      write_all(file.fd(), other.data(), 4096);  // and some after it
    }

    std::string strategy;
    std::string method;
    const auto once = [&](auto&& on_loaded) {
      const Library lib = load_library(file.fd(), kOffset, bytes.size());
      on_loaded();
      strategy = to_string(lib.strategy());
      method = to_string(lib.report().copy_method);
      return lib.function<int()>(fixture->symbol)();
    };
    if (!verify(state, once)) return;
    if (strategy != to_string(LoadStrategy::kMemfdCopy)) {
      state.SkipWithError(("unexpected strategy: " + strategy).c_str());
      return;
    }

    struct Release {
      bool pool;
      ~Release() {
        if (pool) MemfdPool::release();
      }
    } release{pool};
    if (pool) {
      MemfdPool::reserve(bytes.size(),
                         std::max<std::size_t>(1, std::min<std::uint64_t>(
                                                      kPoolCount, kPoolBytes / bytes.size())));
      if (!MemfdPool::wait_until_ready(std::chrono::seconds(10))) {
        state.SkipWithError(("memfd pool not ready: " + MemfdPool::stats().last_error).c_str());
        return;
      }
    }

    std::uint64_t disk_bytes = 0;
    std::uint64_t prepared = 0;
    const IoProbe io;
    for (auto _ : state) {
      if (pool_mode == Pool::kPaced) {
        state.PauseTiming();
        MemfdPool::wait_until_ready(std::chrono::seconds(10));
        state.ResumeTiming();
      }
      const Library lib = load_library(file.fd(), kOffset, bytes.size());
      benchmark::DoNotOptimize(lib.function<int()>(fixture->symbol)());
      disk_bytes += lib.report().bytes_written_to_disk;
      prepared += lib.report().pool == PoolUse::kPrepared ? 1 : 0;
    }
    io.report(state);
    state.counters["disk_B"] =
        benchmark::Counter(static_cast<double>(disk_bytes), benchmark::Counter::kAvgIterations);
    state.counters["prepared"] =
        benchmark::Counter(static_cast<double>(prepared), benchmark::Counter::kAvgIterations);
    state.SetLabel(strategy + ", " + method);
  });
}

// dlsym + call + dlclose of a dlopen() handle; -1 when the symbol is missing.
template <class Hook>
int call_and_close(void* handle, const char* symbol, Hook&& on_loaded) {
  on_loaded();
  void* sym = ::dlsym(handle, symbol);
  const int answer = sym != nullptr ? reinterpret_cast<int (*)()>(sym)() : -1;
  if (::dlclose(handle) != 0) throw std::runtime_error(std::string("dlclose: ") + ::dlerror());
  return answer;
}

void* dlopen_or_throw(const char* path) {
  void* handle = ::dlopen(path, RTLD_NOW | RTLD_LOCAL);  // LoadOptions' defaults
  if (handle == nullptr) throw std::runtime_error(std::string("dlopen: ") + ::dlerror());
  return handle;
}

// (c) IREE's method: mkstemp + write + dlopen + unlink, on a disk directory.
void load_iree_mkstemp(benchmark::State& state, const Fixture* fixture) {
  skip_on_error(state, [&] {
    const std::vector<std::byte> bytes = read_bytes(fixture->path);
    const std::string templ = (bench_dir() / "mapwright-bench-iree-XXXXXX").string();
    std::vector<char> name(templ.size() + 1);

    const auto once = [&](auto&& on_loaded) {
      std::memcpy(name.data(), templ.c_str(), templ.size() + 1);  // a fresh name each time
      const int fd = ::mkstemp(name.data());
      if (fd < 0) throw_errno("mkstemp in " + bench_dir().string());
      try {
        write_all(fd, bytes.data(), bytes.size());
      } catch (...) {
        ::close(fd);
        ::unlink(name.data());
        throw;
      }
      ::close(fd);
      void* handle = ::dlopen(name.data(), RTLD_NOW | RTLD_LOCAL);
      ::unlink(name.data());
      if (handle == nullptr) throw std::runtime_error(std::string("dlopen: ") + ::dlerror());
      return call_and_close(handle, fixture->symbol, on_loaded);
    };
    if (!verify(state, once)) return;

    const IoProbe io;
    for (auto _ : state) benchmark::DoNotOptimize(once(no_hook));
    io.report(state);
  });
}

// (d) the floor: dlopen() of the library's own file.
void load_plain_dlopen(benchmark::State& state, const Fixture* fixture) {
  skip_on_error(state, [&] {
    const auto once = [&](auto&& on_loaded) {
      return call_and_close(dlopen_or_throw(fixture->path), fixture->symbol, on_loaded);
    };
    if (!verify(state, once)) return;

    const IoProbe io;
    for (auto _ : state) benchmark::DoNotOptimize(once(no_hook));
    io.report(state);
  });
}

}  // namespace

void register_benchmarks() {
  for (const Fixture& fixture : kFixtures) {
    const std::string prefix = std::string("loader/") + fixture.size_name + "/";
    benchmark::RegisterBenchmark((prefix + "sealed").c_str(), load_sealed, &fixture)
        ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark((prefix + "offset").c_str(), load_offset, &fixture,
                                 Pool::kReserved)
        ->Unit(benchmark::kMicrosecond);
    // Not for the small library: pausing the timer and waking the pool's thread between
    // loads costs more than such a load.
    if (std::string(fixture.size_name) == "big") {
      benchmark::RegisterBenchmark((prefix + "offset_prepared").c_str(), load_offset, &fixture,
                                   Pool::kPaced)
          ->Unit(benchmark::kMicrosecond);
      compare(prefix + "offset_prepared", prefix + "iree_mkstemp");
    }
    benchmark::RegisterBenchmark((prefix + "offset_nopool").c_str(), load_offset, &fixture,
                                 Pool::kNone)
        ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark((prefix + "iree_mkstemp").c_str(), load_iree_mkstemp, &fixture)
        ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark((prefix + "plain_dlopen").c_str(), load_plain_dlopen, &fixture)
        ->Unit(benchmark::kMicrosecond);
    compare(prefix + "sealed", prefix + "iree_mkstemp");
    compare(prefix + "offset", prefix + "iree_mkstemp");
    compare(prefix + "offset_nopool", prefix + "iree_mkstemp");
    compare(prefix + "sealed", prefix + "plain_dlopen");
  }
}

}  // namespace mapwright::bench
