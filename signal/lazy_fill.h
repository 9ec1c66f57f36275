// signal/lazy_fill.h — the lazy owner: a range of private anonymous memory whose pages are
// filled from a source on first touch, in the thread that touches them.
//
// The range is registered with a userfaultfd in SIGBUS mode (os::open_lazy_fill): a touch of
// a missing page raises SIGBUS (BUS_ADRERR) in the touching thread, the handler finds this
// owner in the range table, and on_fault() copies the page — or the window of pages around
// it — from the source into place with UFFDIO_COPY, atomically per page, and returns. No
// thread waits on the fd and no thread is woken: the design Lucet ran with a handler thread,
// minus the thread (the one that faults does the copy; two faulting threads copy at once).
//
//     base                                                   base + pages × page
//     ├── page 0 ── page 1 ── … ── page full−1 ── [tail page] ┤
//         copied from source.bytes + i × page     copied from source.tail (the last partial
//                                                 page, zero-padded, prepared in advance)
//
// Invariants kept here:
//   * A fault is answered kResolved only when the faulting page is there: filled now, or
//     found already filled (EEXIST: another thread won the race). Any other outcome is
//     kFailed with a report, never a retry (invariant 1); EAGAIN (the address space is
//     changing) is retried a bounded number of times, then reported.
//   * on_fault() reads immutable members and the source's atomics (changed only by
//     rebind(), while no thread touches the range) and bumps relaxed counters: no lock, no
//     allocation (invariant 2). The source stays readable for as long as it is bound, and
//     the owner outlives every handler that found it (invariant 4).
//   * Bytes of the source beyond its size never reach the range: the last partial page comes
//     from `tail`, which holds zeros past the end.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

#include "fault_owner.h"
#include "frame_decoders.h"

namespace mapwright::detail {

struct LazySourceBytes {
  // Readable for every whole page of [0, size): bytes + i × page for i < size / page.
  const std::byte* bytes = nullptr;
  std::uint64_t size = 0;
  // One page: the source's last partial page followed by zeros; null when size is a multiple
  // of the page size.
  const std::byte* tail = nullptr;
};

struct LazyCounters {
  std::uint64_t faults = 0;        // faults resolved
  std::uint64_t pages_filled = 0;  // pages copied in (by faults and by commit())
  std::uint64_t failures = 0;      // faults or commit() calls that could not be resolved
};

class LazyFill final : public FaultOwner {
 public:
  // `base` is registered with `uffd` (missing mode) for pages(size) pages. `window_pages` (at
  // least 1) pages are filled per fault: the aligned block of that many pages around the
  // faulting one, clipped to the range. Not async-signal-safe (copies the name).
  LazyFill(std::string name, int uffd, std::byte* base, LazySourceBytes source,
           std::uint64_t window_pages);
  // A compressed source: `frames` and `decoders` outlive the owner; the window is a frame.
  // Not async-signal-safe.
  LazyFill(std::string name, int uffd, std::byte* base, const CompressedFrames* frames,
           FrameDecoders* decoders);

  // The handler's entry. Async-signal-safe.
  FaultOutcome on_fault(const FaultContext& fault, FaultReport* report) noexcept override;
  // Fills every missing page of [begin, end) (rounded out to pages, clipped to the range), so
  // that a system call may read or write them. Not async-signal-safe (it is in practice).
  FaultOutcome commit(std::uintptr_t begin, std::uintptr_t end,
                      FaultReport* report) noexcept override;

  // The image is going: from now on a fill that fails is answered kResolved, for the
  // retried access to meet the protection the destructor puts on the range (a SIGSEGV)
  // instead of a report about a fill nobody needs. Async-signal-safe.
  void close() noexcept { closing_.store(true, std::memory_order_release); }

  // Points the owner at another source (a pool slot given another image), or at none (an
  // empty source: size 0). Only while no thread touches the range; a stray touch meanwhile
  // (the caller's race) may be filled from either source, never from freed memory of this
  // object. Async-signal-safe (plain stores), though only ordinary code calls it.
  void rebind(LazySourceBytes source) noexcept;
  // Whether `address` lies in the pages of the current source. Async-signal-safe.
  bool covers(std::uintptr_t address) const noexcept {
    const auto base = reinterpret_cast<std::uintptr_t>(base_);
    return address >= base && (address - base) / page_ < pages_.load(std::memory_order_relaxed);
  }

  // Relaxed snapshot. Async-signal-safe.
  LazyCounters counters() const noexcept;

 private:
  // Fills the missing pages of [first, last) (page indices). With `skip_existing`, a page
  // found there already is stepped over and filling goes on after it; without, filling stops
  // at the first such page. `*stopped` gets the page it stopped at (last when it went
  // through). Returns 0, or the errno of a failure that is not EEXIST. Async-signal-safe.
  int fill_pages(std::uint64_t first, std::uint64_t last, bool skip_existing,
                 std::uint64_t* stopped) noexcept;
  // The same from `frame`, a decoded frame whose first byte is page `frame_first`'s.
  int fill_from(const std::byte* frame, std::uint64_t frame_first, std::uint64_t first,
                std::uint64_t last, bool skip_existing, std::uint64_t* stopped) noexcept;
  // A compressed source: decodes frame `index` and fills its missing pages, [page, frame end)
  // first and then the frame's pages before `page` (with `all`, every missing page of the
  // frame, stepping over those there). Returns 0 or an errno; *stopped, *reason as above.
  int fill_frame(std::uint64_t index, std::uint64_t page, bool all, std::uint64_t* stopped,
                 const char** reason) noexcept;
  FaultOutcome fail(FaultReport* report, int error, std::uint64_t page,
                    const char* reason) noexcept;

  const std::string name_;
  const int uffd_;
  std::byte* const base_;
  const std::uint64_t page_;
  // The source, changed only by rebind() (atomics: a stray touch during a rebind reads
  // either value, never a torn one).
  std::atomic<const std::byte*> bytes_{nullptr};
  std::atomic<const std::byte*> tail_{nullptr};
  std::atomic<std::uint64_t> full_pages_{0};  // whole pages of the source
  std::atomic<std::uint64_t> pages_{0};       // full_pages_, plus one for a tail
  const std::uint64_t window_;
  const CompressedFrames* const frames_ = nullptr;  // a compressed source, or none
  FrameDecoders* const decoders_ = nullptr;
  std::atomic<std::uint64_t> faults_{0};
  std::atomic<std::uint64_t> pages_filled_{0};
  std::atomic<std::uint64_t> failures_{0};
  std::atomic<bool> closing_{false};
};

}  // namespace mapwright::detail
