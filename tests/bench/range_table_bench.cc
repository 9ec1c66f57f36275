// range_table_bench — the SIGBUS handler's address → owner lookup, and registration.
//
// N owners (1, 100, 10,000) hold ranges of 48 KiB every 64 KiB from an arbitrary base; the
// addresses are never mapped (every structure here only compares numbers) and the owners
// are fake pointers that are never dereferenced. Lookups walk a precomputed array of 4096
// random addresses inside the ranges (each thread from a different start).
//
//   lookup/range_table/N             mapwright's RangeTable: Pin(table).find(address), what
//                                    the handler does (two atomic RMWs on the reader count
//                                    plus two binary searches)
//   lookup/range_table_find_only/N   find() alone, under one Pin held for the whole loop:
//                                    the search without the pinning
//   lookup/shared_mutex_map/N        std::shared_mutex + std::map: shared_lock, upper_bound
//   lookup/libsigsegv/N              GNU libsigsegv's area dispatcher: sigsegv_dispatch()
//                                    with a trivial area handler (an AVL tree search; it has
//                                    no synchronization at all, so it is the floor, not an
//                                    alternative that is safe against concurrent changes)
// Each runs on 1 and on 2 threads; RATIO rows use CPU time per lookup, i.e. with 2 threads
// the cost of one lookup on each thread while both look up.
//
//   register/range_table/10000       insert a range into a gap, then erase it, with 10,000
//                                    others present (both block signals and update both copies)
//   register/mutex_map/10000         the same under the std::shared_mutex held exclusively
//   register/libsigsegv/10000        sigsegv_register + sigsegv_unregister (unsynchronized)
// One iteration is one insert+erase pair; items_per_second is pairs per second.
//
// Timed: the lookups or pairs only; building the tables and address arrays is not.
#include <sigsegv.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <shared_mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench_main.h"
#include "range_table.h"

namespace mapwright::bench {
namespace {

using detail::FaultOwner;
using detail::RangeTable;

constexpr std::uintptr_t kBase = std::uintptr_t{1} << 44;  // 16 TiB: arbitrary, never touched
constexpr std::uintptr_t kStride = 64 << 10;
constexpr std::uintptr_t kLength = 48 << 10;  // each owner's range; a 16 KiB gap follows it
constexpr std::uintptr_t kGapRange = 8 << 10;  // what register/* inserts into a gap
constexpr std::size_t kAddresses = 4096;       // a power of two
constexpr std::size_t kMask = kAddresses - 1;

FaultOwner* fake_owner(std::size_t i) {
  return reinterpret_cast<FaultOwner*>(std::uintptr_t{0x10000} + 64 * i);
}

int on_area(void* /*fault_address*/, void* owner) { return owner != nullptr ? 1 : 0; }

struct MapEntry {
  std::uintptr_t end;
  FaultOwner* owner;
};

// The same N ranges in every structure, and the addresses to look up.
struct Owners {
  explicit Owners(std::size_t n) {
    sigsegv_init(&areas);
    std::mt19937_64 random(n);
    for (std::size_t i = 0; i < n; ++i) {
      const std::uintptr_t begin = kBase + i * kStride;
      table.insert(begin, begin + kLength, fake_owner(i));
      map.emplace(begin, MapEntry{begin + kLength, fake_owner(i)});
      tickets.push_back(sigsegv_register(&areas, reinterpret_cast<void*>(begin), kLength,
                                         on_area, fake_owner(i)));
      gaps.push_back(i);
    }
    std::shuffle(gaps.begin(), gaps.end(), random);
    std::uniform_int_distribution<std::size_t> owner_of(0, n - 1);
    std::uniform_int_distribution<std::uintptr_t> offset_in(0, kLength - 1);
    for (std::size_t k = 0; k < kAddresses; ++k) {
      const std::size_t i = owner_of(random);
      addresses.push_back(kBase + i * kStride + offset_in(random));
      expected.push_back(fake_owner(i));
    }
    check();
  }
  ~Owners() {
    for (void* ticket : tickets) sigsegv_unregister(&areas, ticket);
  }
  Owners(const Owners&) = delete;
  Owners& operator=(const Owners&) = delete;

  // Every structure finds every address's owner (so the benchmarks measure hits).
  void check() {
    const RangeTable::Pin pin(table);
    for (std::size_t k = 0; k < kAddresses; ++k) {
      const std::uintptr_t a = addresses[k];
      auto it = map.upper_bound(a);
      const bool map_ok = it != map.begin() && a < std::prev(it)->second.end &&
                          std::prev(it)->second.owner == expected[k];
      if (pin.find(a).owner != expected[k] || !map_ok ||
          sigsegv_dispatch(&areas, reinterpret_cast<void*>(a)) != 1) {
        throw std::logic_error("range_table_bench: a lookup structure misses an address");
      }
    }
  }

  RangeTable table;
  std::map<std::uintptr_t, MapEntry> map;
  mutable std::shared_mutex map_mutex;
  sigsegv_dispatcher areas;
  std::vector<void*> tickets;
  std::vector<std::uintptr_t> addresses;
  std::vector<FaultOwner*> expected;
  std::vector<std::size_t> gaps;  // owner indices in random order: where register/* inserts
};

// One Owners per N, built on first use (by whichever thread gets there first) and kept.
Owners& owners(std::int64_t n) {
  static std::mutex mutex;
  static std::map<std::int64_t, std::unique_ptr<Owners>> all;
  const std::lock_guard lock(mutex);
  std::unique_ptr<Owners>& slot = all[n];
  if (!slot) slot = std::make_unique<Owners>(static_cast<std::size_t>(n));
  return *slot;
}

std::size_t first_index(const benchmark::State& state) {
  return static_cast<std::size_t>(state.thread_index()) * (kAddresses / 2);
}

// ---- lookups ----------------------------------------------------------------------------

void lookup_range_table(benchmark::State& state) {
  const Owners& o = owners(state.range(0));
  const std::uintptr_t* addresses = o.addresses.data();
  std::size_t i = first_index(state);
  for (auto _ : state) {
    const RangeTable::Pin pin(o.table);
    RangeTable::Found found = pin.find(addresses[i++ & kMask]);
    benchmark::DoNotOptimize(found);
  }
}

void lookup_range_table_find_only(benchmark::State& state) {
  const Owners& o = owners(state.range(0));
  const std::uintptr_t* addresses = o.addresses.data();
  std::size_t i = first_index(state);
  const RangeTable::Pin pin(o.table);
  for (auto _ : state) {
    RangeTable::Found found = pin.find(addresses[i++ & kMask]);
    benchmark::DoNotOptimize(found);
  }
}

void lookup_shared_mutex_map(benchmark::State& state) {
  const Owners& o = owners(state.range(0));
  const std::uintptr_t* addresses = o.addresses.data();
  std::size_t i = first_index(state);
  for (auto _ : state) {
    const std::uintptr_t a = addresses[i++ & kMask];
    FaultOwner* owner = nullptr;
    {
      const std::shared_lock lock(o.map_mutex);
      auto it = o.map.upper_bound(a);
      if (it != o.map.begin() && a < (--it)->second.end) owner = it->second.owner;
    }
    benchmark::DoNotOptimize(owner);
  }
}

void lookup_libsigsegv(benchmark::State& state) {
  Owners& o = owners(state.range(0));
  const std::uintptr_t* addresses = o.addresses.data();
  std::size_t i = first_index(state);
  for (auto _ : state) {
    int handled = sigsegv_dispatch(&o.areas, reinterpret_cast<void*>(addresses[i++ & kMask]));
    benchmark::DoNotOptimize(handled);
  }
}

// ---- register + unregister --------------------------------------------------------------

// Where the k-th pair inserts: inside the gap after a randomly chosen owner's range.
std::uintptr_t gap_begin(const Owners& o, std::size_t k) {
  return kBase + o.gaps[k % o.gaps.size()] * kStride + kLength;
}

void register_range_table(benchmark::State& state) {
  Owners& o = owners(state.range(0));
  FaultOwner* const owner = fake_owner(o.gaps.size());
  std::size_t k = 0;
  for (auto _ : state) {
    const std::uintptr_t begin = gap_begin(o, k++);
    o.table.insert(begin, begin + kGapRange, owner);
    o.table.erase(begin);
  }
  state.SetItemsProcessed(state.iterations());
}

void register_mutex_map(benchmark::State& state) {
  Owners& o = owners(state.range(0));
  FaultOwner* const owner = fake_owner(o.gaps.size());
  std::size_t k = 0;
  for (auto _ : state) {
    const std::uintptr_t begin = gap_begin(o, k++);
    {
      const std::unique_lock lock(o.map_mutex);
      o.map.emplace(begin, MapEntry{begin + kGapRange, owner});
    }
    {
      const std::unique_lock lock(o.map_mutex);
      o.map.erase(begin);
    }
  }
  state.SetItemsProcessed(state.iterations());
}

void register_libsigsegv(benchmark::State& state) {
  Owners& o = owners(state.range(0));
  FaultOwner* const owner = fake_owner(o.gaps.size());
  std::size_t k = 0;
  for (auto _ : state) {
    const std::uintptr_t begin = gap_begin(o, k++);
    void* ticket =
        sigsegv_register(&o.areas, reinterpret_cast<void*>(begin), kGapRange, on_area, owner);
    sigsegv_unregister(&o.areas, ticket);
  }
  state.SetItemsProcessed(state.iterations());
}

}  // namespace

void register_benchmarks() {
  struct Lookup {
    const char* name;
    void (*fn)(benchmark::State&);
  };
  for (const Lookup& l : {Lookup{"lookup/range_table", lookup_range_table},
                          Lookup{"lookup/range_table_find_only", lookup_range_table_find_only},
                          Lookup{"lookup/shared_mutex_map", lookup_shared_mutex_map},
                          Lookup{"lookup/libsigsegv", lookup_libsigsegv}}) {
    benchmark::RegisterBenchmark(l.name, l.fn)
        ->Arg(1)
        ->Arg(100)
        ->Arg(10000)
        ->Threads(1)
        ->Threads(2);
  }
  compare("lookup/range_table", "lookup/shared_mutex_map", Clock::kCpu);
  compare("lookup/range_table", "lookup/libsigsegv", Clock::kCpu);
  compare("lookup/range_table", "lookup/range_table_find_only", Clock::kCpu);

  for (const Lookup& r : {Lookup{"register/range_table", register_range_table},
                          Lookup{"register/mutex_map", register_mutex_map},
                          Lookup{"register/libsigsegv", register_libsigsegv}}) {
    benchmark::RegisterBenchmark(r.name, r.fn)->Arg(10000)->UseRealTime();
  }
  compare("register/range_table", "register/mutex_map");
  compare("register/range_table", "register/libsigsegv");
}

}  // namespace mapwright::bench
