// pool_bench — instantiating a sealed image over and over, each instance writing K scattered
// pages, three ways:
//
//   pool/reuse/dirty:K        InstancePool (pool.h): instantiate() in a slot that already holds
//                             the image (no mmap), K writes, the Instance destroyed (reset:
//                             the written pages found and dropped).
//   pool/mmap_memcpy/dirty:K  what a user would write: a fresh anonymous mapping, a memcpy of
//                             the whole image into it, K writes, munmap.
//   pool/mmap_private/dirty:K a fresh MAP_PRIVATE mapping of the sealed memfd per instance, K
//                             writes, munmap (copy-on-write without a pool).
//
// for a 64 MiB image (and, with the suffix _1MiB, a 1 MiB one: the pool's cost should follow
// K, not the image's size), K = 1, 16, 256, 4096. The K pages are chosen at random for each
// instance (xorshift, same sequence for every variant), one byte written to each. Timed: the
// whole cycle, wall clock. pool/reuse/dirty:16 also runs on 2 threads (threads:1 and
// threads:2, each thread its own instances of the same image): inst_per_s is the instances per
// second of all threads together.
//
// pool/reuse_same_pages/dirty:16 (threads:1, threads:2): every instance writes the same 16
// pages, in a pool with image_keep_resident = 16 pages: they are copied back at reset and
// written again without a page fault.
//
// pool/read_mapped/dirty:3/{pagemap_scan,write_protect}: a 64 MiB image whose slot has all
// of it read-mapped (as after many instances of random lookups), each instance writing 3
// random pages, reset by ResetMethod::kPagemapScan and by kWriteProtect.
//
// pool/reuse_lazy/dirty:K (K = 1, 16): the reuse cycle with ImagePopulation::kLazy (each
// written page filled from the image on first touch, missing again after reset).
//
// Heap growth, both modes (pool/heap/anonymous, pool/heap/memfd; threads:1, threads:2): an
// instance of a one-page image grows its heap 64 KiB at a time to 4 MiB, writing a byte to
// each new page, then is reset.
//
// Counters: pages_restored = image pages dropped per reset (pool rows only).
// RATIO rows: pool/reuse/dirty:K over pool/mmap_memcpy/dirty:K and pool/mmap_private/dirty:K
// (both image sizes); pool/reuse/dirty:16/threads:2 over threads:1; the same for
// reuse_same_pages, and reuse_same_pages over reuse_threads (1 thread); read_mapped
// write_protect over pagemap_scan; pool/reuse_lazy/dirty:K over pool/reuse/dirty:K;
// pool/heap/memfd over
// pool/heap/anonymous.
// Targets (issue 13): pool/reuse/dirty:1 >= 1000x the speed of pool/mmap_memcpy and <= 10 us;
// 2 threads >= 1.5x the instances per second of 1.
#include <sys/mman.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <system_error>

#include <mapwright/pool.h>
#include <mapwright/region.h>
#include <mapwright/sealed_image.h>

#include "bench_main.h"

namespace mapwright::bench {
namespace {

constexpr std::uint64_t kPage = 4096;

struct Image {
  const char* suffix;  // "" or "_1MiB"
  std::uint64_t size;
};
const Image kImages[] = {{"", 64ull << 20}, {"_1MiB", 1ull << 20}};
const int kDirty[] = {1, 16, 256, 4096};

// The image: every byte set, so that a page read from it is not the zero page. Made once per
// size; function-local statics, since benchmarks on 2 threads ask for it at once.
SealedImage make_image(std::uint64_t size) {
  Region region = Region::memfd("pool-bench-image");
  region.ensure(size);
  for (std::uint64_t i = 0; i < size; i += 8) {
    const std::uint64_t word = i * 0x9e3779b97f4a7c15ull;
    std::memcpy(region.data() + i, &word, 8);
  }
  region.finish(size);
  return std::move(region).seal();
}

const SealedImage& image_of(std::uint64_t size) {
  static const SealedImage big = make_image(64ull << 20);
  static const SealedImage small = make_image(1ull << 20);
  return size == (64ull << 20) ? big : small;
}

struct Random {
  std::uint64_t state = 0x2545f4914f6cdd1dull;
  std::uint64_t next() {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
  }
};

// One byte into each of `k` random pages of [base, base + size).
void write_pages(std::byte* base, std::uint64_t size, int k, Random& random) {
  const std::uint64_t pages = size / kPage;
  for (int i = 0; i < k; ++i) base[random.next() % pages * kPage + 8] = std::byte{1};
}

InstancePool& shared_pool() {
  static InstancePool pool = [] {
    InstancePoolOptions options;
    options.slots = 8;
    options.slot_size = 128ull << 20;
    options.name = "pool_bench";
    return InstancePool(options);
  }();
  return pool;
}

void reuse(benchmark::State& state, const Image* image, int k) {
  skip_on_error(state, [&] {
    const SealedImage& sealed = image_of(image->size);
    InstancePool& pool = shared_pool();
    Random random;
    random.state += static_cast<std::uint64_t>(state.thread_index()) * 7919;
    const InstancePoolStats before = pool.stats();
    for (auto _ : state) {
      Instance instance = pool.instantiate(sealed);
      write_pages(instance.base(), image->size, k, random);
    }
    const InstancePoolStats after = pool.stats();
    if (state.thread_index() == 0) {
      state.counters["pages_restored"] = benchmark::Counter(
          static_cast<double>(after.pages_restored - before.pages_restored),
          benchmark::Counter::kAvgIterations);
    }
    state.counters["inst_per_s"] =
        benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
    state.SetLabel(std::string("reset: ") + to_string(pool.reset_method()));
  });
}

// The same cycle in a lazy pool (ImagePopulation::kLazy): each written page is a missing
// page filled from the image in the faulting thread, and reset makes it missing again.
void reuse_lazy(benchmark::State& state, int k) {
  skip_on_error(state, [&] {
    const SealedImage& sealed = image_of(64ull << 20);
    static InstancePool pool = [] {
      InstancePoolOptions options;
      options.slots = 2;
      options.slot_size = 128ull << 20;
      options.population = ImagePopulation::kLazy;
      options.name = "pool_bench lazy";
      return InstancePool(options);
    }();
    Random random;
    for (auto _ : state) {
      Instance instance = pool.instantiate(sealed);
      write_pages(instance.base(), 64ull << 20, k, random);
    }
    state.counters["inst_per_s"] =
        benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
  });
}

InstancePool& keeping_pool() {
  static InstancePool pool = [] {
    InstancePoolOptions options;
    options.slots = 8;
    options.slot_size = 128ull << 20;
    options.image_keep_resident = 16 * kPage;
    options.name = "pool_bench keeping";
    return InstancePool(options);
  }();
  return pool;
}

// Every instance writes the same 16 pages (a runtime's globals, its stack), in a pool that
// copies up to 16 written pages back at reset instead of dropping them: after the first
// instance, no page fault and no madvise.
void reuse_same_pages(benchmark::State& state) {
  skip_on_error(state, [&] {
    const SealedImage& sealed = image_of(kImages[0].size);
    InstancePool& pool = keeping_pool();
    const std::uint64_t pages = sealed.size() / kPage;
    for (auto _ : state) {
      Instance instance = pool.instantiate(sealed);
      for (std::uint64_t i = 0; i < 16; ++i) instance.base()[(i * 1021 + 7) % pages * kPage + 8] = std::byte{1};
    }
    state.counters["inst_per_s"] =
        benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
    state.SetLabel(std::string("reset: ") + to_string(pool.reset_method()));
  });
}

InstancePool& read_mapped_pool(ResetMethod method) {
  const auto make = [](ResetMethod m) {
    InstancePoolOptions options;
    options.slots = 1;
    options.slot_size = 128ull << 20;
    options.reset = m;
    options.name = std::string("pool_bench read-mapped ") + to_string(m);
    return InstancePool(options);
  };
  static InstancePool scan = make(ResetMethod::kPagemapScan);
  static InstancePool protect = make(ResetMethod::kWriteProtect);
  return method == ResetMethod::kWriteProtect ? protect : scan;
}

// Instances of a 64 MiB image that an earlier instance read all of (the slot keeps those
// pages mapped), each writing 3 random pages: the reset methods that look at every mapped
// page (PAGEMAP_SCAN) and at page-table entries only (write protection).
void read_mapped(benchmark::State& state, ResetMethod method) {
  skip_on_error(state, [&] {
    const SealedImage& sealed = image_of(kImages[0].size);
    InstancePool& pool = read_mapped_pool(method);
    {
      const Instance first = pool.instantiate(sealed);
      std::uint64_t sum = 0;
      for (std::uint64_t at = 0; at < sealed.size(); at += kPage) sum += static_cast<std::uint64_t>(first.base()[at]);
      benchmark::DoNotOptimize(sum);
    }
    Random random;
    for (auto _ : state) {
      Instance instance = pool.instantiate(sealed);
      write_pages(instance.base(), sealed.size(), 3, random);
    }
    state.SetLabel(std::string("reset: ") + to_string(pool.reset_method()));
  });
}

void mmap_memcpy(benchmark::State& state, const Image* image, int k) {
  skip_on_error(state, [&] {
    const std::span<const std::byte> bytes = image_of(image->size).map();
    Random random;
    for (auto _ : state) {
      void* p = ::mmap(nullptr, bytes.size(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED) throw std::system_error(errno, std::generic_category(), "mmap");
      std::memcpy(p, bytes.data(), bytes.size());
      write_pages(static_cast<std::byte*>(p), bytes.size(), k, random);
      ::munmap(p, bytes.size());
    }
  });
}

void mmap_private(benchmark::State& state, const Image* image, int k) {
  skip_on_error(state, [&] {
    const SealedImage& sealed = image_of(image->size);
    Random random;
    for (auto _ : state) {
      void* p = ::mmap(nullptr, sealed.size(), PROT_READ | PROT_WRITE, MAP_PRIVATE, sealed.fd(), 0);
      if (p == MAP_FAILED) throw std::system_error(errno, std::generic_category(), "mmap");
      write_pages(static_cast<std::byte*>(p), sealed.size(), k, random);
      ::munmap(p, sealed.size());
    }
  });
}

InstancePool& heap_pool(HeapMode mode) {
  const auto make = [](HeapMode m) {
    InstancePoolOptions options;
    options.slots = 4;
    options.slot_size = 16ull << 20;
    options.heap = m;
    options.name = std::string("pool_bench heap ") + to_string(m);
    return InstancePool(options);
  };
  static InstancePool anonymous = make(HeapMode::kAnonymous);
  static InstancePool memfd = make(HeapMode::kMemfd);
  return mode == HeapMode::kMemfd ? memfd : anonymous;
}

void heap_growth(benchmark::State& state, HeapMode mode) {
  skip_on_error(state, [&] {
    InstancePool& pool = heap_pool(mode);
    static const SealedImage one_page = [] {
      Region region = Region::memfd("pool-bench-small");
      region.ensure(kPage);
      std::memset(region.data(), 1, kPage);
      region.finish(kPage);
      return std::move(region).seal();
    }();
    constexpr std::uint64_t kStep = 64 << 10;
    constexpr std::uint64_t kHeap = 4 << 20;
    for (auto _ : state) {
      Instance instance = pool.instantiate(one_page);
      for (std::uint64_t size = kStep; size <= kHeap; size += kStep) {
        instance.grow_heap(size);
        for (std::uint64_t at = size - kStep; at < size; at += kPage) instance.heap()[at] = std::byte{1};
      }
    }
    state.counters["inst_per_s"] =
        benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
  });
}

}  // namespace

void register_benchmarks() {
  for (const Image& image : kImages) {
    for (const int k : kDirty) {
      const std::string rest = std::string(image.suffix) + "/dirty:" + std::to_string(k);
      benchmark::RegisterBenchmark(("pool/reuse" + rest).c_str(), reuse, &image, k)
          ->Unit(benchmark::kMicrosecond)
          ->UseRealTime();
      benchmark::RegisterBenchmark(("pool/mmap_memcpy" + rest).c_str(), mmap_memcpy, &image, k)
          ->Unit(benchmark::kMicrosecond)
          ->UseRealTime();
      benchmark::RegisterBenchmark(("pool/mmap_private" + rest).c_str(), mmap_private, &image, k)
          ->Unit(benchmark::kMicrosecond)
          ->UseRealTime();
    }
    compare(std::string("pool/reuse") + image.suffix, std::string("pool/mmap_memcpy") + image.suffix);
    compare(std::string("pool/reuse") + image.suffix, std::string("pool/mmap_private") + image.suffix);
  }
  for (const int k : {1, 16}) {
    benchmark::RegisterBenchmark(("pool/reuse_lazy/dirty:" + std::to_string(k)).c_str(), reuse_lazy, k)
        ->Unit(benchmark::kMicrosecond)
        ->UseRealTime();
  }
  compare("pool/reuse_lazy", "pool/reuse");
  benchmark::RegisterBenchmark("pool/read_mapped/dirty:3/pagemap_scan", read_mapped, ResetMethod::kPagemapScan)
      ->Unit(benchmark::kMicrosecond)
      ->UseRealTime();
  benchmark::RegisterBenchmark("pool/read_mapped/dirty:3/write_protect", read_mapped, ResetMethod::kWriteProtect)
      ->Unit(benchmark::kMicrosecond)
      ->UseRealTime();
  compare("pool/read_mapped/dirty:3/write_protect", "pool/read_mapped/dirty:3/pagemap_scan");
  // Threads: each thread's real time per instance; 2 threads at the same time per instance
  // make twice the instances per second.
  for (const int threads : {1, 2}) {
    benchmark::RegisterBenchmark("pool/reuse_threads/dirty:16", reuse, &kImages[0], 16)
        ->Unit(benchmark::kMicrosecond)
        ->UseRealTime()
        ->Threads(threads);
    benchmark::RegisterBenchmark("pool/reuse_same_pages/dirty:16", reuse_same_pages)
        ->Unit(benchmark::kMicrosecond)
        ->UseRealTime()
        ->Threads(threads);
    benchmark::RegisterBenchmark("pool/heap/anonymous", heap_growth, HeapMode::kAnonymous)
        ->Unit(benchmark::kMicrosecond)
        ->UseRealTime()
        ->Threads(threads);
    benchmark::RegisterBenchmark("pool/heap/memfd", heap_growth, HeapMode::kMemfd)
        ->Unit(benchmark::kMicrosecond)
        ->UseRealTime()
        ->Threads(threads);
  }
  compare("pool/reuse_threads/dirty:16/real_time/threads:2",
          "pool/reuse_threads/dirty:16/real_time/threads:1");
  compare("pool/reuse_same_pages/dirty:16/real_time/threads:2",
          "pool/reuse_same_pages/dirty:16/real_time/threads:1");
  compare("pool/reuse_same_pages/dirty:16/real_time/threads:1",
          "pool/reuse_threads/dirty:16/real_time/threads:1");
  compare("pool/heap/memfd", "pool/heap/anonymous");
}

}  // namespace mapwright::bench
