// signal/growth.h — a file-backed reservation that grows when stores run past its end.
//
// Memory layout of one growable region:
//
//     base                        base + committed            base + capacity
//     ├── backed by the file ─────┼── reserved, past EOF ───────┤
//     │   (loads and stores work) │   (a touch raises SIGBUS    │
//     │                           │    BUS_ADRERR → on_fault)   │
//
// Invariants kept here:
//   * committed_ <= the file's size at all times: the file grows first, then committed_ is
//     published (release). Only finish() moves it down.
//   * committed_ only changes under lock_, and lock_ is taken either in the handler or with
//     every signal blocked, so a handler never waits for its own thread (invariant 2).
//   * Growth is checked before it acts: capacity, then RLIMIT_FSIZE read afresh (exceeding
//     it would kill the process by SIGXFSZ), then fallocate/ftruncate (invariant 6).
//   * A fault is answered kResolved only if the retried store can succeed: a fault below
//     committed_ (another thread grew meanwhile) is confirmed with MADV_POPULATE_WRITE, which
//     reports instead of faulting when the page still cannot be backed (invariant 1).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

#include "fault_owner.h"

namespace mapwright::detail {

struct GrowthPolicy {
  std::uint64_t capacity = 0;  // bytes reserved; growth never goes past it
  std::uint64_t min_step = 0;  // smallest growth step (a multiple of the page size)
  std::uint64_t max_step = 0;  // the geometric (x2) step is capped at this
  bool grow_on_fault = true;   // false: only grow() grows; a stray store fails
};

enum class Backing {
  kMemory,  // memfd: ftruncate, sparse; pages are allocated when first touched
  kDisk,    // a file: fallocate the new range so that a full disk is reported at growth
            // time; filesystems without fallocate fall back to ftruncate (sparse), where a
            // full disk shows up only at write-back (msync/fsync report it)
};

struct GrowthCounters {
  std::uint64_t faults = 0;    // faults resolved (by growth or by a concurrent grower)
  std::uint64_t growths = 0;   // growth steps taken (by faults and by grow())
  std::uint64_t failures = 0;  // faults or grow() calls that could not be resolved
};

class GrowthOwner final : public FaultOwner {
 public:
  // `base` maps `fd` from offset 0 for policy.capacity bytes; the file is `size` bytes now.
  // Not async-signal-safe (copies the name).
  GrowthOwner(std::string name, int fd, std::byte* base, GrowthPolicy policy, Backing backing,
              std::uint64_t size) noexcept;

  // The handler's entry. Async-signal-safe.
  FaultOutcome on_fault(std::uintptr_t address, FaultFailure* failure) noexcept override;

  // Grows the file so that at least `bytes` are backed, using the same geometric steps as a
  // fault. Blocks all signals while holding the growth lock. Not async-signal-safe.
  FaultOutcome grow(std::uint64_t bytes, FaultFailure* failure) noexcept;

  // Sets the file size to exactly `bytes` (ftruncate), up or down, and committed_ with it.
  // Returns 0 or an errno. Not async-signal-safe.
  int truncate(std::uint64_t bytes) noexcept;

  // Bytes backed by the file now. Async-signal-safe.
  std::uint64_t committed() const noexcept { return committed_.load(std::memory_order_acquire); }
  // Both async-signal-safe (immutable after construction).
  const GrowthPolicy& policy() const noexcept { return policy_; }
  const std::string& name() const noexcept { return name_; }
  // Relaxed snapshot of the counters. Async-signal-safe.
  GrowthCounters counters() const noexcept;
  // Test hook: pretend MADV_POPULATE_WRITE is unknown (kernels before 5.14), so that the
  // fstat-based fallback for faults below committed_ runs. Not async-signal-safe.
  static void set_populate_supported_for_testing(bool supported) noexcept;

 private:
  // Grows to cover `need` bytes; lock_ held. `fault_offset` is UINT64_MAX for grow().
  // Async-signal-safe, as are the four below.
  FaultOutcome grow_locked(std::uint64_t need, std::uint64_t fault_offset,
                           FaultFailure* failure) noexcept;
  FaultOutcome confirm_backed(std::uintptr_t address, std::uint64_t offset,
                              FaultFailure* failure) noexcept;
  void fail(FaultFailure* failure, int error, const char* operation, std::uint64_t size,
            std::uint64_t offset, const char* reason) noexcept;
  bool last_page_backed(std::uint64_t size) const noexcept;
  void lock() noexcept;
  void unlock() noexcept { lock_.store(false, std::memory_order_release); }

  const std::string name_;  // immutable after construction; read by the handler
  const int fd_;
  std::byte* const base_;
  const GrowthPolicy policy_;
  const Backing backing_;
  const std::uint64_t page_;

  std::atomic<std::uint64_t> committed_;
  std::atomic<bool> lock_{false};
  std::atomic<bool> fallocate_works_{true};
  // Faults below committed_ since the last growth, on kernels without MADV_POPULATE_WRITE:
  // a bound, so that a page that can never be backed is not retried forever.
  std::atomic<std::uint64_t> unconfirmed_retries_{0};
  std::atomic<std::uint64_t> faults_{0};
  std::atomic<std::uint64_t> growths_{0};
  std::atomic<std::uint64_t> failures_{0};
  // The bytes of the end-of-file page past an unaligned size, kept across a growth (lock_).
  std::byte tail_[65536];
};

}  // namespace mapwright::detail
