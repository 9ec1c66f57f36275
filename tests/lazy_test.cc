// lazy_test — LazyImage (lazy.h): pages filled on first touch in the touching thread, from a
// sealed image, memory or a file range; windows, prefetch for system calls, reset, failures
// inside and outside guarded(), fork, a denied userfaultfd, destruction while others fault.
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/time.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "child.h"
#include "lazy_helpers.h"
#include "mapwright/error.h"
#include "mapwright/fault.h"
#include "mapwright/lazy.h"
#include "pool_helpers.h"
#include "sanitizers.h"
#include "wrapper_helpers.h"

namespace mapwright {
namespace {

using test::run_in_child;
using Bytes = std::vector<std::byte>;

const std::uint64_t kPage = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));

// The first byte where `image` differs from `bytes`, past them from zero, or "".
std::string differences(const LazyImage& image, const Bytes& bytes) {
  if (image.size() != bytes.size()) return "size " + std::to_string(image.size());
  const std::byte* data = image.data();
  if (std::memcmp(data, bytes.data(), bytes.size()) != 0) {
    for (std::size_t i = 0; i < bytes.size(); ++i) {
      if (data[i] != bytes[i]) return "byte " + std::to_string(i);
    }
  }
  const std::uint64_t end = (bytes.size() + kPage - 1) / kPage * kPage;
  for (std::uint64_t i = bytes.size(); i < end; ++i) {
    if (data[i] != std::byte{0}) return "tail byte " + std::to_string(i);
  }
  return "";
}

// Reads one byte of every page in a random order (and checks it as it goes).
void touch_in_random_order(const LazyImage& image, const Bytes& bytes, unsigned seed) {
  const std::uint64_t pages = (bytes.size() + kPage - 1) / kPage;
  std::vector<std::uint64_t> order(pages);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), std::mt19937(seed));
  for (const std::uint64_t page : order) {
    const std::uint64_t at = std::min<std::uint64_t>(page * kPage + seed % kPage, bytes.size() - 1);
    ASSERT_EQ(image.data()[at], bytes[at]) << "page " << page;
  }
}

TEST(LazyImage, EveryPageReadsBackItsSourceFromEachKindOfSource) {
  SKIP_WITHOUT_USERFAULTFD();
  test::TempDir dir;
  for (const std::uint64_t size : {kPage, 37 * kPage, 37 * kPage + 123, std::uint64_t{1}}) {
    const Bytes bytes = test::pattern_bytes(size, static_cast<unsigned>(size));
    const SealedImage sealed = test::make_image(bytes);
    // The file holds other bytes before and after the range, which must not show.
    const Bytes before = test::pattern_bytes(777, 1), after = test::pattern_bytes(kPage, 2);
    Bytes file_bytes = before;
    file_bytes.insert(file_bytes.end(), bytes.begin(), bytes.end());
    file_bytes.insert(file_bytes.end(), after.begin(), after.end());
    test::write_file(dir / "source", file_bytes);
    for (const std::uint64_t window : {1, 16, 256}) {
      SCOPED_TRACE("size " + std::to_string(size) + ", window " + std::to_string(window));
      LazyOptions options;
      options.window_pages = window;
      LazyImage from_memory(LazySource::memory(bytes), options);
      LazyImage from_image(LazySource::image(sealed), options);
      LazyImage from_file(LazySource::file(dir / "source", before.size(), size), options);
      for (const LazyImage* image : {&from_memory, &from_image, &from_file}) {
        EXPECT_EQ(image->mode(), LazyMode::kUserfaultfd);
        EXPECT_EQ(image->stats().pages_filled, 0u) << "filled before any touch";
        touch_in_random_order(*image, bytes, static_cast<unsigned>(window));
        EXPECT_EQ(differences(*image, bytes), "");
        const LazyStats stats = image->stats();
        EXPECT_EQ(stats.pages_filled, (size + kPage - 1) / kPage) << "each page filled once";
        EXPECT_GE(stats.faults, 1u);
        EXPECT_LE(stats.faults, stats.pages_filled);
        EXPECT_EQ(stats.failures, 0u);
      }
    }
  }
}

TEST(LazyImage, OneTouchFillsItsAlignedWindowAndNothingElse) {
  SKIP_WITHOUT_USERFAULTFD();
  const Bytes bytes = test::pattern_bytes(100 * kPage, 5);
  LazyOptions options;
  options.window_pages = 16;
  LazyImage image(LazySource::memory(bytes), options);
  EXPECT_EQ(image.data()[37 * kPage + 5], bytes[37 * kPage + 5]);  // window [32, 48)
  EXPECT_EQ(image.stats().faults, 1u);
  EXPECT_EQ(image.stats().pages_filled, 16u);
  // Every page of the window is there: touching them costs no fault.
  for (std::uint64_t page = 32; page < 48; ++page) EXPECT_EQ(image.data()[page * kPage], bytes[page * kPage]);
  EXPECT_EQ(image.stats().faults, 1u);
  // The last window is clipped to the image: [96, 100).
  EXPECT_EQ(image.data()[99 * kPage], bytes[99 * kPage]);
  EXPECT_EQ(image.stats().faults, 2u);
  EXPECT_EQ(image.stats().pages_filled, 20u);
  // A window that already holds pages fills the rest around them.
  EXPECT_EQ(image.data()[20 * kPage], bytes[20 * kPage]);  // [16, 32): 16 new pages
  EXPECT_EQ(image.stats().pages_filled, 36u);
}

TEST(LazyImage, WritesStayUntilResetThenEveryPageIsTheSourceAgain) {
  SKIP_WITHOUT_USERFAULTFD();
  const Bytes bytes = test::pattern_bytes(64 * kPage + 10, 9);
  LazyImage image(LazySource::memory(bytes));
  std::mt19937 random(3);
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 200; ++i) {
      image.data()[random() % bytes.size()] = std::byte{0xee};
    }
    image.reset();
    EXPECT_EQ(differences(image, bytes), "") << "round " << round;
  }
  EXPECT_EQ(image.stats().resets, 3u);
  // The sealed source is untouched by all of it.
  const SealedImage sealed = test::make_image(bytes);
  LazyImage from_image(LazySource::image(sealed));
  std::memset(from_image.data(), 0xab, bytes.size());
  EXPECT_EQ(std::memcmp(sealed.map().data(), bytes.data(), bytes.size()), 0);
}

// System calls never fault: a missing page is EFAULT to read(2)/write(2), and prefetch() is
// the verb that makes a range safe for them.
TEST(LazyImage, SystemCallsNeedPrefetchAndGetEfaultWithout) {
  SKIP_WITHOUT_USERFAULTFD();
  const Bytes bytes = test::pattern_bytes(8 * kPage, 11);
  LazyImage image(LazySource::memory(bytes));
  int pipe_fds[2];
  ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC | O_NONBLOCK), 0);
  EXPECT_EQ(::write(pipe_fds[1], image.data() + kPage, kPage), -1);
  EXPECT_EQ(errno, EFAULT);
  EXPECT_EQ(image.stats().pages_filled, 0u);
  image.prefetch(kPage, 2 * kPage);
  EXPECT_EQ(image.stats().pages_filled, 2u);
  EXPECT_EQ(image.stats().faults, 0u);
  ASSERT_EQ(::write(pipe_fds[1], image.data() + kPage, 2 * kPage), static_cast<ssize_t>(2 * kPage));
  Bytes got(2 * kPage);
  ASSERT_EQ(::read(pipe_fds[0], got.data(), got.size()), static_cast<ssize_t>(got.size()));
  EXPECT_TRUE(std::equal(got.begin(), got.end(), bytes.begin() + kPage));
  // read(2) into the image: prefetch first, then the kernel's store lands.
  ASSERT_EQ(::write(pipe_fds[1], "xyz", 3), 3);
  image.prefetch(5 * kPage, 1);
  ASSERT_EQ(::read(pipe_fds[0], image.data() + 5 * kPage, 3), 3);
  EXPECT_EQ(std::memcmp(image.data() + 5 * kPage, "xyz", 3), 0);
  EXPECT_EQ(image.data()[5 * kPage + 3], bytes[5 * kPage + 3]);
  // Pages there already (and written) are kept by a prefetch over them.
  image.data()[kPage] = std::byte{0x5a};
  image.prefetch(0, bytes.size());
  EXPECT_EQ(image.data()[kPage], std::byte{0x5a});
  EXPECT_EQ(image.stats().pages_filled, 8u);
  image.prefetch(100 * kPage, kPage);  // past the end: nothing
  ::close(pipe_fds[0]);
  ::close(pipe_fds[1]);
}

TEST(LazyImage, SeveralThreadsFillingAtOnceEachSeeTheSource) {
  SKIP_WITHOUT_USERFAULTFD();
  const Bytes bytes = test::pattern_bytes(4096 * kPage / 4, 21);  // 4 MiB
  for (const std::uint64_t window : {1, 4}) {
    LazyOptions options;
    options.window_pages = window;
    LazyImage image(LazySource::memory(bytes), options);
    std::atomic<int> wrong{0};
    std::vector<std::thread> threads;
    for (unsigned t = 0; t < 4; ++t) {
      threads.emplace_back([&, t] {
        // Every thread reads every page, in its own order: most pages are raced for.
        const std::uint64_t pages = bytes.size() / kPage;
        std::vector<std::uint64_t> order(pages);
        std::iota(order.begin(), order.end(), 0);
        std::shuffle(order.begin(), order.end(), std::mt19937(t));
        for (const std::uint64_t page : order) {
          const std::uint64_t at = page * kPage + (t * 1000) % kPage;
          if (image.data()[at] != bytes[at]) wrong.fetch_add(1);
        }
      });
    }
    for (std::thread& thread : threads) thread.join();
    EXPECT_EQ(wrong.load(), 0);
    EXPECT_EQ(differences(image, bytes), "");
    EXPECT_EQ(image.stats().pages_filled, bytes.size() / kPage) << "a page filled twice";
    EXPECT_EQ(image.stats().failures, 0u);
  }
}

// A source that cannot be read any more (its file shrank) is a failed fill: an Error inside
// guarded(), one line and death by SIGBUS outside it. Never a retry loop.
TEST(LazyImage, AFileSourceThatShrankIsAnErrorInsideGuardedAndOneLineOutside) {
  SKIP_WITHOUT_USERFAULTFD();
  test::TempDir dir;
  const Bytes bytes = test::pattern_bytes(16 * kPage, 4);
  test::write_file(dir / "shrinks", bytes);
  LazyImage image(LazySource::file(dir / "shrinks"), {.window_pages = 1, .name = "shrinking"});
  EXPECT_EQ(image.data()[0], bytes[0]);
  ASSERT_EQ(::truncate((dir / "shrinks").c_str(), 4 * kPage), 0);
  EXPECT_EQ(image.data()[3 * kPage], bytes[3 * kPage]);  // still inside the file
  try {
    guarded([&] { return image.data()[10 * kPage]; });
    ADD_FAILURE() << "a page past the file's new end was filled";
  } catch (const Error& e) {
    EXPECT_EQ(e.error(), EFAULT);
    EXPECT_EQ(e.operation(), "filling lazy image");
    EXPECT_EQ(e.subject(), "shrinking");
    EXPECT_NE(std::string(e.what()).find("(touch at offset " + std::to_string(10 * kPage) + "): its source could not be read"),
              std::string::npos) << e.what();
  }
  EXPECT_EQ(image.stats().failures, 1u);
  EXPECT_THROW(image.prefetch(8 * kPage, kPage), Error);
  // In a child, which must make its own image: a forked child has no mapping of the parent's.
  const auto result = run_in_child([&] {
    test::no_core_dumps();
    test::write_file(dir / "shrinks", bytes);
    LazyImage mine(LazySource::file(dir / "shrinks"), {.window_pages = 1, .name = "shrinking"});
    CHILD_CHECK(::truncate((dir / "shrinks").c_str(), 4 * kPage) == 0);
    (void)*static_cast<volatile std::byte*>(mine.data() + 12 * kPage);
    test::say("the touch returned\n");
  }, std::chrono::seconds(20));
  EXPECT_EQ(result.signal, SIGBUS) << result.describe() << result.output;
  EXPECT_EQ(test::lines_starting_with(result.output, "mapwright: filling lazy image 'shrinking'").size(), 1u) << result.describe()
      << result.output;
}

// fork(): the child has no mapping (MADV_DONTFORK); without it, its missing pages would read
// as zeros. The parent's image keeps working.
TEST(LazyImage, AForkedChildHasNoMappingAndTheParentGoesOn) {
  SKIP_WITHOUT_USERFAULTFD();
  const Bytes bytes = test::pattern_bytes(8 * kPage, 6);
  LazyImage image(LazySource::memory(bytes));
  EXPECT_EQ(image.data()[0], bytes[0]);
  const auto result = run_in_child([&] {
    test::no_core_dumps();
    (void)*static_cast<volatile std::byte*>(image.data() + 5 * kPage);
    test::say("a missing page read in the child\n");
  }, std::chrono::seconds(20));
  test::expect_segv(result);
  EXPECT_EQ(differences(image, bytes), "");
}

// The child inherits the range table, whose entry still covers the parent's image: the hole
// stays reserved there (fork_holes), so images the child makes of the same size (which the
// kernel would otherwise place in the hole: "overlapping range") work, and the old address
// is still a SIGSEGV.
TEST(LazyImage, AForkedChildMakesImagesOfItsOwnWhereTheParentsWere) {
  SKIP_WITHOUT_USERFAULTFD();
  const Bytes bytes = test::pattern_bytes(64 * kPage, 16);
  std::vector<std::unique_ptr<LazyImage>> parents;
  for (int i = 0; i < 4; ++i) parents.push_back(std::make_unique<LazyImage>(LazySource::memory(bytes)));
  parents[1].reset();  // one forgotten before the fork: the child may use its addresses
  const auto result = run_in_child([&] {
    test::no_core_dumps();
    std::vector<LazyImage> mine;
    for (int i = 0; i < 8; ++i) {
      mine.emplace_back(LazySource::memory(bytes));
      CHILD_CHECK(differences(mine.back(), bytes).empty());
      for (const auto& parent : parents) {
        if (parent == nullptr) continue;
        CHILD_CHECK(mine.back().data() + mine.back().size() <= parent->data() ||
                    parent->data() + parent->size() <= mine.back().data());
      }
    }
    test::say("eight images in the child\n");
    (void)*static_cast<volatile std::byte*>(parents[0]->data());
    test::say("the parent's address read in the child\n");
  }, std::chrono::seconds(20));
  test::expect_segv(result);
  EXPECT_THAT(result.output, ::testing::HasSubstr("eight images in the child"));
  EXPECT_THAT(result.output, ::testing::Not(::testing::HasSubstr("read in the child")));
  for (const auto& parent : parents) {
    if (parent != nullptr) {
      EXPECT_EQ(differences(*parent, bytes), "");
    }
  }
}

TEST(LazyImage, DeniedUserfaultfdIsAClearErrorOrAReportedEagerCopy) {
  const Bytes bytes = test::pattern_bytes(9 * kPage + 1, 8);
  const auto result = run_in_child([&] {
    CHILD_CHECK(test::deny_syscall(SYS_userfaultfd, EPERM));
    try {
      LazyImage refused(LazySource::memory(bytes), {.name = "denied"});
      CHILD_CHECK_MSG(false, "made without userfaultfd");
    } catch (const Error& e) {
      CHILD_CHECK_MSG(e.error() == EPERM, e.what());
      const std::string what = e.what();
      CHILD_CHECK_MSG(what.find("creating lazy image 'denied'") != std::string::npos, what);
      CHILD_CHECK_MSG(what.find("seccomp") != std::string::npos, what);
      CHILD_CHECK_MSG(what.find("LazyFallback::kEager") != std::string::npos, what);
    }
    LazyImage eager(LazySource::memory(bytes), {.fallback = LazyFallback::kEager});
    CHILD_CHECK(eager.mode() == LazyMode::kEager);
    CHILD_CHECK(eager.stats().unavailable == EPERM);
    CHILD_CHECK(differences(eager, bytes).empty());
    eager.data()[3] = std::byte{0};
    eager.reset();
    CHILD_CHECK(differences(eager, bytes).empty());
    CHILD_CHECK(eager.stats().pages_filled == 20);  // 10 pages, twice
  });
  test::expect_clean_exit(result);
}

TEST(LazyImage, BadOptionsAndSourcesAreRefusedClearly) {
  SKIP_WITHOUT_USERFAULTFD();
  const Bytes bytes = test::pattern_bytes(kPage, 1);
  for (const std::uint64_t window : {std::uint64_t{0}, std::uint64_t{65537}}) {
    try {
      LazyImage image(LazySource::memory(bytes), {.window_pages = window});
      ADD_FAILURE() << "window " << window << " accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.error(), EINVAL);
      EXPECT_NE(std::string(e.what()).find("window_pages"), std::string::npos) << e.what();
    }
  }
  test::TempDir dir;
  test::write_file(dir / "small", bytes);
  try {
    (void)LazySource::file(dir / "small", 100, kPage);
    ADD_FAILURE() << "a range past the end accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.error(), EINVAL);
    EXPECT_NE(std::string(e.what()).find((dir / "small").string()), std::string::npos) << e.what();
  }
  ASSERT_EQ(::mkfifo((dir / "fifo").c_str(), 0600), 0);
  try {
    (void)LazySource::file(dir / "fifo");
    ADD_FAILURE() << "a FIFO accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.error(), ENODEV);
  }
  EXPECT_THROW((void)LazySource::file(dir / "missing"), Error);
  // Empty: no mapping, nothing to fill.
  LazyImage empty(LazySource::memory({}));
  EXPECT_EQ(empty.data(), nullptr);
  EXPECT_EQ(empty.size(), 0u);
  empty.prefetch(0, 10);
  empty.reset();
}

// Threads fault in an image while the main thread destroys it: the handler never uses the
// destroyed owner (the range table waits for handlers still filling), and no thread reads a
// wrong byte. A touch once destruction has begun is a SIGSEGV; a touch that faulted just
// before, whose SIGBUS is delivered after the range left the table, is a SIGBUS that is not
// mapwright's. The child's own handlers (the SIGBUS one asks handle_fault() first, as
// fault.h says) turn either into the end of that thread's loop; nothing else may happen (no
// crash inside mapwright's handler, no line from it, no hang).
TEST(LazyImage, DestroyedWhileOtherThreadsFaultIsSafe) {
  SKIP_WITHOUT_USERFAULTFD();
  const Bytes bytes = test::pattern_bytes(2048 * kPage, 12);
  const auto result = run_in_child([&] {
    static thread_local sigjmp_buf* landing = nullptr;
    struct sigaction lost{};
    lost.sa_sigaction = [](int sig, siginfo_t* info, void* context) {
      if (sig == SIGBUS && handle_fault(sig, info, context)) return;
      if (landing != nullptr) siglongjmp(*landing, 1);
      ::_exit(3);
    };
    lost.sa_flags = SA_SIGINFO | SA_NODEFER;
    CHILD_CHECK(::sigaction(SIGSEGV, &lost, nullptr) == 0);
    CHILD_CHECK(::sigaction(SIGBUS, &lost, nullptr) == 0);
    for (int round = 0; round < 30; ++round) {
      auto image = std::make_unique<LazyImage>(LazySource::memory(bytes));
      std::byte* data = image->data();
      std::atomic<int> started{0};
      std::atomic<int> wrong{0};
      std::vector<std::thread> threads;
      for (unsigned t = 0; t < 2; ++t) {
        threads.emplace_back([&, t] {
          sigjmp_buf env;
          if (sigsetjmp(env, 1) != 0) {
            landing = nullptr;
            return;  // the mapping went away under us
          }
          landing = &env;
          std::mt19937 random(t + 100 * round);
          started.fetch_add(1);
          for (int i = 0; i < 1000000; ++i) {
            const std::uint64_t at = random() % bytes.size();
            if (static_cast<volatile std::byte*>(data)[at] != bytes[at]) wrong.fetch_add(1);
          }
          landing = nullptr;
        });
      }
      while (started.load() < 2) std::this_thread::yield();
      std::this_thread::sleep_for(std::chrono::microseconds(200 * (round % 5)));
      image.reset();
      for (std::thread& thread : threads) thread.join();
      CHILD_CHECK_MSG(wrong.load() == 0, std::to_string(wrong.load()) + " wrong bytes");
    }
  }, std::chrono::seconds(120));
  test::expect_clean_exit_unreported(result);
}

// A moved image keeps filling at the same address; one assigned over drops its old range.
TEST(LazyImage, MovesKeepTheRangeAndAssignmentDropsTheOldOne) {
  SKIP_WITHOUT_USERFAULTFD();
  const Bytes a = test::pattern_bytes(5 * kPage, 1), b = test::pattern_bytes(3 * kPage + 9, 2);
  LazyImage first(LazySource::memory(a));
  std::byte* at = first.data();
  LazyImage moved(std::move(first));
  EXPECT_EQ(first.data(), nullptr);  // NOLINT(bugprone-use-after-move): moved-from is empty
  EXPECT_EQ(moved.data(), at);
  EXPECT_EQ(differences(moved, a), "");
  moved = LazyImage(LazySource::memory(b));
  EXPECT_EQ(differences(moved, b), "");
  // Many images made and dropped: each leaves the range table, its mapping and its fds.
  const auto open_fds = [] {
    return std::distance(std::filesystem::directory_iterator("/proc/self/fd"),
                         std::filesystem::directory_iterator());
  };
  const auto fds_before = open_fds();
  test::TempDir dir;
  test::write_file(dir / "b", b);
  for (int i = 0; i < 2000; ++i) {
    LazyImage scratch(i % 2 == 0 ? LazySource::memory(b) : LazySource::file(dir / "b"));
    ASSERT_EQ(scratch.data()[kPage], b[kPage]);
  }
  EXPECT_EQ(open_fds(), fds_before);
}

sigjmp_buf g_timeout;
void on_alarm(int) { ::siglongjmp(g_timeout, 1); }

// A runtime's timeout: SIGALRM arrives while a thread reads pages that are being filled, and
// its handler siglongjmps out. The fill handler runs with every signal blocked, so the jump
// never abandons a fill half done; the image is then reset and reads exactly its source.
TEST(LazyImage, ASiglongjmpTimeoutInTheMiddleOfFillsLeavesTheImageWhole) {
  SKIP_WITHOUT_USERFAULTFD();
#if MAPWRIGHT_TEST_TSAN
  GTEST_SKIP() << "TSan holds an asynchronous signal until the thread enters one of its "
                  "interceptors, which a loop of plain loads never does";
#endif
  const Bytes bytes = test::pattern_bytes(2048 * kPage, 14);
  const auto result = run_in_child([&] {
    LazyImage image(LazySource::memory(bytes), {.window_pages = 2});
    struct sigaction sa {};
    sa.sa_handler = on_alarm;
    CHILD_CHECK(::sigaction(SIGALRM, &sa, nullptr) == 0);
    for (int round = 0; round < 20; ++round) {
      image.reset();
      if (sigsetjmp(g_timeout, 1) == 0) {
        const itimerval timer{{0, 0}, {0, 200 + round * 150}};
        CHILD_CHECK(::setitimer(ITIMER_REAL, &timer, nullptr) == 0);
        for (;;) {  // until the timer fires
          for (std::uint64_t at = 0; at < bytes.size(); at += kPage) {
            (void)*static_cast<volatile std::byte*>(image.data() + at);
          }
          image.reset();
        }
      }
      const std::string diff = differences(image, bytes);
      CHILD_CHECK_MSG(diff.empty(), diff);
    }
    CHILD_CHECK(image.stats().failures == 0);
  });
  test::expect_clean_exit(result);
}

// The handler path fits a 4 KiB sigaltstack.
TEST(LazyImage, FillsOnAThreadWithASmallAltstack) {
#if MAPWRIGHT_TEST_TSAN
  GTEST_SKIP() << "TSan runs a signal handler inside its own interceptor frames on the alternate "
                  "stack, which leaves less than 4 KiB to the handler (the release and ASan "
                  "builds run this test)";
#endif
  SKIP_WITHOUT_USERFAULTFD();
  const Bytes bytes = test::pattern_bytes(64 * kPage, 13);
  const auto result = run_in_child([&] {
    LazyImage image(LazySource::memory(bytes), {.window_pages = 8});
    std::thread thread([&] {
      test::use_small_altstack();
      CHILD_CHECK(differences(image, bytes).empty());
    });
    thread.join();
  });
  test::expect_clean_exit(result);
}

}  // namespace
}  // namespace mapwright
