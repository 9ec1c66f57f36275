// signal/chain.h — handing a signal to the disposition that was there before mapwright's.
//
// A chain that calls through a saved pointer must first decide what the pointer means
// (STYLE.md): sa_handler and sa_sigaction share storage, and SIG_DFL or SIG_IGN may carry
// SA_SIGINFO (the kernel keeps it when it resets a one-shot handler; Go's runtime writes its
// dispositions so). The decision table, for a SIGBUS that is not a region's:
//
//   previous handler value   SA_SIGINFO   what happens (as the kernel would have done)
//   SIG_DFL                  either       the process dies by the signal
//   SIG_IGN                  either       a fault (si_code > 0, not BUS_MCEERR_AO) dies by
//                                         it (the kernel forces a fault past SIG_IGN); a
//                                         kill()-sent signal is ignored
//   a function               set          sa_sigaction(sig, info, context)
//   a function               clear        sa_handler(sig)
//
// A function is called with the mask the kernel would have given it: the interrupted
// thread's (the ucontext's uc_sigmask) plus its sa_mask plus the signal unless SA_NODEFER.
// SA_RESETHAND: the first chained call uses the one shot, and from then on the previous
// disposition counts as SIG_DFL, as the kernel would have reset it. A previous handler
// without SA_ONSTACK still runs on the alternate stack if mapwright's handler runs there.
#pragma once

#include <signal.h>

namespace mapwright::detail {

// Records the disposition that mapwright's replaces. Not async-signal-safe; called while the
// handler is installed, before it can run.
void remember_previous(const struct sigaction& previous) noexcept;

// The previous disposition is a function (not SIG_DFL, SIG_IGN or a used one shot): it
// should see a fault mapwright could not resolve before the process dies.
// Async-signal-safe.
bool previous_is_function() noexcept;

// Gives `sig` to the previous disposition per the table above. Returns only if that
// disposition returns (a function that returned; SIG_IGN for a signal that is not a fault).
// `context` is the handler's third argument (a ucontext_t), or null. Async-signal-safe.
void chain(int sig, siginfo_t* info, void* context) noexcept;

// Ends the process by `sig` with the signal's default action, as the kernel would: resets the
// disposition to SIG_DFL, sends `sig` to this thread and unblocks it. Async-signal-safe.
[[noreturn]] void die_by(int sig) noexcept;

}  // namespace mapwright::detail
