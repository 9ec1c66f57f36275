// signal/handler.h — the process-wide SIGBUS handler and its dispatch.
//
// Order of work in the handler, safest first:
//   1. save errno; 2. only SIGBUS with si_code == BUS_ADRERR is a candidate; 3. pin the range
//   table and find the owner; 4. the owner resolves or fails; 5. a failure is recorded for
//   guarded() or written to stderr while the owner is still pinned; 6. unpin.
//   --- riskier from here: control may leave the handler for good ---
//   7. failure inside guarded(): siglongjmp to it; 8. failure outside: the previous
//   disposition if it is a function, then death by SIGBUS; 9. foreign fault: the previous
//   disposition, exactly as without mapwright (signal/chain.h).
//
// The handler runs with EVERY signal blocked (sa_mask full): a SIGALRM whose handler
// siglongjmps away (a classic timeout) cannot abandon it between steps 3 and 6, where it
// holds a pin on the range table and possibly an owner's lock. A chained handler gets the
// mask the kernel would have given it.
//
// Stack: the handler path fits a 4 KiB sigaltstack from the first fault on (the kernel's
// own frame takes most of it with AVX-512): no large locals (the report is formatted into
// guarded()'s frame, or written with writev from pieces), and every libc function on the
// path is bound when the handler is installed, so no lazy PLT resolution runs inside it.
#pragma once

#include <signal.h>

#include "fault_owner.h"
#include "range_table.h"

namespace mapwright::detail {

enum class Dispatch { kResolved, kFailed, kForeign };

// Steps 2–4 above, with `pin` held by the caller. On kFailed, `report` says why and its
// subject stays valid until the pin is released. Async-signal-safe.
Dispatch dispatch_fault(int sig, const siginfo_t* info, const RangeTable::Pin& pin,
                        FaultReport* report) noexcept;

// Steps 5–7: if this thread is inside guarded(), records the failure there, releases the
// pin and siglongjmps (does not return); else writes the one line
// "mapwright: <operation> '<region>' <detail>: <cause>" to stderr (a broken pipe neither
// kills by SIGPIPE nor leaves a SIGPIPE pending), releases the pin and returns.
// Async-signal-safe.
void recover_or_report(const FaultReport& report, RangeTable::Pin& pin) noexcept;

// Installs the handler once (thread-safe); returns 0 or the errno of sigaction.
// Also registers the pthread_atfork handlers. Not async-signal-safe.
int install_handler() noexcept;

}  // namespace mapwright::detail
