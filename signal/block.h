// signal/block.h — blocking every signal around a critical section.
//
// Locks that the SIGBUS handler may also take (the range table's writer side, an owner's
// lock) are held only inside a SignalBlocker, so a handler can never interrupt the thread
// that holds them (invariant 2). Synchronous faults cannot be blocked; code inside a
// SignalBlocker must therefore never touch region memory that could fault, and never
// allocate (an allocator's memory may be a region's).
#pragma once

#include <signal.h>

#include "os/os.h"

namespace mapwright::detail {

class SignalBlocker {
 public:
  // Blocks every signal but glibc's internal ones on this thread (os::kAllSignals).
  // Async-signal-safe, so it may be used in a handler too.
  SignalBlocker() noexcept { (void)os::set_signal_mask(SIG_BLOCK, os::kAllSignals, &saved_); }
  // Restores the mask the constructor found. Async-signal-safe.
  ~SignalBlocker() { (void)os::set_signal_mask(SIG_SETMASK, saved_, nullptr); }
  SignalBlocker(const SignalBlocker&) = delete;
  SignalBlocker& operator=(const SignalBlocker&) = delete;

 private:
  os::SignalSet saved_ = 0;
};

}  // namespace mapwright::detail
