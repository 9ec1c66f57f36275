// The SIGBUS handler at its edges (signal/handler.h, signal/chain.h, include/mapwright/fault.h):
// every prior disposition × SA_SIGINFO × SA_RESETHAND × SA_NODEFER behaves exactly as it does
// without mapwright (the kernel is the oracle: each case also runs without mapwright); a
// SIGALRM + siglongjmp timeout cannot abandon the handler midway; fork() while other threads
// fault and register regions leaves a child that can make regions; the handler path fits a
// 4 KiB sigaltstack from the first fault; a broken stderr does not turn death by SIGBUS into
// death by SIGPIPE.
//
// Every case runs in forked children (test::run_in_child).
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "child.h"
#include "content.h"
#include "mapwright/error.h"
#include "mapwright/fault.h"
#include "mapwright/region.h"
#include "region_helpers.h"
#include "sanitizers.h"

namespace mapwright {
namespace {

using namespace test;

constexpr std::chrono::milliseconds kChildTimeout{20'000};

std::uint64_t page_size() { return static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE)); }

// A page of our own over a memfd that is not a region; lose() makes a touch a real SIGBUS
// (BUS_ADRERR) at an address no region owns, and the test handlers repair it.
std::atomic<int> g_repair_fd{-1};

struct Foreign {
  int fd = -1;
  volatile unsigned char* bytes = nullptr;
  Foreign() {
    fd = ::memfd_create("foreign", MFD_CLOEXEC);
    CHILD_CHECK(fd >= 0 && ::ftruncate(fd, static_cast<off_t>(page_size())) == 0);
    void* p = ::mmap(nullptr, page_size(), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    CHILD_CHECK(p != MAP_FAILED);
    bytes = static_cast<volatile unsigned char*>(p);
    g_repair_fd = fd;
  }
  void lose() { CHILD_CHECK(::ftruncate(fd, 0) == 0); }
};

void repair() {
  const int fd = g_repair_fd.load();
  if (fd >= 0) (void)::ftruncate(fd, static_cast<off_t>(page_size()));
}

// What a prior handler saw, written with write(2) from the handler itself.
void observe(const char* who) {
  sigset_t now;
  ::pthread_sigmask(SIG_SETMASK, nullptr, &now);
  char line[96];
  const int n = std::snprintf(line, sizeof line, "%s: usr1=%d usr2=%d bus=%d alrm=%d\n", who,
                              sigismember(&now, SIGUSR1), sigismember(&now, SIGUSR2),
                              sigismember(&now, SIGBUS), sigismember(&now, SIGALRM));
  (void)!::write(STDERR_FILENO, line, static_cast<std::size_t>(n));
}

void info_handler(int, siginfo_t*, void*) {
  const int saved = errno;
  observe("info");
  repair();
  errno = saved;
}

void plain_handler(int) {
  const int saved = errno;
  observe("plain");
  repair();
  errno = saved;
}

enum class Value { kFunction, kDefault, kIgnore };

struct Disposition {
  Value value;
  bool siginfo;
  bool resethand;
  bool nodefer;
};

std::string name_of(const Disposition& d) {
  std::string name = d.value == Value::kFunction ? "Function" : d.value == Value::kDefault ? "Dfl" : "Ign";
  if (d.siginfo) name += "Siginfo";
  if (d.resethand) name += "Resethand";
  if (d.nodefer) name += "Nodefer";
  return name;
}

void install(const Disposition& d) {
  struct sigaction sa {};
  sigemptyset(&sa.sa_mask);
  sigaddset(&sa.sa_mask, SIGUSR2);  // the handler's own sa_mask
  if (d.value == Value::kDefault) {
    sa.sa_handler = SIG_DFL;
  } else if (d.value == Value::kIgnore) {
    sa.sa_handler = SIG_IGN;
  } else if (d.siginfo) {
    sa.sa_sigaction = info_handler;
  } else {
    sa.sa_handler = plain_handler;
  }
  sa.sa_flags = (d.siginfo ? SA_SIGINFO : 0) | (d.resethand ? SA_RESETHAND : 0) |
                (d.nodefer ? SA_NODEFER : 0);
  CHILD_CHECK(::sigaction(SIGBUS, &sa, nullptr) == 0);
}

enum class Scenario { kFaults, kKills };

// The case's child: the prior disposition, then (with_mapwright) mapwright's handler and a
// region grown by faults; then two foreign faults or two kill()-sent SIGBUS, saying what
// happened. SIGUSR1 is blocked in the interrupted thread, so that a chained handler shows
// whether it got the interrupted thread's mask.
void run_case(const Disposition& d, Scenario scenario, bool with_mapwright) {
  no_core_dumps();
  sigset_t usr1;
  sigemptyset(&usr1);
  sigaddset(&usr1, SIGUSR1);
  CHILD_CHECK(::pthread_sigmask(SIG_BLOCK, &usr1, nullptr) == 0);
  install(d);
  std::optional<Region> region;
  if (with_mapwright) {
    install_fault_handler();
    region.emplace(Region::memfd("edges", options_with_capacity(64 * kMiB)));
    for (std::uint64_t offset = 0; offset < 3 * kMiB; offset += 4 * kKiB) store(*region, offset, 1);
  }
  Foreign foreign;
  for (int round = 1; round <= 2; ++round) {
    say(round == 1 ? "round 1\n" : "round 2\n");
    if (scenario == Scenario::kFaults) {
      foreign.lose();
      foreign.bytes[round] = static_cast<unsigned char>(round);
    } else {
      CHILD_CHECK(::kill(::getpid(), SIGBUS) == 0);
    }
    say(round == 1 ? "after 1\n" : "after 2\n");
  }
  if (region) {
    for (std::uint64_t offset = 3 * kMiB; offset < 9 * kMiB; offset += 4 * kKiB) {
      store(*region, offset, 2);
    }
    CHILD_CHECK(region->size() >= 9 * kMiB);
  }
  say("end\n");
}

// Output minus mapwright's lines (there should be none for a foreign signal anyway).
std::string observed(const ChildResult& result) {
  return result.describe() + "\n" + result.output;
}

class PriorDispositionTable : public ::testing::TestWithParam<Disposition> {};

TEST_P(PriorDispositionTable, ForeignFaultsAndKillsAreExactlyAsWithoutMapwright) {
#if MAPWRIGHT_TEST_TSAN
  GTEST_SKIP() << "ThreadSanitizer interposes sigaction and runs every handler itself with all "
                  "signals blocked: without mapwright the reference is TSan's delivery, not the "
                  "kernel's";
#endif
  const Disposition d = GetParam();
  for (const Scenario scenario : {Scenario::kFaults, Scenario::kKills}) {
    SCOPED_TRACE(scenario == Scenario::kFaults ? "two foreign faults" : "two kill()-sent SIGBUS");
    const ChildResult without = run_in_child([&] { run_case(d, scenario, false); }, kChildTimeout);
    const ChildResult with = run_in_child([&] { run_case(d, scenario, true); }, kChildTimeout);
    EXPECT_FALSE(without.timed_out) << observed(without);
    EXPECT_FALSE(with.timed_out) << "retried forever? " << observed(with);
    EXPECT_EQ(observed(with), observed(without));
    EXPECT_TRUE(lines_starting_with(with.output, "mapwright:").empty()) << with.output;
  }
}

std::vector<Disposition> all_dispositions() {
  std::vector<Disposition> all;
  for (const Value value : {Value::kFunction, Value::kDefault, Value::kIgnore}) {
    for (const bool siginfo : {false, true}) {
      for (const bool resethand : {false, true}) {
        for (const bool nodefer : {false, true}) all.push_back({value, siginfo, resethand, nodefer});
      }
    }
  }
  return all;
}

INSTANTIATE_TEST_SUITE_P(Edges, PriorDispositionTable, ::testing::ValuesIn(all_dispositions()),
                         [](const ::testing::TestParamInfo<Disposition>& info) {
                           return name_of(info.param);
                         });

// ---- SIGALRM + siglongjmp timeouts around plain stores ----------------------------------

sigjmp_buf g_timeout;
std::atomic<long> g_timeouts{0};
volatile sig_atomic_t g_armed = 0;  // g_timeout holds a frame to jump to

void on_alarm(int) {
  if (g_armed == 0) return;
  g_timeouts.fetch_add(1);
  siglongjmp(g_timeout, 1);
}

// A timer interrupts stores that grow a region page by page, and its handler leaves by
// siglongjmp. Thousands of interruptions later, no pin or lock was left behind: regions
// can be created and destroyed, and the region still grows.
TEST(HandlerEdges, SiglongjmpTimeoutsAroundFaultingStoresLeaveNothingHeld) {
#if MAPWRIGHT_TEST_TSAN
  GTEST_SKIP() << "ThreadSanitizer defers asynchronous signals to its own safe points, so a "
                  "SIGALRM cannot interrupt the handler there: the case does not exist";
#endif
  const ChildResult result = run_in_child(
      [] {
        RegionOptions options = options_with_capacity(1ull << 30);
        options.min_step = 4 * kKiB;
        options.max_step = 4 * kKiB;  // a fault for every page
        Region region = Region::memfd("timeouts", options);
        struct sigaction sa {};
        sa.sa_handler = on_alarm;
        sigemptyset(&sa.sa_mask);
        CHILD_CHECK(::sigaction(SIGALRM, &sa, nullptr) == 0);
        const itimerval every{{0, 50}, {0, 50}};
        CHILD_CHECK(::setitimer(ITIMER_REAL, &every, nullptr) == 0);
        volatile std::uint64_t next = 0;
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
        while (std::chrono::steady_clock::now() < deadline && next < (1ull << 30) - 4 * kKiB) {
          if (sigsetjmp(g_timeout, 1) == 0) {
            g_armed = 1;
            for (;;) {
              store(region, next, 1);
              next = next + 4 * kKiB;
              if (next >= (1ull << 30) - 4 * kKiB) break;
            }
          }
        }
        g_armed = 0;
        const itimerval off{};
        CHILD_CHECK(::setitimer(ITIMER_REAL, &off, nullptr) == 0);
        CHILD_CHECK(g_timeouts.load() > 100);
        { Region other = Region::memfd("after-timeouts"); store(other, 5 * kMiB, 1); }
        check_store_works(region, region.size() + 10);
        say("ok\n");
      },
      kChildTimeout);
  expect_clean_exit_unreported(result);
}

// ---- fork() while other threads fault and register regions -------------------------------

TEST(HandlerEdges, ForkWhileOtherThreadsFaultAndRegisterLeavesAWorkingChild) {
#if MAPWRIGHT_TEST_TSAN
  GTEST_SKIP() << "ThreadSanitizer does not support fork() with threads running";
#endif
#if MAPWRIGHT_TEST_ASAN
  // GCC 12's libasan does not intercept fork() (no __interceptor_fork, no atfork handlers):
  // its allocator's locks are not taken around fork, so a child forked while another thread
  // is inside malloc can hang in its own first malloc — about 1 run in 6 here, in the
  // sanitizer runtime, not in mapwright (glibc's malloc, in the other builds, is fork-safe).
  GTEST_SKIP() << "GCC 12's AddressSanitizer allocator is not fork-safe with threads running";
#endif
  const ChildResult result = run_in_child(
      [] {
        // Not installed yet: the threads' first regions install the handler while the first
        // forks happen (fork copies dispositions before memory; see handler.cc).
        std::atomic<bool> stop{false};
        std::vector<std::thread> threads;
        for (int t = 0; t < 3; ++t) {
          threads.emplace_back([&, t] {
            RegionOptions options = options_with_capacity(256 * kMiB);
            options.min_step = 4 * kKiB;
            options.max_step = 4 * kKiB;
            while (!stop.load()) {
              Region region = Region::memfd("churn-" + std::to_string(t), options);
              for (std::uint64_t offset = 0; offset < 64 * 4 * kKiB; offset += 4 * kKiB) {
                store(region, offset, 1);
              }
            }
          });
        }
        int failures = 0;
        for (int i = 0; i < 60; ++i) {
          const pid_t pid = ::fork();
          CHILD_CHECK(pid >= 0);
          if (pid == 0) {
            ::alarm(5);  // a hang ends by SIGALRM, which the parent counts as a failure
            Region mine = Region::memfd("forked-child");
            store(mine, 3 * kMiB, 7);
            { Region another = Region::memfd("forked-child-2"); store(another, 10, 1); }
            ::_exit(mine.size() >= 3 * kMiB ? 0 : 1);
          }
          int status = 0;
          CHILD_CHECK(::waitpid(pid, &status, 0) == pid);
          if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            ++failures;
            std::fprintf(stderr, "fork %d: status %#x\n", i, status);
          }
        }
        stop = true;
        for (auto& thread : threads) thread.join();
        CHILD_CHECK_MSG(failures == 0, std::to_string(failures) + " of 60 forked children hung or failed");
      },
      std::chrono::milliseconds(120'000));
  expect_clean_exit_unreported(result);
}

// ---- a 4 KiB sigaltstack ----------------------------------------------------------------

enum class AltPath { kGrowth, kFailureInsideGuarded, kFailureReported, kForeign, kBelowCommitted };

class SmallAltStack : public ::testing::TestWithParam<AltPath> {};

TEST_P(SmallAltStack, TheFirstFaultOfEachPathFits) {
#if MAPWRIGHT_TEST_ASAN || MAPWRIGHT_TEST_TSAN
  GTEST_SKIP() << "sanitizer instrumentation makes every frame larger";
#endif
  const AltPath path = GetParam();
  const ChildResult result = run_in_child(
      [&] {
        no_core_dumps();
        if (path == AltPath::kForeign) {
          struct sigaction sa {};
          sa.sa_handler = [](int) { repair(); };  // small: the stack is mapwright's to prove
          sa.sa_flags = SA_ONSTACK;
          CHILD_CHECK(::sigaction(SIGBUS, &sa, nullptr) == 0);
        }
        Region region = Region::memfd("altstack", no_grow_options());  // installs the handler
        use_small_altstack();
        switch (path) {
          case AltPath::kGrowth: {
            Region growing = Region::memfd("altstack-growing");
            store(growing, 5 * kMiB, 1);
            break;
          }
          case AltPath::kFailureInsideGuarded: {
            region.ensure(kMiB);
            const auto error = error_from([&] { guarded([&] { store(region, 2 * kMiB, 1); }); });
            CHILD_CHECK(error.has_value() && error->error() == EFAULT);
            break;
          }
          case AltPath::kFailureReported:
            say("storing\n");
            store(region, 2 * kMiB, 1);  // dies by SIGBUS after the one line
            break;
          case AltPath::kForeign: {
            Foreign foreign;
            foreign.lose();
            foreign.bytes[1] = 1;
            break;
          }
          case AltPath::kBelowCommitted: {
            Region truncated = Region::memfd("altstack-truncated", options_with_capacity(64 * kMiB));
            store(truncated, kMiB - 1, 1);
            CHILD_CHECK(::ftruncate(truncated.fd(), 0) == 0);
            const auto error = error_from([&] { guarded([&] { store(truncated, 100, 1); }); });
            CHILD_CHECK(error.has_value());
            break;
          }
        }
        say("survived\n");
      },
      kChildTimeout);
  if (path == AltPath::kFailureReported) {
    EXPECT_FALSE(result.exited) << result.describe();
    EXPECT_EQ(result.signal, SIGBUS) << result.describe();
    EXPECT_EQ(lines_starting_with(result.output, "mapwright: ").size(), 1u) << result.describe();
  } else {
    expect_clean_exit(result);
  }
}

INSTANTIATE_TEST_SUITE_P(Edges, SmallAltStack,
                         ::testing::Values(AltPath::kGrowth, AltPath::kFailureInsideGuarded,
                                           AltPath::kFailureReported, AltPath::kForeign,
                                           AltPath::kBelowCommitted),
                         [](const ::testing::TestParamInfo<AltPath>& info) {
                           switch (info.param) {
                             case AltPath::kGrowth: return std::string("Growth");
                             case AltPath::kFailureInsideGuarded: return std::string("FailureInsideGuarded");
                             case AltPath::kFailureReported: return std::string("FailureReported");
                             case AltPath::kForeign: return std::string("Foreign");
                             case AltPath::kBelowCommitted: return std::string("BelowCommitted");
                           }
                           return std::string("Unknown");
                         });

// ---- stderr on a broken pipe -------------------------------------------------------------

TEST(HandlerEdges, ReportOnABrokenPipeStillDiesBySigbus) {
  const ChildResult result = run_in_child(
      [] {
        no_core_dumps();
        Region region = no_grow_region("broken-pipe");
        int fds[2];
        CHILD_CHECK(::pipe(fds) == 0);
        ::close(fds[0]);  // nobody reads: a write raises SIGPIPE and fails with EPIPE
        CHILD_CHECK(::dup2(fds[1], STDERR_FILENO) == STDERR_FILENO);
        store(region, 2 * kMiB, 1);
        ::_exit(0);
      },
      kChildTimeout);
  EXPECT_FALSE(result.exited) << result.describe();
  EXPECT_EQ(result.signal, SIGBUS) << result.describe();
}

}  // namespace
}  // namespace mapwright
