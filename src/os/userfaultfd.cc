// src/os/userfaultfd.cc — the system calls of lazily filled ranges (os.h, "lazily filled
// ranges").
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

#include "os/os.h"
#include "os/retry.h"

namespace mapwright::os {
namespace {

using detail::retry;

// linux/userfaultfd.h of Linux 5.11; Debian 12's headers have it, older ones may not.
constexpr int kUffdUserModeOnly = 1;  // UFFD_USER_MODE_ONLY

int make_userfaultfd(int flags, int* fd) noexcept {
  long made = -1;
  const int err = retry([&] {
    made = ::syscall(SYS_userfaultfd, flags);
    return static_cast<int>(made < 0 ? -1 : 0);
  });
  if (err == 0) *fd = static_cast<int>(made);
  return err;
}

}  // namespace

int open_lazy_fill(int* fd, bool* user_mode_only) noexcept {
  // User-mode-only first: it is all an unprivileged process may have (vm.unprivileged_
  // userfaultfd = 0, the default), and SIGBUS mode makes kernel accesses fail with EFAULT
  // anyway. Kernels before 5.11 do not know the flag (EINVAL): then without it.
  int uffd = -1;
  bool mode_only = true;
  int err = make_userfaultfd(O_CLOEXEC | O_NONBLOCK | kUffdUserModeOnly, &uffd);
  if (err == EINVAL) {
    mode_only = false;
    err = make_userfaultfd(O_CLOEXEC | O_NONBLOCK, &uffd);
  }
  if (err != 0) return err;
  uffdio_api api{};
  api.api = UFFD_API;
  api.features = UFFD_FEATURE_SIGBUS;
  if (::ioctl(uffd, UFFDIO_API, &api) != 0) {
    const int failed = errno == EINVAL ? ENOTSUP : errno;  // a feature this kernel lacks
    ::close(uffd);
    return failed;
  }
  if ((api.ioctls & (1ull << _UFFDIO_REGISTER)) == 0) {
    ::close(uffd);
    return ENOTSUP;
  }
  *fd = uffd;
  if (user_mode_only != nullptr) *user_mode_only = mode_only;
  return 0;
}

int register_missing(int uffd, void* address, std::uint64_t length) noexcept {
  uffdio_register reg{};
  reg.range.start = reinterpret_cast<std::uint64_t>(address);
  reg.range.len = length;
  reg.mode = UFFDIO_REGISTER_MODE_MISSING;
  if (const int err = retry([&] { return ::ioctl(uffd, UFFDIO_REGISTER, &reg); }); err != 0) {
    return err;
  }
  return (reg.ioctls & (1ull << _UFFDIO_COPY)) != 0 ? 0 : ENOTSUP;
}

// Not instrumented by ASan (nor are the LazyFill functions that call it): it runs in the
// SIGBUS handler, where a signal frame on an AVX-512 machine leaves about 860 bytes of a
// 4 KiB sigaltstack, and ASan's redzones around the locals took more than that.
[[gnu::no_sanitize_address]]
int fill_missing(int uffd, void* address, const void* source, std::uint64_t length,
                 std::uint64_t* filled) noexcept {
  const int saved = errno;
  uffdio_copy copy{};
  copy.dst = reinterpret_cast<std::uint64_t>(address);
  copy.src = reinterpret_cast<std::uint64_t>(source);
  copy.len = length;
  // Nothing waits on the fd in SIGBUS mode (the faulting thread is the one filling), and
  // waking no one is a wasted walk of the fault queue.
  copy.mode = UFFDIO_COPY_MODE_DONTWAKE;
  int err = 0;
  for (;;) {
    copy.copy = 0;
    // The raw system call, not ioctl(3): the sanitizers' ioctl interceptor decodes its
    // argument on the handler's stack, which may be a 4 KiB sigaltstack.
    if (::syscall(SYS_ioctl, uffd, UFFDIO_COPY, &copy) == 0) break;
    err = errno;
    if (err == EINTR) {
      err = 0;
      continue;
    }
    break;
  }
  // copy.copy: bytes copied, or a negative errno. A partial copy (EEXIST or EAGAIN after
  // some pages) reports the bytes before the page it stopped at.
  *filled = copy.copy > 0 ? static_cast<std::uint64_t>(copy.copy) : 0;
  errno = saved;
  return err;
}

}  // namespace mapwright::os
