// tests/threads_test.cc — Regions under concurrency: faults racing at the end of one region,
// threads each growing their own region, regions created and destroyed while other threads
// fault, and ensure() from several threads at once. Must also pass under ThreadSanitizer.
//
// Bytes are checked through pread(2) on region.fd(), independently of the mapping.
// MAPWRIGHT_TEST_BYTES (e.g. "64M") scales the amounts down for sanitizer runs.
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <latch>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "child.h"
#include "content.h"
#include "mapwright/error.h"
#include "mapwright/region.h"
#include "region_helpers.h"

namespace mapwright {
namespace {

using namespace test;  // the shared helpers in tests/support

// `fraction` of the test size, at least `floor` bytes, a multiple of 1 MiB.
std::uint64_t scaled(std::uint64_t divisor, std::uint64_t floor) {
  return std::max(floor, test_bytes() / divisor / kMiB * kMiB);
}

std::uint64_t fstat_size(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return 0;
  return static_cast<std::uint64_t>(st.st_size);
}

// Small steps: many growths, so that faults from several threads meet at the end of the file.
RegionOptions small_steps() {
  RegionOptions options;
  options.capacity = 4 * kGiB;
  options.min_step = 64 * kKiB;
  options.max_step = 1 * kMiB;
  return options;
}

// ---- one region, several threads storing past its end ----------------------------------

void stripes_into_one_region(Region& region, unsigned threads, std::uint64_t seed) {
  const std::uint64_t total = scaled(8, 16 * kMiB);  // 128 MiB by default
  constexpr std::uint64_t kStripe = 16 * kKiB;        // four pages
  constexpr std::uint64_t kStripeWords = kStripe / 8;
  const std::uint64_t stripes = total / kStripe;
  std::byte* const base = region.data();

  std::latch start(threads);
  std::vector<std::thread> workers;
  for (unsigned t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      start.arrive_and_wait();
      // Thread t owns stripes t, t + threads, ...: all threads run past EOF together.
      for (std::uint64_t s = t; s < stripes; s += threads) {
        fill(base, s * kStripeWords, (s + 1) * kStripeWords, seed);
      }
    });
  }
  for (std::thread& worker : workers) worker.join();

  EXPECT_EQ(region.data(), base);
  EXPECT_GE(region.size(), total);
  const RegionStats stats = region.stats();
  ::testing::Test::RecordProperty("faults", std::to_string(stats.faults));
  ::testing::Test::RecordProperty("growths", std::to_string(stats.growths));
  EXPECT_EQ(stats.failures, 0u);
  EXPECT_GE(stats.growths, total / small_steps().max_step / 2);
  EXPECT_GE(stats.faults, stats.growths) << "every growth here came from a fault";
  region.finish(total);
  EXPECT_EQ(fstat_size(region.fd()), total);
  EXPECT_EQ(check_words(region.fd(), 0, total / 8, seed), "");
}

TEST(Threads, InterleavedStripesIntoOneMemfdRegion) {
  Region region = Region::memfd("threads_test.stripes", small_steps());
  stripes_into_one_region(region, 6, 1);
}

TEST(Threads, InterleavedStripesIntoOneFileRegion) {
  on_disk_file("stripes.bin", small_steps(),
               [](Region& region) { stripes_into_one_region(region, 4, 2); });
}

// ---- each thread its own region ----------------------------------------------------------

TEST(Threads, EachThreadGrowsItsOwnRegion) {
  DiskDir dir;
  ASSERT_TRUE(dir.ok());
  constexpr unsigned kThreads = 6;
  const std::uint64_t bytes = scaled(32, 4 * kMiB);  // 32 MiB each by default
  std::vector<std::string> results(kThreads);
  std::latch start(kThreads);
  std::vector<std::thread> workers;
  for (unsigned t = 0; t < kThreads; ++t) {
    workers.emplace_back([&, t] {
      try {
        Region region = t % 2 == 0
                            ? Region::memfd("threads_test.own-" + std::to_string(t), small_steps())
                            : Region::file(dir / ("own-" + std::to_string(t)), small_steps());
        start.arrive_and_wait();
        fill(region.data(), 0, bytes / 8, 100 + t);
        if (region.stats().failures != 0 || region.stats().faults == 0) {
          results[t] = "unexpected stats";
          return;
        }
        region.finish(bytes);
        results[t] = check_words(region.fd(), 0, bytes / 8, 100 + t);
        if (results[t].empty() && fstat_size(region.fd()) != bytes) results[t] = "wrong size";
      } catch (const std::exception& e) {
        results[t] = e.what();
      }
    });
  }
  for (std::thread& worker : workers) worker.join();
  for (unsigned t = 0; t < kThreads; ++t) EXPECT_EQ(results[t], "") << "thread " << t;
}

// ---- regions created and destroyed while other threads fault -----------------------------

TEST(Threads, RegionsComeAndGoWhileOthersFault) {
  DiskDir dir;
  ASSERT_TRUE(dir.ok());
  constexpr unsigned kChurners = 2;
  constexpr unsigned kFaulters = 2;
  constexpr int kIterations = 40;
  const std::uint64_t churn_bytes = 2 * kMiB;
  const std::uint64_t fault_bytes = scaled(64, 4 * kMiB);  // 16 MiB per round by default

  std::atomic<unsigned> churners_left{kChurners};
  std::vector<std::string> results(kChurners + kFaulters);
  std::vector<int> rounds(kFaulters, 0);
  std::latch start(kChurners + kFaulters);
  std::vector<std::thread> workers;

  for (unsigned c = 0; c < kChurners; ++c) {
    workers.emplace_back([&, c] {
      start.arrive_and_wait();
      try {
        for (int i = 0; i < kIterations && results[c].empty(); ++i) {
          RegionOptions options = small_steps();
          options.capacity = 64 * kMiB;
          const std::uint64_t seed = 1000 * (c + 1) + static_cast<std::uint64_t>(i);
          Region region =
              i % 4 == 3 ? Region::file(dir / ("churn-" + std::to_string(c)), options)
                         : Region::memfd("threads_test.churn", options);
          fill(region.data(), 0, churn_bytes / 8, seed);
          region.finish(churn_bytes);
          results[c] = check_words(region.fd(), 0, churn_bytes / 8, seed);
          // Moving it around and dropping it mid-flight is part of the churn.
          Region moved = std::move(region);
          if (results[c].empty() && moved.size() != churn_bytes) results[c] = "wrong size";
        }
      } catch (const std::exception& e) {
        results[c] = e.what();
      }
      churners_left.fetch_sub(1);
    });
  }
  for (unsigned f = 0; f < kFaulters; ++f) {
    workers.emplace_back([&, f] {
      const unsigned slot = kChurners + f;
      try {
        Region region = Region::memfd("threads_test.faulter-" + std::to_string(f), small_steps());
        start.arrive_and_wait();
        int round = 0;
        do {
          const std::uint64_t seed = 5000 * (f + 1) + static_cast<std::uint64_t>(round);
          region.finish(0);  // every round grows from nothing again, by faults
          fill(region.data(), 0, fault_bytes / 8, seed);
          region.finish(fault_bytes);
          results[slot] = check_words(region.fd(), 0, fault_bytes / 8, seed);
          ++round;
        } while (results[slot].empty() && churners_left.load() != 0);
        rounds[f] = round;
        if (results[slot].empty() && region.stats().failures != 0) results[slot] = "failures";
      } catch (const std::exception& e) {
        results[slot] = e.what();
      }
    });
  }
  for (std::thread& worker : workers) worker.join();
  for (unsigned i = 0; i < results.size(); ++i) EXPECT_EQ(results[i], "") << "thread " << i;
  for (unsigned f = 0; f < kFaulters; ++f) EXPECT_GE(rounds[f], 1) << "faulter " << f;
}

// ---- ensure() from several threads --------------------------------------------------------

TEST(Threads, ConcurrentEnsureNeverShrinks) {
  RegionOptions options;
  options.capacity = 4 * kGiB;
  options.min_step = 4 * kKiB;
  options.max_step = 256 * kKiB;  // many small steps
  Region region = Region::memfd("threads_test.ensure", options);
  const std::uint64_t limit = scaled(8, 16 * kMiB);  // 128 MiB by default
  constexpr unsigned kEnsurers = 4;

  std::atomic<bool> done{false};
  // The others start only once the observer has looked once: on a loaded machine (CI under
  // ASan) the observer could otherwise be scheduled only after they had all finished.
  std::atomic<bool> observing{false};
  const auto wait_for_observer = [&] {
    while (!observing.load(std::memory_order_acquire)) std::this_thread::yield();
  };
  std::vector<std::string> results(kEnsurers + 2);
  std::latch start(kEnsurers + 2);
  std::vector<std::thread> workers;
  for (unsigned t = 0; t < kEnsurers; ++t) {
    workers.emplace_back([&, t] {
      start.arrive_and_wait();
      wait_for_observer();
      try {
        std::uint64_t state = 0x12345 + t;
        for (std::uint64_t n = 1 + t; n < limit; n += 1 + state % (64 * kKiB)) {
          state = state * 6364136223846793005ull + 1442695040888963407ull;
          // Sometimes a smaller request than already granted: must be a no-op.
          const std::uint64_t want = (state >> 60) == 0 ? n / 2 : n;
          region.ensure(want);
          if (region.size() < want) {
            results[t] = "size " + std::to_string(region.size()) + " < ensured " +
                         std::to_string(want);
            return;
          }
        }
      } catch (const std::exception& e) {
        results[t] = e.what();
      }
    });
  }
  // A thread storing (and so faulting) at growing offsets at the same time.
  workers.emplace_back([&] {
    start.arrive_and_wait();
    wait_for_observer();
    auto* words = reinterpret_cast<std::uint64_t*>(region.data());
    for (std::uint64_t offset = 0; offset < limit; offset += 64 * kKiB + 8) {
      words[offset / 8] = pattern(offset / 8, 7);
    }
  });
  // An observer: size() never goes down, and the file is never shorter than size().
  workers.emplace_back([&] {
    start.arrive_and_wait();
    std::uint64_t last = 0;
    std::uint64_t observations = 0;
    while (!done.load(std::memory_order_acquire)) {
      const std::uint64_t now = region.size();
      if (now < last) {
        results[kEnsurers + 1] = "size went from " + std::to_string(last) + " to " +
                                 std::to_string(now);
        return;
      }
      if (fstat_size(region.fd()) < now) {
        results[kEnsurers + 1] = "the file is shorter than size() " + std::to_string(now);
        return;
      }
      last = now;
      ++observations;
      observing.store(true, std::memory_order_release);
    }
    if (observations == 0) results[kEnsurers + 1] = "no observation";
  });
  for (unsigned t = 0; t < kEnsurers + 1; ++t) workers[t].join();
  done.store(true, std::memory_order_release);
  workers.back().join();

  for (unsigned i = 0; i < results.size(); ++i) EXPECT_EQ(results[i], "") << "thread " << i;
  EXPECT_GE(region.size(), limit - 64 * kKiB - 8);  // the storer's last offset
  EXPECT_EQ(fstat_size(region.fd()), region.size());
  EXPECT_EQ(region.stats().failures, 0u);
  // The storing thread's words all landed.
  for (std::uint64_t offset = 0; offset < limit; offset += 64 * kKiB + 8) {
    std::uint64_t value = 0;
    ASSERT_EQ(pread_all(region.fd(), &value, 8, offset), 8u);
    ASSERT_EQ(value, pattern(offset / 8, 7)) << "at offset " << offset;
  }
}

}  // namespace
}  // namespace mapwright
