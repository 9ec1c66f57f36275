// src/os/pagemap.cc — the system calls of copy-on-write slots (os.h, "copy-on-write slots").
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdint>

#include "os/os.h"
#include "os/retry.h"

namespace mapwright::os {
namespace {

using detail::retry;

// linux/fs.h of Linux 6.7; Debian 12's kernel headers (6.1) lack them.
struct PageRegion {
  std::uint64_t start;
  std::uint64_t end;
  std::uint64_t categories;
};
struct ScanArgument {
  std::uint64_t size;
  std::uint64_t flags;
  std::uint64_t start;
  std::uint64_t end;
  std::uint64_t walk_end;
  std::uint64_t vec;
  std::uint64_t vec_len;
  std::uint64_t max_pages;
  std::uint64_t category_inverted;
  std::uint64_t category_mask;
  std::uint64_t category_anyof_mask;
  std::uint64_t return_mask;
};
constexpr unsigned long kPagemapScan = _IOWR('f', 16, ScanArgument);
constexpr std::uint64_t kPageIsWritten = 1u << 1;
constexpr std::uint64_t kScanWpMatching = 1u << 0;   // PM_SCAN_WP_MATCHING
constexpr std::uint64_t kScanCheckWpAsync = 1u << 1;  // PM_SCAN_CHECK_WPASYNC
constexpr std::uint64_t kPageIsFile = 1u << 2;
constexpr std::uint64_t kPageIsPresent = 1u << 3;
constexpr std::uint64_t kPageIsSwapped = 1u << 4;
static_assert(sizeof(PageRegion) == 24 && sizeof(ScanArgument) == 96);

// linux/pidfd.h of Linux 6.14: the calling thread (whose mm is the process's).
constexpr int kPidfdSelf = -10000;
constexpr std::size_t kBatch = 256;  // ranges per process_madvise (UIO_MAXIOV is 1024)
// 1: process_madvise works here; 0: not tried yet; -1: refused, madvise per range.
std::atomic<int> g_batched{0};

int drop_one_by_one(const PageRange* ranges, std::size_t count) noexcept {
  for (std::size_t i = 0; i < count; ++i) {
    const PageRange& r = ranges[i];
    if (const int err = retry([&] {
          return ::madvise(reinterpret_cast<void*>(r.begin), r.end - r.begin, MADV_DONTNEED);
        });
        err != 0) {
      return err;
    }
  }
  return 0;
}

}  // namespace

int map_private_fixed(void* address, std::uint64_t length, int fd) noexcept {
  return retry([&] {
    void* p = ::mmap(address, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, fd, 0);
    return p == MAP_FAILED ? -1 : 0;
  });
}

int reserve_fixed(void* address, std::uint64_t length) noexcept {
  return retry([&] {
    void* p = ::mmap(address, length, PROT_NONE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
    return p == MAP_FAILED ? -1 : 0;
  });
}

int protect(void* address, std::uint64_t length, bool accessible) noexcept {
  return retry([&] {
    return ::mprotect(address, length, accessible ? PROT_READ | PROT_WRITE : PROT_NONE);
  });
}

namespace {

// PAGEMAP_SCAN over [begin, end) for the pages `set_up` asks for, up to `capacity` ranges.
template <class SetUp>
int scan_pages(int pagemap_fd, std::uint64_t begin, std::uint64_t end, PageRange* out,
               std::size_t capacity, std::size_t* count, std::uint64_t* walked_to,
               SetUp set_up) noexcept {
  // PageRange is two words, PageRegion three: the kernel fills a PageRegion array on the
  // stack in batches, copied out as ranges.
  constexpr std::size_t kBatch = 64;
  PageRegion regions[kBatch];
  std::size_t found = 0;
  std::uint64_t at = begin;
  while (at < end && found < capacity) {
    ScanArgument argument{};
    argument.size = sizeof argument;
    argument.start = at;
    argument.end = end;
    argument.vec = reinterpret_cast<std::uint64_t>(regions);
    argument.vec_len = capacity - found < kBatch ? capacity - found : kBatch;
    set_up(argument);
    long n = 0;
    if (const int err = retry([&] { return static_cast<int>(n = ::ioctl(pagemap_fd, kPagemapScan, &argument)); });
        err != 0) {
      return err;
    }
    for (long i = 0; i < n; ++i) out[found++] = {regions[i].start, regions[i].end};
    if (argument.walk_end <= at) return EIO;  // no progress: never loop
    at = argument.walk_end;
  }
  *count = found;
  *walked_to = at < end ? at : end;
  return 0;
}

}  // namespace

int scan_private_pages(int pagemap_fd, std::uint64_t begin, std::uint64_t end, PageRange* out,
                       std::size_t capacity, std::size_t* count, std::uint64_t* walked_to) noexcept {
  return scan_pages(pagemap_fd, begin, end, out, capacity, count, walked_to, [](ScanArgument& a) {
    // Not a file page (inverted), and present or swapped.
    a.category_inverted = kPageIsFile;
    a.category_mask = kPageIsFile;
    a.category_anyof_mask = kPageIsPresent | kPageIsSwapped;
    a.return_mask = kPageIsFile | kPageIsPresent | kPageIsSwapped;
  });
}

int scan_written_pages(int pagemap_fd, std::uint64_t begin, std::uint64_t end, PageRange* out,
                       std::size_t capacity, std::size_t* count, std::uint64_t* walked_to) noexcept {
  return scan_pages(pagemap_fd, begin, end, out, capacity, count, walked_to, [](ScanArgument& a) {
    a.flags = kScanWpMatching | kScanCheckWpAsync;
    a.category_mask = kPageIsWritten;
    a.return_mask = kPageIsWritten;
  });
}

int read_pagemap(int pagemap_fd, std::uint64_t begin, std::uint64_t* entries,
                 std::size_t pages) noexcept {
  const std::uint64_t offset = begin / page_size() * 8;
  if (offset > static_cast<std::uint64_t>(LLONG_MAX)) return EINVAL;
  std::size_t got = 0;
  if (const int err = pread_full(pagemap_fd, entries, pages * 8, offset, &got); err != 0) return err;
  return got == pages * 8 ? 0 : EIO;
}

int drop_ranges(const PageRange* ranges, std::size_t count) noexcept {
  while (count > 0 && g_batched.load(std::memory_order_relaxed) >= 0) {
    iovec iov[kBatch];
    const std::size_t n = count < kBatch ? count : kBatch;
    std::uint64_t wanted = 0;
    for (std::size_t i = 0; i < n; ++i) {
      iov[i].iov_base = reinterpret_cast<void*>(ranges[i].begin);
      iov[i].iov_len = ranges[i].end - ranges[i].begin;
      wanted += iov[i].iov_len;
    }
    long done = 0;
    const int err = retry([&] {
      done = ::syscall(SYS_process_madvise, kPidfdSelf, iov, n, MADV_DONTNEED, 0u);
      return static_cast<int>(done < 0 ? -1 : 0);
    });
    if (err != 0) {
      const bool refused = err == EINVAL || err == EBADF || err == ESRCH || err == ENOSYS ||
                           err == EPERM;
      if (refused) {
        // process_madvise cannot do this here (EINVAL: no MADV_DONTNEED or no PIDFD_SELF;
        // ENOSYS, EBADF, ESRCH, EPERM: older kernels, a seccomp filter installed since it
        // last worked): per range from now on. (A range madvise refuses too is reported by
        // the fallback.)
        g_batched.store(-1, std::memory_order_relaxed);
        break;
      }
      return err;
    }
    if (g_batched.load(std::memory_order_relaxed) == 0) g_batched.store(1, std::memory_order_relaxed);
    std::size_t i = 0;
    if (static_cast<std::uint64_t>(done) < wanted) {
      // Part of the batch was dropped (the kernel stops at a range it could not advise): the
      // rest one by one, and the range that stopped it says why.
      auto skip = static_cast<std::uint64_t>(done);
      while (i < n && skip >= ranges[i].end - ranges[i].begin) {
        skip -= ranges[i].end - ranges[i].begin;
        ++i;
      }
      const PageRange rest{ranges[i].begin + skip, ranges[i].end};
      if (const int e = drop_one_by_one(&rest, 1); e != 0) return e;
      if (const int e = drop_one_by_one(ranges + i + 1, n - i - 1); e != 0) return e;
    }
    ranges += n;
    count -= n;
  }
  return drop_one_by_one(ranges, count);
}

bool drop_ranges_batched() noexcept { return g_batched.load(std::memory_order_relaxed) > 0; }

}  // namespace mapwright::os
