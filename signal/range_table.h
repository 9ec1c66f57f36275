// signal/range_table.h — address range → owner, read lock-free from the SIGBUS handler.
//
// The scheme is glibc's _dl_find_object (two copies and a version counter), with a reader
// count per copy so that a writer knows when a copy is no longer read:
//
//     version_ ──► low bit selects the active copy
//
//       copies_[0]                      copies_[1]
//       ┌ mins[] ┐  ┌ Block ─────────┐   (the same entries, laid out independently)
//       │ m0 m1 …├─►│ begin[64]      │
//       └────────┘  │ end[64]        │   Each copy: sorted blocks of up to 64 entries plus
//                   │ owner[64]      │   a sorted array of each block's first begin, so a
//                   └────────────────┘   lookup is two short binary searches.
//       readers_[0]                     readers_[1]
//
// Reader (the handler): load version v, count itself in readers_[v & 1], check the version
// did not move (else uncount and start over), search copies_[v & 1], use the owner, uncount.
// A reader never waits for a writer: the copy it searches is not written while it is
// counted. So a lookup is consistent even when the faulting thread itself was interrupted in
// the middle of an update (and writers block signals anyway), unlike a seqlock, whose reader
// would spin forever on a version its own thread left odd.
//
// Writer (serialized by a mutex held with every signal blocked):
//   1. wait until readers_ of the inactive copy is zero (readers that entered before the
//      last flip), then apply the change to it — no reader can see a half-done change;
//   2. flip version_: new readers use the updated copy;
//   3. wait until readers_ of the old copy is zero, then apply the same change to it, so
//      both copies hold the same entries again.
// After step 3 no handler can still hold an owner that erase() removed (invariant 4): the
// caller may unmap the range and destroy the owner.
//
// Nothing allocates or frees with signals blocked: a store into memory that an allocator
// got from a Region may fault, and a fault while SIGBUS is blocked kills the process. An
// insert learns under the lock what memory it needs, lets go, allocates, and tries again;
// memory a change frees is handed back and freed after the lock is released.
//
// fork(): pthread_atfork handlers (registered with the SIGBUS handler) take the writer lock
// around fork(), so a child never inherits a half-applied change, and the child clears the
// reader counts that threads which do not exist in it left behind.
//
// Memory orders are sequentially consistent on the version and the counters: a reader's
// "count, then re-check the version" and a writer's "flip, then check the count" must not
// both miss each other.
//
// The reader count of each copy is spread over kReaderSlots cache lines; a Pin picks one by
// hashing its own stack address (threads have distinct stacks), so threads looking up at
// the same time do not bounce one line between cores. A Pin decrements the slot it
// incremented, so every slot's count is exact and the writer's sum never undercounts.
//
// Full blocks split in the middle; searches look only at the first `count` slots.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>

#include "fault_owner.h"

namespace mapwright::detail {

class RangeTable {
 public:
  static constexpr std::uint32_t kBlockEntries = 64;  // a power of two
  static constexpr std::uint32_t kReaderSlots = 16;

  // Constant-initializable. Async-signal-safe (it does nothing at run time).
  constexpr RangeTable() noexcept = default;
  // Frees the copies. The process-wide table is never destroyed (see fault_table()).
  // Not async-signal-safe.
  ~RangeTable();
  RangeTable(const RangeTable&) = delete;
  RangeTable& operator=(const RangeTable&) = delete;

  // Maps [begin, end) to `owner`. Throws std::invalid_argument if the range is empty or
  // overlaps one already present, std::bad_alloc if memory runs out; the table is
  // unchanged then. Blocks all signals while it holds the writer lock (and allocates only
  // outside it); may wait for handlers still reading the copy it updates.
  // Not async-signal-safe.
  void insert(std::uintptr_t begin, std::uintptr_t end, FaultOwner* owner);

  // Removes the range that starts at `begin`; returns false if there is none. Returns only
  // when no handler can still be using its owner. Never throws. Not async-signal-safe.
  bool erase(std::uintptr_t begin) noexcept;

  // Number of ranges. Not async-signal-safe (takes the writer lock).
  std::size_t size() const;

  // The pthread_atfork handlers: before_fork() blocks every signal and takes the writer
  // lock; after_fork_in_parent() and after_fork_in_child() let go and restore the mask, and
  // the child's also zeroes the reader counts. Not async-signal-safe.
  void before_fork() noexcept;
  void after_fork_in_parent() noexcept;
  void after_fork_in_child() noexcept;

  struct Found {
    FaultOwner* owner = nullptr;  // null: no range contains the address
    std::uintptr_t begin = 0;
    std::uintptr_t end = 0;
  };

  // Keeps one copy of the table readable, and every owner in it alive, for the Pin's
  // lifetime. Lock-free; async-signal-safe. Hold a Pin only for as long as the owner is
  // being used: erase() on another thread waits for it.
  class Pin {
   public:
    // Async-signal-safe.
    explicit Pin(const RangeTable& table) noexcept;
    // Async-signal-safe.
    ~Pin() { release(); }
    Pin(const Pin&) = delete;
    Pin& operator=(const Pin&) = delete;

    // The range containing `address`, if any. Async-signal-safe, lock-free, O(log n).
    Found find(std::uintptr_t address) const noexcept;
    // Ends the pin early (before a siglongjmp or chaining to another handler, which may
    // never return). Idempotent. Async-signal-safe.
    void release() noexcept;

   private:
    const RangeTable* table_;
    unsigned index_;
    unsigned slot_;
    bool held_ = true;
  };

 private:
  struct Block {
    std::uint32_t count = 0;
    std::uintptr_t begin[kBlockEntries];  // [0, count) are in use
    std::uintptr_t end[kBlockEntries];
    FaultOwner* owner[kBlockEntries];
  };
  struct Copy {
    std::uintptr_t* mins = nullptr;  // mins[i] == blocks[i]->begin[0], ascending
    Block** blocks = nullptr;
    std::uint32_t count = 0;     // blocks in use
    std::uint32_t capacity = 0;  // slots in mins and blocks: 0 or a power of two
    std::size_t entries = 0;
    Block* spare = nullptr;      // preallocated so that a split cannot fail midway
  };

  // The memory one insert may need in one copy (a spare block for a split, larger arrays),
  // allocated before either copy changes, so that an insert either throws with the table
  // unchanged or completes in both copies.
  // install() swaps the copy's old arrays into it, so that they are freed with it, after
  // the writer lock is released and signals are unblocked.
  struct Reservation {
    std::unique_ptr<Block> spare;
    std::unique_ptr<std::uintptr_t[]> mins;
    std::unique_ptr<Block*[]> blocks;
    std::uint32_t capacity = 0;
  };
  // What needs_of() found missing in a copy: read under the writer lock, allocated outside.
  struct Needs {
    bool spare = false;
    std::uint32_t capacity = 0;  // 0: the arrays are big enough
  };

  // Async-signal-safe.
  static Found find_in(const Copy& copy, std::uintptr_t address) noexcept;
  // Not async-signal-safe, nor is anything below. What an insert into `copy` needs beyond
  // what `have` holds; reads only the writer-owned sizes of `copy`, under the writer lock.
  static Needs needs_of(const Copy& copy, const Reservation& have) noexcept;
  // Allocates what `needs` says into `reservation` (signals enabled, no lock held).
  static void allocate(const Needs& needs, Reservation& reservation);
  // Installs what allocate() got; `copy` must have no readers. The copy's replaced arrays
  // go into `reservation`, to be freed by its destructor later.
  static void install(Copy& copy, Reservation& reservation) noexcept;
  static bool is_free(const Copy& copy, std::uintptr_t begin, std::uintptr_t end) noexcept;
  // Never fails once install() gave the copy its reservation.
  static void insert_into(Copy& copy, std::uintptr_t begin, std::uintptr_t end,
                          FaultOwner* owner) noexcept;
  // Removes the entry; a block it empties that is not kept as the spare goes to `freed`,
  // for the caller to delete once signals are unblocked.
  static bool erase_from(Copy& copy, std::uintptr_t begin, Block** freed) noexcept;
  static void free_copy(Copy& copy) noexcept;
  void wait_for_readers(unsigned index) const noexcept;
  std::uint64_t readers(unsigned index) const noexcept;

  // Written only under writer_ by a writer that saw readers_[i] == 0 (copies_[i]) or holds
  // the lock (version_); read by Pins.
  Copy copies_[2];
  std::atomic<std::uint64_t> version_{0};
  struct alignas(64) ReaderSlot {
    std::atomic<std::uint64_t> count[2] = {};  // Pins of copy 0 and of copy 1
  };
  mutable ReaderSlot readers_[kReaderSlots] = {};
  mutable std::mutex writer_;
  std::uint64_t fork_mask_ = 0;  // the mask before_fork() found (os::SignalSet), restored after
};

// The process-wide table the SIGBUS handler searches. Constant-initialized and never
// destroyed, so a handler running during exit still finds valid memory. Async-signal-safe.
RangeTable& fault_table() noexcept;

}  // namespace mapwright::detail
