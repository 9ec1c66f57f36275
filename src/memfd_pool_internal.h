// src/memfd_pool_internal.h — what the loader asks of the MemfdPool (memfd_pool.h).
#pragma once

#include <cstdint>

#include "mapwright/loader.h"

namespace mapwright::detail {

struct PreparedMemfd {
  int fd = -1;                // -1: none; else an unsealed memfd, now the caller's to close
  std::uint64_t capacity = 0;  // the bytes of pages fallocate()d for it (whole pages)
  std::uint64_t size = 0;      // its file size now (<= capacity)
};

// A prepared memfd with room for `size` bytes, from the smallest reserved size in
// [size, 2 * size] (page-rounded); `*use` says kPrepared, kNoneReady or kNotReserved.
PreparedMemfd take_prepared_memfd(std::uint64_t size, PoolUse* use) noexcept;

// The last fd of an unloaded library's memfd (`bytes` long): handed to the pool's thread to
// close (and so free its pages) when it runs and has room under its limit, else closed here.
void dispose_memfd(int fd, std::uint64_t bytes) noexcept;

}  // namespace mapwright::detail
