// Tests of mapwright living beside the other owners of SIGBUS, SIGSEGV and system calls that a
// real program has: GNU libsigsegv, plain sigaction handlers for SIGBUS and SIGSEGV, a crash
// reporter installed after mapwright's handler, a seccomp filter made with libseccomp, and a
// sealed image passed on from one process to a third.
//
// What tests/handler_chain_test.cc already covers (every prior SIGBUS disposition, a prior
// handler that siglongjmps, a later handler that calls handle_fault(), failed growth in both
// orders) is not repeated here; these are the orderings and neighbours it lacks.
//
// Dispositions and seccomp filters are process-wide, so every case runs in a forked child
// (test::run_in_child): checks inside it end it with exit code 1 and a message naming the failed
// condition, and the parent asserts on its exit status, signal and output.
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(MAPWRIGHT_TEST_HAVE_LIBSIGSEGV)
#include <sigsegv.h>
#endif
#if defined(MAPWRIGHT_TEST_HAVE_LIBSECCOMP)
#include <seccomp.h>
#endif

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <ostream>
#include <span>
#include <string>
#include <vector>

#include "child.h"
#include "content.h"
#include "fixture_paths.h"
#include "mapwright/error.h"
#include "mapwright/fault.h"
#include "mapwright/loader.h"
#include "mapwright/region.h"
#include "mapwright/sealed_image.h"
#include "mapwright/wrapper.h"
#include "region_helpers.h"
#include "sanitizers.h"

namespace mapwright {
namespace {

using namespace test;  // the shared helpers in tests/support

constexpr std::chrono::milliseconds kChildTimeout{30'000};

// The page size, read once outside any handler (sysconf is not async-signal-safe).
const std::uint64_t kPage = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));

// ---- helpers usable in a child ---------------------------------------------------------

// Grows `region` to at least `bytes` by plain stores (one per page, from its current size
// on), reads them back, and checks that faults — not ensure() — did it.
void grow_by_stores(Region& region, std::uint64_t bytes) {
  const std::uint64_t faults_before = region.stats().faults;
  const std::uint64_t start = region.size();
  auto* p = reinterpret_cast<volatile unsigned char*>(region.data());
  for (std::uint64_t offset = start; offset < bytes; offset += kPage) p[offset] = byte_pattern(offset);
  p[bytes - 1] = byte_pattern(bytes - 1);
  for (std::uint64_t offset = start; offset < bytes; offset += kPage) {
    CHILD_CHECK(p[offset] == byte_pattern(offset));
  }
  CHILD_CHECK(p[bytes - 1] == byte_pattern(bytes - 1));
  CHILD_CHECK(region.size() >= bytes);
  if (start < bytes) CHILD_CHECK(region.stats().faults > faults_before);
  CHILD_CHECK(region.stats().failures == 0);
}

// One page of a plain file on disk (not a region), mapped MAP_SHARED. After lose() the file
// is empty, and a touch of the page raises a real SIGBUS (BUS_ADRERR) at an address no
// region owns: the "truncated file under a mapping" bug every mmap user meets.
class TruncatedFilePage {
 public:
  explicit TruncatedFilePage(const std::filesystem::path& path) {
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    CHILD_CHECK(fd_ >= 0);
    CHILD_CHECK(::ftruncate(fd_, static_cast<off_t>(kPage)) == 0);
    void* p = ::mmap(nullptr, kPage, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
    CHILD_CHECK(p != MAP_FAILED);
    base_ = static_cast<unsigned char*>(p);
    base_[0] = 'k';
    CHILD_CHECK(::ftruncate(fd_, 0) == 0);
  }
  ~TruncatedFilePage() {
    ::munmap(base_, kPage);
    ::close(fd_);
  }
  TruncatedFilePage(const TruncatedFilePage&) = delete;
  TruncatedFilePage& operator=(const TruncatedFilePage&) = delete;

  volatile unsigned char& at(std::uint64_t offset) {
    return reinterpret_cast<volatile unsigned char*>(base_)[offset];
  }
  void* address(std::uint64_t offset) const { return base_ + offset; }
  void* base() const { return base_; }
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
  unsigned char* base_ = nullptr;
};

// One anonymous page mapped PROT_NONE: a store raises SIGSEGV (SEGV_ACCERR).
class ProtNonePage {
 public:
  ProtNonePage() {
    void* p = ::mmap(nullptr, kPage, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHILD_CHECK(p != MAP_FAILED);
    base_ = static_cast<unsigned char*>(p);
  }
  ~ProtNonePage() { ::munmap(base_, kPage); }
  ProtNonePage(const ProtNonePage&) = delete;
  ProtNonePage& operator=(const ProtNonePage&) = delete;

  volatile unsigned char& at(std::uint64_t offset) {
    return reinterpret_cast<volatile unsigned char*>(base_)[offset];
  }
  void* address(std::uint64_t offset) const { return base_ + offset; }
  void* base() const { return base_; }
  void protect_again() { CHILD_CHECK(::mprotect(base_, kPage, PROT_NONE) == 0); }

 private:
  unsigned char* base_ = nullptr;
};

// ---- what the test handlers saw, and what they may repair (lock-free atomics) ----------

std::atomic<int> g_bus_calls{0};
std::atomic<int> g_segv_calls{0};
std::atomic<int> g_code{0};
std::atomic<void*> g_address{nullptr};
std::atomic<int> g_resolved_by_mapwright{0};
std::atomic<int> g_handle_fault_false{0};
// A SIGSEGV at an address in [g_unprotect_base, +g_unprotect_length) is repaired by making
// that range readable and writable again.
std::atomic<void*> g_unprotect_base{nullptr};
std::atomic<std::uint64_t> g_unprotect_length{0};
// A SIGBUS on the truncated file is repaired by sizing it back to a page.
std::atomic<int> g_repair_fd{-1};
// When set, the handler leaves by siglongjmp instead of repairing.
std::atomic<bool> g_jump_out{false};
sigjmp_buf g_jump;

bool in_unprotect_range(const void* address) {
  const auto* base = static_cast<const unsigned char*>(g_unprotect_base.load());
  const auto* at = static_cast<const unsigned char*>(address);
  return base != nullptr && at >= base && at < base + g_unprotect_length.load();
}

// The body shared by the handlers below: record, then leave by siglongjmp or repair.
void record_and_recover(int sig, const siginfo_t* info) {
  const int saved = errno;
  g_code = info->si_code;
  g_address = info->si_addr;
  (sig == SIGBUS ? g_bus_calls : g_segv_calls).fetch_add(1);
  if (g_jump_out.load()) siglongjmp(g_jump, 1);
  if (sig == SIGSEGV && in_unprotect_range(info->si_addr)) {
    (void)::mprotect(g_unprotect_base.load(), g_unprotect_length.load(), PROT_READ | PROT_WRITE);
  } else if (sig == SIGBUS && info->si_code == BUS_ADRERR && g_repair_fd.load() >= 0) {
    (void)::ftruncate(g_repair_fd.load(), static_cast<off_t>(kPage));
  }
  errno = saved;
}

// A program's own handler that knows nothing of mapwright (installed before it, or after it
// against the README's advice).
void plain_handler(int sig, siginfo_t* info, void*) { record_and_recover(sig, info); }

// A program's own handler installed after mapwright's, following fault.h: handle_fault first.
void first_chance_handler(int sig, siginfo_t* info, void* context) {
  if (handle_fault(sig, info, context)) {
    g_resolved_by_mapwright.fetch_add(1);
    return;
  }
  g_handle_fault_false.fetch_add(1);
  record_and_recover(sig, info);
}

// A crash reporter installed after mapwright's: lets mapwright resolve growth, reports
// anything else with write(2), then dies by the original signal (default disposition, and
// returning re-executes the faulting instruction).
void crash_reporter(int sig, siginfo_t* info, void* context) {
  if (handle_fault(sig, info, context)) return;
  say(sig == SIGBUS    ? "reporter: fatal SIGBUS\n"
      : sig == SIGSEGV ? "reporter: fatal SIGSEGV\n"
                       : "reporter: fatal signal\n");
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  ::sigaction(sig, &dfl, nullptr);
}

void install(int sig, void (*handler)(int, siginfo_t*, void*)) {
  struct sigaction sa {};
  sigemptyset(&sa.sa_mask);
  sa.sa_sigaction = handler;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  CHILD_CHECK(::sigaction(sig, &sa, nullptr) == 0);
}

// The handler function installed for `sig` now (nullptr for SIG_DFL).
void* current_handler(int sig) {
  struct sigaction now {};
  CHILD_CHECK(::sigaction(sig, nullptr, &now) == 0);
  return (now.sa_flags & SA_SIGINFO) != 0 ? reinterpret_cast<void*>(now.sa_sigaction)
                                          : reinterpret_cast<void*>(now.sa_handler);
}

void expect_death_by(const ChildResult& result, int sig) {
  EXPECT_FALSE(result.timed_out) << result.describe();
  EXPECT_FALSE(result.exited) << result.describe();
  EXPECT_EQ(result.signal, sig) << result.describe();
}

std::string output_of(const ChildResult& result) { return "child output:\n" + result.output; }

// The "installed before mapwright's" cases fork from the test process, so it must not have
// mapwright's handler yet: no test in this program makes a Region outside a child.
void expect_mapwright_not_installed_here() {
  struct sigaction now {};
  ASSERT_EQ(::sigaction(SIGBUS, nullptr, &now), 0);
  ASSERT_TRUE((now.sa_flags & SA_SIGINFO) == 0 && now.sa_handler == SIG_DFL)
      << "SIGBUS is already handled in the test process (a test made a Region outside a "
         "child?): a handler can no longer be installed before mapwright's";
}

// ==== 1. GNU libsigsegv ==================================================================
//
// libsigsegv (Debian 12: 2.14) installs one process-wide SIGSEGV handler; sigsegv_dispatch()
// finds the area a fault is in and calls its handler, which typically unprotects a page (a
// garbage collector's write barrier, a lazily filled heap). Its header says the handler
// "ignores any previously installed SIGSEGV handler" — and on Linux it takes SIGSEGV ONLY:
// SIGBUS stays as it was. So mapwright and libsigsegv do not share a signal here, and the
// README's rule for a handler installed after mapwright's (call handle_fault() first) does
// not come into play. The tests below check that too, so that a libsigsegv that starts
// taking SIGBUS is noticed.

#if defined(MAPWRIGHT_TEST_HAVE_LIBSIGSEGV)

sigsegv_dispatcher g_areas;
std::atomic<int> g_libsigsegv_calls{0};
std::atomic<int> g_area_calls{0};
std::atomic<void*> g_libsigsegv_address{nullptr};

// The area handler: makes the area's page writable; the store retries and succeeds.
int unprotect_area(void* fault_address, void* page) {
  g_area_calls.fetch_add(1);
  (void)fault_address;
  say("libsigsegv: area handler\n");
  return ::mprotect(page, kPage, PROT_READ | PROT_WRITE) == 0 ? 1 : 0;
}

// libsigsegv's global handler: the classic dispatcher.
int libsigsegv_handler(void* fault_address, int serious) {
  (void)serious;
  g_libsigsegv_calls.fetch_add(1);
  g_libsigsegv_address = fault_address;
  return sigsegv_dispatch(&g_areas, fault_address);
}

void install_libsigsegv() {
  sigsegv_init(&g_areas);
  CHILD_CHECK(sigsegv_install_handler(libsigsegv_handler) == 0);
}

// The SIGSEGV area works: a store into the PROT_NONE page reaches the area handler through
// libsigsegv and then succeeds; region growth in the same process never reaches libsigsegv.
void exercise_libsigsegv_and_a_region() {
  ProtNonePage area;
  void* ticket = sigsegv_register(&g_areas, area.base(), kPage, unprotect_area, area.base());
  CHILD_CHECK(ticket != nullptr);

  Region region = Region::memfd("libsigsegv-neighbour", options_with_capacity(256 * kMiB));
  grow_by_stores(region, 3 * kMiB);
  CHILD_CHECK(g_libsigsegv_calls.load() == 0);  // growth is SIGBUS, mapwright's alone

  area.at(17) = 'g';  // SIGSEGV: libsigsegv -> area handler -> mprotect -> retry
  CHILD_CHECK(g_libsigsegv_calls.load() == 1);
  CHILD_CHECK(g_area_calls.load() == 1);
  CHILD_CHECK(g_libsigsegv_address.load() == area.address(17));
  CHILD_CHECK(area.at(17) == 'g');

  area.protect_again();
  grow_by_stores(region, 7 * kMiB);
  area.at(18) = 'h';
  CHILD_CHECK(g_area_calls.load() == 2);
  CHILD_CHECK(area.at(18) == 'h');
  CHILD_CHECK(g_libsigsegv_calls.load() == 2);
  sigsegv_unregister(&g_areas, ticket);
  say("done\n");
}

TEST(Libsigsegv, InstalledBeforeMapwrightBothKeepTheirFaults) {
  ASSERT_NO_FATAL_FAILURE(expect_mapwright_not_installed_here());
  const ChildResult result = run_in_child(
      [] {
        install_libsigsegv();
        void* const libsigsegv_segv = current_handler(SIGSEGV);
        CHILD_CHECK(current_handler(SIGBUS) == nullptr);  // Linux: libsigsegv leaves SIGBUS alone
        install_fault_handler();
        CHILD_CHECK(current_handler(SIGSEGV) == libsigsegv_segv);
        CHILD_CHECK(current_handler(SIGBUS) != nullptr);
        exercise_libsigsegv_and_a_region();
      },
      kChildTimeout);
  expect_clean_exit_unreported(result);
  EXPECT_NE(result.output.find("done"), std::string::npos) << output_of(result);
}

TEST(Libsigsegv, InstalledAfterMapwrightLeavesSigbusToIt) {
  const ChildResult result = run_in_child(
      [] {
        install_fault_handler();
        void* const mapwright_bus = current_handler(SIGBUS);
        install_libsigsegv();
        // The README's "a later handler must call handle_fault() first" is moot: libsigsegv
        // did not replace mapwright's SIGBUS handler, so regions keep growing.
        CHILD_CHECK_MSG(current_handler(SIGBUS) == mapwright_bus,
                        "libsigsegv took SIGBUS: regions would stop growing (README, Limits)");
        exercise_libsigsegv_and_a_region();
      },
      kChildTimeout);
  expect_clean_exit_unreported(result);
  EXPECT_NE(result.output.find("done"), std::string::npos) << output_of(result);
}

// A SIGBUS inside an area registered with libsigsegv does not reach libsigsegv on Linux, with
// or without mapwright: mapwright passes it to the disposition before its own (SIG_DFL here),
// and the process dies by SIGBUS, as it would have without mapwright.
TEST(Libsigsegv, ForeignSigbusInALibsigsegvAreaGoesToThePriorSigbusDisposition) {
  ASSERT_NO_FATAL_FAILURE(expect_mapwright_not_installed_here());
  TempDir dir;
  const ChildResult result = run_in_child(
      [&] {
        no_core_dumps();
        install_libsigsegv();
        install_fault_handler();
        Region region = Region::memfd("libsigsegv-sigbus", options_with_capacity(64 * kMiB));
        grow_by_stores(region, 2 * kMiB);
        TruncatedFilePage page(dir / "truncated");
        CHILD_CHECK(sigsegv_register(&g_areas, page.base(), kPage, unprotect_area, page.base()) !=
                    nullptr);
        say("faulting\n");
        page.at(5) = 'x';
        say("survived the fault\n");
      },
      kChildTimeout);
  expect_death_by(result, SIGBUS);
  EXPECT_NE(result.output.find("faulting"), std::string::npos) << output_of(result);
  EXPECT_EQ(result.output.find("survived"), std::string::npos) << output_of(result);
  EXPECT_EQ(result.output.find("libsigsegv: area handler"), std::string::npos)
      << output_of(result);
  EXPECT_TRUE(lines_starting_with(result.output, "mapwright:").empty()) << output_of(result);
}

// ---- libsigsegv's stack overflow handler --------------------------------------------------
//
// stackoverflow_install_handler() gives the thread an alternate signal stack (sigaltstack) and
// takes SIGSEGV with SA_ONSTACK. mapwright's SIGBUS handler is SA_ONSTACK too, so from then on
// region growth runs on libsigsegv's alternate stack; a stack overflow, recovered by leaving
// libsigsegv's handler with siglongjmp, must leave both working.

sigjmp_buf g_overflow_jump;
std::atomic<int> g_overflows{0};
char g_overflow_stack[1 << 16];

void jump_back_from_overflow(void*, void*, void*) { siglongjmp(g_overflow_jump, 1); }

void on_stack_overflow(int emergency, stackoverflow_context_t) {
  (void)emergency;
  g_overflows.fetch_add(1);
  sigsegv_leave_handler(jump_back_from_overflow, nullptr, nullptr, nullptr);
}

// Recurses until the stack overflows (the bound is never reached with a 1 MiB stack).
[[gnu::noinline]] int recurse(int depth) {
  volatile char frame[512];
  frame[0] = static_cast<char>(depth);
  if (depth > 100'000'000) return frame[0];
  return recurse(depth + 1) + frame[0];
}

void overflow_the_stack_and_recover() {
  if (sigsetjmp(g_overflow_jump, 1) == 0) {
    (void)recurse(0);
    child_failed(__FILE__, __LINE__, "the recursion did not overflow the stack");
  }
}

class LibsigsegvStackOverflow : public ::testing::TestWithParam<bool /*installed before*/> {};

TEST_P(LibsigsegvStackOverflow, RecoveredOverflowLeavesRegionsGrowing) {
  const bool before = GetParam();
  if (before) {
    ASSERT_NO_FATAL_FAILURE(expect_mapwright_not_installed_here());
  }
  const ChildResult result = run_in_child(
      [&] {
        // A small stack, so that the overflow comes quickly (the main thread's stack grows on
        // demand up to RLIMIT_STACK, checked at each growth).
        struct rlimit stack {};
        CHILD_CHECK(::getrlimit(RLIMIT_STACK, &stack) == 0);
        stack.rlim_cur = 1 << 20;
        CHILD_CHECK(::setrlimit(RLIMIT_STACK, &stack) == 0);
        if (!before) install_fault_handler();
        CHILD_CHECK(stackoverflow_install_handler(on_stack_overflow, g_overflow_stack,
                                                  sizeof g_overflow_stack) == 0);
        if (before) install_fault_handler();
        stack_t alternate {};
        CHILD_CHECK(::sigaltstack(nullptr, &alternate) == 0);
        CHILD_CHECK(alternate.ss_sp == g_overflow_stack);

        Region region = Region::memfd("overflow-neighbour", options_with_capacity(256 * kMiB));
        grow_by_stores(region, 3 * kMiB);  // mapwright's handler on libsigsegv's stack
        overflow_the_stack_and_recover();
        CHILD_CHECK(g_overflows.load() == 1);
        grow_by_stores(region, 7 * kMiB);
        overflow_the_stack_and_recover();  // a second time: the handler is still armed
        CHILD_CHECK(g_overflows.load() == 2);
        grow_by_stores(region, 11 * kMiB);
        say("done\n");
      },
      kChildTimeout);
  expect_clean_exit_unreported(result);
  EXPECT_NE(result.output.find("done"), std::string::npos) << output_of(result);
}

INSTANTIATE_TEST_SUITE_P(Orders, LibsigsegvStackOverflow, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return std::string(info.param ? "InstalledBefore" : "InstalledAfter");
                         });

#else

TEST(Libsigsegv, NotBuilt) {
  GTEST_SKIP() << "GNU libsigsegv (Debian: libsigsegv-dev) was not found at configure time";
}

#endif  // MAPWRIGHT_TEST_HAVE_LIBSIGSEGV

// ==== 2. plain sigaction handlers for SIGBUS and SIGSEGV ===============================

enum class Order { kBeforeMapwright, kAfterMapwright };

struct OrderCase {
  const char* name;
  Order order;
};

void PrintTo(const OrderCase& c, std::ostream* out) { *out << c.name; }

class PlainSigsegvHandler : public ::testing::TestWithParam<OrderCase> {};

// A program's SIGSEGV handler, installed before or after mapwright's SIGBUS handler, keeps
// getting its faults (recovering once by mprotect and once by siglongjmp), and regions keep
// growing without it ever seeing their faults.
TEST_P(PlainSigsegvHandler, GetsItsFaultsWhileRegionsGrow) {
  const OrderCase c = GetParam();
  const ChildResult result = run_in_child(
      [&] {
        if (c.order == Order::kBeforeMapwright) install(SIGSEGV, plain_handler);
        install_fault_handler();
        if (c.order == Order::kAfterMapwright) install(SIGSEGV, plain_handler);
        CHILD_CHECK(current_handler(SIGSEGV) == reinterpret_cast<void*>(plain_handler));

        Region region = Region::memfd("segv-neighbour", options_with_capacity(256 * kMiB));
        grow_by_stores(region, 2 * kMiB);

        ProtNonePage page;
        g_unprotect_base = page.base();
        g_unprotect_length = kPage;
        page.at(3) = 'a';  // SIGSEGV -> mprotect -> retry
        CHILD_CHECK(g_segv_calls.load() == 1);
        CHILD_CHECK(g_code.load() == SEGV_ACCERR);
        CHILD_CHECK(g_address.load() == page.address(3));
        CHILD_CHECK(page.at(3) == 'a');

        grow_by_stores(region, 5 * kMiB);

        page.protect_again();
        g_jump_out = true;
        if (sigsetjmp(g_jump, 1) == 0) {
          page.at(4) = 'b';
          child_failed(__FILE__, __LINE__, "the store into the PROT_NONE page did not fault");
        }
        g_jump_out = false;
        CHILD_CHECK(g_segv_calls.load() == 2);

        grow_by_stores(region, 9 * kMiB);  // SIGBUS still works after the jump
        CHILD_CHECK(g_bus_calls.load() == 0);
        CHILD_CHECK(g_segv_calls.load() == 2);
      },
      kChildTimeout);
  expect_clean_exit_unreported(result);
}

INSTANTIATE_TEST_SUITE_P(Orders, PlainSigsegvHandler,
                         ::testing::Values(OrderCase{"Before", Order::kBeforeMapwright},
                                           OrderCase{"After", Order::kAfterMapwright}),
                         [](const ::testing::TestParamInfo<OrderCase>& info) {
                           return std::string(info.param.name);
                         });

// One handler for both signals, installed before mapwright's (a runtime's usual setup): a
// foreign SIGBUS reaches it through mapwright's chain and a SIGSEGV directly, each with its
// own si_code, and regions keep growing.
TEST(PlainHandler, OneHandlerForBothSignalsInstalledBeforeMapwright) {
  ASSERT_NO_FATAL_FAILURE(expect_mapwright_not_installed_here());
  TempDir dir;
  const ChildResult result = run_in_child(
      [&] {
        install(SIGBUS, plain_handler);
        install(SIGSEGV, plain_handler);
        install_fault_handler();
        CHILD_CHECK(current_handler(SIGBUS) != reinterpret_cast<void*>(plain_handler));

        Region region = Region::memfd("both-signals", options_with_capacity(256 * kMiB));
        grow_by_stores(region, 3 * kMiB);
        CHILD_CHECK(g_bus_calls.load() == 0);

        TruncatedFilePage file(dir / "truncated");
        g_repair_fd = file.fd();
        file.at(9) = 'f';  // SIGBUS BUS_ADRERR, no region's: chained, repaired, retried
        CHILD_CHECK(g_bus_calls.load() == 1);
        CHILD_CHECK(g_code.load() == BUS_ADRERR);
        CHILD_CHECK(g_address.load() == file.address(9));
        CHILD_CHECK(file.at(9) == 'f');

        ProtNonePage page;
        g_unprotect_base = page.base();
        g_unprotect_length = kPage;
        page.at(1) = 's';
        CHILD_CHECK(g_segv_calls.load() == 1);
        CHILD_CHECK(g_code.load() == SEGV_ACCERR);

        grow_by_stores(region, 8 * kMiB);
        CHILD_CHECK(g_bus_calls.load() == 1);
        CHILD_CHECK(g_segv_calls.load() == 1);
      },
      kChildTimeout);
  expect_clean_exit_unreported(result);
}

// A handler installed after mapwright's that follows fault.h may leave a foreign fault by
// siglongjmp after handle_fault() said false: nothing of mapwright's stays pinned (creating
// and destroying a region, which waits for pinned readers, finishes) and regions still grow.
TEST(PlainHandler, LaterHandlerMaySiglongjmpOutOfAForeignFault) {
  TempDir dir;
  const ChildResult result = run_in_child(
      [&] {
        install_fault_handler();
        install(SIGBUS, first_chance_handler);
        Region region = Region::memfd("jump-after", options_with_capacity(256 * kMiB));
        grow_by_stores(region, 2 * kMiB);
        CHILD_CHECK(g_resolved_by_mapwright.load() > 0);

        TruncatedFilePage file(dir / "truncated");
        g_jump_out = true;
        // The frame that sigsetjmp()s stays live until the handler jumps back into it.
        const auto fault_and_jump_back = [&file](int expected_calls) {
          if (sigsetjmp(g_jump, 1) == 0) {
            file.at(11) = 'j';
            child_failed(__FILE__, __LINE__, "the foreign store did not fault");
          }
          CHILD_CHECK(g_bus_calls.load() == expected_calls);
          CHILD_CHECK(g_handle_fault_false.load() == expected_calls);
          CHILD_CHECK(g_address.load() == file.address(11));
        };
        fault_and_jump_back(1);
        fault_and_jump_back(2);  // SIGBUS is deliverable again after the jump
        g_jump_out = false;
        {
          Region second = Region::memfd("jump-after-2", options_with_capacity(64 * kMiB));
          grow_by_stores(second, 2 * kMiB);
        }  // unregistering waits for pinned readers: a pin leaked by the jump would hang here
        const int resolved = g_resolved_by_mapwright.load();
        grow_by_stores(region, 6 * kMiB);
        CHILD_CHECK(g_resolved_by_mapwright.load() > resolved);
        CHILD_CHECK(g_bus_calls.load() == 2);
        say("done\n");
      },
      kChildTimeout);
  expect_clean_exit_unreported(result);
  EXPECT_NE(result.output.find("done"), std::string::npos) << output_of(result);
}

// handle_fault() is for SIGBUS growth only: a SIGSEGV at an address inside a region (a page
// the program made read-only itself) is not mapwright's, even through the first-chance entry.
// The program's handler gets it, repairs it, and the region is not grown or blamed.
TEST(PlainHandler, HandleFaultLeavesASigsegvInsideARegionToTheCaller) {
  const ChildResult result = run_in_child(
      [] {
        install_fault_handler();
        install(SIGBUS, first_chance_handler);
        install(SIGSEGV, first_chance_handler);
        Region region = Region::memfd("segv-in-region", options_with_capacity(256 * kMiB));
        grow_by_stores(region, 2 * kMiB);
        const RegionStats before = region.stats();
        const int resolved_before = g_resolved_by_mapwright.load();

        std::byte* page = region.data() + kMiB;
        CHILD_CHECK(::mprotect(page, kPage, PROT_READ) == 0);
        g_unprotect_base = page;
        g_unprotect_length = kPage;
        reinterpret_cast<volatile unsigned char*>(page)[5] = 'r';  // SIGSEGV SEGV_ACCERR
        CHILD_CHECK(g_segv_calls.load() == 1);
        CHILD_CHECK(g_handle_fault_false.load() == 1);
        CHILD_CHECK(g_code.load() == SEGV_ACCERR);
        CHILD_CHECK(g_address.load() == page + 5);
        CHILD_CHECK(reinterpret_cast<volatile unsigned char*>(page)[5] == 'r');
        CHILD_CHECK(g_resolved_by_mapwright.load() == resolved_before);
        CHILD_CHECK(region.stats().faults == before.faults);
        CHILD_CHECK(region.stats().failures == 0);
        CHILD_CHECK(region.size() == before.committed);

        grow_by_stores(region, 6 * kMiB);
        CHILD_CHECK(g_bus_calls.load() == 0);
      },
      kChildTimeout);
  expect_clean_exit_unreported(result);
}

// The documented limit (README, "Limits"): a SIGBUS handler installed after mapwright's that
// does NOT call handle_fault() takes region growth away from mapwright. The region's fault
// reaches that handler, which here leaves by siglongjmp; the region has not grown and
// mapwright counted no fault.
TEST(PlainHandler, LaterHandlerWithoutHandleFaultStopsRegionsGrowing) {
  const ChildResult result = run_in_child(
      [] {
        install_fault_handler();
        Region region = Region::memfd("stopped-growing", options_with_capacity(64 * kMiB));
        region.ensure(kMiB);
        const std::uint64_t size = region.size();
        install(SIGBUS, plain_handler);

        g_jump_out = true;
        if (sigsetjmp(g_jump, 1) == 0) {
          reinterpret_cast<volatile unsigned char*>(region.data())[size + 10] = 1;
          child_failed(__FILE__, __LINE__, "the store past the region's end did not fault");
        }
        CHILD_CHECK(g_bus_calls.load() == 1);
        CHILD_CHECK(g_code.load() == BUS_ADRERR);
        CHILD_CHECK(g_address.load() == region.data() + size + 10);
        CHILD_CHECK(region.size() == size);
        CHILD_CHECK(region.stats().faults == 0);
        CHILD_CHECK(region.stats().failures == 0);
        // ensure() does not need the handler: explicit growth still works.
        region.ensure(size + kMiB);
        reinterpret_cast<volatile unsigned char*>(region.data())[size + 10] = 1;
        CHILD_CHECK(g_bus_calls.load() == 1);
      },
      kChildTimeout);
  expect_clean_exit_unreported(result);
}

// ==== 3. a crash reporter installed after mapwright's ===================================

struct CrashCase {
  const char* name;
  int sig;
  const char* line;
};

void PrintTo(const CrashCase& c, std::ostream* out) { *out << c.name; }

class CrashReporter : public ::testing::TestWithParam<CrashCase> {};

// Regions (a memfd and a staged file) grow through the reporter's handle_fault() call, unseen
// by it; then a genuine crash — a store into a truncated file that no region owns, or into a
// PROT_NONE page — is reported in one line and the process dies by the original signal.
TEST_P(CrashReporter, RegionsGrowAndAGenuineCrashIsReportedThenKills) {
  const CrashCase c = GetParam();
  TempDir dir;
  const ChildResult result = run_in_child(
      [&] {
        no_core_dumps();
        install_fault_handler();
        install(SIGBUS, crash_reporter);
        install(SIGSEGV, crash_reporter);
        Region memfd = Region::memfd("reported-memfd", options_with_capacity(256 * kMiB));
        grow_by_stores(memfd, 4 * kMiB);
        Region staged = Region::staged(dir / "staged.bin", options_with_capacity(256 * kMiB));
        grow_by_stores(staged, 3 * kMiB);
        say("grew\n");

        TruncatedFilePage file(dir / "truncated");
        ProtNonePage page;
        say("crashing\n");
        if (c.sig == SIGBUS) {
          file.at(1) = 'c';
        } else {
          page.at(1) = 'c';
        }
        say("survived the crash\n");
      },
      kChildTimeout);
  expect_death_by(result, c.sig);
  const auto grew = result.output.find("grew");
  const auto crashing = result.output.find("crashing");
  ASSERT_NE(grew, std::string::npos) << output_of(result);
  ASSERT_NE(crashing, std::string::npos) << output_of(result);
  const auto reports = lines_starting_with(result.output, "reporter:");
  ASSERT_EQ(reports.size(), 1u) << output_of(result);  // growth was never reported
  EXPECT_EQ(reports[0], c.line) << output_of(result);
  EXPECT_LT(crashing, result.output.find("reporter:")) << output_of(result);
  EXPECT_EQ(result.output.find("survived"), std::string::npos) << output_of(result);
  EXPECT_TRUE(lines_starting_with(result.output, "mapwright:").empty()) << output_of(result);
}

INSTANTIATE_TEST_SUITE_P(
    Crashes, CrashReporter,
    ::testing::Values(CrashCase{"TruncatedFileSigbus", SIGBUS, "reporter: fatal SIGBUS"},
                      CrashCase{"ProtNoneSigsegv", SIGSEGV, "reporter: fatal SIGSEGV"}),
    [](const ::testing::TestParamInfo<CrashCase>& info) { return std::string(info.param.name); });

// ==== 4. under a seccomp filter made with libseccomp ====================================

const std::vector<std::byte>& fixture_a() {
  static const std::vector<std::byte> bytes = test::read_file_bytes(MAPWRIGHT_FIXTURE_A);
  return bytes;
}

void write_file(const std::filesystem::path& path, std::span<const std::byte> bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

std::vector<std::byte> data_blob(std::uint64_t size) {
  std::vector<std::byte> bytes(size);
  for (std::uint64_t i = 0; i < size; ++i) bytes[i] = static_cast<std::byte>(byte_pattern(i * 7));
  return bytes;
}

#if defined(MAPWRIGHT_TEST_HAVE_LIBSECCOMP)

struct Denied {
  int syscall;  // SCMP_SYS(name)
  int error;
};

// In a child: a libseccomp filter that allows everything but makes each `denied` system call
// fail with its errno.
void deny_with_libseccomp(std::initializer_list<Denied> denied) {
  scmp_filter_ctx filter = seccomp_init(SCMP_ACT_ALLOW);
  CHILD_CHECK(filter != nullptr);
  for (const Denied& d : denied) {
    CHILD_CHECK(seccomp_rule_add(filter, SCMP_ACT_ERRNO(static_cast<std::uint32_t>(d.error)),
                                 d.syscall, 0) == 0);
  }
  const int loaded = seccomp_load(filter);
  seccomp_release(filter);
  CHILD_CHECK_MSG(loaded == 0, std::strerror(-loaded));
}

// memfd_create refused: Region::memfd says so, naming the region; the loader falls to a
// temporary file and says why; regions over files (staged and plain) still grow by faults.
TEST(Seccomp, MemfdCreateDenied) {
  TempDir dir;
  std::filesystem::create_directory(dir / "tmp");
  const ChildResult result = run_in_child(
      [&] {
        ::setenv("TMPDIR", (dir / "tmp").c_str(), 1);
        deny_with_libseccomp({{SCMP_SYS(memfd_create), EPERM}});

        const auto refused = error_from([] { Region::memfd("denied-memfd"); });
        CHILD_CHECK(refused.has_value());
        CHILD_CHECK_MSG(refused->error() == EPERM, refused->what());
        CHILD_CHECK_MSG(std::string(refused->what()).find("'denied-memfd'") != std::string::npos,
                        refused->what());
        CHILD_CHECK_MSG(std::string(refused->what()).find("memfd") != std::string::npos,
                        refused->what());

        const Library library = load_library(std::span<const std::byte>(fixture_a()));
        CHILD_CHECK_MSG(library.strategy() == LoadStrategy::kTempFile,
                        to_string(library.strategy()));
        CHILD_CHECK_MSG(library.report().fallback_reason.find("memfd_create") != std::string::npos,
                        library.report().fallback_reason);
        CHILD_CHECK(library.report().bytes_written_to_disk == fixture_a().size());
        CHILD_CHECK(library.function<int()>("fixture_answer")() == 42);

        {
          Region staged = Region::staged(dir / "staged.bin", options_with_capacity(256 * kMiB));
          grow_by_stores(staged, 3 * kMiB);
          staged.finish(3 * kMiB);
          staged.publish({.durable = false});
        }
        CHILD_CHECK(std::filesystem::file_size(dir / "staged.bin") == 3 * kMiB);
        {
          Region file = Region::file(dir / "file.bin", options_with_capacity(256 * kMiB));
          grow_by_stores(file, 2 * kMiB);
        }
        say("done\n");
      },
      kChildTimeout);
  expect_clean_exit_unreported(result);
  EXPECT_NE(result.output.find("done"), std::string::npos) << output_of(result);
  // The staged region's bytes are the stores, read from the published file.
  const std::vector<std::byte> published = test::read_file_bytes(dir / "staged.bin");
  ASSERT_EQ(published.size(), 3 * kMiB);
  for (std::uint64_t offset = 0; offset < published.size(); offset += kPage) {
    ASSERT_EQ(static_cast<unsigned char>(published[offset]), byte_pattern(offset)) << offset;
  }
}

// copy_file_range refused: load_library() of a range of a plain file (at a non-zero offset)
// copies it with sendfile and says why in its report.
TEST(Seccomp, CopyFileRangeDeniedLoaderUsesSendfile) {
  TempDir dir;
  std::vector<std::byte> container = data_blob(3 * 4096);
  const std::uint64_t offset = container.size();
  // Padded with zeros to 128 KiB (still the fixture to dlopen): a range of at most 64 KiB is
  // read once and written with pwrite instead (loader.h, step 2).
  std::vector<std::byte> library = fixture_a();
  library.resize(128 << 10);
  container.insert(container.end(), library.begin(), library.end());
  const std::vector<std::byte> tail = data_blob(1000);
  container.insert(container.end(), tail.begin(), tail.end());
  write_file(dir / "container.bin", container);
  const ChildResult result = run_in_child(
      [&] {
        deny_with_libseccomp({{SCMP_SYS(copy_file_range), EXDEV}});
        const int fd = ::open((dir / "container.bin").c_str(), O_RDONLY | O_CLOEXEC);
        CHILD_CHECK(fd >= 0);
        const Library loaded = load_library(fd, offset, library.size());
        ::close(fd);
        CHILD_CHECK_MSG(loaded.strategy() == LoadStrategy::kMemfdCopy,
                        to_string(loaded.strategy()));
        CHILD_CHECK_MSG(loaded.report().copy_method == CopyMethod::kSendfile,
                        to_string(loaded.report().copy_method));
        CHILD_CHECK_MSG(
            loaded.report().fallback_reason.find("copy_file_range") != std::string::npos,
            loaded.report().fallback_reason);
        CHILD_CHECK(loaded.report().bytes_copied == library.size());
        CHILD_CHECK(loaded.report().bytes_written_to_disk == 0);
        CHILD_CHECK(loaded.function<int()>("fixture_answer")() == 42);
      },
      kChildTimeout);
  expect_clean_exit_unreported(result);
}

// What WrapperWriter::add_data(name, path) and add_library(name, path) do under a filter.
struct WriterOutcome {
  bool published = false;
  std::string error;  // what() of the Error thrown, if any
};

// In a child: writes a wrapper with a data entry and a library entry, both from files in
// `dir`, to dir/out.mwr; reports what happened.
WriterOutcome write_wrapper_from_files(const ScratchDir& dir) {
  WriterOutcome outcome;
  try {
    WrapperWriter writer(dir / "out.mwr");
    writer.add_data("blob", dir / "blob.bin");
    writer.add_library("liba", std::filesystem::path(MAPWRIGHT_FIXTURE_A));
    writer.publish();
    outcome.published = true;
  } catch (const Error& e) {
    outcome.error = e.what();
  }
  return outcome;
}

// copy_file_range refused with an errno the writer treats as "not here" (EXDEV, as across
// file systems): add_data(name, path) reads with pread instead, and the wrapper it publishes
// opens and verifies. The same filter with an errno that means a real failure (EIO) is an
// Error naming copy_file_range, and denying pread64 as well breaks the fallback: together they
// show that the first run really went through the pread fallback.
TEST(Seccomp, CopyFileRangeDeniedWrapperWriterFallsBackToPread) {
  constexpr std::uint64_t kBlobBytes = 5 * kMiB + 123;  // a few chunks of the copy loop
  const std::vector<std::byte> blob = data_blob(kBlobBytes);

  {  // EXDEV: the fallback runs, and the wrapper is right.
    TempDir dir;
    write_file(dir / "blob.bin", blob);
    const ChildResult result = run_in_child(
        [&] {
          deny_with_libseccomp({{SCMP_SYS(copy_file_range), EXDEV}});
          const WriterOutcome outcome = write_wrapper_from_files(dir);
          CHILD_CHECK_MSG(outcome.published, outcome.error);
        },
        kChildTimeout);
    expect_clean_exit_unreported(result);
    const Wrapper wrapper = Wrapper::open(dir / "out.mwr");
    EXPECT_NO_THROW(wrapper.verify());
    const WrapperEntry& entry = wrapper.entry("blob");
    ASSERT_EQ(entry.size, kBlobBytes);
    ASSERT_TRUE(entry.contiguous());
    EXPECT_EQ(std::memcmp(entry.bytes().data(), blob.data(), kBlobBytes), 0);
    EXPECT_EQ(wrapper.entry("liba").size, fixture_a().size());
    const Library library = wrapper.load_library("liba");
    EXPECT_EQ(library.function<int()>("fixture_answer")(), 42);
  }
  {  // EIO: not a "cannot here" answer; refused, naming the call; nothing published.
    TempDir dir;
    write_file(dir / "blob.bin", blob);
    const ChildResult result = run_in_child(
        [&] {
          deny_with_libseccomp({{SCMP_SYS(copy_file_range), EIO}});
          const WriterOutcome outcome = write_wrapper_from_files(dir);
          CHILD_CHECK(!outcome.published);
          CHILD_CHECK_MSG(outcome.error.find("copy_file_range") != std::string::npos, outcome.error);
          CHILD_CHECK_MSG(outcome.error.find("blob") != std::string::npos, outcome.error);
        },
        kChildTimeout);
    expect_clean_exit_unreported(result);
    EXPECT_FALSE(std::filesystem::exists(dir / "out.mwr"));
  }
  {  // EXDEV and pread64 refused: the fallback is pread, and its failure is reported.
    TempDir dir;
    write_file(dir / "blob.bin", blob);
    const ChildResult result = run_in_child(
        [&] {
          deny_with_libseccomp({{SCMP_SYS(copy_file_range), EXDEV}, {SCMP_SYS(pread64), EIO}});
          const WriterOutcome outcome = write_wrapper_from_files(dir);
          CHILD_CHECK(!outcome.published);
          CHILD_CHECK_MSG(outcome.error.find("reading") != std::string::npos, outcome.error);
        },
        kChildTimeout);
    expect_clean_exit_unreported(result);
    EXPECT_FALSE(std::filesystem::exists(dir / "out.mwr"));
  }
}

#else

TEST(Seccomp, NotBuilt) {
  GTEST_SKIP() << "libseccomp (Debian: libseccomp-dev) was not found at configure time";
}

#endif  // MAPWRIGHT_TEST_HAVE_LIBSECCOMP

// ==== 5. a sealed image passed on to a third process ====================================

#if defined(MAPWRIGHT_IMAGE_RECEIVER)

std::uint64_t fnv64(const std::byte* p, std::uint64_t n) {
  std::uint64_t h = 1469598103934665603ull;
  for (std::uint64_t i = 0; i < n; ++i) h = (h ^ static_cast<std::uint8_t>(p[i])) * 1099511628211ull;
  return h;
}

// A sealed image made without a Region: a Region would install mapwright's SIGBUS handler in
// the test process, and the "installed before mapwright" tests fork from it.
SealedImage make_image(std::uint64_t size) {
  const int fd = ::memfd_create("passed-on", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  EXPECT_GE(fd, 0);
  std::vector<unsigned char> bytes(size);
  for (std::uint64_t i = 0; i < size; ++i) bytes[i] = static_cast<unsigned char>(i * 13 + 5);
  EXPECT_EQ(::pwrite(fd, bytes.data(), size, 0), static_cast<ssize_t>(size));
  EXPECT_EQ(::fcntl(fd, F_ADD_SEALS, kImageSeals), 0);
  return SealedImage::adopt(fd);
}

// Every way to change the image through `fd` fails; returns a description of the first that
// did not, or "" if none did. Also through a new open file description of the same memfd
// (/proc/self/fd/N opened O_RDWR), which does not carry the original's access mode.
std::string try_to_change(int fd, std::uint64_t size) {
  if (void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0); p != MAP_FAILED) {
    ::munmap(p, size);
    return "a writable shared mapping was allowed";
  }
  if (::ftruncate(fd, static_cast<off_t>(size + kPage)) == 0) return "ftruncate up was allowed";
  if (::ftruncate(fd, 0) == 0) return "ftruncate to 0 was allowed";
  if (::pwrite(fd, "x", 1, 0) >= 0) return "pwrite was allowed";
  if (::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, static_cast<off_t>(kPage)) == 0) {
    return "punching a hole was allowed";
  }
  if (::fcntl(fd, F_ADD_SEALS, F_SEAL_FUTURE_WRITE) == 0) return "adding a seal was allowed";
  if ((::fcntl(fd, F_GET_SEALS) & kImageSeals) != kImageSeals) return "a seal is missing";
  const std::string proc = "/proc/self/fd/" + std::to_string(fd);
  const int reopened = ::open(proc.c_str(), O_RDWR | O_CLOEXEC);
  if (reopened >= 0) {  // allowed: a memfd may be reopened read-write; the seals still hold
    std::string changed;
    if (::pwrite(reopened, "x", 1, 0) >= 0) changed = "pwrite through /proc/self/fd was allowed";
    if (::ftruncate(reopened, 0) == 0) changed = "ftruncate through /proc/self/fd was allowed";
    if (void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, reopened, 0);
        p != MAP_FAILED) {
      ::munmap(p, size);
      changed = "a writable mapping through /proc/self/fd was allowed";
    }
    ::close(reopened);
    if (!changed.empty()) return changed;
  }
  return "";
}

// The sender gives the image to process B (a forked child) over a socket; B receives it,
// checks it, fails to change it, and passes it on over another socket to process C (the
// image_receiver program, exec()ed by B), which checks it and fails to change it too; a
// process D forked by B inherits the fd and cannot change it either. Afterwards the sender's
// own fd cannot change it, and every byte is as it was.
TEST(ThirdProcess, SealedImagePassedOnCannotBeChangedByAnyone) {
  const SealedImage image = make_image(5 * 4096 + 77);
  const std::uint64_t checksum = fnv64(image.map().data(), image.size());
  int to_b[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, to_b), 0);
  send_image(to_b[0], image);  // queued in the socket until B takes it

  const ChildResult result = run_in_child(
      [&] {
        ::close(to_b[0]);
        const SealedImage received = receive_image(to_b[1]);
        ::close(to_b[1]);
        CHILD_CHECK(received.size() == image.size());
        CHILD_CHECK(fnv64(received.map().data(), received.size()) == checksum);
        const std::string b_changed = try_to_change(received.fd(), received.size());
        CHILD_CHECK_MSG(b_changed.empty(), "process B: " + b_changed);

        // D: inherits the fd across fork.
        const pid_t d = ::fork();
        CHILD_CHECK(d >= 0);
        if (d == 0) {
          const std::string d_changed = try_to_change(received.fd(), received.size());
          if (!d_changed.empty()) say(("process D: " + d_changed + "\n").c_str());
          ::_exit(d_changed.empty() ? 0 : 1);
        }
        int d_status = 0;
        CHILD_CHECK(::waitpid(d, &d_status, 0) == d);
        CHILD_CHECK(WIFEXITED(d_status) && WEXITSTATUS(d_status) == 0);

        // C: the image_receiver program, given the image over a new socket.
        int to_c[2];
        CHILD_CHECK(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, to_c) == 0);
        int out[2];
        CHILD_CHECK(::pipe2(out, O_CLOEXEC) == 0);
        char hex[32];
        std::snprintf(hex, sizeof hex, "%llx", static_cast<unsigned long long>(checksum));
        const pid_t c = ::fork();
        CHILD_CHECK(c >= 0);
        if (c == 0) {
          ::dup2(out[1], STDOUT_FILENO);
          ::dup2(out[1], STDERR_FILENO);
          const int socket = ::dup(to_c[1]);  // without CLOEXEC: inherited across exec
          const std::string socket_text = std::to_string(socket);
          ::execl(MAPWRIGHT_IMAGE_RECEIVER, "image_receiver", socket_text.c_str(), hex, "verify",
                  static_cast<char*>(nullptr));
          ::_exit(127);
        }
        ::close(to_c[1]);
        ::close(out[1]);
        send_image(to_c[0], received);
        ::close(to_c[0]);
        std::string c_output;
        char buffer[4096];
        ssize_t n = 0;
        while ((n = ::read(out[0], buffer, sizeof buffer)) > 0) {
          c_output.append(buffer, static_cast<std::size_t>(n));
        }
        ::close(out[0]);
        int c_status = 0;
        CHILD_CHECK(::waitpid(c, &c_status, 0) == c);
        say(("process C said:\n" + c_output).c_str());
        CHILD_CHECK_MSG(WIFEXITED(c_status) && WEXITSTATUS(c_status) == 0, c_output);
        CHILD_CHECK_MSG(c_output.find("ok checksum unchanged after all that") != std::string::npos,
                        c_output);
        CHILD_CHECK_MSG(c_output.find("FAILED") == std::string::npos, c_output);

        CHILD_CHECK(fnv64(received.map().data(), received.size()) == checksum);
        say("B done\n");
      },
      kChildTimeout);
  ::close(to_b[0]);
  ::close(to_b[1]);
  expect_clean_exit(result);
  EXPECT_NE(result.output.find("B done"), std::string::npos) << output_of(result);
  EXPECT_NE(result.output.find("ok a writable shared mapping is refused"), std::string::npos)
      << output_of(result);

  // The sender cannot change it either, and nobody did.
  EXPECT_EQ(try_to_change(image.fd(), image.size()), "");
  EXPECT_EQ(fnv64(image.map().data(), image.size()), checksum);
  EXPECT_EQ(image.size(), 5u * 4096 + 77);
}

#else

TEST(ThirdProcess, NotBuilt) {
  GTEST_SKIP() << "MAPWRIGHT_IMAGE_RECEIVER (the image_receiver program) is not defined";
}

#endif  // MAPWRIGHT_IMAGE_RECEIVER

}  // namespace
}  // namespace mapwright
