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

LazyFill::LazyFill(std::string name, int uffd, std::byte* base, const CompressedFrames* frames,
                   FrameDecoders* decoders)
    : name_(std::move(name)),
      uffd_(uffd),
      base_(base),
      page_(os::page_size()),
      window_(frames->frame_bytes / os::page_size()),
      frames_(frames),
      decoders_(decoders) {
  full_pages_.store(frames->size / page_, std::memory_order_relaxed);
  pages_.store((frames->size + page_ - 1) / page_, std::memory_order_release);
}

void LazyFill::rebind(LazySourceBytes source) noexcept {
  // Shrinking first and growing last: a stray touch sees a range no larger than both.
  pages_.store(0, std::memory_order_relaxed);
  bytes_.store(source.bytes, std::memory_order_relaxed);
  tail_.store(source.tail, std::memory_order_relaxed);
  full_pages_.store(source.size / page_, std::memory_order_relaxed);
  pages_.store(source.size / page_ + (source.size % page_ != 0 ? 1 : 0), std::memory_order_release);
}

int LazyFill::fill_pages(std::uint64_t first, std::uint64_t last, bool skip_existing,
                         std::uint64_t* stopped) noexcept {
  return fill_from(nullptr, 0, first, last, skip_existing, stopped);
}

// Not instrumented by ASan or TSan: see os::fill_missing().
__attribute__((no_sanitize_address, no_sanitize_thread))
int LazyFill::fill_from(const std::byte* frame, std::uint64_t frame_first, std::uint64_t first,
                        std::uint64_t last, bool skip_existing, std::uint64_t* stopped) noexcept {
  const std::uint64_t full = full_pages_.load(std::memory_order_relaxed);
  const std::byte* const bytes = bytes_.load(std::memory_order_relaxed);
  const std::byte* const tail_page = tail_.load(std::memory_order_relaxed);
  std::uint64_t page = first;
  unsigned again = 0;
  while (page < last) {
    // A decoded frame is whole pages, zero-padded: no tail to take apart.
    const bool tail = frame == nullptr && page >= full;
    if (tail && tail_page == nullptr) break;  // a stray touch during a rebind
    const std::uint64_t count = frame != nullptr ? last - page
                                : tail           ? 1
                                                 : (last < full ? last : full) - page;
    const std::byte* from = frame != nullptr ? frame + (page - frame_first) * page_
                            : tail           ? tail_page
                                             : bytes + page * page_;
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

// Not instrumented by ASan or TSan: see os::fill_missing().
__attribute__((no_sanitize_address, no_sanitize_thread))
int LazyFill::fill_frame(std::uint64_t index, std::uint64_t page, bool all,
                         std::uint64_t* stopped, const char** reason) noexcept {
  const std::uint64_t frame_pages = frames_->frame_bytes / page_;
  const std::uint64_t pages = pages_.load(std::memory_order_relaxed);
  const std::uint64_t first = index * frame_pages;
  const std::uint64_t end = pages - first < frame_pages ? pages : first + frame_pages;
  const std::byte* frame = nullptr;
  if (const int err = decoders_->decode(*frames_, index, &frame, reason); err != 0) {
    *stopped = page;
    return err;
  }
  int err = 0;
  if (all) {
    err = fill_from(frame, first, first, end, true, stopped);
  } else {
    err = fill_from(frame, first, page, end, false, stopped);
    std::uint64_t ignored = first;
    // The frame's pages before the faulting one, best effort: stops at the first page there.
    if (page > first) (void)fill_from(frame, first, first, page, false, &ignored);
  }
  decoders_->release(frame);
  return err;
}

FaultOutcome LazyFill::fail(FaultReport* report, int error, std::uint64_t page,
                            const char* reason) noexcept {
  // Closing: the range is (being) made inaccessible, and the retried access faults on that.
  // Not a loop: that fault is a SIGSEGV, not a SIGBUS this owner sees again.
  if (closing_.load(std::memory_order_acquire)) return FaultOutcome::kResolved;
  failures_.fetch_add(1, std::memory_order_relaxed);
  report->error = error;
  report->operation = "filling lazy image";
  report->subject = name_.c_str();
  report->offset = page * page_;
  report->access = "touch";  // a load or a store: a missing page faults for both
  report->reason = reason != nullptr ? reason
                   : error == EFAULT  ? "its source could not be read (a file that shrank?)"
                   : error == ENOMEM  ? "no memory for the page"
                                      : nullptr;
  return FaultOutcome::kFailed;
}

// Not instrumented by ASan or TSan: see os::fill_missing().
__attribute__((no_sanitize_address, no_sanitize_thread))
FaultOutcome LazyFill::on_fault(const FaultContext& fault, FaultReport* report) noexcept {
  const std::uint64_t pages = pages_.load(std::memory_order_acquire);
  const std::uint64_t page = (fault.address - reinterpret_cast<std::uintptr_t>(base_)) / page_;
  if (page >= pages) return fail(report, EFAULT, page, nullptr);
  // The faulting page first, then the rest of its window after it, in one copy. The window is
  // the aligned block of window_ pages, or for a compressed source the frame holding the page
  // (decoded here, and filled before and after the page by fill_frame).
  std::uint64_t stopped = page;
  std::uint64_t window_start = page;
  const char* reason = nullptr;
  int err = 0;
  if (frames_ != nullptr) {
    err = fill_frame(page * page_ / frames_->frame_bytes, page, false, &stopped, &reason);
  } else {
    window_start = page / window_ * window_;
    const std::uint64_t window_end = pages - window_start < window_ ? pages : window_start + window_;
    err = fill_pages(page, window_end, false, &stopped);
  }
  if (stopped == page) {
    // Nothing filled at the faulting page: an error, or the page is there already (another
    // thread filled it first). Confirm the latter rather than trust it: the retried access
    // must succeed (invariant 1). MADV_POPULATE_READ fails instead of faulting.
    if (err != 0) return fail(report, err, page, reason);
    if (const int missing = os::madvise(base_ + page * page_, page_, os::kMadvPopulateRead);
        missing != 0 && missing != EINVAL) {  // EINVAL: a kernel before 5.14; trust EEXIST
      return fail(report, missing, page, nullptr);
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
  if (frames_ == nullptr) {
    if (const int err = fill_pages(first, last, true, &stopped); err != 0) {
      return fail(report, err, stopped, nullptr);
    }
    return FaultOutcome::kResolved;
  }
  // A compressed source: each frame that has a missing page in the range is decoded once
  // (MADV_POPULATE_READ fails on a missing page instead of faulting, so frames already
  // there are not decoded again).
  const std::uint64_t frame_pages = frames_->frame_bytes / page_;
  for (std::uint64_t index = first / frame_pages; index * frame_pages < last; ++index) {
    const std::uint64_t from = index * frame_pages < first ? first : index * frame_pages;
    const std::uint64_t to = (index + 1) * frame_pages < last ? (index + 1) * frame_pages : last;
    if (os::madvise(base_ + from * page_, (to - from) * page_, os::kMadvPopulateRead) == 0) {
      continue;
    }
    const char* reason = nullptr;
    if (const int err = fill_frame(index, from, true, &stopped, &reason); err != 0) {
      return fail(report, err, stopped, reason);
    }
  }
  return FaultOutcome::kResolved;
}

LazyCounters LazyFill::counters() const noexcept {
  return {faults_.load(std::memory_order_relaxed), pages_filled_.load(std::memory_order_relaxed),
          failures_.load(std::memory_order_relaxed)};
}

}  // namespace mapwright::detail
