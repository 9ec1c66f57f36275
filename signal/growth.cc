#include "growth.h"

#include <fcntl.h>
#include <signal.h>

#include <cerrno>
#include <cstring>

#include "block.h"
#include "os/os.h"

namespace mapwright::detail {
namespace {

// More faults below the committed size than any number of threads racing one growth could
// produce: on kernels without MADV_POPULATE_WRITE this bounds a fault that retrying cannot fix.
constexpr std::uint64_t kMaxUnconfirmedRetries = 1u << 16;

constexpr std::uint64_t align_up(std::uint64_t value, std::uint64_t alignment) noexcept {
  return (value + alignment - 1) / alignment * alignment;
}

// The soft RLIMIT_FSIZE in whole pages (a file that ends inside a page leaves the rest of
// that page mapped but outside the file, where stores neither fault nor reach the file);
// UINT64_MAX when unlimited or unknown. Async-signal-safe.
std::uint64_t size_limit(std::uint64_t page) noexcept {
  std::uint64_t limit = UINT64_MAX;
  if (os::file_size_limit(&limit) != 0) return UINT64_MAX;
  return limit == UINT64_MAX ? limit : limit / page * page;
}

// Runs `call` (an ftruncate or fallocate) and takes away a SIGXFSZ it raised: past
// RLIMIT_FSIZE such a call fails with EFBIG AND raises SIGXFSZ, whose default action kills.
// The caller has SIGXFSZ blocked (every signal is, in the handler, in handle_fault() and
// under the SignalBlocker of the ordinary-code paths), so the signal stays pending here; it
// is thread-directed (the kernel's send_sig), so no other thread can take it first. One that
// was pending before the call is left alone. Async-signal-safe.
template <class Call>
int without_sigxfsz(Call call) noexcept {
  os::SignalSet pending = 0;
  (void)os::pending_signals(&pending);
  const int err = call();
  if (err == EFBIG && (pending & os::signal_bit(SIGXFSZ)) == 0) {
    (void)os::discard_pending(SIGXFSZ);
  }
  return err;
}

}  // namespace

// ---- UpwardGrowth ------------------------------------------------------------------------

UpwardGrowth::UpwardGrowth(std::string name, int fd, std::byte* base, GrowthPolicy policy,
                           FileKind kind, std::uint64_t size)
    : name_(std::move(name)),
      fd_(fd),
      base_(base),
      policy_(policy),
      kind_(kind),
      page_(os::page_size()),
      committed_(size) {}

void UpwardGrowth::reserve_tail_buffer() {
  if (!tail_) tail_ = std::make_unique<std::byte[]>(page_);
}

void UpwardGrowth::set_frozen(bool frozen) noexcept {
  const SignalBlocker blocked;
  lock_.lock();
  frozen_.store(frozen, std::memory_order_relaxed);
  lock_.unlock();
}

GrowthCounters UpwardGrowth::counters() const noexcept {
  return {faults_.load(std::memory_order_relaxed), growths_.load(std::memory_order_relaxed),
          failures_.load(std::memory_order_relaxed)};
}

FaultOutcome UpwardGrowth::fail(FaultReport* report, int error, const char* operation,
                                std::uint64_t size, std::uint64_t offset,
                                const char* reason) noexcept {
  failures_.fetch_add(1, std::memory_order_relaxed);
  report->error = error;
  report->operation = operation;
  report->subject = name_.c_str();
  report->size = size;
  report->offset = offset;
  report->reason = reason;
  return FaultOutcome::kFailed;
}

FaultOutcome UpwardGrowth::on_fault(const FaultContext& fault, FaultReport* report) noexcept {
  const std::uint64_t offset = fault.address - reinterpret_cast<std::uintptr_t>(base_);
  lock_.lock();
  if (offset < committed_.load(std::memory_order_relaxed)) {
    // Another thread grew the file between this thread's fault and now, or the file was
    // shrunk behind the region's back. Find out which without faulting.
    lock_.unlock();
    return confirm_backed(fault.address, offset, report);
  }
  if (!policy_.grow_on_fault) {
    lock_.unlock();
    return fail(report, EFAULT, "storing past the end of region", 0, offset,
                "grow_on_fault is off (call ensure() before writing)");
  }
  const FaultOutcome outcome = grow_locked(offset + 1, offset, report);
  lock_.unlock();
  if (outcome == FaultOutcome::kResolved) faults_.fetch_add(1, std::memory_order_relaxed);
  return outcome;
}

FaultOutcome UpwardGrowth::commit(std::uintptr_t begin, std::uintptr_t end,
                                  FaultReport* report) noexcept {
  (void)begin;
  return grow(end - reinterpret_cast<std::uintptr_t>(base_), report);
}

FaultOutcome UpwardGrowth::confirm_backed(std::uintptr_t address, std::uint64_t offset,
                                          FaultReport* report) noexcept {
  void* page = reinterpret_cast<void*>(address & ~(page_ - 1));
  int err = os::madvise(page, page_, os::kMadvPopulateWrite);
  if (err == 0) {
    faults_.fetch_add(1, std::memory_order_relaxed);
    return FaultOutcome::kResolved;
  }
  std::uint64_t size = 0;
  const bool known = os::file_size(fd_, &size) == 0;
  if (known && size <= offset) {
    return fail(report, EFAULT, "faulting in a page of region", 0, offset,
                "the file was truncated behind the region's back");
  }
  // The file covers the page, yet it cannot be faulted in (or this kernel cannot tell). On
  // disk, asking the filesystem for the page says why (ENOSPC for a hole on a full
  // filesystem, where the fault itself only says EFAULT), and if it gets it, the page can
  // be faulted in after all.
  if (kind_ == FileKind::kDisk) {
    const std::uint64_t first = offset / page_ * page_;
    const int allocated = without_sigxfsz([&] {
      return os::fallocate(fd_, FALLOC_FL_KEEP_SIZE, first, page_);
    });
    if (allocated != 0 && allocated != EOPNOTSUPP) {
      return fail(report, allocated, "faulting in a page of region", 0, offset,
                  "the file is long enough but the page cannot be backed");
    }
    if (allocated == 0 && err != EINVAL &&
        os::madvise(page, page_, os::kMadvPopulateWrite) == 0) {
      faults_.fetch_add(1, std::memory_order_relaxed);
      return FaultOutcome::kResolved;
    }
  }
  if (err != EINVAL) {
    return fail(report, err, "faulting in a page of region", 0, offset,
                "the file is long enough but the page cannot be backed");
  }
  // EINVAL: a kernel before 5.14 without MADV_POPULATE_WRITE. The file covers the page: let
  // the store retry, a bounded number of times.
  if (!known) {
    return fail(report, EFAULT, "faulting in a page of region", 0, offset,
                "the file's size cannot be read");
  }
  if (unconfirmed_retries_.fetch_add(1, std::memory_order_relaxed) >= kMaxUnconfirmedRetries) {
    return fail(report, EFAULT, "faulting in a page of region", 0, offset,
                "the page keeps faulting although the file covers it");
  }
  faults_.fetch_add(1, std::memory_order_relaxed);
  return FaultOutcome::kResolved;
}

std::uint64_t UpwardGrowth::save_tail(std::uint64_t current, std::uint64_t limit) noexcept {
  // Stores past an unaligned end of file in its last page neither fault nor belong to the
  // file, and the kernel zeroes them when the size grows: keep them. The copy reads the
  // page holding byte current - 1, possibly with signals blocked, where a fault would kill
  // the process: only if the file still covers it (it does unless someone shrank the file
  // behind the region's back).
  if (kind_ != FileKind::kDisk || current % page_ == 0 || !tail_) return 0;
  std::uint64_t actual = 0;
  if (os::file_size(fd_, &actual) != 0 || actual < current) return 0;
  std::uint64_t length = align_up(current, page_) - current;
  if (length > limit - current) length = limit - current;
  std::memcpy(tail_.get(), base_ + current, length);
  return length;
}

void UpwardGrowth::restore_tail(std::uint64_t current, std::uint64_t length) noexcept {
  if (length != 0) std::memcpy(base_ + current, tail_.get(), length);
}

int UpwardGrowth::extend(std::uint64_t from, std::uint64_t to) noexcept {
  return without_sigxfsz([&] {
    if (to > from && kind_ == FileKind::kDisk && fallocate_works_.load(std::memory_order_relaxed)) {
      const int err = os::fallocate(fd_, 0, from, to - from);
      if (err != EOPNOTSUPP) return err;
      fallocate_works_.store(false, std::memory_order_relaxed);
    }
    return os::ftruncate(fd_, to);
  });
}

FaultOutcome UpwardGrowth::grow_locked(std::uint64_t need, std::uint64_t fault_offset,
                                       FaultReport* report) noexcept {
  const std::uint64_t current = committed_.load(std::memory_order_relaxed);
  if (need <= current) return FaultOutcome::kResolved;
  if (frozen_.load(std::memory_order_relaxed)) {
    return fail(report, EPERM, "growing region", need, fault_offset, "the region is being sealed");
  }
  if (need > policy_.capacity) {
    return fail(report, ENOMEM, "growing region", need, fault_offset,
                "past the region's capacity (RegionOptions::capacity)");
  }
  std::uint64_t target = growth_target(current, need, policy_, page_);
  const std::uint64_t limit = size_limit(page_);
  if (target > limit) {
    if (need > limit) {
      return fail(report, EFBIG, "growing region", need, fault_offset,
                  "beyond RLIMIT_FSIZE (growing would raise SIGXFSZ)");
    }
    target = limit;
  }
  const std::uint64_t tail = save_tail(current, target);
  int err = extend(current, target);
  // No room for the geometric step: take just what the store (or ensure()) needs, as the
  // capacity and RLIMIT_FSIZE clamps above do.
  const std::uint64_t least = align_up(need, page_) < target ? align_up(need, page_) : target;
  if ((err == ENOSPC || err == EDQUOT) && least < target) {
    err = extend(current, least);
    if (err == 0) target = least;
  }
  restore_tail(current, tail);
  if (err != 0) {
    return fail(report, err, "growing region", target, fault_offset,
                err == EFBIG ? "beyond RLIMIT_FSIZE" : nullptr);
  }
  committed_.store(target, std::memory_order_release);
  growths_.fetch_add(1, std::memory_order_relaxed);
  unconfirmed_retries_.store(0, std::memory_order_relaxed);
  return FaultOutcome::kResolved;
}

FaultOutcome UpwardGrowth::grow(std::uint64_t bytes, FaultReport* report) noexcept {
  const SignalBlocker blocked;
  lock_.lock();
  const FaultOutcome outcome = grow_locked(bytes, kNoOffset, report);
  lock_.unlock();
  return outcome;
}

FaultOutcome UpwardGrowth::truncate(std::uint64_t bytes, FaultReport* report) noexcept {
  if (bytes > policy_.capacity) {
    return fail(report, EINVAL, "finishing region", bytes, kNoOffset,
                "more than its capacity (RegionOptions::capacity)");
  }
  const SignalBlocker blocked;
  lock_.lock();
  const std::uint64_t current = committed_.load(std::memory_order_relaxed);
  FaultOutcome outcome = FaultOutcome::kResolved;
  if (bytes > current && bytes > size_limit(1)) {
    outcome = fail(report, EFBIG, "finishing region", bytes, kNoOffset,
                   "beyond RLIMIT_FSIZE (growing would raise SIGXFSZ)");
  } else {
    const std::uint64_t tail = bytes > current ? save_tail(current, bytes) : 0;
    const int err = extend(current, bytes);
    restore_tail(current, tail);
    if (err != 0) {
      outcome = fail(report, err, "finishing region", bytes, kNoOffset,
                     err == EFBIG ? "beyond RLIMIT_FSIZE" : nullptr);
    } else {
      committed_.store(bytes, std::memory_order_release);
      unconfirmed_retries_.store(0, std::memory_order_relaxed);
    }
  }
  lock_.unlock();
  return outcome;
}

// ---- DownwardGrowth ----------------------------------------------------------------------

DownwardGrowth::DownwardGrowth(std::string name, int fd, std::byte* base,
                               std::uint64_t capacity, FileKind kind) noexcept
    : name_(std::move(name)), fd_(fd), base_(base), capacity_(capacity), kind_(kind) {}

int DownwardGrowth::start() noexcept {
  const SignalBlocker blocked;  // without_sigxfsz()'s rule
  return without_sigxfsz([&] { return os::ftruncate(fd_, capacity_); });
}

FaultOutcome DownwardGrowth::on_fault(const FaultContext& fault, FaultReport* report) noexcept {
  const std::uint64_t offset = fault.address - reinterpret_cast<std::uintptr_t>(base_);
  report->error = EFAULT;
  report->operation = "faulting in a page of region";
  report->subject = name_.c_str();
  report->offset = offset;
  report->reason = offset < capacity_ - committed()
                       ? "below the committed part (call commit_down() first)"
                       : "the file was truncated behind the region's back, or a page cannot be backed";
  return FaultOutcome::kFailed;
}

FaultOutcome DownwardGrowth::commit(std::uintptr_t begin, std::uintptr_t end,
                                    FaultReport* report) noexcept {
  (void)end;
  return commit_down(reinterpret_cast<std::uintptr_t>(top()) - begin, report);
}

FaultOutcome DownwardGrowth::commit_down(std::uint64_t bytes, FaultReport* report) noexcept {
  const std::uint64_t page = os::page_size();
  const std::uint64_t current = committed();
  if (bytes <= current) return FaultOutcome::kResolved;
  report->subject = name_.c_str();
  report->operation = "growing region downward";
  report->size = bytes;
  if (bytes > capacity_) {
    report->error = ENOMEM;
    report->reason = "past the region's capacity";
    return FaultOutcome::kFailed;
  }
  const std::uint64_t bottom = (capacity_ - bytes) / page * page;
  const std::uint64_t old_bottom = capacity_ - current;
  if (kind_ == FileKind::kDisk) {
    const SignalBlocker blocked;  // without_sigxfsz()'s rule
    const int err = without_sigxfsz([&] {
      return os::fallocate(fd_, FALLOC_FL_KEEP_SIZE, bottom, old_bottom - bottom);
    });
    if (err != 0 && err != EOPNOTSUPP) {
      report->error = err;
      return FaultOutcome::kFailed;
    }
  }
  if (const int err = os::map_shared_fixed(base_ + bottom, old_bottom - bottom, fd_, bottom);
      err != 0) {
    report->error = err;
    report->reason = "mapping the new part";
    return FaultOutcome::kFailed;
  }
  committed_.store(capacity_ - bottom, std::memory_order_release);
  return FaultOutcome::kResolved;
}

}  // namespace mapwright::detail
