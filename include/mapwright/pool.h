// mapwright/pool.h — copy-on-write instances of sealed images: instantiate the same image
// thousands of times, and pay on reset for what an instance wrote, not for the image's size.
//
// An InstancePool reserves `slots` ranges of address space (slot_size each, plus a guard).
// instantiate(image) puts the image in a free slot, mapped MAP_PRIVATE: every instance reads
// the image's own pages (shared by all instances and processes that map it), and the kernel
// copies a page only when an instance writes it. Returning the Instance resets its slot:
//
//     slot base                     heap()               heap() + heap_size()       slot end
//     ├── the image (CoW) ──────────┼── heap: zeroed ─────┼── inaccessible ───────────┤ guard
//
//   * The image's bytes: [base(), base() + image_size()). The rest of its last page reads as
//     zeros. Writes are private to the instance.
//   * The heap: from heap(), the page after the image, heap_size() accessible bytes, zero at
//     instantiation (InstanceOptions::heap_initial) and grown by grow_heap() up to heap_limit().
//     Memory past heap_size() is inaccessible: a touch is SIGSEGV (HeapMode::kAnonymous) or
//     SIGBUS, reported as an access past the heap and ending the process after one line on
//     stderr, or an Error inside guarded() (HeapMode::kMemfd).
//
// Reset (when the Instance is destroyed or reset() is called) restores the slot so that the
// next instance of the same image sees exactly the image and a zeroed heap, and keeps the
// mapping: a slot remembers its image, instantiating that image again does no mmap(), and
// free slots are handed out preferring one that last held the same image (affinity). What an
// instance wrote is found per page:
//   * ResetMethod::kWriteProtect (Linux 6.7+, where userfaultfd is allowed): the image's
//     range is registered with a userfaultfd for asynchronous write-protection (the kernel
//     unprotects a page at its first write, in the same fault as the copy; no thread reads
//     the fd), and PAGEMAP_SCAN lists the written pages and protects them again in one walk.
//     That walk reads page-table entries only, so it stays cheap when the image is fully
//     read-mapped (here 40-150 us for 64 MiB, against 350-700 us for kPagemapScan, which
//     looks at each mapped page). But protecting the range fills its page tables, so the walk
//     never gets cheaper than that; each mapping costs 0.2-0.5 ms to protect; and a page copied
//     back (image_keep_resident) takes a fault to unprotect. Choose it for images that
//     instances read widely (pool_bench, a slot with 64 MiB read-mapped and 3 pages written:
//     210 against 452 us per instance); kAutomatic does not pick it.
//   * ResetMethod::kPagemapScan (Linux 6.7+): the PAGEMAP_SCAN ioctl lists the pages of the
//     image's mapping that are no longer the file's (copied on write); only those are
//     restored. Pages only read stay mapped: a fully read image is not faulted in again.
//   * ResetMethod::kPagemapRead (any Linux with /proc): the same answer from reading
//     /proc/self/pagemap (8 bytes per page of the image, so slower for large images).
//   * ResetMethod::kRemap (anywhere): the image's range is mapped again; every page, read or
//     written, is faulted in again by the next instance.
// InstancePoolOptions::reset picks one, or kAutomatic the best the kernel offers; stats()
// and reset_method() say which runs.
//
// A written page is restored by dropping the instance's copy (MADV_DONTNEED: the next read
// maps the image's page again), or, up to image_keep_resident bytes, by copying the image's
// bytes back over it. The heap is reset by dropping its pages (the first heap_keep_resident
// bytes are zeroed in place instead); with HeapMode::kAnonymous its accessible part is made
// inaccessible again (mprotect), with HeapMode::kMemfd its memfd is cut.
//
// Guarantees: after reset a slot is byte-identical to its image (and a zeroed heap); nothing
// an instance wrote is visible to the next one; the sealed image never changes (invariant 9:
// a MAP_PRIVATE write never reaches the file). instantiate() and Instance destruction are
// thread-safe (one mutex guards the free lists; reset runs outside it, on the returning
// thread). An Instance is used by one thread at a time. The pool may be destroyed before its
// instances: the slots are unmapped when the last of them goes.
//
// Hazards:
//   * System calls do not fault: read(2) into heap memory past heap_size() fails with EFAULT,
//     and so does any system call on a missing page of a kLazy image (prefetch() first).
//   * A pointer kept from an instance after it is returned points into the next instance.
//   * fork(): a child inherits the image mappings and an anonymous heap as private copies
//     (what it writes is its own), but not a memfd heap (MADV_DONTFORK: a shared heap would let
//     the child write into the parent's next instances; in the child it is unmapped, a touch
//     is SIGSEGV), nor a kLazy image (its missing pages would read as zeros there: it is
//     MADV_DONTFORK too). Do not use the pool in the child (its lock may be held by a thread that
//     did not survive fork).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "mapwright/sealed_image.h"

namespace mapwright {

class Wrapper;

// How an instance's written image pages are found at reset.
enum class ResetMethod {
  kAutomatic,    // kPagemapScan where the kernel has it, else kPagemapRead, else kRemap
  kPagemapScan,  // ioctl(PAGEMAP_SCAN) on /proc/self/pagemap (Linux 6.7+)
  kPagemapRead,  // read(2) of /proc/self/pagemap
  kRemap,        // map the whole image range again
  kWriteProtect, // userfaultfd write-protection, read back by PAGEMAP_SCAN (Linux 6.7+)
};
// "automatic", "PAGEMAP_SCAN", "pagemap read", "remap", "userfaultfd write-protect".
const char* to_string(ResetMethod method) noexcept;

// How the heap after the image is made accessible.
enum class HeapMode {
  kAnonymous,  // anonymous memory, opened by mprotect() as it grows (wasmtime's choice)
  kMemfd,      // a memfd per slot mapped MAP_SHARED, grown by ftruncate() (no mmap lock)
};
// "anonymous", "memfd".
const char* to_string(HeapMode mode) noexcept;

// How an instance's image pages come to be.
enum class ImagePopulation {
  kCopyOnWrite,  // the image mapped MAP_PRIVATE: pages read are the image's own, pages written
                 // are copied by the kernel (the default)
  kLazy,         // private memory filled on first touch from the image, by the touching thread
                 // (userfaultfd in SIGBUS mode, as LazyImage in lazy.h); reset makes every
                 // page missing again. Needs userfaultfd (ENOTSUP naming it otherwise)
};
// "copy-on-write", "lazy".
const char* to_string(ImagePopulation population) noexcept;

struct InstancePoolOptions {
  // How many instances can exist at once; at least 1.
  std::size_t slots = 16;
  // Address space per slot: the image (rounded up to a page) plus the heap limit must fit.
  // Rounded up to a page. Reserved for all slots at once (slots x (slot_size + guard)),
  // MAP_NORESERVE: address space only, which is what RLIMIT_AS limits.
  std::uint64_t slot_size = 1ull << 30;
  // Inaccessible address space after each slot (rounded up to a page).
  std::uint64_t guard = 2ull << 20;
  HeapMode heap = HeapMode::kAnonymous;
  ImagePopulation population = ImagePopulation::kCopyOnWrite;
  // kLazy: pages filled per fault (the aligned block holding the faulting one); 1 to 65536.
  std::uint64_t lazy_window_pages = 1;
  // How written pages are found at reset. Under kLazy every page an instance touched is
  // its own (filled or written): all of them are made missing again (kWriteProtect is
  // refused with EINVAL there).
  ResetMethod reset = ResetMethod::kAutomatic;
  // Written image bytes copied back from the image at reset instead of dropped, per reset
  // (rounded down to a page; the first pages found, in address order). A page so restored
  // stays the instance's: the next write to it costs no page fault, but it is found and
  // copied again at every reset. For the pages every instance writes. PAGEMAP methods only.
  std::uint64_t image_keep_resident = 0;
  // Bytes at the heap's start zeroed in place at reset instead of dropped (rounded down to
  // a page): the next instance touches them without a page fault.
  std::uint64_t heap_keep_resident = 0;
  // Names the pool in errors and in /proc/PID/maps (the heap memfds).
  std::string name = "instance pool";
};

struct InstanceOptions {
  // Heap bytes accessible at instantiation (rounded up to a page); at most heap_limit.
  std::uint64_t heap_initial = 0;
  // The most the heap can grow to; 0: all the slot leaves after the image.
  std::uint64_t heap_limit = 0;
};

struct InstancePoolStats {
  ResetMethod reset_method = ResetMethod::kAutomatic;  // the one that runs
  HeapMode heap_mode = HeapMode::kAnonymous;
  ImagePopulation population = ImagePopulation::kCopyOnWrite;
  std::size_t slots = 0;
  std::size_t in_use = 0;
  std::uint64_t instantiations = 0;
  std::uint64_t same_image = 0;      // of those: the slot already held the image (no mmap)
  std::uint64_t mappings = 0;        // image mappings made (a slot given a new image)
  std::uint64_t resets = 0;
  std::uint64_t pages_restored = 0;  // written image pages dropped at reset, in all
  std::uint64_t heap_pages_dropped = 0;
  // Pages are dropped in batches, one process_madvise(2) per reset (Linux 6.15+), rather than
  // one madvise(2) per written range; false until the first reset drops something.
  bool batched_drops = false;
  // kLazy: faults resolved by filling, and pages filled (by faults and prefetch()).
  std::uint64_t lazy_faults = 0;
  std::uint64_t lazy_pages_filled = 0;
};

class Instance;

class InstancePool {
 public:
  // Reserves the slots. Throws Error: EINVAL for a bad option (naming it), ENOMEM naming
  // RLIMIT_AS when the reservation is refused, ENOTSUP when `reset` asks for a method this
  // kernel does not have. Not async-signal-safe, nor is anything here.
  explicit InstancePool(InstancePoolOptions options = {});
  InstancePool(InstancePool&&) noexcept;
  InstancePool& operator=(InstancePool&&) noexcept;
  InstancePool(const InstancePool&) = delete;
  InstancePool& operator=(const InstancePool&) = delete;
  ~InstancePool();  // instances still out keep their slots until they go

  // A new instance of `image` in a free slot (one that last held `image` if there is one).
  // Throws Error: EBUSY when every slot is in use, EFBIG when the image and the heap do not
  // fit a slot, EINVAL for heap_initial > heap_limit, or the errno of a failed mmap/mprotect.
  Instance instantiate(const SealedImage& image, InstanceOptions options = {});
  // The wrapper's entry `name`, sealed once per Wrapper (Wrapper::image()) and instantiated.
  Instance instantiate(const Wrapper& wrapper, std::string_view name, InstanceOptions options = {});

  ResetMethod reset_method() const noexcept;
  InstancePoolStats stats() const;

  struct State;

 private:
  std::shared_ptr<State> state_;
};

// One instance: a slot holding an image and a heap. Move-only; destroying it resets the slot
// and gives it back to the pool.
class Instance {
 public:
  Instance() noexcept = default;
  Instance(Instance&& other) noexcept;
  Instance& operator=(Instance&& other) noexcept;
  Instance(const Instance&) = delete;
  Instance& operator=(const Instance&) = delete;
  ~Instance();

  explicit operator bool() const noexcept { return slot_ != nullptr; }
  struct Slot;  // the pool's, opaque
  // The image's first byte; the slot's start. Null for a moved-from instance.
  std::byte* base() const noexcept;
  std::uint64_t image_size() const noexcept;
  // The image as this instance sees it (its writes included).
  std::span<std::byte> image() const noexcept;
  // The heap's first byte: base() + image_size() rounded up to a page.
  std::byte* heap() const noexcept;
  std::uint64_t heap_size() const noexcept;
  std::uint64_t heap_limit() const noexcept;
  // Makes the heap `size` bytes (rounded up to a page) accessible; the new bytes are zero.
  // Never shrinks. Throws Error (ENOMEM past heap_limit(), or the errno of mprotect /
  // ftruncate: a memfd heap that cannot get pages).
  void grow_heap(std::uint64_t size);
  // Makes [offset, offset + length) of the image (clipped to it) safe to hand to a system
  // call: under ImagePopulation::kLazy its missing pages are filled now (read(2)/write(2)
  // on a missing page fail with EFAULT); under kCopyOnWrite nothing is needed. Throws Error
  // when a fill fails.
  void prefetch(std::uint64_t offset, std::uint64_t length);
  // Resets the slot and gives it back now; the instance is empty afterwards.
  void reset() noexcept;

 private:
  friend class InstancePool;
  Instance(std::shared_ptr<InstancePool::State> pool, Slot* slot) noexcept;
  std::shared_ptr<InstancePool::State> pool_;
  Slot* slot_ = nullptr;
};

}  // namespace mapwright
