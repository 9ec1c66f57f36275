// The parts the core is composed of (DESIGN.md "The parts of the core"): a Reservation of
// address space (anonymous or over a file, at a preferred base or anywhere), a Backing (the
// file), a Registration in the fault table, and the growth owners — here DownwardGrowth, the
// owner a back-to-front builder uses, composed by hand as such a builder will compose it.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <string>

#include "backing.h"
#include "child.h"
#include "content.h"
#include "growth.h"
#include "mapwright/error.h"
#include "mapwright/fault.h"
#include "os/os.h"
#include "region_helpers.h"
#include "registration.h"
#include "reservation.h"
#include "sanitizers.h"

namespace mapwright {
namespace {

using namespace test;
using detail::Backing;
using detail::DownwardGrowth;
using detail::FaultOutcome;
using detail::FaultReport;
using detail::FileKind;
using detail::Registration;
using detail::Reservation;

// A free, aligned address for `length` bytes: reserve anywhere, note it, let it go.
void* free_address(std::uint64_t length) {
  Reservation probe = Reservation::anonymous(length, 0, "probe");
  return probe.base();
}

// ThreadSanitizer's mmap interceptor drops address hints it does not like and does not
// know MAP_FIXED_NOREPLACE; the kernel's behaviour cannot be observed through it.
#if MAPWRIGHT_TEST_TSAN
#define SKIP_UNDER_TSAN() GTEST_SKIP() << "TSan's mmap interceptor does not pass MAP_FIXED_NOREPLACE"
#else
#define SKIP_UNDER_TSAN() (void)0
#endif

TEST(Reservation, AtAPreferredBaseOrRefusedWithEexist) {
  SKIP_UNDER_TSAN();
  constexpr std::uint64_t kLength = 16 * kMiB;
  void* at = free_address(kLength + kMiB);  // with the guard
  Reservation first = Reservation::anonymous(kLength, kMiB, "first", at);
  EXPECT_EQ(static_cast<void*>(first.base()), at);
  EXPECT_EQ(first.mapped(), kLength + kMiB);
  // Taken: refused, never moved elsewhere and never replacing the first.
  const auto error = error_from([&] { (void)Reservation::anonymous(kLength, 0, "second", at); });
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->error(), EEXIST) << error->what();
  EXPECT_NE(std::string(error->what()).find("taken"), std::string::npos) << error->what();
  // One page of overlap is enough to refuse.
  auto* last_page = first.base() + kLength + kMiB - 4 * kKiB;
  EXPECT_TRUE(error_from([&] { (void)Reservation::anonymous(kLength, 0, "overlap", last_page); }));
}

TEST(Reservation, OverAFileAtAPreferredBase) {
  SKIP_UNDER_TSAN();
  constexpr std::uint64_t kLength = 8 * kMiB;
  Backing backing = Backing::memfd("over-file");
  ASSERT_EQ(::ftruncate(backing.fd(), 4 * kKiB), 0);
  void* at = free_address(kLength);
  Reservation r = Reservation::over_file(backing.fd(), kLength, 0, "over-file", at);
  ASSERT_EQ(static_cast<void*>(r.base()), at);
  r.base()[10] = std::byte{42};
  char byte = 0;
  ASSERT_EQ(::pread(backing.fd(), &byte, 1, 10), 1);
  EXPECT_EQ(byte, 42);
}

TEST(Reservation, ReleaseKeepingHandsAPrefixOver) {
  Reservation r = Reservation::anonymous(8 * kMiB, kMiB, "release");
  std::byte* base = r.base();
  std::byte* kept = r.release_keeping(100);
  EXPECT_EQ(kept, base);
  EXPECT_EQ(r.base(), nullptr);
  EXPECT_EQ(::munmap(kept, 4 * kKiB), 0);  // the caller owns the first page now
}

// DownwardGrowth: the top stays put, commits move the bottom down, the file is the
// reservation's length with the data at its end, and nothing moves once written.
void check_downward(Backing backing, FileKind kind) {
  constexpr std::uint64_t kCapacity = 64 * kMiB;
  install_fault_handler();
  Reservation reservation = Reservation::anonymous(kCapacity, 0, backing.name());
  DownwardGrowth owner(backing.name(), backing.fd(), reservation.base(), kCapacity, kind);
  ASSERT_EQ(owner.start(), 0);
  const auto begin = reinterpret_cast<std::uintptr_t>(reservation.base());
  Registration registration(begin, begin + kCapacity, &owner, backing.name().c_str());

  FaultReport report;
  ASSERT_EQ(owner.commit_down(100, &report), FaultOutcome::kResolved);
  EXPECT_EQ(owner.committed(), 4 * kKiB);
  std::byte* const top = owner.top();
  EXPECT_EQ(top, reservation.base() + kCapacity);
  std::memset(top - 100, 0x11, 100);
  ASSERT_EQ(owner.commit_down(3 * kMiB + 5, &report), FaultOutcome::kResolved);
  std::memset(top - (3 * kMiB + 5), 0x22, 3 * kMiB + 5 - 100);
  EXPECT_EQ(top[-1], std::byte{0x11});  // never moved
  ASSERT_EQ(owner.commit(reinterpret_cast<std::uintptr_t>(top - 5 * kMiB),
                         reinterpret_cast<std::uintptr_t>(top), &report),
            FaultOutcome::kResolved);
  EXPECT_GE(owner.committed(), 5 * kMiB);

  std::uint64_t size = 0;
  ASSERT_EQ(os::file_size(backing.fd(), &size), 0);
  EXPECT_EQ(size, kCapacity);
  unsigned char last[100];
  ASSERT_EQ(::pread(backing.fd(), last, sizeof last, static_cast<off_t>(kCapacity - 100)), 100);
  for (unsigned char c : last) ASSERT_EQ(c, 0x11);

  EXPECT_EQ(owner.commit_down(kCapacity + 1, &report), FaultOutcome::kFailed);
  EXPECT_EQ(report.error, ENOMEM);
}

TEST(DownwardGrowth, GrowsDownFromAFixedTopOverAMemfd) {
  check_downward(Backing::memfd("downward"), FileKind::kMemory);
}

TEST(DownwardGrowth, GrowsDownFromAFixedTopOverADiskFile) {
  DiskDir dir;
  ASSERT_TRUE(dir.ok());
  check_downward(Backing::create_file(dir / "downward.bin"), FileKind::kDisk);
}

TEST(DownwardGrowth, AFullDiskIsAnErrorAtTheCommit) {
  SmallTmpfs tmpfs(4 * kMiB);
  if (!tmpfs.ok()) GTEST_SKIP() << tmpfs.reason();
  Backing backing = Backing::create_file(tmpfs.path() / "full.bin");
  Reservation reservation = Reservation::anonymous(64 * kMiB, 0, "full");
  // A tmpfs file is memory, but allocated ahead by fallocate like a disk file's blocks.
  DownwardGrowth owner("full", backing.fd(), reservation.base(), 64 * kMiB, FileKind::kDisk);
  ASSERT_EQ(owner.start(), 0);
  FaultReport report;
  EXPECT_EQ(owner.commit_down(2 * kMiB, &report), FaultOutcome::kResolved);
  EXPECT_EQ(owner.commit_down(8 * kMiB, &report), FaultOutcome::kFailed);
  EXPECT_EQ(report.error, ENOSPC);
  EXPECT_EQ(owner.committed(), 2 * kMiB);
}

TEST(DownwardGrowth, AStoreBelowTheBottomIsACrashNotAGrowth) {
  const ChildResult result = run_in_child(
      [] {
        no_core_dumps();
        Backing backing = Backing::memfd("below");
        Reservation reservation = Reservation::anonymous(16 * kMiB, 0, "below");
        DownwardGrowth owner("below", backing.fd(), reservation.base(), 16 * kMiB,
                             FileKind::kMemory);
        CHILD_CHECK(owner.start() == 0);
        FaultReport report;
        CHILD_CHECK(owner.commit_down(kMiB, &report) == FaultOutcome::kResolved);
        say("storing\n");
        reinterpret_cast<volatile char*>(owner.top())[-static_cast<long>(2 * kMiB)] = 1;
        say("survived\n");
      },
      std::chrono::milliseconds(20'000));
  EXPECT_EQ(result.output.find("survived"), std::string::npos) << result.describe();
  test::expect_segv(result);
}

TEST(Backing, StagedPublishesAtomicallyAndLeavesNothingWhenDropped) {
  TempDir dir;
  const auto target = dir / "staged.bin";
  {
    Backing dropped = Backing::staged(target);
    ASSERT_EQ(::pwrite(dropped.fd(), "x", 1, 0), 1);
  }
  EXPECT_FALSE(std::filesystem::exists(target));
  Backing backing = Backing::staged(target);
  ASSERT_EQ(::pwrite(backing.fd(), "hello", 5, 0), 5);
  backing.publish(true);
  EXPECT_EQ(backing.kind(), detail::BackingKind::kFile);
  EXPECT_EQ(std::filesystem::file_size(target), 5u);
  std::size_t entries = 0;
  for (const auto& item : std::filesystem::directory_iterator(dir.path())) {
    (void)item;
    ++entries;
  }
  EXPECT_EQ(entries, 1u);
}

}  // namespace
}  // namespace mapwright
