// lazy_bench — filling a 64 MiB range on first touch, page by page, two ways:
//
//   lazy/in_thread/...       LazyImage (lazy.h): userfaultfd in SIGBUS mode, each faulting
//                            thread copies its own pages in (UFFDIO_COPY) from mapwright's
//                            SIGBUS handler.
//   lazy/handler_thread/...  Lucet's design, built here as the baseline: the same userfaultfd
//                            registration without SIGBUS mode, and one thread that polls the
//                            fd, reads the fault messages and answers each with UFFDIO_COPY
//                            (and UFFDIO_WAKE when another answer beat it to the page).
//
// Rows: threads:T (T = 1, 2; window 1) — T threads touch one byte of every page of the range,
// each its own contiguous half; window:W (W = 1, 16, 256; one thread) — W pages filled per
// fault. Timed: the touches, from the first to the last thread done (manual time); the reset
// that makes every page missing again (MADV_DONTNEED) is outside it. pages_per_s counts
// pages of the range per second of that time. lazy/eager_memcpy: a fresh anonymous mapping
// and one memcpy of the whole source into it, for scale.
//
// Compressed entries: a 64 MiB text-like entry (zstd shrinks it about fourfold) in frames of
// 256 KiB, in a wrapper file warm in the page cache.
//   lazy/compressed/...      Wrapper::lazy(): each first touch of a frame decodes that frame
//                            in the faulting thread.
//   lazy/decompress_all/...  what a user would write without it: decode the whole entry into
//                            fresh memory (Wrapper::read_entry), then read.
// first_byte: from the call to the entry's first byte; all_pages/threads:T: until T threads
// have read one byte of every page.
//
// RATIO rows: lazy/in_thread/threads:T and lazy/in_thread/window:W over the handler_thread
// rows of the same name; lazy/compressed/... over lazy/decompress_all/... . Targets (issue 14): >= 2x the throughput of the handler thread with
// 2 faulting threads, >= 1.3x with 1.
//
// MAPWRIGHT_BENCH_BYTES below 64 MiB shrinks the range (the smoke run uses 16 MiB).
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <span>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include <mapwright/lazy.h>
#include <mapwright/wrapper.h>

#include "bench_main.h"

namespace mapwright::bench {
namespace {

constexpr std::uint64_t kPage = 4096;

[[noreturn]] void fail(const char* what) { throw std::system_error(errno, std::generic_category(), what); }

std::uint64_t range_bytes() { return std::min<std::uint64_t>(bench_bytes(), 64ull << 20) / kPage * kPage; }

const std::vector<std::byte>& source() {
  static const std::vector<std::byte> bytes = [] {
    std::vector<std::byte> made(range_bytes());
    std::uint64_t x = 88172645463325252ull;
    for (std::uint64_t i = 0; i < made.size(); i += 8) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      std::memcpy(&made[i], &x, 8);
    }
    return made;
  }();
  return bytes;
}

// T threads, each touching one byte of every page of its contiguous share of `base`; returns
// the wall time from the first start to the last finish. The sum of the bytes read is checked
// against the source, so that no touch is optimized away or wrong.
double touch_all(const std::byte* base, int threads, const std::vector<std::byte>& bytes = source()) {
  const std::uint64_t pages = range_bytes() / kPage;
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::atomic<std::uint64_t> sum{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      const std::uint64_t first = pages * t / threads, last = pages * (t + 1) / threads;
      ready.fetch_add(1);
      while (!go.load(std::memory_order_acquire)) {
      }
      std::uint64_t mine = 0;
      for (std::uint64_t page = first; page < last; ++page) {
        mine += static_cast<std::uint8_t>(static_cast<const volatile std::byte*>(base)[page * kPage]);
      }
      sum.fetch_add(mine);
    });
  }
  while (ready.load() < threads) {
  }
  const auto start = std::chrono::steady_clock::now();
  go.store(true, std::memory_order_release);
  for (std::thread& worker : workers) worker.join();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::uint64_t expected = 0;
  for (std::uint64_t page = 0; page < pages; ++page) expected += static_cast<std::uint8_t>(bytes[page * kPage]);
  if (sum.load() != expected) throw std::runtime_error("the touched bytes are not the source's");
  return seconds;
}

void set_counters(benchmark::State& state) {
  const double pages = static_cast<double>(range_bytes() / kPage);
  state.counters["pages_per_s"] =
      benchmark::Counter(pages * static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}

void in_thread(benchmark::State& state, int threads, std::uint64_t window) {
  LazyOptions options;
  options.window_pages = window;
  options.name = "lazy bench";
  LazyImage image(LazySource::memory(source()), options);
  for (auto _ : state) {
    state.SetIterationTime(touch_all(image.data(), threads));
    image.reset();
  }
  set_counters(state);
}

// Lucet's userfaultfd backend, in miniature: one thread serves every fault of the range.
class HandlerThread {
 public:
  HandlerThread(std::uint64_t window) : window_(window), length_(range_bytes()) {
    void* mapped = ::mmap(nullptr, length_, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mapped == MAP_FAILED) fail("mmap");
    base_ = static_cast<std::byte*>(mapped);
    uffd_ = static_cast<int>(::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | 1 /*UFFD_USER_MODE_ONLY*/));
    if (uffd_ < 0) fail("userfaultfd");
    uffdio_api api{};
    api.api = UFFD_API;
    if (::ioctl(uffd_, UFFDIO_API, &api) != 0) fail("UFFDIO_API");
    uffdio_register reg{};
    reg.range.start = reinterpret_cast<std::uint64_t>(base_);
    reg.range.len = length_;
    reg.mode = UFFDIO_REGISTER_MODE_MISSING;
    if (::ioctl(uffd_, UFFDIO_REGISTER, &reg) != 0) fail("UFFDIO_REGISTER");
    stop_ = ::eventfd(0, EFD_CLOEXEC);
    if (stop_ < 0) fail("eventfd");
    thread_ = std::thread([this] { serve(); });
  }
  ~HandlerThread() {
    const std::uint64_t one = 1;
    (void)!::write(stop_, &one, sizeof one);
    thread_.join();
    ::close(stop_);
    ::close(uffd_);
    ::munmap(base_, length_);
  }
  HandlerThread(const HandlerThread&) = delete;
  HandlerThread& operator=(const HandlerThread&) = delete;

  const std::byte* base() const { return base_; }
  void reset() { ::madvise(base_, length_, MADV_DONTNEED); }

 private:
  void serve() {
    const std::byte* from = source().data();
    const std::uint64_t pages = length_ / kPage;
    pollfd fds[2] = {{uffd_, POLLIN, 0}, {stop_, POLLIN, 0}};
    uffd_msg messages[16];
    for (;;) {
      if (::poll(fds, 2, -1) < 0) {
        if (errno == EINTR) continue;
        std::abort();
      }
      if (fds[1].revents != 0) return;
      const ssize_t got = ::read(uffd_, messages, sizeof messages);
      if (got < 0) {
        if (errno == EAGAIN || errno == EINTR) continue;
        std::abort();
      }
      for (ssize_t i = 0; i < got / static_cast<ssize_t>(sizeof(uffd_msg)); ++i) {
        if (messages[i].event != UFFD_EVENT_PAGEFAULT) continue;
        const std::uint64_t page = (messages[i].arg.pagefault.address - reinterpret_cast<std::uint64_t>(base_)) / kPage;
        const std::uint64_t first = page / window_ * window_;
        const std::uint64_t count = std::min(window_, pages - first);
        uffdio_copy copy{};
        copy.dst = reinterpret_cast<std::uint64_t>(base_) + first * kPage;
        copy.src = reinterpret_cast<std::uint64_t>(from) + first * kPage;
        copy.len = count * kPage;
        if (::ioctl(uffd_, UFFDIO_COPY, &copy) != 0 && errno != EEXIST && errno != EAGAIN) std::abort();
        // A page (or part of the window) was there already: the faulting thread may still
        // wait for this message's answer.
        uffdio_range wake{};
        wake.start = reinterpret_cast<std::uint64_t>(base_) + page * kPage;
        wake.len = kPage;
        if (copy.copy < static_cast<std::int64_t>(copy.len)) (void)::ioctl(uffd_, UFFDIO_WAKE, &wake);
      }
    }
  }

  const std::uint64_t window_;
  const std::uint64_t length_;
  std::byte* base_ = nullptr;
  int uffd_ = -1;
  int stop_ = -1;
  std::thread thread_;
};

void handler_thread(benchmark::State& state, int threads, std::uint64_t window) {
  HandlerThread handler(window);
  for (auto _ : state) {
    state.SetIterationTime(touch_all(handler.base(), threads));
    handler.reset();
  }
  set_counters(state);
}

void eager_memcpy(benchmark::State& state) {
  const std::uint64_t length = range_bytes();
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    void* mapped = ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mapped == MAP_FAILED) fail("mmap");
    std::memcpy(mapped, source().data(), length);
    benchmark::DoNotOptimize(mapped);
    state.SetIterationTime(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    ::munmap(mapped, length);
  }
  set_counters(state);
}

// ---- compressed wrapper entries ----------------------------------------------------------

// Text-like bytes that zstd shrinks about fourfold, as an asset or a table would.
const std::vector<std::byte>& compressible_source() {
  static const std::vector<std::byte> bytes = [] {
    std::vector<std::byte> made(range_bytes());
    std::uint64_t x = 88172645463325252ull;
    std::uint64_t at = 0;
    while (at < made.size()) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      char line[64];
      const int length = std::snprintf(line, sizeof line, "entry %llu: value %llu\n",
                                       static_cast<unsigned long long>(at),
                                       static_cast<unsigned long long>(x % 100000));
      const std::uint64_t n = std::min<std::uint64_t>(static_cast<std::uint64_t>(length), made.size() - at);
      std::memcpy(&made[at], line, n);
      at += n;
    }
    return made;
  }();
  return bytes;
}

// A wrapper file in bench_dir() with the compressible source as entry "e", in zstd frames of
// the default 256 KiB (level 3); written once, warm in the page cache, removed at exit.
const Wrapper& compressed_wrapper() {
  static const std::filesystem::path path = scratch_path("lazy-compressed");
  static const Wrapper wrapper = [] {
    WrapperWriterOptions options;
    options.durable = false;
    options.compression.method = EntryCompression::kZstd;
    WrapperWriter writer(path, options);
    writer.add_data("e", compressible_source());
    writer.publish();
    std::atexit([] { std::filesystem::remove(path); });
    return Wrapper::open(path);
  }();
  return wrapper;
}

// Lazy: Wrapper::lazy() (a userfaultfd, a mapping, decoder slots), then the touches; each
// touch of a page in a frame not yet decoded decodes that frame in the faulting thread.
// first_byte: the time to the entry's first byte; all_pages: every page touched by T threads.
void compressed_lazy(benchmark::State& state, bool all_pages, int threads) {
  const Wrapper& wrapper = compressed_wrapper();
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    LazyImage image = wrapper.lazy("e");
    if (all_pages) {
      (void)touch_all(image.data(), threads, compressible_source());
    } else if (static_cast<std::uint8_t>(*static_cast<const volatile std::byte*>(image.data())) !=
               static_cast<std::uint8_t>(compressible_source()[0])) {
      throw std::runtime_error("the first byte is not the source's");
    }
    state.SetIterationTime(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  set_counters(state);
}

// What a user would write without lazy entries: decode the whole entry up front into fresh
// memory (Wrapper::read_entry, frame by frame), then read it.
void decompress_all(benchmark::State& state, bool all_pages, int threads) {
  const Wrapper& wrapper = compressed_wrapper();
  const WrapperEntry& entry = wrapper.entry("e");
  const std::uint64_t length = range_bytes();
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    void* mapped = ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mapped == MAP_FAILED) fail("mmap");
    auto* bytes = static_cast<std::byte*>(mapped);
    wrapper.read_entry(entry, [bytes](std::span<const std::byte> piece, std::uint64_t at) {
      std::memcpy(bytes + at, piece.data(), piece.size());
    });
    if (all_pages) {
      (void)touch_all(bytes, threads, compressible_source());
    } else if (static_cast<std::uint8_t>(*static_cast<const volatile std::byte*>(bytes)) !=
               static_cast<std::uint8_t>(compressible_source()[0])) {
      throw std::runtime_error("the first byte is not the source's");
    }
    state.SetIterationTime(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    ::munmap(mapped, length);
  }
  set_counters(state);
}

}  // namespace

void register_benchmarks() {
  (void)source();
  for (const int threads : {1, 2}) {
    const std::string rest = "/threads:" + std::to_string(threads);
    benchmark::RegisterBenchmark(("lazy/in_thread" + rest).c_str(), in_thread, threads, 1)
        ->Unit(benchmark::kMillisecond)
        ->UseManualTime();
    benchmark::RegisterBenchmark(("lazy/handler_thread" + rest).c_str(), handler_thread, threads, 1)
        ->Unit(benchmark::kMillisecond)
        ->UseManualTime();
  }
  for (const std::uint64_t window : {1, 16, 256}) {
    const std::string rest = "/window:" + std::to_string(window);
    benchmark::RegisterBenchmark(("lazy/in_thread" + rest).c_str(), in_thread, 1, window)
        ->Unit(benchmark::kMillisecond)
        ->UseManualTime();
    benchmark::RegisterBenchmark(("lazy/handler_thread" + rest).c_str(), handler_thread, 1, window)
        ->Unit(benchmark::kMillisecond)
        ->UseManualTime();
  }
  (void)compressed_wrapper();
  for (const char* name : {"lazy/compressed", "lazy/decompress_all"}) {
    const auto function = std::string(name) == "lazy/compressed" ? compressed_lazy : decompress_all;
    benchmark::RegisterBenchmark((std::string(name) + "/first_byte").c_str(), function, false, 1)
        ->Unit(benchmark::kMillisecond)
        ->UseManualTime();
    for (const int threads : {1, 2}) {
      benchmark::RegisterBenchmark((std::string(name) + "/all_pages/threads:" + std::to_string(threads)).c_str(),
                                   function, true, threads)
          ->Unit(benchmark::kMillisecond)
          ->UseManualTime();
    }
  }
  compare("lazy/compressed", "lazy/decompress_all");
  benchmark::RegisterBenchmark("lazy/eager_memcpy", eager_memcpy)
      ->Unit(benchmark::kMillisecond)
      ->UseManualTime();
  compare("lazy/in_thread", "lazy/handler_thread");
}

}  // namespace mapwright::bench
