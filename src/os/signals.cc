// src/os/signals.cc — masks, dispositions and pending signals; see os.h for the contract.
//
// The mask calls go to the kernel directly with its 8-byte mask: glibc's wrappers copy
// 128-byte sigset_t values, and the handler path must fit a small sigaltstack.
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "os/os.h"
#include "os/retry.h"

namespace mapwright::os {

using detail::retry;

namespace {

static_assert(sizeof(sigset_t) >= sizeof(SignalSet));
static_assert(NSIG - 1 <= 64, "the kernel's signal mask is 64 bits on this architecture");

}  // namespace

SignalSet signal_set_of(const sigset_t& set) noexcept {
  SignalSet bits = 0;
  std::memcpy(&bits, &set, sizeof bits);
  return bits;
}

int set_signal_mask(int how, SignalSet set, SignalSet* old) noexcept {
  set &= kAllSignals;
  return retry([&] {
    return static_cast<int>(::syscall(SYS_rt_sigprocmask, how, &set, old, sizeof set));
  });
}

int pending_signals(SignalSet* set) noexcept {
  SignalSet out = 0;
  const int err = retry([&] { return static_cast<int>(::syscall(SYS_rt_sigpending, &out, sizeof out)); });
  if (err == 0) *set = out;
  return err;
}

int discard_pending(int sig) noexcept {
  const SignalSet only = signal_bit(sig);
  const struct timespec zero{0, 0};
  return retry([&] {
    return static_cast<int>(
        ::syscall(SYS_rt_sigtimedwait, &only, nullptr, &zero, sizeof only));
  });
}

int get_action(int sig, struct sigaction* action) noexcept {
  return retry([&] { return ::sigaction(sig, nullptr, action); });
}

int set_action(int sig, const struct sigaction& action, struct sigaction* old) noexcept {
  return retry([&] { return ::sigaction(sig, &action, old); });
}

int send_to_this_thread(int sig) noexcept {
  return retry([&] {
    return static_cast<int>(::syscall(SYS_tgkill, ::getpid(), ::gettid(), sig));
  });
}

int at_fork(void (*prepare)(), void (*parent)(), void (*child)()) noexcept {
  return ::pthread_atfork(prepare, parent, child);
}

int write_iov(int fd, struct iovec* io, int count) noexcept {
  int first = 0;
  while (first < count) {
    ssize_t n = 0;
    const int err = retry([&] { return static_cast<int>(n = ::writev(fd, io + first, count - first)); });
    if (err != 0) return err;
    auto left = static_cast<std::size_t>(n);
    while (first < count && left >= io[first].iov_len) left -= io[first++].iov_len;
    if (first < count) {  // a short write: the rest of this piece next
      io[first].iov_base = static_cast<char*>(io[first].iov_base) + left;
      io[first].iov_len -= left;
    }
  }
  return 0;
}

}  // namespace mapwright::os
