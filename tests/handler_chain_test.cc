// Tests of how mapwright's SIGBUS handler coexists with other SIGBUS dispositions
// (include/mapwright/fault.h, signal/handler.cc): the disposition installed before ours gets
// every fault that is not a region's growth, exactly as it would without mapwright; a handler
// installed after ours reaches region growth through mapwright::handle_fault().
//
// Dispositions are process-wide, so every case runs in its own forked child
// (test::run_in_child). Checks inside a child end it with exit code 1 and a message naming the
// failed condition; the parent asserts on the child's exit status, signal and output.
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <ostream>
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

using namespace test;  // the shared helpers in tests/support

constexpr std::chrono::milliseconds kChildTimeout{15'000};

// ---- helpers usable in a child ---------------------------------------------------------

std::uint64_t page_size() { return static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE)); }

// Grows `region` to at least `bytes` by plain stores (one per page, from its current size
// on), then reads every stored byte back.
void grow_by_stores(Region& region, std::uint64_t bytes) {
  const std::uint64_t before_faults = region.stats().faults;
  const std::uint64_t start = region.size();
  auto* p = reinterpret_cast<volatile unsigned char*>(region.data());
  const std::uint64_t page = page_size();
  for (std::uint64_t offset = start; offset < bytes; offset += page) {
    p[offset] = byte_pattern(offset);
  }
  p[bytes - 1] = byte_pattern(bytes - 1);
  for (std::uint64_t offset = start; offset < bytes; offset += page) {
    CHILD_CHECK(p[offset] == byte_pattern(offset));
  }
  CHILD_CHECK(p[bytes - 1] == byte_pattern(bytes - 1));
  CHILD_CHECK(region.size() >= bytes);
  if (start < bytes) CHILD_CHECK(region.stats().faults > before_faults);
}

// A plain store of 1 at `offset` of `region`.
void store_one(const Region& region, std::uint64_t offset) {
  reinterpret_cast<volatile unsigned char*>(region.data())[offset] = 1;
}

// What a guarded() body threw: the Error's errno (0 if nothing was thrown) and what().
struct Thrown {
  int error = 0;
  std::string what;
};

// store_one() inside guarded().
Thrown store_one_inside_guarded(const Region& region, std::uint64_t offset) {
  Thrown thrown;
  try {
    guarded([&] { store_one(region, offset); });
  } catch (const Error& e) {
    thrown.error = e.error();
    thrown.what = e.what();
  }
  return thrown;
}

// One page of our own, MAP_SHARED over a memfd that is not a region. After lose(), a touch
// raises a real SIGBUS (BUS_ADRERR) at an address that no region owns.
class ForeignPage {
 public:
  ForeignPage() : page_(page_size()) {
    fd_ = ::memfd_create("foreign-page", MFD_CLOEXEC);
    CHILD_CHECK(fd_ >= 0);
    CHILD_CHECK(::ftruncate(fd_, static_cast<off_t>(page_)) == 0);
    void* p = ::mmap(nullptr, page_, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
    CHILD_CHECK(p != MAP_FAILED);
    base_ = static_cast<unsigned char*>(p);
  }
  ~ForeignPage() {
    ::munmap(base_, page_);
    ::close(fd_);
  }
  ForeignPage(const ForeignPage&) = delete;
  ForeignPage& operator=(const ForeignPage&) = delete;

  void lose() { CHILD_CHECK(::ftruncate(fd_, 0) == 0); }
  volatile unsigned char& at(std::uint64_t offset) {
    return reinterpret_cast<volatile unsigned char*>(base_)[offset];
  }
  void* address(std::uint64_t offset) const { return base_ + offset; }
  int fd() const { return fd_; }
  std::uint64_t size() const { return page_; }

 private:
  std::uint64_t page_;
  int fd_ = -1;
  unsigned char* base_ = nullptr;
};

// ---- what the test handlers saw (lock-free atomics: async-signal-safe) -----------------

std::atomic<int> g_calls{0};
std::atomic<int> g_signo{0};
std::atomic<int> g_code{0};
std::atomic<void*> g_address{nullptr};
std::atomic<int> g_sender{0};
std::atomic<int> g_resolved_by_mapwright{0};
std::atomic<bool> g_usr1_blocked{false};
// The foreign page's file, so that a handler can repair the fault (size it back to a page).
std::atomic<int> g_repair_fd{-1};
std::atomic<long> g_repair_size{0};
// When set, the SA_SIGINFO handler leaves by siglongjmp instead of repairing.
std::atomic<bool> g_jump_out{false};
sigjmp_buf g_jump;

void repair_foreign_page() {
  const int fd = g_repair_fd.load();
  if (fd >= 0) (void)::ftruncate(fd, g_repair_size.load());
}

// From now on the test handlers repair a fault on `foreign` (size its file back to a page),
// so that the faulting store is retried and succeeds.
void repair_on_fault(const ForeignPage& foreign) {
  g_repair_fd = foreign.fd();
  g_repair_size = static_cast<long>(foreign.size());
}

void record_siginfo(int sig, const siginfo_t* info) {
  g_signo = sig;
  g_code = info != nullptr ? info->si_code : 0;
  g_address = info != nullptr ? info->si_addr : nullptr;
  g_sender = info != nullptr && info->si_code <= 0 ? static_cast<int>(info->si_pid) : 0;
  sigset_t now;
  ::pthread_sigmask(SIG_SETMASK, nullptr, &now);
  g_usr1_blocked = sigismember(&now, SIGUSR1) == 1;
}

void prior_siginfo_handler(int sig, siginfo_t* info, void*) {
  const int saved = errno;
  record_siginfo(sig, info);
  g_calls.fetch_add(1);
  if (g_jump_out.load()) siglongjmp(g_jump, 1);
  if (info != nullptr && info->si_code == BUS_ADRERR) repair_foreign_page();
  errno = saved;
}

void prior_plain_handler(int sig) {
  const int saved = errno;
  g_signo = sig;
  g_calls.fetch_add(1);
  repair_foreign_page();  // harmless for a kill()-sent SIGBUS
  errno = saved;
}

// Installed AFTER mapwright's: mapwright gets the first chance, as fault.h prescribes.
void after_handler(int sig, siginfo_t* info, void* context) {
  if (handle_fault(sig, info, context)) {
    g_resolved_by_mapwright.fetch_add(1);
    return;
  }
  const int saved = errno;
  record_siginfo(sig, info);
  g_calls.fetch_add(1);
  if (info != nullptr && info->si_code == BUS_ADRERR) repair_foreign_page();
  errno = saved;
}

// A crash reporter installed after mapwright's: reports and ends the process.
void after_reporter(int sig, siginfo_t* info, void* context) {
  if (handle_fault(sig, info, context)) return;
  say("reporter: saw a fault mapwright did not resolve\n");
  ::_exit(42);
}

// A crash reporter installed before mapwright's, that returns.
void prior_reporter(int, siginfo_t* info, void*) {
  g_calls.fetch_add(1);
  if (info != nullptr && info->si_code == BUS_ADRERR) {
    say("prior: saw BUS_ADRERR\n");
  } else {
    say("prior: saw something else\n");
  }
}

enum class Prior { kSigInfo, kPlain, kDefault, kIgnore };

void install_prior(Prior prior, const sigset_t* mask = nullptr) {
  struct sigaction sa {};
  if (mask != nullptr) {
    sa.sa_mask = *mask;
  } else {
    sigemptyset(&sa.sa_mask);
  }
  switch (prior) {
    case Prior::kSigInfo:
      sa.sa_sigaction = prior_siginfo_handler;
      sa.sa_flags = SA_SIGINFO;
      break;
    case Prior::kPlain:
      sa.sa_handler = prior_plain_handler;
      break;
    case Prior::kDefault:
      sa.sa_handler = SIG_DFL;
      break;
    case Prior::kIgnore:
      sa.sa_handler = SIG_IGN;
      break;
  }
  CHILD_CHECK(::sigaction(SIGBUS, &sa, nullptr) == 0);
}

void install_after(void (*handler)(int, siginfo_t*, void*)) {
  struct sigaction sa {};
  sigemptyset(&sa.sa_mask);
  sa.sa_sigaction = handler;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  CHILD_CHECK(::sigaction(SIGBUS, &sa, nullptr) == 0);
}

// mapwright's handler is the one installed now (not the prior one).
void check_mapwright_installed() {
  struct sigaction now {};
  CHILD_CHECK(::sigaction(SIGBUS, nullptr, &now) == 0);
  CHILD_CHECK((now.sa_flags & SA_SIGINFO) != 0);
  CHILD_CHECK(now.sa_sigaction != prior_siginfo_handler);
}

// Waits (bounded) for an asynchronously delivered signal to have been handled.
void wait_for_calls(int expected) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (g_calls.load() < expected && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

void expect_death_by_sigbus(const ChildResult& result) {
  EXPECT_FALSE(result.timed_out) << result.describe();
  EXPECT_FALSE(result.exited) << result.describe();
  EXPECT_EQ(result.signal, SIGBUS) << result.describe();
}

// Death by SIGBUS after the child said `said`, before it could say "survived ...".
void expect_death_by_sigbus_after(const ChildResult& result, const char* said) {
  expect_death_by_sigbus(result);
  EXPECT_NE(result.output.find(said), std::string::npos) << result.describe();
  EXPECT_EQ(result.output.find("survived"), std::string::npos) << result.describe();
}

// ---- the four prior dispositions, from a table ----------------------------------------

struct PriorCase {
  const char* name;
  Prior prior;
  bool fault_kills;  // a real foreign fault ends the process (SIG_DFL; SIG_IGN as the kernel)
  bool kill_kills;   // a kill()-sent SIGBUS ends the process (SIG_DFL only)
};

const PriorCase kPriorCases[] = {
    {"SaSiginfo", Prior::kSigInfo, false, false},
    {"SaHandler", Prior::kPlain, false, false},
    {"SigDfl", Prior::kDefault, true, true},
    {"SigIgn", Prior::kIgnore, true, false},
};

void PrintTo(const PriorCase& c, std::ostream* out) { *out << c.name; }

class PriorDisposition : public ::testing::TestWithParam<PriorCase> {};

// In the child: `prior` installed, then mapwright's handler; a region grown to 3 MiB by stores,
// which the prior disposition never saw.
Region install_prior_then_grow(Prior prior) {
  no_core_dumps();
  install_prior(prior);
  install_fault_handler();
  check_mapwright_installed();

  Region region = Region::memfd("chain-region", options_with_capacity(256 * kMiB));
  grow_by_stores(region, 3 * kMiB);
  CHILD_CHECK(g_calls.load() == 0);  // growth is not the prior handler's business
  return region;
}

// The prior disposition's outcome for the child: if `kills`, death by SIGBUS after it said
// `said`; else a clean exit. Either way mapwright wrote nothing: a fault that is not a region's
// growth is not mapwright's to explain.
void expect_prior_outcome(const ChildResult& result, bool kills, const char* said) {
  if (kills) {
    expect_death_by_sigbus_after(result, said);
  } else {
    expect_clean_exit(result);
  }
  EXPECT_TRUE(lines_starting_with(result.output, "mapwright:").empty()) << result.describe();
}

// A real SIGBUS (BUS_ADRERR) at an address no region owns goes to the disposition installed
// before mapwright's; region growth in the same process works and is never seen by it.
TEST_P(PriorDisposition, ForeignFaultGoesToThePriorDisposition) {
  const PriorCase c = GetParam();
  const ChildResult result = run_in_child(
      [&] {
        Region region = install_prior_then_grow(c.prior);

        ForeignPage foreign;
        foreign.at(123) = 'a';
        repair_on_fault(foreign);
        foreign.lose();
        say("faulting\n");
        foreign.at(123) = 'b';  // SIGBUS BUS_ADRERR, not in any region
        say("survived the fault\n");

        CHILD_CHECK(g_calls.load() == 1);
        CHILD_CHECK(g_signo.load() == SIGBUS);
        if (c.prior == Prior::kSigInfo) {
          CHILD_CHECK(g_code.load() == BUS_ADRERR);
          CHILD_CHECK(g_address.load() == foreign.address(123));
        }
        CHILD_CHECK(foreign.at(123) == 'b');  // the handler repaired it; the store retried

        grow_by_stores(region, 6 * kMiB);  // still growing, still unseen by the prior
        CHILD_CHECK(g_calls.load() == 1);
        CHILD_CHECK(region.stats().failures == 0);
      },
      kChildTimeout);
  expect_prior_outcome(result, c.fault_kills, "faulting");
}

// A SIGBUS sent with kill() is never a growth: it goes to the prior disposition, and SIG_IGN
// ignores it as it would without mapwright.
TEST_P(PriorDisposition, UserSentSigbusGoesToThePriorDisposition) {
  const PriorCase c = GetParam();
  const ChildResult result = run_in_child(
      [&] {
        Region region = install_prior_then_grow(c.prior);

        say("sending\n");
        CHILD_CHECK(::kill(::getpid(), SIGBUS) == 0);
        if (c.prior == Prior::kSigInfo || c.prior == Prior::kPlain) wait_for_calls(1);
        say("survived the kill\n");

        if (c.prior == Prior::kSigInfo || c.prior == Prior::kPlain) {
          CHILD_CHECK(g_calls.load() == 1);
          CHILD_CHECK(g_signo.load() == SIGBUS);
        } else {
          CHILD_CHECK(g_calls.load() == 0);
        }
        if (c.prior == Prior::kSigInfo) {
          CHILD_CHECK(g_code.load() == SI_USER);
          CHILD_CHECK(g_sender.load() == ::getpid());
        }
        const std::uint64_t size_before = region.size();
        grow_by_stores(region, 6 * kMiB);
        CHILD_CHECK(region.size() > size_before);
        CHILD_CHECK(g_calls.load() == (c.prior == Prior::kIgnore ? 0 : 1));
      },
      kChildTimeout);
  expect_prior_outcome(result, c.kill_kills, "sending");
}

INSTANTIATE_TEST_SUITE_P(Dispositions, PriorDisposition, ::testing::ValuesIn(kPriorCases),
                         [](const ::testing::TestParamInfo<PriorCase>& info) {
                           return std::string(info.param.name);
                         });

// ---- more about the prior SA_SIGINFO handler ------------------------------------------

// The prior handler may leave by siglongjmp. Afterwards SIGBUS is deliverable again, the
// range table is not left pinned (creating and destroying a region, which waits for pinned
// readers, finishes), and regions still grow.
TEST(HandlerChain, PriorHandlerMaySiglongjmpOutOfAForeignFault) {
  const ChildResult result = run_in_child(
      [] {
        no_core_dumps();
        install_prior(Prior::kSigInfo);
        install_fault_handler();
        Region region = Region::memfd("jump-region", options_with_capacity(256 * kMiB));
        grow_by_stores(region, 2 * kMiB);

        ForeignPage foreign;
        foreign.lose();
        g_jump_out = true;
        // The frame that sigsetjmp()s stays live until the handler jumps back into it.
        const auto fault_and_jump_back = [&foreign](int expected_calls) {
          if (sigsetjmp(g_jump, 1) == 0) {
            foreign.at(7) = 'x';
            child_failed(__FILE__, __LINE__, "the foreign store did not fault");
          }
          CHILD_CHECK(g_calls.load() == expected_calls);
          CHILD_CHECK(g_code.load() == BUS_ADRERR);
          CHILD_CHECK(g_address.load() == foreign.address(7));
        };
        fault_and_jump_back(1);
        fault_and_jump_back(2);  // SIGBUS is unblocked again after the jump
        g_jump_out = false;

        {
          Region second = Region::memfd("second-region", options_with_capacity(64 * kMiB));
          grow_by_stores(second, 2 * kMiB);
        }  // unregistering waits for pinned readers: a leaked pin would hang here
        grow_by_stores(region, 5 * kMiB);
        CHILD_CHECK(g_calls.load() == 2);
        say("done\n");
      },
      kChildTimeout);
  expect_clean_exit(result);
  EXPECT_NE(result.output.find("done"), std::string::npos) << result.describe();
}

// Without install_fault_handler(), the first Region installs mapwright's handler, and a
// handler installed before that is still chained to.
TEST(HandlerChain, PriorHandlerInstalledBeforeTheFirstRegionIsChained) {
  const ChildResult result = run_in_child(
      [] {
        install_prior(Prior::kSigInfo);
        Region region = Region::memfd("lazy-region", options_with_capacity(64 * kMiB));
        check_mapwright_installed();
        grow_by_stores(region, 3 * kMiB);
        CHILD_CHECK(g_calls.load() == 0);

        ForeignPage foreign;
        repair_on_fault(foreign);
        foreign.lose();
        foreign.at(1) = 'z';
        CHILD_CHECK(g_calls.load() == 1);
        CHILD_CHECK(g_code.load() == BUS_ADRERR);
        CHILD_CHECK(g_address.load() == foreign.address(1));
        CHILD_CHECK(foreign.at(1) == 'z');
      },
      kChildTimeout);
  expect_clean_exit(result);
}

// Installing twice must not make mapwright its own "previous" handler (which would recurse
// on a foreign fault until the stack overflows): SIG_DFL before it still means death by SIGBUS.
TEST(HandlerChain, InstallingTwiceStillChainsToTheOriginalDisposition) {
  const ChildResult result = run_in_child(
      [] {
        no_core_dumps();
        install_prior(Prior::kDefault);
        install_fault_handler();
        install_fault_handler();
        Region region = Region::memfd("twice-region", options_with_capacity(64 * kMiB));
        grow_by_stores(region, 2 * kMiB);
        ForeignPage foreign;
        foreign.lose();
        say("faulting\n");
        foreign.at(0) = 1;
        say("survived the fault\n");
      },
      kChildTimeout);
  expect_death_by_sigbus_after(result, "faulting");
}

// The prior handler runs as the kernel would have run it: with its own sa_mask blocked.
TEST(HandlerChain, PriorHandlerRunsWithItsOwnSignalMask) {
#if defined(MAPWRIGHT_TEST_TSAN)
  GTEST_SKIP() << "ThreadSanitizer runs every signal handler with all signals blocked, so "
                  "whether the prior handler's sa_mask is applied cannot be observed";
#endif
  const ChildResult result = run_in_child(
      [] {
        sigset_t mask;
        sigemptyset(&mask);
        sigaddset(&mask, SIGUSR1);
        install_prior(Prior::kSigInfo, &mask);
        install_fault_handler();
        ForeignPage foreign;
        repair_on_fault(foreign);
        foreign.lose();
        foreign.at(0) = 1;
        CHILD_CHECK(g_calls.load() == 1);
        // Without mapwright, SIGUSR1 (in the prior's sa_mask) is blocked while it runs.
        CHILD_CHECK(g_usr1_blocked.load());
      },
      kChildTimeout);
  expect_clean_exit(result);
}

// A growth that fails outside guarded(): one line from mapwright, then the prior handler
// sees the fault, and when it returns the process dies by SIGBUS (no endless retry).
TEST(HandlerChain, FailedGrowthOutsideGuardedReachesThePriorHandlerThenDies) {
  const ChildResult result = run_in_child(
      [] {
        no_core_dumps();
        struct sigaction sa {};
        sigemptyset(&sa.sa_mask);
        sa.sa_sigaction = prior_reporter;
        sa.sa_flags = SA_SIGINFO;
        CHILD_CHECK(::sigaction(SIGBUS, &sa, nullptr) == 0);
        Region region = no_grow_region("no-grow-region");
        say("storing\n");
        store_one(region, kMiB + 10);
        say("survived the store\n");
      },
      kChildTimeout);
  expect_death_by_sigbus(result);
  const auto lines = lines_starting_with(result.output, "mapwright: ");
  ASSERT_EQ(lines.size(), 1u) << result.describe();
  EXPECT_NE(lines[0].find("'no-grow-region'"), std::string::npos) << lines[0];
  EXPECT_NE(lines[0].find("grow_on_fault is off"), std::string::npos) << lines[0];
  const auto mine = result.output.find("mapwright: ");
  const auto prior = result.output.find("prior: saw BUS_ADRERR");
  ASSERT_NE(prior, std::string::npos) << result.describe();
  EXPECT_LT(mine, prior) << "mapwright explains first, then the prior handler gets the fault";
  EXPECT_EQ(lines_starting_with(result.output, "prior:").size(), 1u) << result.describe();
  EXPECT_EQ(result.output.find("survived"), std::string::npos) << result.describe();
}

// Inside guarded(), a failed growth is thrown to the caller; the prior handler never sees it.
TEST(HandlerChain, FailedGrowthInsideGuardedIsNotChained) {
  const ChildResult result = run_in_child(
      [] {
        install_prior(Prior::kSigInfo);
        Region region = no_grow_region("guarded-region");
        const Thrown thrown = store_one_inside_guarded(region, kMiB);
        CHILD_CHECK(thrown.error == EFAULT);
        CHILD_CHECK(g_calls.load() == 0);
      },
      kChildTimeout);
  expect_clean_exit_unreported(result);
}

// ---- a handler installed after mapwright's ---------------------------------------------

// The user's handler calls handle_fault() first: region growth goes through it (true, once
// per resolved fault), and foreign faults come back to the user's handler (false).
TEST(HandlerChain, HandlerInstalledAfterOursGetsGrowthThroughHandleFault) {
  const ChildResult result = run_in_child(
      [] {
        install_fault_handler();
        install_after(after_handler);
        Region region = Region::memfd("after-region", options_with_capacity(256 * kMiB));
        grow_by_stores(region, 3 * kMiB);
        CHILD_CHECK(g_resolved_by_mapwright.load() > 0);
        CHILD_CHECK(static_cast<std::uint64_t>(g_resolved_by_mapwright.load()) ==
                    region.stats().faults);
        CHILD_CHECK(g_calls.load() == 0);  // every growth fault was mapwright's

        ForeignPage foreign;
        repair_on_fault(foreign);
        foreign.lose();
        const int resolved_before = g_resolved_by_mapwright.load();
        foreign.at(99) = 'q';
        CHILD_CHECK(g_calls.load() == 1);  // handle_fault said false
        CHILD_CHECK(g_resolved_by_mapwright.load() == resolved_before);
        CHILD_CHECK(g_code.load() == BUS_ADRERR);
        CHILD_CHECK(g_address.load() == foreign.address(99));
        CHILD_CHECK(foreign.at(99) == 'q');

        CHILD_CHECK(::kill(::getpid(), SIGBUS) == 0);  // a kill()-sent one too
        wait_for_calls(2);
        CHILD_CHECK(g_calls.load() == 2);
        CHILD_CHECK(g_code.load() == SI_USER);

        grow_by_stores(region, 6 * kMiB);
        CHILD_CHECK(static_cast<std::uint64_t>(g_resolved_by_mapwright.load()) ==
                    region.stats().faults);
        CHILD_CHECK(g_calls.load() == 2);
      },
      kChildTimeout);
  expect_clean_exit(result);
}

// Through handle_fault(), a failed growth inside guarded() still becomes an Error.
TEST(HandlerChain, HandlerInstalledAfterOursFailedGrowthInsideGuardedThrows) {
  const ChildResult result = run_in_child(
      [] {
        install_fault_handler();
        install_after(after_handler);
        Region region = no_grow_region("after-guarded-region");
        const Thrown thrown = store_one_inside_guarded(region, kMiB + 1);
        CHILD_CHECK(thrown.error == EFAULT);
        CHILD_CHECK(thrown.what.find("'after-guarded-region'") != std::string::npos);
        CHILD_CHECK(g_calls.load() == 0);  // handle_fault did not return: no user fallback
      },
      kChildTimeout);
  expect_clean_exit_unreported(result);
}

// Outside guarded(), handle_fault() explains the failed growth in one line and returns
// false; the user's handler then does what it always does.
TEST(HandlerChain, HandlerInstalledAfterOursFailedGrowthOutsideGuardedReturnsFalse) {
  const ChildResult result = run_in_child(
      [] {
        install_fault_handler();
        install_after(after_reporter);
        Region region = no_grow_region("after-outside-region");
        store_one(region, kMiB + 2);
        say("survived the store\n");
      },
      kChildTimeout);
  EXPECT_FALSE(result.timed_out) << result.describe();
  EXPECT_TRUE(result.exited && result.exit_code == 42) << result.describe();
  const auto lines = lines_starting_with(result.output, "mapwright: ");
  ASSERT_EQ(lines.size(), 1u) << result.describe();
  EXPECT_NE(lines[0].find("'after-outside-region'"), std::string::npos) << lines[0];
  EXPECT_LT(result.output.find("mapwright: "), result.output.find("reporter:"))
      << result.describe();
  EXPECT_EQ(result.output.find("survived"), std::string::npos) << result.describe();
}

}  // namespace
}  // namespace mapwright
