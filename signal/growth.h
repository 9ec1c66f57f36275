// signal/growth.h — the growth owners: a file that grows upward from offset 0 when stores run
// past its end (UpwardGrowth, what Region uses), and one that grows downward from a fixed top
// by explicit commits (DownwardGrowth, what a builder that writes back to front uses).
//
// Memory layout of an upward-growing region:
//
//     base                        base + committed            base + capacity (+ guard)
//     ├── backed by the file ─────┼── reserved, past EOF ───────┤
//     │   (loads and stores work) │   (a touch raises SIGBUS    │
//     │                           │    BUS_ADRERR → on_fault)   │
//
// Invariants kept here:
//   * committed_ <= the file's size at all times: the file grows first, then committed_ is
//     published (release). Only truncate() moves it down.
//   * committed_ only changes under lock_ (an OwnerLock: in the handler, or with every signal
//     blocked), so a handler never waits for its own thread (invariant 2).
//   * Growth is checked before it acts: capacity, then RLIMIT_FSIZE read afresh, then
//     fallocate/ftruncate (invariant 6). The file calls run with SIGXFSZ blocked (as every
//     signal is, wherever the lock is held), and a SIGXFSZ they raise is taken away: a limit lowered between the check and the call gives
//     EFBIG, never death by SIGXFSZ.
//   * On disk, every byte this owner added below committed_ has blocks (fallocate at growth
//     and at truncate() upward), so a full disk is reported at growth. Holes it did not make
//     (an opened sparse file, a hole punched by a builder or behind its back) are asked of
//     the filesystem when a store faults in one: a full disk is then a failed fault with the
//     filesystem's ENOSPC, never EFAULT.
//   * A fault is answered kResolved only if the retried store can succeed: a fault below
//     committed_ (another thread grew meanwhile) is confirmed with MADV_POPULATE_WRITE, which
//     reports instead of faulting when the page still cannot be backed (invariant 1).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "fault_owner.h"
#include "growth_policy.h"
#include "owner_lock.h"

namespace mapwright::detail {

enum class FileKind {
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

class UpwardGrowth final : public FaultOwner {
 public:
  // `base` maps `fd` from offset 0 for policy.capacity bytes; the file is `size` bytes now.
  // Not async-signal-safe (copies the name).
  UpwardGrowth(std::string name, int fd, std::byte* base, GrowthPolicy policy, FileKind kind,
               std::uint64_t size);

  // The handler's entry. Async-signal-safe.
  FaultOutcome on_fault(const FaultContext& fault, FaultReport* report) noexcept override;
  // Grows the file to cover [begin, end). Not async-signal-safe.
  FaultOutcome commit(std::uintptr_t begin, std::uintptr_t end,
                      FaultReport* report) noexcept override;

  // Grows the file so that at least `bytes` are backed, in the same geometric steps as a
  // fault. Blocks all signals while holding the lock. Not async-signal-safe.
  FaultOutcome grow(std::uint64_t bytes, FaultReport* report) noexcept;
  // Sets the file size to exactly `bytes`, up (with blocks allocated on disk) or down, and
  // committed_ with it. Past RLIMIT_FSIZE: EFBIG, checked first. Not async-signal-safe.
  FaultOutcome truncate(std::uint64_t bytes, FaultReport* report) noexcept;
  // Gets the one-page buffer that keeps bytes stored past an unaligned end of file across a
  // growth (see region.h). Needed only after an unaligned truncate() or an unaligned open,
  // so it is allocated then, here, in ordinary code (never in the handler, never with
  // signals blocked). Throws std::bad_alloc. Not async-signal-safe.
  void reserve_tail_buffer();
  // While frozen, growth fails with EPERM (faults and grow() alike), so that none slips in
  // between the steps of sealing. Takes the lock. Not async-signal-safe.
  void set_frozen(bool frozen) noexcept;

  // Bytes backed by the file now. Async-signal-safe.
  std::uint64_t committed() const noexcept { return committed_.load(std::memory_order_acquire); }
  // Both async-signal-safe (immutable after construction).
  const GrowthPolicy& policy() const noexcept { return policy_; }
  const std::string& name() const noexcept { return name_; }
  // Relaxed snapshot of the counters. Async-signal-safe.
  GrowthCounters counters() const noexcept;

 private:
  // Grows to cover `need` bytes; lock_ held. `fault_offset` is kNoOffset for grow().
  // Async-signal-safe, as are the helpers below.
  FaultOutcome grow_locked(std::uint64_t need, std::uint64_t fault_offset,
                           FaultReport* report) noexcept;
  // Sets the file's size to `to` from committed size `from` (allocating on disk when it
  // grows); SIGXFSZ blocked and a raised one taken away. Returns 0 or an errno.
  int extend(std::uint64_t from, std::uint64_t to) noexcept;
  FaultOutcome confirm_backed(std::uintptr_t address, std::uint64_t offset,
                              FaultReport* report) noexcept;
  FaultOutcome fail(FaultReport* report, int error, const char* operation, std::uint64_t size,
                    std::uint64_t offset, const char* reason) noexcept;
  // Copies the bytes past an unaligned end of file out of (save) and back into (restore)
  // the last page, around a change of size that the kernel zeroes them in.
  std::uint64_t save_tail(std::uint64_t current, std::uint64_t limit) noexcept;
  void restore_tail(std::uint64_t current, std::uint64_t length) noexcept;

  const std::string name_;  // immutable after construction; read by the handler
  const int fd_;
  std::byte* const base_;
  const GrowthPolicy policy_;
  const FileKind kind_;
  const std::uint64_t page_;

  std::atomic<std::uint64_t> committed_;
  OwnerLock lock_;
  std::atomic<bool> fallocate_works_{true};
  std::atomic<bool> frozen_{false};
  // Faults below committed_ since the last growth, on kernels without MADV_POPULATE_WRITE:
  // a bound, so that a page that can never be backed is not retried forever.
  std::atomic<std::uint64_t> unconfirmed_retries_{0};
  std::atomic<std::uint64_t> faults_{0};
  std::atomic<std::uint64_t> growths_{0};
  std::atomic<std::uint64_t> failures_{0};
  // One page, or null (see reserve_tail_buffer()); set before an unaligned size can exist.
  std::unique_ptr<std::byte[]> tail_;
};

// A file that grows DOWNWARD from a fixed top: the bytes in use are [top - committed, top),
// the top is the end of the reservation, and data once written never moves. The file is
// `capacity` bytes long from the start (sparse), mapped only where committed; below that
// the reservation is PROT_NONE, so a stray store there is a SIGSEGV (not a fault this owner
// resolves). Growth is explicit (commit_down()), so a full disk is an error at that call.
//
//     base                    top - committed                      top = base + capacity
//     ├── PROT_NONE ───────────┼── file offsets [capacity - committed, capacity) ──┤
class DownwardGrowth final : public FaultOwner {
 public:
  // `base` is a reservation of `capacity` bytes (PROT_NONE); `fd` a file of any size, which
  // this sizes to `capacity`. Not async-signal-safe.
  DownwardGrowth(std::string name, int fd, std::byte* base, std::uint64_t capacity,
                 FileKind kind) noexcept;
  // Sizes the file and maps nothing yet. Returns 0 or an errno. Not async-signal-safe.
  int start() noexcept;

  // Faults inside the committed range (a file shrunk behind the owner's back, a page that
  // cannot be backed) are reported as failed. Async-signal-safe.
  FaultOutcome on_fault(const FaultContext& fault, FaultReport* report) noexcept override;
  FaultOutcome commit(std::uintptr_t begin, std::uintptr_t end,
                      FaultReport* report) noexcept override;
  // Makes the top `bytes` usable (allocating on disk, then mapping the new part).
  // Not async-signal-safe.
  FaultOutcome commit_down(std::uint64_t bytes, FaultReport* report) noexcept;

  std::byte* top() const noexcept { return base_ + capacity_; }
  std::uint64_t committed() const noexcept { return committed_.load(std::memory_order_acquire); }

 private:
  const std::string name_;
  const int fd_;
  std::byte* const base_;
  const std::uint64_t capacity_;
  const FileKind kind_;
  std::atomic<std::uint64_t> committed_{0};
};

}  // namespace mapwright::detail
