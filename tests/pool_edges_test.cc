// pool_edges_test — the instance pool (pool.h) at the edges of its environment: a touch past
// a memfd heap on a 4 KiB sigaltstack; another SIGBUS handler installed before the pool and
// one installed after it that chains; a siglongjmp out of a timer's handler in the middle of
// an instance's writes; fork() while an instance is out (a memfd heap is not shared with the
// child) and while other threads instantiate and reset.
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "child.h"
#include "mapwright/error.h"
#include "mapwright/fault.h"
#include "mapwright/pool.h"
#include "pool_helpers.h"
#include "region_helpers.h"
#include "sanitizers.h"
#include "wrapper_helpers.h"

namespace mapwright {
namespace {

using test::differences;
using test::error_from;
using test::make_image;
using test::pattern_bytes;
using test::run_in_child;
using test::small_pool;
using Bytes = test::PoolBytes;

constexpr std::uint64_t kPage = 4096;

// A page of a memfd of size 0: touching it is a SIGBUS that is nobody's in mapwright.
volatile unsigned char* foreign_sigbus_page() {
  const int fd = ::memfd_create("pool-edges-foreign", MFD_CLOEXEC);
  CHILD_CHECK(fd >= 0);
  void* p = ::mmap(nullptr, kPage, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  CHILD_CHECK(p != MAP_FAILED);
  ::close(fd);
  return static_cast<volatile unsigned char*>(p);
}

// A child that touched past its memfd heap outside guarded() (after saying nothing more):
// one report naming the cause, then death by SIGBUS.
void expect_heap_overrun_reported(const test::ChildResult& dies) {
  EXPECT_EQ(dies.signal, SIGBUS) << dies.describe();
  EXPECT_EQ(test::lines_starting_with(dies.output, "mapwright: ").size(), 1u) << dies.describe();
  EXPECT_NE(dies.output.find("past the instance's heap"), std::string::npos) << dies.describe();
  EXPECT_EQ(dies.output.find("after"), std::string::npos) << dies.describe();
}

TEST(PoolEdges, AMemfdHeapOverrunFitsA4KiBAltStack) {
#if MAPWRIGHT_TEST_ASAN || MAPWRIGHT_TEST_TSAN
  GTEST_SKIP() << "sanitizer instrumentation makes every frame larger";
#endif
  const SealedImage image = make_image(pattern_bytes(3 * kPage, 1));
  const auto caught = run_in_child([&] {
    InstancePool pool(small_pool(1, HeapMode::kMemfd));
    Instance instance = pool.instantiate(image);
    instance.grow_heap(kPage);
    test::use_small_altstack();
    const auto error = error_from([&] { guarded([&] { instance.heap()[kPage] = std::byte{1}; }); });
    CHILD_CHECK(error.has_value() && error->error() == EFAULT);
    test::say("survived\n");
  });
  test::expect_clean_exit_unreported(caught);
  EXPECT_NE(caught.output.find("survived"), std::string::npos) << caught.describe();

  const auto dies = run_in_child([&] {
    test::no_core_dumps();
    InstancePool pool(small_pool(1, HeapMode::kMemfd));
    Instance instance = pool.instantiate(image);
    test::use_small_altstack();
    instance.heap()[0] = std::byte{1};
    test::say("after\n");
  });
  expect_heap_overrun_reported(dies);
}

// A handler installed before the pool (plain sa_handler, no SA_SIGINFO) still gets the
// SIGBUS that are not the pool's; the pool's own still become an Error inside guarded().
TEST(PoolEdges, AHandlerInstalledBeforeThePoolKeepsItsOwnFaults) {
  const SealedImage image = make_image(pattern_bytes(kPage, 2));
  const auto result = run_in_child([&] {
    struct sigaction sa {};
    sa.sa_handler = [](int) {
      test::say("foreign handler\n");
      ::_exit(42);
    };
    CHILD_CHECK(::sigaction(SIGBUS, &sa, nullptr) == 0);
    volatile unsigned char* foreign = foreign_sigbus_page();
    InstancePool pool(small_pool(1, HeapMode::kMemfd));
    Instance instance = pool.instantiate(image);
    const auto error = error_from([&] { guarded([&] { instance.heap()[0] = std::byte{1}; }); });
    CHILD_CHECK(error.has_value() && error->error() == EFAULT);
    foreign[0] = 1;  // the foreign handler's: exits 42
    test::say("not reached\n");
  });
  EXPECT_TRUE(result.exited) << result.describe();
  EXPECT_EQ(result.exit_code, 42) << result.describe();
  EXPECT_NE(result.output.find("foreign handler"), std::string::npos) << result.describe();
  EXPECT_EQ(result.output.find("not reached"), std::string::npos) << result.describe();
}

struct sigaction g_previous {};

// A handler installed after the pool that hands the signal on to the one it replaced, as
// runtimes that chain do (SA_SIGINFO).
void chaining_handler(int signal, siginfo_t* info, void* context) {
  test::say("chained\n");
  if ((g_previous.sa_flags & SA_SIGINFO) != 0) {
    g_previous.sa_sigaction(signal, info, context);
  } else if (g_previous.sa_handler != SIG_DFL && g_previous.sa_handler != SIG_IGN) {
    g_previous.sa_handler(signal);
  }
}

TEST(PoolEdges, AHandlerInstalledAfterThePoolThatChainsLeavesItsFaultsToIt) {
  const SealedImage image = make_image(pattern_bytes(kPage, 3));
  const auto caught = run_in_child([&] {
    InstancePool pool(small_pool(1, HeapMode::kMemfd));
    Instance instance = pool.instantiate(image);
    struct sigaction sa {};
    sa.sa_sigaction = chaining_handler;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    CHILD_CHECK(::sigaction(SIGBUS, &sa, &g_previous) == 0);
    const auto error = error_from([&] { guarded([&] { instance.heap()[0] = std::byte{1}; }); });
    CHILD_CHECK(error.has_value() && error->error() == EFAULT);
    instance.grow_heap(kPage);
    instance.heap()[0] = std::byte{1};
  });
  test::expect_clean_exit_unreported(caught);
  EXPECT_NE(caught.output.find("chained"), std::string::npos) << caught.describe();

  const auto dies = run_in_child([&] {
    test::no_core_dumps();
    InstancePool pool(small_pool(1, HeapMode::kMemfd));
    Instance instance = pool.instantiate(image);
    struct sigaction sa {};
    sa.sa_sigaction = chaining_handler;
    sa.sa_flags = SA_SIGINFO;
    CHILD_CHECK(::sigaction(SIGBUS, &sa, &g_previous) == 0);
    instance.heap()[0] = std::byte{1};
    test::say("after\n");
  });
  expect_heap_overrun_reported(dies);
}

sigjmp_buf g_timeout;
void on_alarm(int) { ::siglongjmp(g_timeout, 1); }

// One instance writing every page of its image and of 1 MiB of heap, pass after pass, until
// a timer of `microseconds` fires and its handler siglongjmps out; then the instance goes.
// True when the timer did interrupt it.
bool write_until_timeout(InstancePool& pool, const SealedImage& image, long microseconds) {
  Instance instance = pool.instantiate(image);
  instance.grow_heap(1u << 20);
  std::byte* const base = instance.base();
  std::byte* const heap = instance.heap();
  const std::uint64_t size = image.size();
  if (sigsetjmp(g_timeout, 1) != 0) return true;
  const itimerval timer{{0, 0}, {0, microseconds}};
  CHILD_CHECK(::setitimer(ITIMER_REAL, &timer, nullptr) == 0);
  for (unsigned pass = 0;; ++pass) {  // until the timer fires
    for (std::uint64_t at = 0; at < size; at += kPage) base[at] = std::byte(pass);
    for (std::uint64_t at = 0; at < (1u << 20); at += kPage) heap[at] = std::byte(pass);
  }
}

// A runtime's timeout: SIGALRM arrives while an instance writes pages (faulting), and its
// handler siglongjmps out. The instance is returned; the next one is exactly the image.
TEST(PoolEdges, ASiglongjmpOutOfAnInstanceInTheMiddleOfItsWritesLeavesTheSlotResettable) {
#if MAPWRIGHT_TEST_TSAN
  GTEST_SKIP() << "TSan holds an asynchronous signal until the thread enters one of its "
                  "interceptors, which a loop of plain stores never does";
#endif
  const Bytes bytes = pattern_bytes(1024 * kPage, 4);
  const SealedImage image = make_image(bytes);
  const auto result = run_in_child([&] {
    InstancePool pool(small_pool(1, HeapMode::kMemfd));
    struct sigaction sa {};
    sa.sa_handler = on_alarm;
    CHILD_CHECK(::sigaction(SIGALRM, &sa, nullptr) == 0);
    for (int round = 0; round < 20; ++round) {
      CHILD_CHECK(write_until_timeout(pool, image, 200 + round * 150));
      Instance next = pool.instantiate(image);
      const std::string diff = differences(next, bytes);
      CHILD_CHECK_MSG(diff.empty(), diff.c_str());
      next.grow_heap(1u << 20);
      CHILD_CHECK_MSG(differences(next, bytes).empty(), "heap after grow");
    }
  });
  test::expect_clean_exit(result);
}

// A child forked while an instance is out: the image and an anonymous heap are its own
// private copies; a memfd heap is not mapped in it, so nothing it does reaches the parent's
// next instances.
TEST(PoolEdges, AForkedChildCannotWriteIntoTheParentsNextInstances) {
  const Bytes bytes = pattern_bytes(4 * kPage, 5);
  const SealedImage image = make_image(bytes);
  for (const auto& [heap, method] : {std::pair{HeapMode::kAnonymous, ResetMethod::kAutomatic},
                                      std::pair{HeapMode::kMemfd, ResetMethod::kAutomatic},
                                      std::pair{HeapMode::kAnonymous, ResetMethod::kWriteProtect}}) {
    SCOPED_TRACE(std::string(to_string(heap)) + ", " + to_string(method));
    // Under write protection the child's copy of the slot is not tracked (no userfaultfd
    // across fork): its writes must neither block nor reach the parent.
    InstancePool pool(small_pool(1, heap, method));
    std::byte* slot = nullptr;
    {
      Instance instance = pool.instantiate(image);
      slot = instance.base();
      instance.grow_heap(kPage);
      instance.heap()[0] = std::byte{7};
      instance.base()[0] = std::byte{7};
      const auto child = run_in_child([&] {
        test::no_core_dumps();
        for (std::uint64_t page = 0; page < 4; ++page) {
          instance.base()[page * kPage + 1] = std::byte{9};  // a private copy in any mode
        }
        test::say("image written\n");
        instance.heap()[1] = std::byte{9};  // SIGSEGV with a memfd heap
        test::say("heap written\n");
      });
      if (heap == HeapMode::kMemfd) {
        test::expect_segv(child);
        EXPECT_EQ(child.output.find("heap written"), std::string::npos) << child.describe();
      } else {
        test::expect_clean_exit(child);
      }
      EXPECT_NE(child.output.find("image written"), std::string::npos) << child.describe();
      for (std::uint64_t page = 0; page < 4; ++page) {
        EXPECT_EQ(instance.base()[page * kPage + 1], bytes[page * kPage + 1]) << "page " << page;
      }
      EXPECT_EQ(instance.heap()[1], std::byte{0});
      EXPECT_EQ(instance.heap()[0], std::byte{7});
    }
    const Instance next = pool.instantiate(image);
    EXPECT_EQ(next.base(), slot);
    EXPECT_EQ(differences(next, bytes), "");
  }
}

// fork() while other threads instantiate, write and reset: the child reads an instance the
// main thread holds and exits; the parent's threads go on, and every instance stays exact.
TEST(PoolEdges, ForkWhileOtherThreadsInstantiateAndResetLeavesBothSidesWorking) {
#if MAPWRIGHT_TEST_ASAN
  GTEST_SKIP() << "GCC 12's libasan does not make its allocator fork-safe (handler_edges_test)";
#endif
  const Bytes bytes = pattern_bytes(64 * kPage + 17, 6);
  const SealedImage image = make_image(bytes);
  InstancePool pool(small_pool(4));
  Instance held = pool.instantiate(image);
  std::atomic<bool> stop{false};
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      std::uint64_t i = static_cast<std::uint64_t>(t);
      while (!stop.load()) {
        Instance instance = pool.instantiate(image);
        if (!differences(instance, bytes).empty()) wrong.fetch_add(1);
        instance.grow_heap(kPage);
        instance.heap()[0] = std::byte{1};
        instance.base()[(i * 7919 % 64) * kPage] = std::byte{0xee};
        ++i;
      }
    });
  }
  for (int round = 0; round < 20; ++round) {
    const auto child = run_in_child([&] {
      CHILD_CHECK(std::memcmp(held.base(), bytes.data(), bytes.size()) == 0);
      held.base()[0] = std::byte{1};  // its own copy
    });
    test::expect_clean_exit(child);
  }
  stop.store(true);
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(differences(held, bytes), "");
}

}  // namespace
}  // namespace mapwright
