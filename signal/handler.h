// signal/handler.h — the process-wide SIGBUS handler and its dispatch.
//
// Order of work in the handler, safest first:
//   1. save errno; 2. only SIGBUS with si_code == BUS_ADRERR is a candidate; 3. pin the range
//   table and find the owner; 4. the owner resolves or fails; 5. unpin.
//   --- riskier from here: control may leave the handler for good ---
//   6. failure inside guarded(): siglongjmp to it; 7. failure outside: one line on stderr,
//   the previous disposition, then death by SIGBUS; 8. foreign fault: the previous
//   disposition, exactly as without mapwright.
#pragma once

#include <signal.h>

#include "mapwright/fault.h"

namespace mapwright::detail {

enum class Dispatch { kResolved, kFailed, kForeign };

// Steps 2–5 above. Async-signal-safe.
Dispatch dispatch_fault(int sig, const siginfo_t* info, FaultFailure* failure) noexcept;

// Step 6 if this thread is inside guarded() (does not return), else writes the one-line
// explanation "mapwright: <operation> '<region>' <detail>: <cause>" to stderr and returns.
// Async-signal-safe.
void recover_or_report(const FaultFailure& failure) noexcept;

// Installs the handler once (thread-safe); returns 0 or the errno of sigaction.
// Not async-signal-safe.
int install_handler() noexcept;

}  // namespace mapwright::detail
