// src/os/extent.cc — see extent.h; the contract is os.h's.
#include "os/extent.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/mman.h>

#include <cerrno>
#include <climits>

namespace mapwright::os {
namespace {

// As in os.cc: retries EINTR, returns 0 or the errno, leaves errno as it was.
template <class Call>
int retry(Call call) noexcept {
  const int saved = errno;
  int result = 0;
  for (;;) {
    if (call() != -1) break;
    if (errno == EINTR) continue;
    result = errno;
    break;
  }
  errno = saved;
  return result;
}

}  // namespace

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
