// signal/block.h — blocking every signal around a critical section.
//
// Locks that the SIGBUS handler may also take (the range table's writer side, a region's
// growth lock) are held only inside a SignalBlocker, so a handler can never interrupt the
// thread that holds them (invariant 2). Synchronous faults cannot be blocked; code inside a
// SignalBlocker must therefore never touch region memory that could fault.
#pragma once

#include <pthread.h>
#include <signal.h>

namespace mapwright::detail {

class SignalBlocker {
 public:
  // Blocks all signals on this thread. pthread_sigmask is async-signal-safe, so this may be
  // used in a handler too.
  SignalBlocker() noexcept {
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &saved_);
  }
  // Restores the mask the constructor found. Async-signal-safe.
  ~SignalBlocker() { pthread_sigmask(SIG_SETMASK, &saved_, nullptr); }
  SignalBlocker(const SignalBlocker&) = delete;
  SignalBlocker& operator=(const SignalBlocker&) = delete;

 private:
  sigset_t saved_;
};

}  // namespace mapwright::detail
