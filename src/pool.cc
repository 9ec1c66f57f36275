// src/pool.cc — InstancePool and Instance (pool.h): slots of one reservation, each holding a
// MAP_PRIVATE mapping of a sealed image and a heap after it, reset by dropping what the
// instance wrote.
#include "mapwright/pool.h"

#include <fcntl.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <utility>
#include <vector>

#include "fault_owner.h"
#include "fork_holes.h"
#include "lazy_fill.h"
#include "mapwright/error.h"
#include "mapwright/wrapper.h"
#include "os/os.h"
#include "registration.h"
#include "reservation.h"

namespace mapwright {

const char* to_string(ResetMethod method) noexcept {
  switch (method) {
    case ResetMethod::kAutomatic: return "automatic";
    case ResetMethod::kPagemapScan: return "PAGEMAP_SCAN";
    case ResetMethod::kPagemapRead: return "pagemap read";
    case ResetMethod::kRemap: return "remap";
    case ResetMethod::kWriteProtect: return "userfaultfd write-protect";
  }
  return "?";
}

const char* to_string(ImagePopulation population) noexcept {
  switch (population) {
    case ImagePopulation::kCopyOnWrite: return "copy-on-write";
    case ImagePopulation::kLazy: return "lazy";
  }
  return "?";
}

const char* to_string(HeapMode mode) noexcept {
  switch (mode) {
    case HeapMode::kAnonymous: return "anonymous";
    case HeapMode::kMemfd: return "memfd";
  }
  return "?";
}

namespace {

constexpr const char* kCreate = "creating instance pool";
constexpr const char* kInstantiate = "instantiating image in pool";
constexpr const char* kGrow = "growing instance heap in pool";

std::uint64_t round_up(std::uint64_t value, std::uint64_t page) {
  return value > UINT64_MAX - (page - 1) ? UINT64_MAX / page * page
                                          : (value + page - 1) / page * page;
}

std::string str(std::uint64_t value) { return std::to_string(value); }

// Which image a slot holds: the sealed memfd's inode (a received copy of the same image is
// the same inode). The slot keeps the image alive, so the inode cannot be reused meanwhile.
struct ImageKey {
  std::uint64_t device = 0;
  std::uint64_t inode = 0;
  bool operator==(const ImageKey&) const = default;
};
struct ImageKeyHash {
  std::size_t operator()(const ImageKey& key) const noexcept {
    return std::hash<std::uint64_t>()(key.inode * 0x9e3779b97f4a7c15ull ^ key.device);
  }
};

}  // namespace

struct Instance::Slot {
  std::size_t index = 0;
  std::byte* base = nullptr;
  // The image it holds, mapped MAP_PRIVATE at base over image_span bytes (the image's size
  // rounded up to a page). The heap starts at base + image_span.
  std::optional<SealedImage> image;
  ImageKey key;
  std::uint64_t image_size = 0;
  std::uint64_t image_span = 0;
  // The heap: `accessible` bytes of it can be touched now (kAnonymous: read-write by
  // mprotect; kMemfd: heap_fd's size). While in use, heap_size == accessible.
  os::OwnedFd heap_fd;
  std::uint64_t accessible = 0;
  std::uint64_t heap_size = 0;
  std::uint64_t heap_limit = 0;
  bool in_use = false;
  // ImagePopulation::kLazy: the owner that fills the image range on first touch (bound to
  // the slot's image, or to none), and the image's last partial page, zero-padded.
  std::unique_ptr<detail::LazyFill> lazy;
  std::unique_ptr<std::byte[]> tail;
};

struct InstancePool::State final : detail::FaultOwner {
  InstancePoolOptions options;
  ResetMethod method = ResetMethod::kRemap;
  std::uint64_t page = 0;
  std::uint64_t stride = 0;  // slot_size + guard
  detail::Reservation reservation;
  os::OwnedFd pagemap;  // /proc/self/pagemap, for the pagemap methods
  os::OwnedFd uffd;     // the write-tracking userfaultfd, for kWriteProtect
  os::OwnedFd lazy_uffd;  // ImagePopulation::kLazy: missing pages raise SIGBUS
  std::vector<std::unique_ptr<Instance::Slot>> slots;

  mutable std::mutex mutex;  // guards what follows
  std::vector<Instance::Slot*> free_empty;
  std::unordered_map<ImageKey, std::vector<Instance::Slot*>, ImageKeyHash> free_by_image;
  std::size_t free_with_image = 0;
  InstancePoolStats counters;

  // The slots' MADV_DONTFORK ranges, forgotten once the registration is gone (fork_holes.h).
  detail::ForgetDontForkOnExit forget_holes;
  detail::Registration registration;  // last: erased first, before the mapping goes

  // The slot that holds `address` (inside the reservation). Async-signal-safe.
  Instance::Slot* slot_at(std::uintptr_t address) const noexcept {
    return slots[(address - reinterpret_cast<std::uintptr_t>(reservation.base())) / stride].get();
  }

  // A missing page of a kLazy image is filled here; otherwise only a memfd heap raises
  // SIGBUS: a touch past its size (past heap_size()).
  detail::FaultOutcome on_fault(const detail::FaultContext& fault,
                                detail::FaultReport* report) noexcept override {
    if (const Instance::Slot* slot = slot_at(fault.address); slot->lazy && slot->lazy->covers(fault.address)) {
      return slot->lazy->on_fault(fault, report);
    }
    report->error = EFAULT;
    report->operation = "touching instance memory";
    report->subject = options.name.c_str();
    report->reason = "past the instance's heap (grow_heap() first)";
    return detail::FaultOutcome::kFailed;
  }
  // Everything below heap_size() is mapped; nothing past it can be made so here.
  detail::FaultOutcome commit(std::uintptr_t begin, std::uintptr_t end,
                              detail::FaultReport* report) noexcept override {
    const Instance::Slot* slot = slot_at(begin);
    if (slot->lazy && slot->lazy->covers(begin)) return slot->lazy->commit(begin, end, report);
    const auto heap_end = reinterpret_cast<std::uintptr_t>(slot->base) + slot->image_span +
                          slot->heap_size;
    if (end <= heap_end) return detail::FaultOutcome::kResolved;
    return on_fault({}, report);
  }

  void choose_method(ResetMethod wanted);
  Instance::Slot* take(const ImageKey& key, bool* same);
  void give_back(Instance::Slot* slot, bool keep_image);
  void map_image(Instance::Slot* slot, const SealedImage& image, const ImageKey& key);
  void set_heap(Instance::Slot* slot, std::uint64_t size, const char* operation);
  bool reset(Instance::Slot* slot) noexcept;
  bool drop_written(std::byte* begin, std::uint64_t length, bool image, const std::byte* source,
                    std::uint64_t keep, std::uint64_t* pages) noexcept;
  int map_image_range(Instance::Slot* slot, std::uint64_t span, int fd) noexcept;
  void empty(Instance::Slot* slot) noexcept;
};

// ---- the reset methods ----------------------------------------------------------------------

void InstancePool::State::choose_method(ResetMethod wanted) {
  int fd = -1;
  const bool have_pagemap = os::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC, 0, &fd) == 0;
  if (have_pagemap) pagemap.reset(fd);
  // Probe both on a page of our own reservation (nothing is mapped there yet).
  const auto probe = reinterpret_cast<std::uint64_t>(reservation.base());
  bool scan = false;
  bool read = false;
  if (have_pagemap) {
    os::PageRange range;
    std::size_t count = 0;
    std::uint64_t walked = 0;
    scan = os::scan_private_pages(pagemap.get(), probe, probe + page, &range, 1, &count, &walked) == 0;
    std::uint64_t entry = 0;
    read = os::read_pagemap(pagemap.get(), probe, &entry, 1) == 0;
  }
  // Write tracking: a userfaultfd with asynchronous write-protection, and PAGEMAP_SCAN that
  // reads it back, tried on the same page (which is then reserved afresh, unregistered).
  std::string no_tracking = "PAGEMAP_SCAN is missing";
  if (scan && wanted == ResetMethod::kWriteProtect) {
    int tracking = -1;
    if (const int err = os::open_write_tracking(&tracking); err != 0) {
      no_tracking = std::string("userfaultfd: ") + std::strerror(err);
    } else {
      uffd.reset(tracking);
      os::PageRange range;
      std::size_t count = 0;
      std::uint64_t walked = 0;
      int failed = os::track_writes(uffd.get(), reservation.base(), page);
      if (failed == 0) {
        failed = os::scan_written_pages(pagemap.get(), probe, probe + page, &range, 1, &count, &walked);
      }
      (void)os::reserve_fixed(reservation.base(), page);
      if (failed != 0) {
        no_tracking = std::string("write-protect tracking: ") + std::strerror(failed);
        uffd.reset(-1);
      }
    }
  }
  const bool track = uffd.get() >= 0;
  const auto refuse = [&](const std::string& why) {
    throw Error(ENOTSUP, kCreate, options.name,
                std::string("(reset method ") + to_string(wanted) + ": " + why + ")");
  };
  switch (wanted) {
    case ResetMethod::kAutomatic:
      method = scan ? ResetMethod::kPagemapScan : read ? ResetMethod::kPagemapRead : ResetMethod::kRemap;
      break;
    case ResetMethod::kWriteProtect:
      if (!track) refuse(no_tracking);
      method = wanted;
      break;
    case ResetMethod::kPagemapScan:
      if (!scan) refuse(have_pagemap ? "this kernel has no PAGEMAP_SCAN (Linux 6.7+)" : "no /proc/self/pagemap");
      method = wanted;
      break;
    case ResetMethod::kPagemapRead:
      if (!read) refuse("/proc/self/pagemap cannot be read");
      method = wanted;
      break;
    case ResetMethod::kRemap: method = wanted; break;
  }
  if (method != ResetMethod::kWriteProtect) uffd.reset(-1);
  if (method == ResetMethod::kRemap) pagemap.reset(-1);
}

// Drops the pages of [begin, begin + length) that are the instance's own (written image
// pages, touched heap pages), or restores some in place: with `source` (the image), the first
// `keep` bytes of them found are copied back from it; without, those within the first `keep`
// bytes of the range are zeroed. Adds how many pages were dropped or restored to *pages. False
// when the pages could not be found or dropped (the caller then remaps).
bool InstancePool::State::drop_written(std::byte* begin, std::uint64_t length, bool image,
                                       const std::byte* source, std::uint64_t keep,
                                       std::uint64_t* pages) noexcept {
  const auto start = reinterpret_cast<std::uint64_t>(begin);
  std::uint64_t budget = keep;  // with a source: bytes that may still be copied back
  // What is dropped goes in batches (one process_madvise each, os::drop_ranges).
  constexpr std::size_t kBatch = 128;
  os::PageRange batch[kBatch];
  std::size_t batched = 0;
  const auto flush = [&] {
    const bool ok = os::drop_ranges(batch, batched) == 0;
    batched = 0;
    return ok;
  };
  const auto act = [&](std::uint64_t from, std::uint64_t to) {
    if (source != nullptr) {
      const std::uint64_t copied = std::min(budget, to - from);
      if (copied > 0) {
        std::memcpy(reinterpret_cast<void*>(from), source + (from - start), copied);
        budget -= copied;
        from += copied;
      }
    } else if (const std::uint64_t kept_end = std::min(to, start + keep); from < kept_end) {
      std::memset(reinterpret_cast<void*>(from), 0, kept_end - from);
      from = kept_end;
    }
    if (from >= to) return true;
    if (batched > 0 && batch[batched - 1].end == from) {
      batch[batched - 1].end = to;
      return true;
    }
    if (batched == kBatch && !flush()) return false;
    batch[batched++] = {from, to};
    return true;
  };
  // The image under write tracking: the pages written since the last reset, protected again
  // by the same walk (before they are dropped, so that the kernel keeps them protected). The
  // heap is anonymous memory, not tracked: every page of it there is the instance's.
  const bool written = image && method == ResetMethod::kWriteProtect;
  if (method == ResetMethod::kPagemapScan || method == ResetMethod::kWriteProtect) {
    constexpr std::size_t kRanges = 128;
    os::PageRange ranges[kRanges];
    std::uint64_t at = start;
    const std::uint64_t end = start + length;
    while (at < end) {
      std::size_t count = 0;
      std::uint64_t walked = 0;
      const int err =
          written ? os::scan_written_pages(pagemap.get(), at, end, ranges, kRanges, &count, &walked)
                  : os::scan_private_pages(pagemap.get(), at, end, ranges, kRanges, &count, &walked);
      if (err != 0) return false;
      for (std::size_t i = 0; i < count; ++i) {
        if (!act(ranges[i].begin, ranges[i].end)) return false;
        *pages += (ranges[i].end - ranges[i].begin) / page;
      }
      if (walked <= at) return false;
      at = walked;
    }
    return flush();
  }
  if (method == ResetMethod::kPagemapRead) {
    constexpr std::size_t kEntries = 512;
    std::uint64_t entries[kEntries];
    const std::uint64_t total = length / page;
    std::uint64_t run_begin = 0;
    bool in_run = false;
    for (std::uint64_t done = 0; done < total;) {
      const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(kEntries, total - done));
      if (os::read_pagemap(pagemap.get(), start + done * page, entries, n) != 0) return false;
      for (std::size_t i = 0; i < n; ++i) {
        const std::uint64_t e = entries[i];
        const bool own = (e & (os::kPagemapPresent | os::kPagemapSwapped)) != 0 &&
                         (e & os::kPagemapFileOrShared) == 0;
        const std::uint64_t address = start + (done + i) * page;
        if (own && !in_run) {
          run_begin = address;
          in_run = true;
        } else if (!own && in_run) {
          if (!act(run_begin, address)) return false;
          *pages += (address - run_begin) / page;
          in_run = false;
        }
      }
      done += n;
    }
    if (in_run) {
      if (!act(run_begin, start + length)) return false;
      *pages += (start + length - run_begin) / page;
    }
    return flush();
  }
  return false;  // kRemap: the caller remaps
}

// Maps the image's `span` bytes MAP_PRIVATE at the slot's base, write-protected and tracked
// under kWriteProtect (a new mapping ends the range's earlier registration).
int InstancePool::State::map_image_range(Instance::Slot* slot, std::uint64_t span, int fd) noexcept {
  if (options.population == ImagePopulation::kLazy) {
    // Fresh private memory, every page missing; a new mapping ends the range's earlier
    // registration, so it is registered again. MADV_DONTFORK: in a child the registration
    // would be gone and the missing pages would read as zeros.
    if (const int err = os::reserve_fixed(slot->base, span); err != 0) return err;
    if (const int err = os::protect(slot->base, span, true); err != 0) return err;
    if (const int err = detail::dont_fork(slot->base, span); err != 0) return err;
    return os::register_missing(lazy_uffd.get(), slot->base, span);
  }
  if (const int err = os::map_private_fixed(slot->base, span, fd); err != 0) return err;
  if (method == ResetMethod::kWriteProtect) return os::track_writes(uffd.get(), slot->base, span);
  return 0;
}

// Puts the slot back to "no image": its whole range inaccessible address space again.
void InstancePool::State::empty(Instance::Slot* slot) noexcept {
  if (slot->lazy) slot->lazy->rebind({});
  (void)os::reserve_fixed(slot->base, options.slot_size);
  detail::forget_dont_fork(slot->base, options.slot_size);
  slot->image.reset();
  slot->key = {};
  slot->image_size = 0;
  slot->image_span = 0;
  slot->accessible = 0;
  slot->heap_size = 0;
  if (slot->heap_fd.get() >= 0) (void)os::ftruncate(slot->heap_fd.get(), 0);
}

// Restores the slot to its image and an empty heap. False when that failed: the slot is
// emptied instead (it no longer holds an image).
bool InstancePool::State::reset(Instance::Slot* slot) noexcept {
  std::uint64_t image_pages = 0;
  std::uint64_t heap_pages = 0;
  bool ok = true;
  // The image: what the instance wrote goes, or is copied back (up to image_keep_resident).
  if (slot->image_span > 0) {
    const std::byte* source = nullptr;
    std::uint64_t image_keep = 0;
    if (options.image_keep_resident > 0) {
      try {
        source = slot->image->map().data();  // made once per image, kept with it
        image_keep = options.image_keep_resident / page * page;
      } catch (...) {
        source = nullptr;  // no view of the image: drop everything instead
      }
    }
    if (method == ResetMethod::kRemap ||
        !drop_written(slot->base, slot->image_span, true, source, image_keep, &image_pages)) {
      ok = map_image_range(slot, slot->image_span, slot->image->fd()) == 0;
      image_pages = slot->image_span / page;
    }
  }
  // The heap.
  std::byte* heap = slot->base + slot->image_span;
  const std::uint64_t keep = std::min(options.heap_keep_resident / page * page, slot->accessible);
  if (ok && slot->accessible > 0) {
    if (options.heap == HeapMode::kAnonymous) {
      if (method == ResetMethod::kRemap ||
          !drop_written(heap, slot->accessible, false, nullptr, keep, &heap_pages)) {
        if (keep > 0) std::memset(heap, 0, keep);
        ok = os::madvise(heap + keep, slot->accessible - keep, os::kMadvDontneed) == 0;
        heap_pages = slot->accessible / page;
      }
    } else {
      // A memfd: zero what is kept, cut the rest (its pages are freed, the mapping stays).
      if (keep > 0) std::memset(heap, 0, keep);
      ok = os::ftruncate(slot->heap_fd.get(), keep) == 0;
      heap_pages = slot->accessible / page;
      slot->accessible = keep;
    }
  }
  if (!ok) empty(slot);
  slot->heap_size = 0;
  std::lock_guard lock(mutex);
  counters.resets += 1;
  counters.pages_restored += image_pages;
  counters.heap_pages_dropped += heap_pages;
  return ok;
}

// ---- slots ------------------------------------------------------------------------------------

Instance::Slot* InstancePool::State::take(const ImageKey& key, bool* same) {
  std::lock_guard lock(mutex);
  Instance::Slot* slot = nullptr;
  *same = false;
  if (auto it = free_by_image.find(key); it != free_by_image.end() && !it->second.empty()) {
    slot = it->second.back();
    it->second.pop_back();
    --free_with_image;
    *same = true;
  } else if (!free_empty.empty()) {
    slot = free_empty.back();
    free_empty.pop_back();
  } else if (free_with_image > 0) {
    // Another image's slot: it gets the new image.
    for (auto& [other, list] : free_by_image) {
      if (list.empty()) continue;
      slot = list.back();
      list.pop_back();
      --free_with_image;
      break;
    }
  }
  if (slot == nullptr) {
    throw Error(EBUSY, kInstantiate, options.name,
                "(all " + str(slots.size()) + " slots are in use)");
  }
  for (auto it = free_by_image.begin(); it != free_by_image.end();) {
    it = it->second.empty() ? free_by_image.erase(it) : std::next(it);
  }
  slot->in_use = true;
  counters.in_use += 1;
  return slot;
}

void InstancePool::State::give_back(Instance::Slot* slot, bool keep_image) {
  std::lock_guard lock(mutex);
  slot->in_use = false;
  counters.in_use -= 1;
  if (keep_image && slot->image) {
    free_by_image[slot->key].push_back(slot);
    ++free_with_image;
  } else {
    free_empty.push_back(slot);
  }
}

void InstancePool::State::map_image(Instance::Slot* slot, const SealedImage& image,
                                    const ImageKey& key) {
  if (slot->image) empty(slot);
  const std::uint64_t span = round_up(image.size(), page);
  if (slot->lazy && span > 0) {
    // The owner reads the image's own read-only mapping (kept alive with slot->image) and,
    // for a last partial page, a zero-padded copy of it.
    detail::LazySourceBytes source;
    source.size = image.size();
    source.bytes = image.map().data();
    if (const std::uint64_t whole = image.size() / page * page; whole != image.size()) {
      std::memset(slot->tail.get(), 0, page);
      std::memcpy(slot->tail.get(), source.bytes + whole, image.size() - whole);
      source.tail = slot->tail.get();
    }
    slot->lazy->rebind(source);
  }
  if (span > 0) {
    if (const int err = map_image_range(slot, span, image.fd()); err != 0) {
      empty(slot);
      throw Error(err, kInstantiate, options.name,
                  std::string(method == ResetMethod::kWriteProtect
                                  ? "(mmap and userfaultfd write-protection of the image, "
                              : slot->lazy ? "(mmap and userfaultfd registration of the image, "
                                           : "(mmap of the image, ") +
                      str(image.size()) + " bytes)");
    }
  }
  // An image that fills the slot leaves no heap to map (a mapping of 0 bytes is EINVAL).
  if (options.heap == HeapMode::kMemfd && span < options.slot_size) {
    if (slot->heap_fd.get() < 0) {
      int fd = -1;
      const std::string name = options.name + " heap " + str(slot->index);
      if (const int err = os::memfd_create(name.c_str(), &fd); err != 0) {
        empty(slot);
        throw Error(err, kInstantiate, options.name, "(memfd_create for the heap)");
      }
      slot->heap_fd.reset(fd);
    }
    if (const int err = os::map_shared_fixed(slot->base + span, options.slot_size - span,
                                             slot->heap_fd.get(), 0);
        err != 0) {
      empty(slot);
      throw Error(err, kInstantiate, options.name, "(mmap of the heap memfd)");
    }
    // A shared mapping would stay shared with a child of fork(): what the child wrote would
    // reach this slot's next instances. The child gets no heap instead.
    if (const int err = detail::dont_fork(slot->base + span, options.slot_size - span); err != 0) {
      empty(slot);
      throw Error(err, kInstantiate, options.name, "(madvise MADV_DONTFORK of the heap memfd)");
    }
    if (const int err = os::ftruncate(slot->heap_fd.get(), 0); err != 0) {
      empty(slot);
      throw Error(err, kInstantiate, options.name, "(ftruncate of the heap memfd)");
    }
  }
  slot->image = image;
  slot->key = key;
  slot->image_size = image.size();
  slot->image_span = span;
  slot->accessible = 0;
  std::lock_guard lock(mutex);
  counters.mappings += 1;
}

// Makes exactly `size` heap bytes accessible (the rest of the slot is not).
void InstancePool::State::set_heap(Instance::Slot* slot, std::uint64_t size, const char* operation) {
  std::byte* heap = slot->base + slot->image_span;
  if (size == slot->accessible) return;
  int err = 0;
  if (options.heap == HeapMode::kMemfd) {
    err = os::ftruncate(slot->heap_fd.get(), size);
  } else if (size > slot->accessible) {
    err = os::protect(heap + slot->accessible, size - slot->accessible, true);
  } else {
    err = os::protect(heap + size, slot->accessible - size, false);
  }
  if (err != 0) {
    throw Error(err, operation, options.name,
                "(making " + str(size) + " heap bytes accessible, " +
                    (options.heap == HeapMode::kMemfd ? "ftruncate" : "mprotect") + ")");
  }
  slot->accessible = size;
}

// ---- InstancePool -------------------------------------------------------------------------------

InstancePool::InstancePool(InstancePoolOptions options) : state_(std::make_shared<State>()) {
  State& s = *state_;
  s.page = os::page_size();
  const auto bad = [&](const std::string& what) {
    throw Error(EINVAL, kCreate, options.name, "(" + what + ")");
  };
  if (options.slots == 0) bad("slots is 0");
  if (options.slot_size == 0) bad("slot_size is 0");
  options.slot_size = round_up(options.slot_size, s.page);
  options.guard = round_up(options.guard, s.page);
  constexpr std::uint64_t kMaxSpan = 1ull << 47;
  if (options.slot_size > kMaxSpan || options.guard > kMaxSpan ||
      options.slots > kMaxSpan / (options.slot_size + options.guard)) {
    bad(str(options.slots) + " slots of " + str(options.slot_size) + " bytes and a guard of " +
        str(options.guard) + " need more than 2^47 bytes of address space");
  }
  if (options.population == ImagePopulation::kLazy) {
    if (options.reset == ResetMethod::kWriteProtect) {
      bad("reset method userfaultfd write-protect with lazy population: a lazy slot's "
          "touched pages are all its own");
    }
    if (options.lazy_window_pages == 0 || options.lazy_window_pages > 65536) {
      bad("lazy_window_pages is " + str(options.lazy_window_pages) + "; it must be 1 to 65536");
    }
    int fd = -1;
    if (const int err = os::open_lazy_fill(&fd, nullptr); err != 0) {
      throw Error(ENOTSUP, kCreate, options.name,
                  std::string("(lazy population: userfaultfd: ") + std::strerror(err) + ")");
    }
    s.lazy_uffd.reset(fd);
  }
  s.options = std::move(options);
  s.stride = s.options.slot_size + s.options.guard;
  s.reservation = detail::Reservation::anonymous(s.options.slots * s.stride - s.options.guard,
                                                 s.options.guard, s.options.name);
  s.choose_method(s.options.reset);
  s.slots.reserve(s.options.slots);
  s.free_empty.reserve(s.options.slots);
  for (std::size_t i = 0; i < s.options.slots; ++i) {
    auto slot = std::make_unique<Instance::Slot>();
    slot->index = i;
    slot->base = s.reservation.base() + i * s.stride;
    if (s.lazy_uffd.get() >= 0) {
      slot->tail.reset(new std::byte[s.page]());
      slot->lazy = std::make_unique<detail::LazyFill>(s.options.name, s.lazy_uffd.get(), slot->base,
                                                      detail::LazySourceBytes{},
                                                      s.options.lazy_window_pages);
    }
    s.free_empty.push_back(slot.get());
    s.slots.push_back(std::move(slot));
  }
  std::reverse(s.free_empty.begin(), s.free_empty.end());  // slot 0 first
  s.counters.reset_method = s.method;
  s.counters.heap_mode = s.options.heap;
  s.counters.population = s.options.population;
  s.counters.slots = s.options.slots;
  const auto begin = reinterpret_cast<std::uintptr_t>(s.reservation.base());
  s.forget_holes.cover(s.reservation.base(), s.reservation.mapped());
  s.registration = detail::Registration(begin, begin + s.reservation.mapped(), &s,
                                        s.options.name.c_str());
}

InstancePool::InstancePool(InstancePool&&) noexcept = default;
InstancePool& InstancePool::operator=(InstancePool&&) noexcept = default;
InstancePool::~InstancePool() = default;

Instance InstancePool::instantiate(const SealedImage& image, InstanceOptions options) {
  State& s = *state_;
  const std::uint64_t span = round_up(image.size(), s.page);
  if (span > s.options.slot_size) {
    throw Error(EFBIG, kInstantiate, s.options.name,
                "(the image has " + str(image.size()) + " bytes; a slot has " +
                    str(s.options.slot_size) + ")");
  }
  const std::uint64_t room = s.options.slot_size - span;
  const std::uint64_t limit = options.heap_limit == 0 ? room : round_up(options.heap_limit, s.page);
  if (limit > room) {
    throw Error(EFBIG, kInstantiate, s.options.name,
                "(a heap limit of " + str(options.heap_limit) + " bytes after an image of " +
                    str(image.size()) + " does not fit a slot of " + str(s.options.slot_size) + ")");
  }
  const std::uint64_t initial = round_up(options.heap_initial, s.page);
  if (initial > limit) {
    throw Error(EINVAL, kInstantiate, s.options.name,
                "(heap_initial " + str(options.heap_initial) + " is more than the heap limit " +
                    str(limit) + ")");
  }
  os::FileStatus status;
  if (const int err = os::fd_status(image.fd(), &status); err != 0) {
    throw Error(err, kInstantiate, s.options.name, "(fstat of the image)");
  }
  const ImageKey key{static_cast<std::uint64_t>(status.device), static_cast<std::uint64_t>(status.inode)};
  bool same = false;
  Instance::Slot* slot = s.take(key, &same);
  try {
    if (!same) s.map_image(slot, image, key);
    s.set_heap(slot, initial, kInstantiate);
  } catch (...) {
    s.give_back(slot, false);
    throw;
  }
  slot->heap_size = initial;
  slot->heap_limit = limit;
  {
    std::lock_guard lock(s.mutex);
    s.counters.instantiations += 1;
    if (same) s.counters.same_image += 1;
  }
  return Instance(state_, slot);
}

Instance InstancePool::instantiate(const Wrapper& wrapper, std::string_view name,
                                   InstanceOptions options) {
  return instantiate(wrapper.image(name), options);
}

ResetMethod InstancePool::reset_method() const noexcept { return state_->method; }

InstancePoolStats InstancePool::stats() const {
  std::lock_guard lock(state_->mutex);
  InstancePoolStats stats = state_->counters;
  stats.batched_drops = os::drop_ranges_batched();
  for (const auto& slot : state_->slots) {
    if (!slot->lazy) continue;
    const detail::LazyCounters lazy = slot->lazy->counters();
    stats.lazy_faults += lazy.faults;
    stats.lazy_pages_filled += lazy.pages_filled;
  }
  return stats;
}

// ---- Instance -----------------------------------------------------------------------------------

Instance::Instance(std::shared_ptr<InstancePool::State> pool, Slot* slot) noexcept
    : pool_(std::move(pool)), slot_(slot) {}

Instance::Instance(Instance&& other) noexcept
    : pool_(std::move(other.pool_)), slot_(std::exchange(other.slot_, nullptr)) {}

Instance& Instance::operator=(Instance&& other) noexcept {
  if (this != &other) {
    reset();
    pool_ = std::move(other.pool_);
    slot_ = std::exchange(other.slot_, nullptr);
  }
  return *this;
}

Instance::~Instance() { reset(); }

void Instance::reset() noexcept {
  if (slot_ == nullptr) return;
  const bool kept = pool_->reset(slot_);
  try {
    pool_->give_back(slot_, kept);
  } catch (...) {
    // give_back allocates only for a new image key in free_by_image; if even that fails the
    // slot is lost to the pool (counted as in use), never handed out half-reset.
  }
  slot_ = nullptr;
  pool_.reset();
}

std::byte* Instance::base() const noexcept { return slot_ != nullptr ? slot_->base : nullptr; }
std::uint64_t Instance::image_size() const noexcept { return slot_ != nullptr ? slot_->image_size : 0; }
std::span<std::byte> Instance::image() const noexcept {
  return slot_ != nullptr ? std::span<std::byte>(slot_->base, slot_->image_size) : std::span<std::byte>();
}
std::byte* Instance::heap() const noexcept {
  return slot_ != nullptr ? slot_->base + slot_->image_span : nullptr;
}
std::uint64_t Instance::heap_size() const noexcept { return slot_ != nullptr ? slot_->heap_size : 0; }
std::uint64_t Instance::heap_limit() const noexcept { return slot_ != nullptr ? slot_->heap_limit : 0; }

void Instance::prefetch(std::uint64_t offset, std::uint64_t length) {
  if (slot_ == nullptr || !slot_->lazy) return;  // copy-on-write: every page is mapped
  detail::commit_range(*slot_->lazy, slot_->base, slot_->image_span, offset, length);
}

void Instance::grow_heap(std::uint64_t size) {
  if (slot_ == nullptr) throw Error(EINVAL, kGrow, "", "(an empty Instance)");
  InstancePool::State& s = *pool_;
  const std::uint64_t wanted = round_up(size, s.page);
  if (wanted <= slot_->heap_size) return;
  if (wanted > slot_->heap_limit) {
    throw Error(ENOMEM, kGrow, s.options.name,
                "(" + str(size) + " bytes asked, the heap limit is " + str(slot_->heap_limit) + ")");
  }
  s.set_heap(slot_, wanted, kGrow);
  slot_->heap_size = wanted;
}

}  // namespace mapwright
