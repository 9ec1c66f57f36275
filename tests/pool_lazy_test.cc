// pool_lazy_test — InstancePool with ImagePopulation::kLazy: instances whose image pages are
// filled on first touch (userfaultfd, SIGBUS mode) and made missing again at reset; the same
// Instance interface as copy-on-write slots.
#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "child.h"
#include "mapwright/error.h"
#include "mapwright/lazy.h"
#include "mapwright/pool.h"
#include "pool_helpers.h"
#include "sanitizers.h"
#include "wrapper_helpers.h"

namespace mapwright {
namespace {

using test::differences;
using test::make_image;
using test::pattern_bytes;
using test::run_in_child;
using test::small_pool;

const std::uint64_t kPage = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));

bool have_userfaultfd() {
  static const bool have = [] {
    try {
      const std::vector<std::byte> one(8);
      LazyImage probe(LazySource::memory(one));
      return true;
    } catch (const Error&) {
      return false;
    }
  }();
  return have;
}

InstancePoolOptions lazy_pool(std::size_t slots = 2, ResetMethod reset = ResetMethod::kAutomatic,
                              std::uint64_t window = 1) {
  InstancePoolOptions options = small_pool(slots, HeapMode::kAnonymous, reset);
  options.population = ImagePopulation::kLazy;
  options.lazy_window_pages = window;
  return options;
}

class LazyPool : public ::testing::TestWithParam<ResetMethod> {
 protected:
  void SetUp() override {
    if (!have_userfaultfd()) GTEST_SKIP() << "no userfaultfd here";
  }
};

// Nothing is filled before a touch; after random writes and reset, the next instance (same
// slot, no mmap) reads exactly the image again, filled afresh.
TEST_P(LazyPool, InstancesAreFilledOnTouchAndMissingAgainAfterReset) {
  const auto bytes = pattern_bytes(50 * kPage + 99, 31);
  const SealedImage image = make_image(bytes);
  InstancePoolOptions options = lazy_pool(1, GetParam());
  options.image_keep_resident = GetParam() == ResetMethod::kRemap ? 0 : 3 * kPage;
  InstancePool pool(options);
  EXPECT_EQ(pool.stats().population, ImagePopulation::kLazy);
  std::mt19937 random(5);
  for (int round = 0; round < 4; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    Instance instance = pool.instantiate(image, {.heap_initial = 4 * kPage});
    const std::uint64_t before = pool.stats().lazy_pages_filled;
    EXPECT_EQ(instance.image()[7 * kPage], bytes[7 * kPage]);
    EXPECT_EQ(pool.stats().lazy_pages_filled, before + 1);
    EXPECT_EQ(differences(instance, bytes), "");
    for (int i = 0; i < 100; ++i) instance.image()[random() % bytes.size()] = std::byte{0xcc};
    for (int i = 0; i < 10; ++i) instance.heap()[random() % (4 * kPage)] = std::byte{0xdd};
  }
  const InstancePoolStats stats = pool.stats();
  EXPECT_EQ(stats.mappings, 1u);
  EXPECT_EQ(stats.same_image, 3u);
  EXPECT_GE(stats.lazy_pages_filled, 4 * 51u - 3 * 3u) << "pages not missing again after reset";
  EXPECT_GE(stats.lazy_faults, 1u);
  EXPECT_EQ(std::memcmp(image.map().data(), bytes.data(), bytes.size()), 0);
}

INSTANTIATE_TEST_SUITE_P(Methods, LazyPool,
                         ::testing::Values(ResetMethod::kAutomatic, ResetMethod::kPagemapRead,
                                           ResetMethod::kRemap),
                         [](const auto& info) {
                           return std::string(info.param == ResetMethod::kAutomatic ? "automatic"
                                              : info.param == ResetMethod::kPagemapRead ? "pagemap_read"
                                                                                         : "remap");
                         });

TEST(LazyPoolEdges, ASlotGivenAnotherImageFillsFromTheNewOne) {
  if (!have_userfaultfd()) GTEST_SKIP() << "no userfaultfd here";
  const auto a = pattern_bytes(9 * kPage + 1, 1), b = pattern_bytes(20 * kPage, 2);
  const SealedImage image_a = make_image(a), image_b = make_image(b);
  InstancePool pool(lazy_pool(1, ResetMethod::kAutomatic, 4));
  for (int round = 0; round < 3; ++round) {
    {
      Instance instance = pool.instantiate(image_a);
      EXPECT_EQ(differences(instance, a), "");
    }
    Instance instance = pool.instantiate(image_b);
    EXPECT_EQ(differences(instance, b), "");
  }
  EXPECT_EQ(pool.stats().mappings, 6u);
}

TEST(LazyPoolEdges, SystemCallsNeedPrefetch) {
  if (!have_userfaultfd()) GTEST_SKIP() << "no userfaultfd here";
  const auto bytes = pattern_bytes(8 * kPage, 3);
  const SealedImage image = make_image(bytes);
  InstancePool pool(lazy_pool(1));
  Instance instance = pool.instantiate(image);
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0);
  EXPECT_EQ(::write(fds[1], instance.base() + 2 * kPage, kPage), -1);
  EXPECT_EQ(errno, EFAULT);
  instance.prefetch(2 * kPage, kPage);
  EXPECT_EQ(::write(fds[1], instance.base() + 2 * kPage, kPage), static_cast<ssize_t>(kPage));
  std::vector<std::byte> got(kPage);
  ASSERT_EQ(::read(fds[0], got.data(), kPage), static_cast<ssize_t>(kPage));
  EXPECT_TRUE(std::equal(got.begin(), got.end(), bytes.begin() + 2 * kPage));
  ::close(fds[0]);
  ::close(fds[1]);
  // A copy-on-write pool's prefetch has nothing to do.
  InstancePool cow(small_pool(1));
  Instance plain = cow.instantiate(image);
  plain.prefetch(0, bytes.size());
}

TEST(LazyPoolEdges, SeveralThreadsEachWithTheirOwnInstances) {
  if (!have_userfaultfd()) GTEST_SKIP() << "no userfaultfd here";
  const auto bytes = pattern_bytes(64 * kPage, 4);
  const SealedImage image = make_image(bytes);
  InstancePool pool(lazy_pool(4));
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (unsigned t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 random(t);
      for (int round = 0; round < 20; ++round) {
        Instance instance = pool.instantiate(image);
        if (!differences(instance, bytes).empty()) wrong.fetch_add(1);
        for (int i = 0; i < 16; ++i) instance.image()[random() % bytes.size()] = std::byte{0x77};
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(wrong.load(), 0);
}

TEST(LazyPoolEdges, BadCombinationsAndADeniedUserfaultfdAreClearErrors) {
  try {
    InstancePool pool(lazy_pool(1, ResetMethod::kWriteProtect));
    ADD_FAILURE() << "write-protect with lazy population accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.error(), have_userfaultfd() ? EINVAL : ENOTSUP) << e.what();
  }
  const auto result = run_in_child([] {
    CHILD_CHECK(test::deny_syscall(SYS_userfaultfd, EPERM));
    try {
      InstancePool pool(lazy_pool(1));
      CHILD_CHECK_MSG(false, "lazy pool made without userfaultfd");
    } catch (const Error& e) {
      CHILD_CHECK_MSG(e.error() == ENOTSUP, e.what());
      CHILD_CHECK_MSG(std::string(e.what()).find("lazy population: userfaultfd: Operation not permitted") !=
                          std::string::npos,
                      e.what());
    }
  });
  test::expect_clean_exit(result);
}

// The fill path fits a 4 KiB sigaltstack inside a pool too.
TEST(LazyPoolEdges, FillsOnAThreadWithASmallAltstack) {
#if MAPWRIGHT_TEST_TSAN
  GTEST_SKIP() << "TSan runs a signal handler inside its own interceptor frames on the alternate "
                  "stack, which leaves less than 4 KiB to the handler (the release and ASan "
                  "builds run this test)";
#endif
  if (!have_userfaultfd()) GTEST_SKIP() << "no userfaultfd here";
  const auto bytes = pattern_bytes(16 * kPage + 3, 6);
  const SealedImage image = make_image(bytes);
  const auto result = run_in_child([&] {
    InstancePool pool(lazy_pool(1, ResetMethod::kAutomatic, 2));
    std::thread thread([&] {
      test::use_small_altstack();
      Instance instance = pool.instantiate(image);
      CHILD_CHECK(differences(instance, bytes).empty());
    });
    thread.join();
  });
  test::expect_clean_exit(result);
}

}  // namespace
}  // namespace mapwright
