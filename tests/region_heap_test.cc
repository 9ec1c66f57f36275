// A program whose operator new is backed by a Region (an arena allocator over a growing
// memfd, as runtimes build): allocations fault the region's pages in through the SIGBUS
// handler. The library must never allocate with signals blocked (a fault while SIGBUS is
// blocked kills the process at once), so making and destroying many regions — which grows
// and shrinks the range table — works with such a heap. Also: what a region costs in memory.
//
// This program replaces the global operator new/delete: by default they are malloc/free;
// a child switches them to the region arena.
#include <malloc.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <optional>
#include <string>
#include <vector>

#include "child.h"
#include "content.h"
#include "mapwright/region.h"
#include "region_helpers.h"
#include "sanitizers.h"

namespace {

std::atomic<std::byte*> g_arena{nullptr};  // the region's memory, once there is one
std::atomic<bool> g_active{false};         // new allocations come from it
std::atomic<std::uint64_t> g_used{0};
std::uint64_t g_arena_capacity = 0;

[[maybe_unused]] void* arena_allocate(std::size_t size) {
  const std::uint64_t rounded = (size + 15) / 16 * 16;
  const std::uint64_t at = g_used.fetch_add(rounded);
  if (at + rounded > g_arena_capacity) std::abort();
  std::byte* p = g_arena.load() + at;
  // Touch the block now, as an allocator that writes a header would: a fault here grows the
  // region through mapwright's handler, unless signals are blocked.
  *reinterpret_cast<volatile unsigned char*>(p) = 0;
  return p;
}

[[maybe_unused]] bool from_arena(void* p) {
  std::byte* arena = g_arena.load();
  return arena != nullptr && p >= static_cast<void*>(arena) &&
         p < static_cast<void*>(arena + g_arena_capacity);
}

}  // namespace

#if !MAPWRIGHT_TEST_ASAN && !MAPWRIGHT_TEST_TSAN
void* operator new(std::size_t size) {
  if (g_active.load()) return arena_allocate(size);
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept {
  if (!from_arena(p)) std::free(p);
}
void operator delete(void* p, std::size_t) noexcept { operator delete(p); }
#endif

namespace mapwright {
namespace {

using namespace test;

TEST(RegionHeap, RegionsCanBeMadeWhenTheHeapIsARegion) {
#if MAPWRIGHT_TEST_ASAN || MAPWRIGHT_TEST_TSAN
  GTEST_SKIP() << "the sanitizers replace operator new themselves";
#endif
  const ChildResult result = run_in_child(
      [] {
        RegionOptions options = options_with_capacity(256 * kMiB);
        options.min_step = 4 * kKiB;  // a fault for every new page of the heap
        options.max_step = 4 * kKiB;
        Region heap = Region::memfd("heap", options);
        g_arena_capacity = heap.capacity();
        g_arena.store(heap.data());
        g_active.store(true);
        {
          std::vector<Region> regions;
          for (int i = 0; i < 600; ++i) {  // the range table's arrays and blocks grow
            regions.push_back(Region::memfd("on-the-region-heap-" + std::to_string(i),
                                            options_with_capacity(kMiB)));
            store(regions.back(), 100, 1);
          }
          while (!regions.empty()) regions.pop_back();  // and shrink
        }
        g_active.store(false);
        CHILD_CHECK(heap.stats().faults > 10);
        say("ok\n");
        ::_exit(0);  // the arena's blocks stay where they are: the heap region outlives them
      },
      std::chrono::milliseconds(60'000));
  expect_clean_exit_unreported(result);
}

// What a region costs the process beyond its mapping: the state, the owner, its share of the
// range table. Was 64 KiB+ (a tail buffer in every owner); a pool holds thousands.
TEST(RegionHeap, ARegionCostsLittleMemory) {
#if MAPWRIGHT_TEST_ASAN || MAPWRIGHT_TEST_TSAN
  GTEST_SKIP() << "the sanitizers' allocators keep their own books";
#endif
  const ChildResult result = run_in_child(
      [] {
        std::vector<Region> regions;
        regions.reserve(2000);
        (void)Region::memfd("warm-up");
        const std::size_t before = mallinfo2().uordblks;
        for (int i = 0; i < 2000; ++i) {
          regions.push_back(Region::memfd("r" + std::to_string(i), options_with_capacity(kMiB)));
        }
        const std::size_t per_region = (mallinfo2().uordblks - before) / 2000;
        CHILD_CHECK_MSG(per_region < 1024, std::to_string(per_region) + " bytes per region");
      },
      std::chrono::milliseconds(60'000));
  expect_clean_exit_unreported(result);
}

}  // namespace
}  // namespace mapwright
