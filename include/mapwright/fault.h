// mapwright/fault.h — what happens when a store runs past the end of a region's file.
//
// mapwright installs one process-wide SIGBUS handler (SA_SIGINFO | SA_ONSTACK) the first
// time a Region is created. For a fault with si_code == BUS_ADRERR whose address lies in a
// registered region, the handler grows the region's file and returns, and the store retries
// and succeeds. Every other SIGBUS goes to the disposition that was installed before
// mapwright's (a SA_SIGINFO handler, a plain handler, SIG_DFL or SIG_IGN), so the process
// behaves exactly as it would without mapwright.
//
// When growth is impossible (the disk is full, RLIMIT_FSIZE, the region's capacity, a seal
// that forbids growth) the fault is never retried forever:
//   * inside guarded(body) on the faulting thread, it becomes a thrown mapwright::Error;
//   * otherwise one line naming the region and the cause is written to stderr with
//     write(2), the previous disposition is given the fault, and if that returns the
//     process dies by SIGBUS, as it would have without mapwright.
#pragma once

#include <signal.h>

#include <functional>
#include <optional>
#include <type_traits>
#include <utility>

namespace mapwright {

// Runs `body()` and returns its result. A region growth that fails while `body` runs on this
// thread (disk full, RLIMIT_FSIZE, capacity exceeded, a sealed file, a page that cannot be
// faulted in) abandons `body` at the faulting store and throws mapwright::Error carrying the
// errno, the operation and the region's name; the program continues. Faults that are not a
// region's growth are not affected.
//
// HAZARD — THE BODY IS ABANDONED, NOT UNWOUND. Recovery uses siglongjmp from the signal
// handler back to guarded(): destructors of objects created inside `body` since it started
// do not run, and locks it took stay taken. Keep bodies to plain stores and reads of region
// memory (fills, memcpy, serializers writing into the region); create anything that owns
// resources outside the body. Exceptions thrown by `body` itself propagate normally.
//
// Cost: one sigsetjmp (a sigprocmask system call) per call; call it around a batch of work,
// not around each store. Nesting is allowed; the innermost guarded() on the thread catches.
// Not async-signal-safe.
template <class F>
decltype(auto) guarded(F&& body);

// The first-chance entry point for programs whose own SIGBUS handler must run first (crash
// reporters, language runtimes): call it at the top of that handler and return at once when
// it says true. Async-signal-safe.
//
// Returns true when the fault was a region's growth and has been resolved: return from your
// handler and the faulting store retries and succeeds. Returns false for every fault that is
// not mapwright's, and for a growth that failed outside guarded() (after writing the one-line
// explanation to stderr): handle those as you would without mapwright. A growth that fails
// inside guarded() does not return here; guarded() throws.
//
//     void on_sigbus(int sig, siginfo_t* info, void* context) {
//       if (mapwright::handle_fault(sig, info, context)) return;  // a region grew
//       report_crash(sig, info, context);                         // yours, as before
//     }
//     // installed after mapwright's, e.g. after the first Region was created:
//     struct sigaction sa{};
//     sa.sa_sigaction = on_sigbus;
//     sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
//     sigaction(SIGBUS, &sa, nullptr);
bool handle_fault(int sig, siginfo_t* info, void* ucontext) noexcept;

// Installs mapwright's SIGBUS handler now instead of at the first Region (to fix the order
// of handlers in a program that installs its own). Idempotent and thread-safe; throws
// mapwright::Error if sigaction fails. Not async-signal-safe.
void install_fault_handler();

namespace detail {

// Runs body(context) under a recovery point on this thread: a growth that fails inside it
// makes it throw Error (see guarded()). Not async-signal-safe.
void run_guarded(void (*body)(void*), void* context);

template <class Call>
void call_it(void* call) {
  (*static_cast<Call*>(call))();
}

}  // namespace detail

template <class F>
decltype(auto) guarded(F&& body) {
  using Result = std::invoke_result_t<F&&>;
  if constexpr (std::is_void_v<Result>) {
    auto call = [&body] { std::invoke(std::forward<F>(body)); };
    detail::run_guarded(&detail::call_it<decltype(call)>, &call);
  } else if constexpr (std::is_reference_v<Result>) {
    std::add_pointer_t<Result> result = nullptr;
    auto call = [&] { result = &std::invoke(std::forward<F>(body)); };
    detail::run_guarded(&detail::call_it<decltype(call)>, &call);
    return static_cast<Result>(*result);
  } else {
    std::optional<Result> result;
    auto call = [&] { result.emplace(std::invoke(std::forward<F>(body))); };
    detail::run_guarded(&detail::call_it<decltype(call)>, &call);
    return Result(std::move(*result));
  }
}

}  // namespace mapwright
