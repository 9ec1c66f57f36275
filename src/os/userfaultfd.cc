// src/os/userfaultfd.cc — every userfaultfd of the library: lazily filled ranges (os.h,
// "lazily filled ranges") and the write tracking of copy-on-write slots (open_write_tracking,
// track_writes).
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

// linux/userfaultfd.h of Linux 6.7; Debian 12's headers (6.1) lack the newer features.
constexpr int kUffdUserModeOnly = 1;  // UFFD_USER_MODE_ONLY (5.11+)
constexpr std::uint64_t kUffdFeatureWpUnpopulated = 1u << 13;
constexpr std::uint64_t kUffdFeatureWpAsync = 1u << 15;

// userfaultfd(2) with `flags`, then the UFFDIO_API handshake asking for `features`.
// ENOTSUP when the kernel lacks one of them; `*ioctls` gets the ioctls the fd offers.
int open_userfaultfd(int flags, std::uint64_t features, int* fd, std::uint64_t* ioctls) noexcept {
  long made = -1;
  if (const int err = retry([&] {
        made = ::syscall(SYS_userfaultfd, flags);
        return static_cast<int>(made < 0 ? -1 : 0);
      });
      err != 0) {
    return err;
  }
  const int uffd = static_cast<int>(made);
  uffdio_api api{};
  api.api = UFFD_API;
  api.features = features;
  if (::ioctl(uffd, UFFDIO_API, &api) != 0) {
    const int err = errno == EINVAL ? ENOTSUP : errno;  // a feature this kernel lacks
    ::close(uffd);
    return err;
  }
  *fd = uffd;
  *ioctls = api.ioctls;
  return 0;
}

// UFFDIO_REGISTER of [address, address + length) in `mode`; `*ioctls` gets the range's ioctls.
int register_range(int uffd, void* address, std::uint64_t length, std::uint64_t mode,
                   std::uint64_t* ioctls) noexcept {
  uffdio_register reg{};
  reg.range.start = reinterpret_cast<std::uint64_t>(address);
  reg.range.len = length;
  reg.mode = mode;
  if (const int err = retry([&] { return ::ioctl(uffd, UFFDIO_REGISTER, &reg); }); err != 0) return err;
  *ioctls = reg.ioctls;
  return 0;
}

}  // namespace

int open_lazy_fill(int* fd, bool* user_mode_only) noexcept {
  // User-mode-only first: it is all an unprivileged process may have (vm.unprivileged_
  // userfaultfd = 0, the default), and SIGBUS mode makes kernel accesses fail with EFAULT
  // anyway. Kernels before 5.11 do not know the flag (EINVAL): then without it.
  int uffd = -1;
  std::uint64_t ioctls = 0;
  bool mode_only = true;
  int err = open_userfaultfd(O_CLOEXEC | O_NONBLOCK | kUffdUserModeOnly, UFFD_FEATURE_SIGBUS, &uffd, &ioctls);
  if (err == EINVAL) {
    mode_only = false;
    err = open_userfaultfd(O_CLOEXEC | O_NONBLOCK, UFFD_FEATURE_SIGBUS, &uffd, &ioctls);
  }
  if (err != 0) return err;
  if ((ioctls & (1ull << _UFFDIO_REGISTER)) == 0) {
    ::close(uffd);
    return ENOTSUP;
  }
  *fd = uffd;
  if (user_mode_only != nullptr) *user_mode_only = mode_only;
  return 0;
}

int register_missing(int uffd, void* address, std::uint64_t length) noexcept {
  std::uint64_t ioctls = 0;
  if (const int err = register_range(uffd, address, length, UFFDIO_REGISTER_MODE_MISSING, &ioctls);
      err != 0) {
    return err;
  }
  return (ioctls & (1ull << _UFFDIO_COPY)) != 0 ? 0 : ENOTSUP;
}

int open_write_tracking(int* fd) noexcept {
  std::uint64_t ioctls = 0;
  return open_userfaultfd(O_CLOEXEC | O_NONBLOCK | kUffdUserModeOnly,
                          kUffdFeatureWpAsync | kUffdFeatureWpUnpopulated, fd, &ioctls);
}

int track_writes(int uffd, void* address, std::uint64_t length) noexcept {
  std::uint64_t ioctls = 0;
  if (const int err = register_range(uffd, address, length, UFFDIO_REGISTER_MODE_WP, &ioctls);
      err != 0) {
    return err;
  }
  uffdio_writeprotect protect{};
  protect.range.start = reinterpret_cast<std::uint64_t>(address);
  protect.range.len = length;
  protect.mode = UFFDIO_WRITEPROTECT_MODE_WP;
  return retry([&] { return ::ioctl(uffd, UFFDIO_WRITEPROTECT, &protect); });
}

// Not instrumented by ASan or TSan (nor are the LazyFill functions that call it): it runs in
// the SIGBUS handler, where a signal frame on an AVX-512 machine leaves about 860 bytes of a
// 4 KiB sigaltstack; ASan's redzones around the locals, and TSan's calls for each atomic
// access, took more than that.
__attribute__((no_sanitize_address, no_sanitize_thread))
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
