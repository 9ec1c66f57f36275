// Growth at its edges (signal/growth_policy.h, signal/growth.h, src/region.cc): the growth
// target as a pure function, option values that used to wrap, RLIMIT_FSIZE past finish() and
// a limit the check could not see, holes on a full filesystem, RLIMIT_AS, memory per region.
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "child.h"
#include "content.h"
#include "growth.h"
#include "growth_policy.h"
#include "mapwright/error.h"
#include "mapwright/fault.h"
#include "mapwright/region.h"
#include "region_helpers.h"
#include "sanitizers.h"

namespace mapwright {
namespace {

using namespace test;

constexpr std::chrono::milliseconds kChildTimeout{30'000};
constexpr std::uint64_t kPage = 4096;

// The step-by-step definition the O(log) growth_target() must agree with.
std::uint64_t reference_target(std::uint64_t current, std::uint64_t need,
                               const detail::GrowthPolicy& p) {
  std::uint64_t target = current;
  while (target < need) {
    std::uint64_t step = target < p.min_step ? p.min_step : target;
    if (step > p.max_step) step = p.max_step;
    target += step;
  }
  target = (target + kPage - 1) / kPage * kPage;
  return target < p.capacity ? target : p.capacity;
}

TEST(GrowthTarget, AgreesWithStepByStepGrowth) {
  std::mt19937_64 random(42);
  for (int i = 0; i < 20'000; ++i) {
    detail::GrowthPolicy p;
    p.capacity = (random() % (1ull << 34)) / kPage * kPage + kPage;
    p.min_step = (random() % (64 * kPage)) / kPage * kPage + kPage;
    p.max_step = p.min_step + (random() % (1ull << 24)) / kPage * kPage;
    if (p.max_step > p.capacity) p.max_step = p.capacity;
    if (p.min_step > p.max_step) p.min_step = p.max_step;
    const std::uint64_t current = random() % 2 ? 0 : random() % p.capacity;
    const std::uint64_t need = current + 1 + random() % (p.capacity - current);
    if (need > p.capacity) continue;
    ASSERT_EQ(detail::growth_target(current, need, p, kPage), reference_target(current, need, p))
        << "current " << current << " need " << need << " capacity " << p.capacity << " steps "
        << p.min_step << ".." << p.max_step;
  }
}

TEST(GrowthTarget, FourKibStepsOverSixteenTib) {
  detail::GrowthPolicy p{16ull << 40, kPage, kPage, true};
  // Step by step this is 2^31 iterations (seconds inside a signal handler); here it is one
  // division.
  EXPECT_EQ(detail::growth_target(0, 8ull << 40, p, kPage), 8ull << 40);
  EXPECT_EQ(detail::growth_target(kPage, (8ull << 40) + 1, p, kPage), (8ull << 40) + kPage);
  EXPECT_EQ(detail::growth_target(0, 16ull << 40, p, kPage), 16ull << 40);
}

// ---- options that used to wrap ------------------------------------------------------------

TEST(GrowthEdges, HugeStepsMeanTheWholeCapacity) {
  const ChildResult result = run_in_child(
      [] {
        RegionOptions options = options_with_capacity(64 * kMiB);
        options.max_step = UINT64_MAX;  // "no cap": used to wrap to 0 and loop forever
        Region region = Region::memfd("no-cap", options);
        check_store_works(region, 5 * kMiB);
        options.min_step = UINT64_MAX;
        Region all_at_once = Region::memfd("all-at-once", options);
        check_store_works(all_at_once, 10);
        CHILD_CHECK(all_at_once.size() == 64 * kMiB);
      },
      kChildTimeout);
  expect_clean_exit_unreported(result);
}

TEST(GrowthEdges, FourKibStepsOverSixteenTibGrowInOneStep) {
#if MAPWRIGHT_TEST_TSAN
  GTEST_SKIP() << "ThreadSanitizer's application memory has no 16 TiB to reserve";
#endif
  const ChildResult result = run_in_child(
      [] {
        RegionOptions options = options_with_capacity(16ull << 40);
        options.min_step = 4 * kKiB;
        options.max_step = 4 * kKiB;
        Region region = Region::memfd("sixteen-tib", options);
        check_store_works(region, (8ull << 40) - 1);  // one fault, one ftruncate
        CHILD_CHECK(region.stats().growths == 1);
      },
      kChildTimeout);
  expect_clean_exit_unreported(result);
}

// ---- RLIMIT_FSIZE ---------------------------------------------------------------------------

void limit_file_size(std::uint64_t bytes) {
  const rlimit limit{bytes, RLIM_INFINITY};
  CHILD_CHECK(::setrlimit(RLIMIT_FSIZE, &limit) == 0);
}

TEST(GrowthEdges, FinishPastRlimitFsizeIsEfbigNotSigxfsz) {
  TempDir dir;
  const ChildResult result = run_in_child(
      [&] {
        limit_file_size(4 * kMiB);
        Region region = Region::file(dir / "finish.bin", options_with_capacity(64 * kMiB));
        check_store_works(region, 100);
        const auto error = error_from([&] { region.finish(8 * kMiB); });
        CHILD_CHECK(error.has_value() && error->error() == EFBIG);
        CHILD_CHECK_MSG(std::string(error->what()).find("RLIMIT_FSIZE") != std::string::npos,
                        error->what());
        region.finish(4 * kMiB);  // exactly the limit is allowed
        CHILD_CHECK(region.size() == 4 * kMiB);
      },
      kChildTimeout);
  expect_clean_exit_unreported(result);
}

// The handler reads the limit, then grows: a limit lowered in between made the ftruncate
// raise SIGXFSZ. Made deterministic here: prlimit64 of RLIMIT_FSIZE (how the handler reads
// the limit) fails under a seccomp filter, so the handler sees no limit at all, and the
// kernel enforces one.
TEST(GrowthEdges, LimitTheCheckCouldNotSeeIsEfbigNotSigxfsz) {
  TempDir dir;
  const ChildResult result = run_in_child(
      [&] {
        Region region = Region::file(dir / "race.bin", options_with_capacity(64 * kMiB));
        limit_file_size(4 * kMiB);
        // Only the RLIMIT_FSIZE query: the sanitizers ask for RLIMIT_STACK.
        CHILD_CHECK(deny_syscall_when(SYS_prlimit64, EPERM, 1, RLIMIT_FSIZE));
        const auto error = error_from([&] { guarded([&] { store(region, 6 * kMiB, 1); }); });
        CHILD_CHECK(error.has_value() && error->error() == EFBIG);
        const auto ensured = error_from([&] { region.ensure(6 * kMiB); });
        CHILD_CHECK(ensured.has_value() && ensured->error() == EFBIG);
        check_store_works(region, 100);
        sigset_t pending;
        CHILD_CHECK(::sigpending(&pending) == 0 && sigismember(&pending, SIGXFSZ) == 0);
      },
      kChildTimeout);
  expect_clean_exit_unreported(result);
}

// ---- holes on a full filesystem ---------------------------------------------------------

// A sparse file opened on a full filesystem stays sparse (opening allocates nothing), and a
// store into a hole that cannot get a block says ENOSPC — it used to say EFAULT.
TEST(GrowthEdges, StoreIntoAHoleOfAnOpenedSparseFileOnAFullDiskIsEnospc) {
  SmallTmpfs tmpfs(4 * kMiB);
  if (!tmpfs.ok()) GTEST_SKIP() << tmpfs.reason();
  const auto path = tmpfs.path() / "sparse.bin";
  {
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::ftruncate(fd, 8 << 20), 0);
    std::vector<char> fill(3 * kMiB + 512 * kKiB, 'x');
    ASSERT_EQ(::pwrite(fd, fill.data(), fill.size(), 0), static_cast<ssize_t>(fill.size()));
    ::close(fd);
    // Then nothing is left: a filler takes the rest of the filesystem.
    const int filler = ::open((tmpfs.path() / "filler").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    ASSERT_GE(filler, 0);
    while (::write(filler, fill.data(), 4096) > 0) {
    }
    ASSERT_EQ(errno, ENOSPC);
    ::close(filler);
  }
  const ChildResult result = run_in_child(
      [&] {
        Region region = Region::open(path, options_with_capacity(64 * kMiB));
        CHILD_CHECK(region.size() == 8 * kMiB);
        check_store_works(region, 100);  // a page with a block
        const auto error = error_from([&] { guarded([&] { store(region, 7 * kMiB, 1); }); });
        CHILD_CHECK(error.has_value());
        CHILD_CHECK_MSG(error->error() == ENOSPC, error->what());
        CHILD_CHECK_MSG(error->subject() == path.string(), error->what());
      },
      kChildTimeout);
  expect_clean_exit_unreported(result);
}

TEST(GrowthEdges, FinishThatCannotBeBackedIsEnospc) {
  SmallTmpfs tmpfs(4 * kMiB);
  if (!tmpfs.ok()) GTEST_SKIP() << tmpfs.reason();
  Region region = Region::file(tmpfs.path() / "finish.bin", options_with_capacity(64 * kMiB));
  region.ensure(kMiB);
  const auto error = error_from([&] { region.finish(8 * kMiB); });
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->error(), ENOSPC) << error->what();
  region.finish(2 * kMiB);  // what fits still works
  EXPECT_EQ(region.size(), 2 * kMiB);
}

// ---- RLIMIT_AS --------------------------------------------------------------------------------

TEST(GrowthEdges, DefaultCapacityFitsUlimitV) {
#if MAPWRIGHT_TEST_ASAN || MAPWRIGHT_TEST_TSAN
  GTEST_SKIP() << "sanitizers reserve terabytes of shadow memory: RLIMIT_AS cannot be set";
#endif
  const ChildResult result = run_in_child(
      [] {
        const rlimit limit{4000000ull * 1024, RLIM_INFINITY};  // ulimit -v 4000000
        CHILD_CHECK(::setrlimit(RLIMIT_AS, &limit) == 0);
        Region region = Region::memfd("ulimit-v");
        check_store_works(region, 7);
        region.finish(8);
        Region second = Region::memfd("ulimit-v-2");
        check_store_works(second, 3 * kMiB);
        const auto error = error_from([] { (void)Region::memfd("too-big", options_with_capacity(64ull << 30)); });
        CHILD_CHECK(error.has_value() && error->error() == ENOMEM);
        CHILD_CHECK_MSG(std::string(error->what()).find("RLIMIT_AS") != std::string::npos &&
                            std::string(error->what()).find("RegionOptions::capacity") != std::string::npos,
                        error->what());
      },
      kChildTimeout);
  expect_clean_exit_unreported(result);
}

// ---- memory per region ----------------------------------------------------------------------

TEST(GrowthEdges, AnOwnerIsSmall) {
  // The 64 KiB tail buffer every region used to carry is allocated only for an unaligned
  // end of a disk file now.
  EXPECT_LT(sizeof(detail::UpwardGrowth), 512u);
}

}  // namespace
}  // namespace mapwright
