#include "growth.h"

#include <sched.h>
#include <sys/mman.h>

#include <cerrno>
#include <cstring>

#include "block.h"
#include "line.h"
#include "os/os.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

namespace mapwright::detail {
namespace {

constinit std::atomic<bool> g_populate_supported{true};

// More faults below the committed size than any number of threads racing one growth could
// produce: on kernels without MADV_POPULATE_WRITE this bounds a fault that retrying cannot fix.
constexpr std::uint64_t kMaxUnconfirmedRetries = 1u << 16;

std::uint64_t align_up(std::uint64_t value, std::uint64_t alignment) noexcept {
  return (value + alignment - 1) / alignment * alignment;
}

}  // namespace

GrowthOwner::GrowthOwner(std::string name, int fd, std::byte* base, GrowthPolicy policy,
                         Backing backing, std::uint64_t size) noexcept
    : name_(std::move(name)),
      fd_(fd),
      base_(base),
      policy_(policy),
      backing_(backing),
      page_(os::page_size()),
      committed_(size) {}

void GrowthOwner::set_populate_supported_for_testing(bool supported) noexcept {
  g_populate_supported.store(supported, std::memory_order_relaxed);
}

GrowthCounters GrowthOwner::counters() const noexcept {
  return {faults_.load(std::memory_order_relaxed), growths_.load(std::memory_order_relaxed),
          failures_.load(std::memory_order_relaxed)};
}

void GrowthOwner::lock() noexcept {
  // Held for one fallocate/ftruncate at most, by a handler or by code with signals blocked.
  while (lock_.exchange(true, std::memory_order_acquire)) sched_yield();
}

void GrowthOwner::fail(FaultFailure* failure, int error, const char* operation,
                       std::uint64_t size, std::uint64_t offset, const char* reason) noexcept {
  failures_.fetch_add(1, std::memory_order_relaxed);
  failure->error = error;
  failure->operation = operation;
  LineWriter(failure->subject, sizeof failure->subject).text(name_.c_str());
  LineWriter detail(failure->detail, sizeof failure->detail);
  if (size != 0) detail.text("to ").bytes(size);
  if (offset != UINT64_MAX) {
    detail.text(size != 0 ? " (store at offset " : "(store at offset ").number(offset).text(")");
  }
  if (reason != nullptr) detail.text(size != 0 || offset != UINT64_MAX ? ": " : "").text(reason);
}

FaultOutcome GrowthOwner::on_fault(std::uintptr_t address, FaultFailure* failure) noexcept {
  const std::uint64_t offset = address - reinterpret_cast<std::uintptr_t>(base_);
  lock();
  if (offset < committed_.load(std::memory_order_relaxed)) {
    // Another thread grew the file between this thread's fault and now, or the file was
    // shrunk behind the region's back. Find out which without faulting.
    unlock();
    return confirm_backed(address, offset, failure);
  }
  if (!policy_.grow_on_fault) {
    unlock();
    fail(failure, EFAULT, "storing past the end of region", 0, offset,
         "grow_on_fault is off (call ensure() before writing)");
    return FaultOutcome::kFailed;
  }
  const FaultOutcome outcome = grow_locked(offset + 1, offset, failure);
  unlock();
  if (outcome == FaultOutcome::kResolved) faults_.fetch_add(1, std::memory_order_relaxed);
  return outcome;
}

FaultOutcome GrowthOwner::confirm_backed(std::uintptr_t address, std::uint64_t offset,
                                         FaultFailure* failure) noexcept {
  void* page = reinterpret_cast<void*>(address & ~(page_ - 1));
  if (g_populate_supported.load(std::memory_order_relaxed)) {
    const int err = os::madvise(page, page_, MADV_POPULATE_WRITE);
    if (err == 0) {
      faults_.fetch_add(1, std::memory_order_relaxed);
      return FaultOutcome::kResolved;
    }
    if (err != EINVAL) {
      std::uint64_t size = 0;
      const bool shrunk = os::file_size(fd_, &size) == 0 && size <= offset;
      fail(failure, err, "faulting in a page of region", 0, offset,
           shrunk ? "the file was truncated behind the region's back"
                  : "the file is long enough but the page cannot be backed");
      return FaultOutcome::kFailed;
    }
    // EINVAL: a kernel before 5.14; fall through to the size check.
  }
  std::uint64_t size = 0;
  const int err = os::file_size(fd_, &size);
  if (err != 0 || size <= offset) {
    fail(failure, err != 0 ? err : EFAULT, "faulting in a page of region", 0, offset,
         "the file was truncated behind the region's back");
    return FaultOutcome::kFailed;
  }
  if (unconfirmed_retries_.fetch_add(1, std::memory_order_relaxed) >= kMaxUnconfirmedRetries) {
    fail(failure, EFAULT, "faulting in a page of region", 0, offset,
         "the page keeps faulting although the file covers it");
    return FaultOutcome::kFailed;
  }
  faults_.fetch_add(1, std::memory_order_relaxed);
  return FaultOutcome::kResolved;
}

bool GrowthOwner::last_page_backed(std::uint64_t size) const noexcept {
  // The copy of the tail reads the page holding byte size - 1, possibly with signals
  // blocked, where a fault would kill the process: only if the file still covers it (it
  // does unless someone shrank the file behind the region's back).
  std::uint64_t actual = 0;
  return os::file_size(fd_, &actual) == 0 && actual >= size;
}

FaultOutcome GrowthOwner::grow_locked(std::uint64_t need, std::uint64_t fault_offset,
                                      FaultFailure* failure) noexcept {
  const std::uint64_t current = committed_.load(std::memory_order_relaxed);
  if (need <= current) return FaultOutcome::kResolved;
  if (need > policy_.capacity) {
    fail(failure, ENOMEM, "growing region", need, fault_offset,
         "past the region's capacity (RegionOptions::capacity)");
    return FaultOutcome::kFailed;
  }
  // Geometric steps: each step is the current size, clamped to [min_step, max_step].
  std::uint64_t target = current;
  while (target < need) {
    std::uint64_t step = target < policy_.min_step ? policy_.min_step : target;
    if (step > policy_.max_step) step = policy_.max_step;
    target += step;
  }
  target = align_up(target, page_);
  if (target > policy_.capacity) target = policy_.capacity;

  std::uint64_t limit = UINT64_MAX;
  // Whole pages only: a file that ends inside a page leaves the rest of that page mapped but
  // outside the file, where stores neither fault nor reach the file.
  if (os::file_size_limit(&limit) == 0 && limit != UINT64_MAX) limit = limit / page_ * page_;
  if (target > limit) {
    if (need > limit) {
      fail(failure, EFBIG, "growing region", need, fault_offset,
           "beyond RLIMIT_FSIZE (growing would raise SIGXFSZ)");
      return FaultOutcome::kFailed;
    }
    target = limit;
  }

  // Stores past an unaligned end of file in its last page neither fault nor belong to the
  // file, and the kernel zeroes them when the size grows: keep them.
  std::uint64_t tail = 0;
  if (backing_ == Backing::kDisk && current % page_ != 0 && page_ <= sizeof tail_ &&
      last_page_backed(current)) {
    tail = align_up(current, page_) - current;
    std::memcpy(tail_, base_ + current, tail);
  }
  const auto extend_to = [&](std::uint64_t size) noexcept {
    if (backing_ == Backing::kDisk && fallocate_works_.load(std::memory_order_relaxed)) {
      const int e = os::fallocate(fd_, 0, current, size - current);
      if (e != EOPNOTSUPP) return e;
      fallocate_works_.store(false, std::memory_order_relaxed);
    }
    return os::ftruncate(fd_, size);
  };
  int err = extend_to(target);
  // No room for the geometric step: take just what the store (or ensure()) needs, as the
  // capacity and RLIMIT_FSIZE clamps above do.
  const std::uint64_t least = align_up(need, page_) < target ? align_up(need, page_) : target;
  if ((err == ENOSPC || err == EDQUOT) && least < target) {
    err = extend_to(least);
    if (err == 0) target = least;
  }
  if (err != 0) {
    fail(failure, err, "growing region", target, fault_offset, nullptr);
    return FaultOutcome::kFailed;
  }
  if (tail != 0) std::memcpy(base_ + current, tail_, tail);
  committed_.store(target, std::memory_order_release);
  growths_.fetch_add(1, std::memory_order_relaxed);
  unconfirmed_retries_.store(0, std::memory_order_relaxed);
  return FaultOutcome::kResolved;
}

FaultOutcome GrowthOwner::grow(std::uint64_t bytes, FaultFailure* failure) noexcept {
  const SignalBlocker blocked;
  lock();
  const FaultOutcome outcome = grow_locked(bytes, UINT64_MAX, failure);
  unlock();
  return outcome;
}

int GrowthOwner::truncate(std::uint64_t bytes) noexcept {
  const SignalBlocker blocked;
  lock();
  const std::uint64_t current = committed_.load(std::memory_order_relaxed);
  std::uint64_t tail = 0;  // as in grow_locked: keep bytes stored past an unaligned end
  if (backing_ == Backing::kDisk && bytes > current && current % page_ != 0 &&
      page_ <= sizeof tail_ && last_page_backed(current)) {
    tail = align_up(current, page_) - current;
    if (tail > bytes - current) tail = bytes - current;
    std::memcpy(tail_, base_ + current, tail);
  }
  const int err = os::ftruncate(fd_, bytes);
  if (err == 0) {
    if (tail != 0) std::memcpy(base_ + current, tail_, tail);
    committed_.store(bytes, std::memory_order_release);
    unconfirmed_retries_.store(0, std::memory_order_relaxed);
  }
  unlock();
  return err;
}

}  // namespace mapwright::detail
