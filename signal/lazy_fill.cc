#include "lazy_fill.h"

#include <sched.h>
#include <sys/mman.h>

#include <cerrno>
#include <utility>

#include "os/os.h"

namespace mapwright::detail {
namespace {

// UFFDIO_COPY answers EAGAIN with nothing copied while the address space is changing (a
// non-cooperative event in flight): retried this many times, yielding between tries, then
// reported. A bound, so that a fault never loops (invariant 1).
constexpr unsigned kMaxAgain = 1000;

}  // namespace

LazyFill::LazyFill(std::string name, int uffd, std::byte* base, LazySourceBytes source,
                   std::uint64_t window_pages)
    : name_(std::move(name)),
      uffd_(uffd),
      base_(base),
      page_(os::page_size()),
      window_(window_pages == 0 ? 1 : window_pages) {
  rebind(source);
}

void LazyFill::rebind(LazySourceBytes source) noexcept {
  // Shrinking first and growing last: a stray touch sees a range no larger than both.
  pages_.store(0, std::memory_order_relaxed);
  bytes_.store(source.bytes, std::memory_order_relaxed);
  tail_.store(source.tail, std::memory_order_relaxed);
  full_pages_.store(source.size / page_, std::memory_order_relaxed);
  pages_.store(source.size / page_ + (source.size % page_ != 0 ? 1 : 0), std::memory_order_release);
}

// Not instrumented by ASan or TSan: see os::fill_missing().
__attribute__((no_sanitize_address, no_sanitize_thread))
int LazyFill::fill_pages(std::uint64_t first, std::uint64_t last, bool skip_existing,
                         std::uint64_t* stopped) noexcept {
  const std::uint64_t full = full_pages_.load(std::memory_order_relaxed);
  const std::byte* const bytes = bytes_.load(std::memory_order_relaxed);
  const std::byte* const tail_page = tail_.load(std::memory_order_relaxed);
  std::uint64_t page = first;
  unsigned again = 0;
  while (page < last) {
    const bool tail = page >= full;
    if (tail && tail_page == nullptr) break;  // a stray touch during a rebind
    const std::uint64_t count = tail ? 1 : (last < full ? last : full) - page;
    const std::byte* from = tail ? tail_page : bytes + page * page_;
    std::uint64_t filled = 0;
    const int err = os::fill_missing(uffd_, base_ + page * page_, from, count * page_, &filled);
    const std::uint64_t done = filled / page_;
    if (done != 0) pages_filled_.fetch_add(done, std::memory_order_relaxed);
    page += done;
    if (err == 0) continue;
    // Stopped part way (the kernel says EAGAIN for a partial copy): the next call at `page`
    // tells why.
    if (done != 0) {
      again = 0;
      continue;
    }
    if (err == EEXIST) {
      if (!skip_existing) break;
      ++page;
      continue;
    }
    if (err == EAGAIN && ++again < kMaxAgain) {
      (void)::sched_yield();
      continue;
    }
    *stopped = page;
    return err;
  }
  *stopped = page;
  return 0;
}

FaultOutcome LazyFill::fail(FaultReport* report, int error, std::uint64_t page) noexcept {
  // Closing: the range is (being) made inaccessible, and the retried access faults on that.
  // Not a loop: that fault is a SIGSEGV, not a SIGBUS this owner sees again.
  if (closing_.load(std::memory_order_acquire)) return FaultOutcome::kResolved;
  failures_.fetch_add(1, std::memory_order_relaxed);
  report->error = error;
  report->operation = "filling lazy image";
  report->subject = name_.c_str();
  report->offset = page * page_;
  report->access = "touch";  // a load or a store: a missing page faults for both
  report->reason = error == EFAULT    ? "its source could not be read (a file that shrank?)"
                   : error == ENOMEM ? "no memory for the page"
                                     : nullptr;
  return FaultOutcome::kFailed;
}

// Not instrumented by ASan or TSan: see os::fill_missing().
__attribute__((no_sanitize_address, no_sanitize_thread))
FaultOutcome LazyFill::on_fault(const FaultContext& fault, FaultReport* report) noexcept {
  const std::uint64_t pages = pages_.load(std::memory_order_acquire);
  const std::uint64_t page = (fault.address - reinterpret_cast<std::uintptr_t>(base_)) / page_;
  if (page >= pages) return fail(report, EFAULT, page);
  const std::uint64_t window_start = page / window_ * window_;
  const std::uint64_t window_end = pages - window_start < window_ ? pages : window_start + window_;
  // The faulting page first, then the rest of its window after it, in one copy.
  std::uint64_t stopped = page;
  const int err = fill_pages(page, window_end, false, &stopped);
  if (stopped == page) {
    // Nothing filled at the faulting page: an error, or the page is there already (another
    // thread filled it first). Confirm the latter rather than trust it: the retried access
    // must succeed (invariant 1). MADV_POPULATE_READ fails instead of faulting.
    if (err != 0) return fail(report, err, page);
    if (const int missing = os::madvise(base_ + page * page_, page_, os::kMadvPopulateRead);
        missing != 0 && missing != EINVAL) {  // EINVAL: a kernel before 5.14; trust EEXIST
      return fail(report, missing, page);
    }
  }
  // The window's pages before the faulting one, best effort: stops at the first page there.
  if (page > window_start) (void)fill_pages(window_start, page, false, &stopped);
  faults_.fetch_add(1, std::memory_order_relaxed);
  return FaultOutcome::kResolved;
}

FaultOutcome LazyFill::commit(std::uintptr_t begin, std::uintptr_t end,
                              FaultReport* report) noexcept {
  const auto base = reinterpret_cast<std::uintptr_t>(base_);
  const std::uint64_t pages = pages_.load(std::memory_order_acquire);
  if (end <= begin || end <= base || begin >= base + pages * page_) return FaultOutcome::kResolved;
  const std::uint64_t first = (begin < base ? 0 : begin - base) / page_;
  std::uint64_t last = (end - base + page_ - 1) / page_;
  if (last > pages) last = pages;
  std::uint64_t stopped = first;
  if (const int err = fill_pages(first, last, true, &stopped); err != 0) {
    return fail(report, err, stopped);
  }
  return FaultOutcome::kResolved;
}

LazyCounters LazyFill::counters() const noexcept {
  return {faults_.load(std::memory_order_relaxed), pages_filled_.load(std::memory_order_relaxed),
          failures_.load(std::memory_order_relaxed)};
}

}  // namespace mapwright::detail
