#include "handler.h"

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <mutex>

#include "line.h"
#include "os/os.h"
#include "range_table.h"

namespace mapwright::detail {
namespace {

// The disposition SIGBUS had before ours; written once, before our handler is installed,
// and only read afterwards.
constinit struct sigaction g_previous{};
constinit std::atomic<bool> g_installed{false};
constinit std::mutex g_install_mutex;

// This thread's innermost guarded() frame. initial-exec TLS: a fixed offset from the thread
// pointer, never allocated lazily, so reading it in the handler is async-signal-safe.
constinit thread_local RecoveryPoint* t_recovery [[gnu::tls_model("initial-exec")]] = nullptr;

class ErrnoSaver {
 public:
  ErrnoSaver() noexcept : saved_(errno) {}
  ~ErrnoSaver() { errno = saved_; }
  ErrnoSaver(const ErrnoSaver&) = delete;
  ErrnoSaver& operator=(const ErrnoSaver&) = delete;

 private:
  int saved_;
};

// Ends the process by `sig` with the default action, as the kernel would have.
[[noreturn]] void die_by(int sig) noexcept {
  struct sigaction dfl{};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  sigaction(sig, &dfl, nullptr);
  sigset_t only;
  sigemptyset(&only);
  sigaddset(&only, sig);
  raise(sig);
  pthread_sigmask(SIG_UNBLOCK, &only, nullptr);  // the pending signal is delivered here
  _exit(128 + sig);                              // unreachable unless SIGBUS is unkillable
}

// Gives the signal to the disposition that was there before ours. Returns if that
// disposition returns (or ignores the signal).
void chain(int sig, siginfo_t* info, void* context) noexcept {
  const struct sigaction& previous = g_previous;
  // Run a handler the way the kernel would have: with its sa_mask (and, unless SA_NODEFER,
  // the signal itself) blocked; the mask is restored when it returns.
  const auto with_its_mask = [&](auto call) noexcept {
    sigset_t block = previous.sa_mask;
    if ((previous.sa_flags & SA_NODEFER) == 0) sigaddset(&block, sig);
    sigset_t saved;
    pthread_sigmask(SIG_BLOCK, &block, &saved);
    call();
    pthread_sigmask(SIG_SETMASK, &saved, nullptr);
  };
  if ((previous.sa_flags & SA_SIGINFO) != 0) {
    if (previous.sa_sigaction != nullptr) {
      with_its_mask([&] { previous.sa_sigaction(sig, info, context); });
    }
    return;
  }
  if (previous.sa_handler == SIG_IGN) {
    // The kernel does not let a fault be ignored: it resets SIGBUS to SIG_DFL and delivers.
    // A SIGBUS sent with kill() or raise() (si_code <= 0) is ignored, as before.
    if (info != nullptr && info->si_code > 0) die_by(sig);
    return;
  }
  if (previous.sa_handler == SIG_DFL) die_by(sig);
  with_its_mask([&] { previous.sa_handler(sig); });
}

void on_sigbus(int sig, siginfo_t* info, void* context) {
  const ErrnoSaver saved;
  FaultFailure failure;
  switch (dispatch_fault(sig, info, &failure)) {
    case Dispatch::kResolved:
      return;  // the store retries and succeeds
    case Dispatch::kFailed:
      // ---- riskier from here: control may leave the handler for good ----
      recover_or_report(failure);  // returns only outside guarded()
      // A crash reporter installed before us sees the fault; if it returns, retrying the
      // store would fault again forever (invariant 1), so die as the kernel would have.
      if ((g_previous.sa_flags & SA_SIGINFO) != 0 ||
          (g_previous.sa_handler != SIG_DFL && g_previous.sa_handler != SIG_IGN)) {
        chain(sig, info, context);
      }
      die_by(sig);
    case Dispatch::kForeign:
      chain(sig, info, context);
      return;
  }
}

}  // namespace

Dispatch dispatch_fault(int sig, const siginfo_t* info, FaultFailure* failure) noexcept {
  if (sig != SIGBUS || info == nullptr || info->si_code != BUS_ADRERR) return Dispatch::kForeign;
  const auto address = reinterpret_cast<std::uintptr_t>(info->si_addr);
  RangeTable::Pin pin(fault_table());
  const RangeTable::Found found = pin.find(address);
  if (found.owner == nullptr) return Dispatch::kForeign;
  const FaultOutcome outcome = found.owner->on_fault(address, failure);
  pin.release();  // before anything that may not return
  return outcome == FaultOutcome::kResolved ? Dispatch::kResolved : Dispatch::kFailed;
}

void recover_or_report(const FaultFailure& failure) noexcept {
  if (RecoveryPoint* point = t_recovery; point != nullptr) {
    point->failure = failure;
    siglongjmp(point->env, 1);
  }
  char buffer[512];
  LineWriter line(buffer, sizeof buffer);
  line.text("mapwright: ").text(failure.operation);
  if (failure.subject[0] != '\0') line.text(" '").text(failure.subject).text("'");
  if (failure.detail[0] != '\0') line.text(" ").text(failure.detail);
  line.text(": ").error_text(failure.error).text("\n");
  os::write_all(STDERR_FILENO, line.c_str(), line.size());
}

int install_handler() noexcept {
  if (g_installed.load(std::memory_order_acquire)) return 0;
  const std::lock_guard lock(g_install_mutex);
  if (g_installed.load(std::memory_order_relaxed)) return 0;
  (void)os::page_size();  // cache it outside any handler

  struct sigaction ours{};
  ours.sa_sigaction = on_sigbus;
  sigemptyset(&ours.sa_mask);  // SIGBUS itself is blocked while we run (no SA_NODEFER)
  ours.sa_flags = SA_SIGINFO    // we need si_code and si_addr
                  | SA_ONSTACK  // use the thread's sigaltstack if it has one
                  | SA_RESTART; // a kill()-sent SIGBUS must not make read(2) fail with EINTR
  // Record the previous disposition before ours can run, then install; if another
  // sigaction slipped in between, the kernel's answer is the one to chain to.
  struct sigaction before{};
  if (sigaction(SIGBUS, nullptr, &before) != 0) return errno;
  g_previous = before;
  struct sigaction replaced{};
  if (sigaction(SIGBUS, &ours, &replaced) != 0) return errno;
  if (replaced.sa_sigaction != before.sa_sigaction || replaced.sa_flags != before.sa_flags) {
    g_previous = replaced;
  }
  g_installed.store(true, std::memory_order_release);
  return 0;
}

// ---- the public entry points that live beside the handler -----------------------------

void enter_recovery(RecoveryPoint& point) noexcept {
  point.previous = t_recovery;
  t_recovery = &point;
}

void leave_recovery(RecoveryPoint& point) noexcept { t_recovery = point.previous; }

}  // namespace mapwright::detail

namespace mapwright {

bool handle_fault(int sig, siginfo_t* info, void* ucontext) noexcept {
  (void)ucontext;
  const detail::ErrnoSaver saved;
  detail::FaultFailure failure;
  switch (detail::dispatch_fault(sig, info, &failure)) {
    case detail::Dispatch::kResolved:
      return true;
    case detail::Dispatch::kFailed:
      detail::recover_or_report(failure);  // siglongjmps inside guarded()
      return false;
    case detail::Dispatch::kForeign:
      return false;
  }
  return false;
}

}  // namespace mapwright
