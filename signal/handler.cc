#include "handler.h"

#include <sched.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <setjmp.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>

#include "block.h"
#include "chain.h"
#include "line.h"
#include "os/os.h"
#include "owner_lock.h"
#include "recovery.h"

namespace mapwright::detail {
namespace {

constinit std::atomic<bool> g_installed{false};
// Not a std::mutex: a fork() while another thread installs would leave a child whose every
// Region creation hangs. An OwnerLock held by a thread of the parent is free in the child.
constinit OwnerLock g_install_lock;

class ErrnoSaver {
 public:
  ErrnoSaver() noexcept : saved_(errno) {}
  ~ErrnoSaver() { errno = saved_; }
  ErrnoSaver(const ErrnoSaver&) = delete;
  ErrnoSaver& operator=(const ErrnoSaver&) = delete;

 private:
  int saved_;
};

void on_sigbus(int sig, siginfo_t* info, void* context) {
  const ErrnoSaver saved;
  FaultReport report;
  RangeTable::Pin pin(fault_table());
  switch (dispatch_fault(sig, info, pin, &report)) {
    case Dispatch::kResolved:
      return;  // the store retries and succeeds
    case Dispatch::kFailed:
      // ---- riskier from here: control may leave the handler for good ----
      recover_or_report(report, pin);  // returns only outside guarded(), unpinned
      // A crash reporter installed before us sees the fault; if it returns, retrying the
      // store would fault again forever (invariant 1), so die as the kernel would have.
      if (previous_is_function()) chain(sig, info, context);
      die_by(sig);
    case Dispatch::kForeign:
      pin.release();
      chain(sig, info, context);
      return;
  }
}

// Calls once, from ordinary code, every libc function the handler path may call, so that
// the dynamic linker binds them now: lazy binding inside the handler would run the
// resolver, which saves the whole extended register state on the stack (~1.4 KiB past a
// 4 KiB sigaltstack on an AVX-512 machine). With harmless arguments throughout.
void bind_handler_path() noexcept {
  const int saved = errno;
  (void)os::page_size();
  std::uint64_t value = 0;
  (void)os::file_size(-1, &value);
  (void)os::ftruncate(-1, 0);
  (void)os::fallocate(-1, 0, 0, 1);
  (void)os::madvise(nullptr, 0, MADV_NORMAL);
  (void)os::fill_missing(-1, nullptr, nullptr, 0, &value);  // EBADF, but syscall() is bound
  (void)os::file_size_limit(&value);
  os::SignalSet set = 0;
  (void)os::set_signal_mask(SIG_BLOCK, 0, &set);
  (void)os::pending_signals(&set);
  (void)os::discard_pending(SIGKILL);  // never pending for a wait: EAGAIN at once
  struct sigaction action{};
  (void)os::get_action(SIGBUS, &action);
  (void)os::send_to_this_thread(0);  // signal 0: checks, sends nothing
  struct iovec none{};
  (void)os::write_iov(-1, &none, 1);  // EBADF, but writev is bound
  (void)::strerrordesc_np(EIO);
  char from[64] = {1};
  char to[64];
  volatile std::size_t n = sizeof to;
  std::memcpy(to, from, n);
  (void)std::strlen(to + 63);
  (void)::sched_yield();
  sigjmp_buf env;
  if (sigsetjmp(env, 1) == 0) siglongjmp(env, 1);
  errno = saved;
}

bool is_ours(const struct sigaction& action) noexcept {
  return (action.sa_flags & SA_SIGINFO) != 0 && action.sa_sigaction == on_sigbus;
}

void before_fork() { fault_table().before_fork(); }
void after_fork_in_parent() { fault_table().after_fork_in_parent(); }
void after_fork_in_child() {
  next_fork_generation();  // owner locks held by the parent's other threads are free here
  fault_table().after_fork_in_child();
  // fork() copies the signal dispositions before it copies memory (copy_sighand, then
  // copy_mm): a sigaction() and the store of g_installed by another thread in between leave
  // a child that believes the handler is installed while SIGBUS is still SIG_DFL (seen: the
  // first region's store killed 1 child in ~700 forked while the first region was being
  // made). Check, and let the next region install it again.
  if (g_installed.load(std::memory_order_acquire)) {
    struct sigaction now{};
    if (os::get_action(SIGBUS, &now) == 0 && !is_ours(now)) {
      g_installed.store(false, std::memory_order_release);
    }
  }
}

// The pthread_atfork handlers are registered when the library is loaded, before any thread
// of the program can fork or install the handler: registering them at installation would
// race with a fork() on another thread (a child could inherit "registered" with no handlers).
[[gnu::constructor]] void register_fork_handlers() {
  (void)os::at_fork(before_fork, after_fork_in_parent, after_fork_in_child);
}

}  // namespace

// Without UBSan's vptr check on the owner call: the check's first sight of a dynamic type
// (a kind of owner not seen before in the process) runs a cache-miss handler that takes a
// lock and more stack than a 4 KiB sigaltstack holds (seen: the first LazyFill fault of a
// process, on a small altstack, died by SIGSEGV in HandleDynamicTypeCacheMiss).
__attribute__((no_sanitize("vptr")))
Dispatch dispatch_fault(int sig, const siginfo_t* info, const RangeTable::Pin& pin,
                        FaultReport* report) noexcept {
  if (sig != SIGBUS || info == nullptr || info->si_code != BUS_ADRERR) return Dispatch::kForeign;
  const auto address = reinterpret_cast<std::uintptr_t>(info->si_addr);
  const RangeTable::Found found = pin.find(address);
  if (found.owner == nullptr) return Dispatch::kForeign;
  const FaultOutcome outcome = found.owner->on_fault({address, info->si_code}, report);
  return outcome == FaultOutcome::kResolved ? Dispatch::kResolved : Dispatch::kFailed;
}

void recover_or_report(const FaultReport& report, RangeTable::Pin& pin) noexcept {
  if (RecoveryPoint* point = current_recovery(); point != nullptr) {
    record_failure(report, &point->failure);  // in guarded()'s frame, on the thread's stack
    pin.release();                            // before leaving for good
    siglongjmp(point->env, 1);
  }
  char numbers[64];
  LineWriter detail(numbers, sizeof numbers);
  describe_detail(report, false, detail);
  const bool named = report.subject != nullptr && report.subject[0] != '\0';
  const bool explained = report.reason != nullptr;
  const char* cause = ::strerrordesc_np(report.error);
  // The pieces go straight into iovecs: no copy of the line on a stack that may be small.
  struct iovec io[12];
  int count = 0;
  const auto piece = [&](const char* text) {
    const std::size_t length = text == nullptr ? 0 : std::strlen(text);
    if (length != 0) io[count++] = {const_cast<char*>(text), length};
  };
  piece("mapwright: ");
  piece(report.operation);
  if (named) {
    piece(" '");
    piece(report.subject);
    piece("'");
  }
  if (detail.size() != 0 || explained) piece(" ");
  piece(numbers);
  if (explained) {
    if (detail.size() != 0) piece(": ");
    piece(report.reason);
  }
  piece(": ");
  piece(cause != nullptr ? cause : "unknown error");
  piece("\n");
  // SIGPIPE stays blocked for the write (as it is in mapwright's own handler), and one that
  // the write raises on a broken pipe is taken away again: the process must die by SIGBUS.
  os::SignalSet pending = 0;
  (void)os::pending_signals(&pending);
  os::SignalSet mask = 0;
  (void)os::set_signal_mask(SIG_BLOCK, os::signal_bit(SIGPIPE), &mask);
  const int err = os::write_iov(STDERR_FILENO, io, count);
  if (err == EPIPE && (pending & os::signal_bit(SIGPIPE)) == 0) (void)os::discard_pending(SIGPIPE);
  (void)os::set_signal_mask(SIG_SETMASK, mask, nullptr);
  pin.release();
}

int install_handler() noexcept {
  if (g_installed.load(std::memory_order_acquire)) return 0;
  const SignalBlocker blocked;  // the OwnerLock's rule
  g_install_lock.lock();
  int err = 0;
  if (!g_installed.load(std::memory_order_relaxed)) {
    bind_handler_path();
    struct sigaction ours{};
    ours.sa_sigaction = on_sigbus;
    sigfillset(&ours.sa_mask);    // every signal blocked while we run (see handler.h)
    ours.sa_flags = SA_SIGINFO    // we need si_code and si_addr
                    | SA_ONSTACK  // use the thread's sigaltstack if it has one
                    | SA_RESTART; // a kill()-sent SIGBUS must not make read(2) fail with EINTR
    // Record the previous disposition before ours can run, then install; if another
    // sigaction slipped in between, the kernel's answer is the one to chain to. Ours may be
    // there already: a thread of the parent process installed it and this is a fork()ed
    // child; the previous disposition is recorded then.
    struct sigaction before{};
    err = os::get_action(SIGBUS, &before);
    if (err == 0 && !is_ours(before)) {
      remember_previous(before);
      struct sigaction replaced{};
      err = os::set_action(SIGBUS, ours, &replaced);
      if (err == 0 && !is_ours(replaced) &&
          (replaced.sa_sigaction != before.sa_sigaction || replaced.sa_flags != before.sa_flags)) {
        remember_previous(replaced);
      }
    }
    if (err == 0) g_installed.store(true, std::memory_order_release);
  }
  g_install_lock.unlock();
  return err;
}

}  // namespace mapwright::detail

namespace mapwright {

bool handle_fault(int sig, siginfo_t* info, void* ucontext) noexcept {
  (void)ucontext;
  const detail::ErrnoSaver saved;
  // The caller's handler may run with signals enabled: block them all while an owner may
  // hold its lock and the table is pinned, as mapwright's own handler does (guarded()'s
  // siglongjmp restores the mask it saved).
  os::SignalSet mask = 0;
  (void)os::set_signal_mask(SIG_BLOCK, os::kAllSignals, &mask);
  detail::FaultReport report;
  detail::RangeTable::Pin pin(detail::fault_table());
  bool resolved = false;
  switch (detail::dispatch_fault(sig, info, pin, &report)) {
    case detail::Dispatch::kResolved:
      resolved = true;
      break;
    case detail::Dispatch::kFailed:
      detail::recover_or_report(report, pin);  // siglongjmps inside guarded()
      break;
    case detail::Dispatch::kForeign:
      break;
  }
  pin.release();
  (void)os::set_signal_mask(SIG_SETMASK, mask, nullptr);
  return resolved;
}

}  // namespace mapwright
