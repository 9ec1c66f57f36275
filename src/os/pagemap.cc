// src/os/pagemap.cc — the system calls of copy-on-write slots (os.h, "copy-on-write slots").
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

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
constexpr std::uint64_t kPageIsFile = 1u << 2;
constexpr std::uint64_t kPageIsPresent = 1u << 3;
constexpr std::uint64_t kPageIsSwapped = 1u << 4;
static_assert(sizeof(PageRegion) == 24 && sizeof(ScanArgument) == 96);

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

int scan_private_pages(int pagemap_fd, std::uint64_t begin, std::uint64_t end, PageRange* out,
                       std::size_t capacity, std::size_t* count, std::uint64_t* walked_to) noexcept {
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
    // Not a file page (inverted), and present or swapped.
    argument.category_inverted = kPageIsFile;
    argument.category_mask = kPageIsFile;
    argument.category_anyof_mask = kPageIsPresent | kPageIsSwapped;
    argument.return_mask = kPageIsFile | kPageIsPresent | kPageIsSwapped;
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

int read_pagemap(int pagemap_fd, std::uint64_t begin, std::uint64_t* entries,
                 std::size_t pages) noexcept {
  const std::uint64_t offset = begin / page_size() * 8;
  if (offset > static_cast<std::uint64_t>(LLONG_MAX)) return EINVAL;
  std::size_t got = 0;
  if (const int err = pread_full(pagemap_fd, entries, pages * 8, offset, &got); err != 0) return err;
  return got == pages * 8 ? 0 : EIO;
}

}  // namespace mapwright::os
