// Tests of the lock-free range table the SIGBUS handler searches (signal/range_table.h).
#include "range_table.h"

#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <algorithm>
#include <map>
#include <random>
#include <stdexcept>
#include <thread>
#include <vector>

namespace mapwright::detail {
namespace {

// Owners are only compared by address here; the table never calls them.
struct FakeOwner final : FaultOwner {
  FaultOutcome on_fault(const FaultContext&, FaultReport*) noexcept override {
    return FaultOutcome::kResolved;
  }
  FaultOutcome commit(std::uintptr_t, std::uintptr_t, FaultReport*) noexcept override {
    return FaultOutcome::kResolved;
  }
};

FaultOwner* owner_id(std::size_t i) {
  static std::vector<FakeOwner> owners(20'000);
  return &owners.at(i);
}

RangeTable::Found lookup(const RangeTable& table, std::uintptr_t address) {
  RangeTable::Pin pin(table);
  return pin.find(address);
}

TEST(RangeTable, EmptyTableFindsNothing) {
  RangeTable table;
  EXPECT_EQ(lookup(table, 0x1000).owner, nullptr);
  EXPECT_EQ(table.size(), 0u);
  EXPECT_FALSE(table.erase(0x1000));
}

TEST(RangeTable, HalfOpenBounds) {
  RangeTable table;
  table.insert(0x10000, 0x20000, owner_id(1));
  EXPECT_EQ(lookup(table, 0xffff).owner, nullptr);
  EXPECT_EQ(lookup(table, 0x10000).owner, owner_id(1));
  EXPECT_EQ(lookup(table, 0x1ffff).owner, owner_id(1));
  EXPECT_EQ(lookup(table, 0x20000).owner, nullptr);
  const auto found = lookup(table, 0x15000);
  EXPECT_EQ(found.begin, 0x10000u);
  EXPECT_EQ(found.end, 0x20000u);
}

TEST(RangeTable, RejectsOverlapAndEmptyRangesWithoutChange) {
  RangeTable table;
  table.insert(0x10000, 0x20000, owner_id(1));
  table.insert(0x30000, 0x40000, owner_id(2));
  EXPECT_THROW(table.insert(0x18000, 0x19000, owner_id(3)), std::invalid_argument);  // inside
  EXPECT_THROW(table.insert(0x08000, 0x10001, owner_id(3)), std::invalid_argument);  // tail
  EXPECT_THROW(table.insert(0x1ffff, 0x30000, owner_id(3)), std::invalid_argument);  // head
  EXPECT_THROW(table.insert(0x00000, 0x50000, owner_id(3)), std::invalid_argument);  // around
  EXPECT_THROW(table.insert(0x50000, 0x50000, owner_id(3)), std::invalid_argument);  // empty
  EXPECT_EQ(table.size(), 2u);
  table.insert(0x20000, 0x30000, owner_id(4));  // exactly the gap
  EXPECT_EQ(lookup(table, 0x20000).owner, owner_id(4));
  EXPECT_EQ(lookup(table, 0x2ffff).owner, owner_id(4));
  EXPECT_EQ(lookup(table, 0x30000).owner, owner_id(2));
}

// Random inserts and erases against std::map as the model, through block splits and empty
// blocks, up to 10,000 owners; every lookup agrees with the model.
TEST(RangeTable, AgreesWithModelAtTenThousandOwners) {
  RangeTable table;
  std::map<std::uintptr_t, std::pair<std::uintptr_t, FaultOwner*>> model;
  std::mt19937_64 random(42);
  constexpr std::uintptr_t kSlot = 0x10000;
  constexpr std::size_t kSlots = 20'000;
  auto check = [&](std::uintptr_t address) {
    const auto found = lookup(table, address);
    auto it = model.upper_bound(address);
    FaultOwner* expected = nullptr;
    if (it != model.begin()) {
      --it;
      if (address < it->second.first) expected = it->second.second;
    }
    ASSERT_EQ(found.owner, expected) << std::hex << address;
  };
  for (int round = 0; round < 60'000; ++round) {
    const std::size_t slot = random() % kSlots;
    const std::uintptr_t begin = (slot + 1) * kSlot;
    const bool present = model.count(begin) != 0;
    if (!present && (model.size() < 10'000 || random() % 4 == 0)) {
      const std::uintptr_t end = begin + kSlot / 2 + (random() % (kSlot / 2));
      table.insert(begin, end, owner_id(slot));
      model[begin] = {end, owner_id(slot)};
    } else if (present) {
      ASSERT_TRUE(table.erase(begin));
      model.erase(begin);
    }
    if (round % 16 == 0) {
      for (int probe = 0; probe < 8; ++probe) check(random() % ((kSlots + 2) * kSlot));
    }
  }
  EXPECT_EQ(table.size(), model.size());
  for (const auto& [begin, value] : model) {
    check(begin);
    check(value.first - 1);
    check(value.first);
  }
}

// mmap hands out addresses in order (usually descending): blocks then split at the
// insertion point. Every range is found at both ends, every gap is empty, in both orders.
TEST(RangeTable, SequentialInsertsInBothDirections) {
  for (const bool ascending : {true, false}) {
    RangeTable table;
    constexpr std::size_t kCount = 10'000;
    constexpr std::uintptr_t kSlot = 0x10000;
    for (std::size_t n = 0; n < kCount; ++n) {
      const std::size_t i = ascending ? n : kCount - 1 - n;
      table.insert((i + 1) * kSlot, (i + 1) * kSlot + kSlot / 2, owner_id(i));
    }
    ASSERT_EQ(table.size(), kCount);
    for (std::size_t i = 0; i < kCount; ++i) {
      const std::uintptr_t begin = (i + 1) * kSlot;
      ASSERT_EQ(lookup(table, begin).owner, owner_id(i)) << ascending << " " << i;
      ASSERT_EQ(lookup(table, begin + kSlot / 2 - 1).owner, owner_id(i));
      ASSERT_EQ(lookup(table, begin + kSlot / 2).owner, nullptr);
      ASSERT_EQ(lookup(table, begin - 1).owner, nullptr);
    }
    std::vector<std::size_t> order(kCount);
    for (std::size_t i = 0; i < kCount; ++i) order[i] = i;
    std::shuffle(order.begin(), order.end(), std::mt19937(3));
    for (std::size_t k = 0; k < kCount; ++k) {
      ASSERT_TRUE(table.erase((order[k] + 1) * kSlot));
      if (k % 1000 == 0 && k + 1 < kCount) {
        ASSERT_EQ(lookup(table, (order[k + 1] + 1) * kSlot).owner, owner_id(order[k + 1]));
        ASSERT_EQ(lookup(table, (order[k] + 1) * kSlot).owner, nullptr);
      }
    }
    EXPECT_EQ(table.size(), 0u);
  }
}

// Readers on other threads never see a half-done update: stable ranges are always found
// with their owner while a writer churns ranges around them.
TEST(RangeTable, ReadersSeeConsistentTableDuringWrites) {
  RangeTable table;
  constexpr std::uintptr_t kSlot = 0x10000;
  constexpr int kStable = 500;
  for (int i = 0; i < kStable; ++i) {
    const std::uintptr_t begin = (2 * i + 1) * kSlot;
    table.insert(begin, begin + kSlot, owner_id(i));
  }
  std::atomic<bool> stop{false};
  std::atomic<long> wrong{0};
  std::atomic<long> lookups{0};
  std::vector<std::thread> readers;
  for (int r = 0; r < 2; ++r) {
    readers.emplace_back([&, r] {
      std::mt19937 random(r);
      while (!stop.load(std::memory_order_relaxed)) {
        const int i = static_cast<int>(random() % kStable);
        const std::uintptr_t address = (2 * i + 1) * kSlot + random() % kSlot;
        if (lookup(table, address).owner != owner_id(i)) wrong.fetch_add(1);
        lookups.fetch_add(1, std::memory_order_relaxed);
      }
    });
  }
  std::mt19937 random(7);
  for (int round = 0; round < 20'000; ++round) {
    const std::uintptr_t begin = (2 * (random() % kStable) + 2) * kSlot;  // the gaps
    if (lookup(table, begin).owner == nullptr) {
      table.insert(begin, begin + kSlot, owner_id(kStable + round % 1000));
    } else {
      table.erase(begin);
    }
  }
  stop = true;
  for (auto& reader : readers) reader.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_GT(lookups.load(), 0);
}

// A lookup from a signal handler on the writing thread itself: writers block signals, so
// the handler runs between updates and always finds the stable range.
std::atomic<RangeTable*> g_table{nullptr};
std::atomic<long> g_handler_found{0};
std::atomic<long> g_handler_missed{0};

void lookup_in_handler(int) {
  RangeTable::Pin pin(*g_table.load());
  if (pin.find(0x10000 + 5).owner == owner_id(0)) {
    g_handler_found.fetch_add(1);
  } else {
    g_handler_missed.fetch_add(1);
  }
}

TEST(RangeTable, LookupFromSignalHandlerOnWritingThread) {
  RangeTable table;
  table.insert(0x10000, 0x20000, owner_id(0));
  g_table = &table;
  struct sigaction sa{};
  sa.sa_handler = lookup_in_handler;
  sigemptyset(&sa.sa_mask);
  struct sigaction old{};
  ASSERT_EQ(sigaction(SIGUSR1, &sa, &old), 0);

  const pthread_t writer = pthread_self();
  std::atomic<bool> stop{false};
  std::thread signaller([&] {
    while (!stop.load()) {
      pthread_kill(writer, SIGUSR1);
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  });
  for (int round = 0; round < 20'000; ++round) {
    const std::uintptr_t begin = 0x100000 + (round % 64) * 0x10000;
    if (round % 128 < 64) {
      table.insert(begin, begin + 0x8000, owner_id(1 + round % 64));
    } else {
      table.erase(begin);
    }
  }
  stop = true;
  signaller.join();
  sigaction(SIGUSR1, &old, nullptr);
  EXPECT_GT(g_handler_found.load(), 0);
  EXPECT_EQ(g_handler_missed.load(), 0);
}

// Invariant 4: erase() returns only after every Pin that could have found the owner is gone.
TEST(RangeTable, EraseWaitsForPinsThatMayHoldTheOwner) {
  RangeTable table;
  table.insert(0x10000, 0x20000, owner_id(0));
  std::atomic<bool> pinned{false};
  std::atomic<bool> released{false};
  std::thread handler_like([&] {
    RangeTable::Pin pin(table);
    ASSERT_EQ(pin.find(0x10000).owner, owner_id(0));
    pinned = true;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    released = true;
    pin.release();
  });
  while (!pinned.load()) std::this_thread::yield();
  EXPECT_TRUE(table.erase(0x10000));
  EXPECT_TRUE(released.load()) << "erase() returned while a pin still held the owner";
  handler_like.join();
  EXPECT_EQ(lookup(table, 0x10000).owner, nullptr);
}

}  // namespace
}  // namespace mapwright::detail
