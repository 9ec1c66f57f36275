// src/os/extent.h — giving back what a file and a mapping hold but no longer need: disk
// blocks (or memory) under bytes that are known to be zero, and this process's page-table
// entries over bytes it has finished writing.
//
// The contract of os.h holds here too: nothing throws or allocates, each function returns 0
// or the errno of the failing call, EINTR is retried, and each declaration says whether it is
// async-signal-safe.
#pragma once

#include <cstdint>

namespace mapwright::os {

// fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length): the range reads
// as zeros afterwards and holds no blocks (tmpfs and memfd: no memory); the file's size does
// not change, so RLIMIT_FSIZE is not involved. The kernel frees only whole blocks and zeroes
// the partial ones at the ends, so callers pass whole pages. A length of 0 does nothing.
// Returns EOPNOTSUPP where the filesystem cannot punch holes (the caller then keeps the
// blocks, or zeroes the bytes itself). Mapped pages of the range are dropped from every
// mapping; a later store into the range allocates again (and can then fail like any growth,
// with SIGBUS). Not async-signal-safe (not needed there).
int punch_hole(int fd, std::uint64_t offset, std::uint64_t length) noexcept;

// madvise(MADV_DONTNEED) of whole pages: [address, address + length) must be page-aligned at
// the start (the kernel rounds the length up). On a MAP_SHARED file or memfd mapping this
// drops only this process's page-table entries: dirty pages are handed to the page cache
// (still dirty, written back as usual) and the data stays in the file; the next access maps
// the page again (a minor fault). So it bounds the resident set of a writer that streams
// through a large mapping. NEVER use it on private or anonymous memory: there it discards
// the contents. Not async-signal-safe (not needed there).
int drop_mapped_pages(void* address, std::uint64_t length) noexcept;

}  // namespace mapwright::os
