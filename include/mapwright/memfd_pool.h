// mapwright/memfd_pool.h — memfds prepared ahead of time for load_library()'s step 2 (a copy
// into a new sealed memfd, loader.h), so that a load from a file range or a span pays neither
// for allocating the memfd's pages nor for freeing them.
//
// Why. On shmem, pages are 4 KiB: for an 8 MiB library, allocating them (fallocate) costs
// 0.55 ms and freeing them (the last close) 0.3 ms on an idle machine, 2.3 ms and 1.2 ms on a
// busy one, against 0.92-0.98 ms for the copy itself (sendfile from ext4 into allocated pages;
// development VM, kernel 6.18, probes, medians of 20-41). Seals are permanent: a memfd that was write-sealed can never
// be written again, so its pages cannot be recycled for the next library without giving up
// the promise that the bytes dlopen() reads cannot change (nor can F_SEAL_FUTURE_WRITE help:
// it is a seal, permanent too). The pool therefore keeps sealing every copy and moves both
// costs off the caller's thread instead: a background thread creates memfds and allocates
// their pages (fallocate) ahead of time, and frees the memfds of unloaded libraries (closes
// their last fd) after the unload.
//
// The contract:
//   * Nothing is kept and no thread runs until reserve(). reserve(size, count) keeps `count`
//     memfds ready, each with room for `size` bytes (rounded up to pages), and starts the
//     background thread; calling it again for the same rounded size changes the count (0
//     removes the reservation). Each memfd a load takes is replaced in the background.
//   * Bounded: the pool never holds more prepared pages than the sum of size × count over the
//     reservations (stats().limit_bytes), and hands at most that many bytes of unloaded
//     libraries' memfds to the background thread to free (beyond it, ~Library frees on its
//     own thread, as without a pool). The thread frees them within ~100 ms (it is woken at
//     once only when half of that room is used, and otherwise looks every 100 ms while the
//     pool is reserved), and refills a reservation once half of its memfds are taken: a wake
//     per load cost the 16 KiB fixture's loads ~30 µs each on a busy 2-core machine.
//   * Each prepared memfd, and each memfd waiting to be freed, holds a file descriptor.
//   * A step-2 load of `n` bytes takes a prepared memfd of the smallest reserved size that is
//     at least `n` and at most 2n (a larger one would make the load free the unused tail on
//     its own thread), copies into it, truncates it to `n`, seals it with F_SEAL_WRITE |
//     F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL exactly as a fresh one, and dlopen()s it. The
//     bytes LoadOptions::check sees are sealed, as always. LoadReport::pool says what happened:
//     kPrepared; kNoneReady when a reservation fits but all of its memfds are taken or still
//     being prepared (the limit is reached: the load creates its own memfd, as without a
//     pool); kNotReserved when no reservation fits.
//   * A prepared memfd is an unsealed memfd (MFD_CLOEXEC) that only the pool has an fd of; it
//     is never mapped writable, and nothing of the caller's is in it until a load takes it.
//   * release() closes every prepared memfd, frees every memfd handed to the background
//     thread, stops the thread and returns once all of that is done; stats() then shows
//     nothing held. Libraries loaded earlier stay loaded (their memfds are theirs); those
//     unloaded after release() free their memfd on their own thread.
//   * Failures in the background (memfd_create refused, EMFILE, ENOMEM or ENOSPC from
//     fallocate, a reserved size above RLIMIT_FSIZE: EFBIG, checked first, since growing a
//     file past it raises SIGXFSZ) are never thrown: the first one is kept in stats().last_error, and preparing
//     stops until the next reserve() (loads go the normal way and report kNoneReady). A
//     prepared memfd works even when the process has since run out of file descriptors.
//   * Thread-safe: every function may be called from any thread, concurrently with loads;
//     concurrent loads never get the same memfd.
//   * fork(): the child starts with an empty pool, no reservation and no background thread;
//     the prepared memfds it inherited (the parent's, still unsealed) are closed in the child
//     by a pthread_atfork handler before fork() returns there, so the child can neither hand
//     them out nor write into them, and the parent's pool is unaffected. Memfds waiting to be
//     freed are closed in the child too (they are the parent's to free). The child may call
//     reserve() to get a pool of its own.
//   * The pool is process-wide and never destroyed (the background thread may still run at
//     exit(); it touches nothing that exit() destroys).
//
// Errors: reserve() throws mapwright::Error with EINVAL for a size of 0 or a limit that
// overflows, and with the errno of the thread's creation if it cannot be started.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

namespace mapwright {

struct MemfdPoolStats {
  std::uint64_t limit_bytes = 0;      // sum of size × count over the reservations
  std::uint64_t prepared = 0;         // memfds ready now
  std::uint64_t prepared_bytes = 0;   // their pages
  std::uint64_t freeing = 0;          // memfds handed to the background thread, not yet freed
  std::uint64_t freeing_bytes = 0;
  // Since the process started (not reset by release()):
  std::uint64_t loads_prepared = 0;   // loads that took a prepared memfd
  std::uint64_t loads_none_ready = 0; // loads that fitted a reservation but found none ready
  std::uint64_t freed_in_background = 0;
  bool thread_running = false;
  // The first background failure since the last reserve(): "memfd_create: Operation not
  // permitted", "fallocate of 8388608 bytes: No space left on device"; empty if none.
  std::string last_error;
};

class MemfdPool {
 public:
  // Keeps `count` memfds with room for `size` bytes ready (see the contract above).
  static void reserve(std::uint64_t size, std::size_t count);
  // Closes and frees everything the pool holds, stops its thread, and returns when done.
  static void release() noexcept;
  static MemfdPoolStats stats();
  // Waits until every reservation holds all of its memfds prepared and nothing is waiting to
  // be freed, or the background thread stopped preparing after a failure, or `timeout`
  // passed. True when all is ready. For a caller that wants its next loads to be fast (and
  // for tests and benchmarks).
  static bool wait_until_ready(std::chrono::milliseconds timeout);
};

}  // namespace mapwright
