// src/os/extent.cc — see extent.h; the contract is os.h's.
#include "os/extent.h"
#include "os/retry.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/mman.h>

#include <cerrno>
#include <climits>

namespace mapwright::os {

using detail::retry;

int punch_hole(int fd, std::uint64_t offset, std::uint64_t length) noexcept {
  if (length == 0) return 0;
  if (offset > static_cast<std::uint64_t>(LLONG_MAX) ||
      length > static_cast<std::uint64_t>(LLONG_MAX) - offset) {
    return EFBIG;
  }
  return retry([&] {
    return ::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                       static_cast<off_t>(length));
  });
}

int drop_mapped_pages(void* address, std::uint64_t length) noexcept {
  if (length == 0) return 0;
  return retry([&] { return ::madvise(address, length, MADV_DONTNEED); });
}

}  // namespace mapwright::os
