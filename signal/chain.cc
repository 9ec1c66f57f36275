#include "chain.h"

#include <ucontext.h>
#include <unistd.h>

#include <atomic>

#include "os/os.h"

namespace mapwright::detail {
namespace {

// Written once before mapwright's handler is installed, only read afterwards.
constinit struct sigaction g_previous{};
// SA_RESETHAND: the previous handler's one shot has been used.
constinit std::atomic<bool> g_one_shot_used{false};

enum class Kind { kDefault, kIgnore, kPlain, kInfo };

Kind kind_of(const struct sigaction& action) noexcept {
  // The value decides first: SIG_DFL and SIG_IGN may come with SA_SIGINFO set.
  if (action.sa_handler == SIG_DFL) return Kind::kDefault;
  if (action.sa_handler == SIG_IGN) return Kind::kIgnore;
  if ((action.sa_flags & SA_RESETHAND) != 0 && g_one_shot_used.load(std::memory_order_acquire)) {
    return Kind::kDefault;
  }
  return (action.sa_flags & SA_SIGINFO) != 0 ? Kind::kInfo : Kind::kPlain;
}

// A signal the kernel raised for a fault of this thread, which it delivers even past
// SIG_IGN or a blocked mask (force_sig): every kernel si_code but the asynchronous
// "action optional" machine-check report.
bool is_fault(const siginfo_t* info) noexcept {
  return info != nullptr && info->si_code > 0 && info->si_code != BUS_MCEERR_AO;
}

}  // namespace

void remember_previous(const struct sigaction& previous) noexcept {
  g_previous = previous;
  g_one_shot_used.store(false, std::memory_order_release);
}

bool previous_is_function() noexcept {
  const Kind kind = kind_of(g_previous);
  return kind == Kind::kPlain || kind == Kind::kInfo;
}

void chain(int sig, siginfo_t* info, void* context) noexcept {
  const struct sigaction& previous = g_previous;
  Kind kind = kind_of(previous);
  if ((kind == Kind::kPlain || kind == Kind::kInfo) && (previous.sa_flags & SA_RESETHAND) != 0 &&
      g_one_shot_used.exchange(true, std::memory_order_acq_rel)) {
    kind = Kind::kDefault;  // another thread used the one shot first
  }
  switch (kind) {
    case Kind::kDefault:
      die_by(sig);
    case Kind::kIgnore:
      if (is_fault(info)) die_by(sig);
      return;
    case Kind::kPlain:
    case Kind::kInfo:
      break;
  }
  // The mask the kernel would have set for it.
  os::SignalSet interrupted = 0;
  if (context != nullptr) {
    interrupted = os::signal_set_of(static_cast<const ucontext_t*>(context)->uc_sigmask);
  } else {
    (void)os::set_signal_mask(SIG_BLOCK, 0, &interrupted);
  }
  os::SignalSet mask = interrupted | os::signal_set_of(previous.sa_mask);
  if ((previous.sa_flags & SA_NODEFER) == 0) mask |= os::signal_bit(sig);
  os::SignalSet ours = 0;
  (void)os::set_signal_mask(SIG_SETMASK, mask, &ours);
  if (kind == Kind::kInfo) {
    previous.sa_sigaction(sig, info, context);
  } else {
    previous.sa_handler(sig);
  }
  (void)os::set_signal_mask(SIG_SETMASK, ours, nullptr);
}

void die_by(int sig) noexcept {
  struct sigaction default_action{};  // all zero: SIG_DFL, an empty mask, no flags
  default_action.sa_handler = SIG_DFL;
  (void)os::set_action(sig, default_action, nullptr);
  (void)os::send_to_this_thread(sig);
  (void)os::set_signal_mask(SIG_UNBLOCK, os::signal_bit(sig), nullptr);  // delivered here
  ::_exit(128 + sig);  // unreachable unless the signal cannot kill
}

}  // namespace mapwright::detail
