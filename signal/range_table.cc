#include "range_table.h"

#include <sched.h>
#include <time.h>

#include <cstring>
#include <new>
#include <stdexcept>

#include "block.h"
#include "os/os.h"

namespace mapwright::detail {
namespace {

// How many of the ascending a[0, n) are <= key. Branch-free halving (the compiler emits
// cmov); measured faster here than a fixed-length search over the padded arrays, whose
// extra steps cost more than the loop-exit misprediction they avoid.
inline std::uint32_t count_at_or_below(const std::uintptr_t* a, std::uint32_t n,
                                       std::uintptr_t key) noexcept {
  if (n == 0) return 0;
  const std::uintptr_t* base = a;
  std::uint32_t length = n;
  while (length > 1) {
    const std::uint32_t half = length / 2;
    base = base[half] <= key ? base + half : base;
    length -= half;
  }
  return static_cast<std::uint32_t>(base - a) + (*base <= key ? 1 : 0);
}

// The block that holds, or should hold, an entry starting at `begin`.
inline std::uint32_t block_for(const std::uintptr_t* mins, std::uint32_t count,
                               std::uintptr_t begin) noexcept {
  const std::uint32_t below = count_at_or_below(mins, count, begin);
  return below == 0 ? 0 : below - 1;
}

// Which of the kReaderSlots a Pin made on this stack uses: thread stacks are megabytes
// apart, so concurrent threads mostly land on different cache lines.
inline unsigned slot_for_this_stack() noexcept {
  int marker = 0;
  const auto address = reinterpret_cast<std::uintptr_t>(&marker);
  return static_cast<unsigned>((address >> 16) ^ (address >> 23)) % RangeTable::kReaderSlots;
}

}  // namespace

RangeTable::~RangeTable() {
  free_copy(copies_[0]);
  free_copy(copies_[1]);
}

// ---- readers ---------------------------------------------------------------------------

RangeTable::Pin::Pin(const RangeTable& table) noexcept
    : table_(&table), slot_(slot_for_this_stack()) {
  for (;;) {
    const std::uint64_t v = table.version_.load(std::memory_order_seq_cst);
    index_ = static_cast<unsigned>(v & 1);
    table.readers_[slot_].count[index_].fetch_add(1, std::memory_order_seq_cst);
    if (table.version_.load(std::memory_order_seq_cst) == v) return;
    // A writer flipped between our two loads; it may be about to update this copy.
    table.readers_[slot_].count[index_].fetch_sub(1, std::memory_order_seq_cst);
  }
}

void RangeTable::Pin::release() noexcept {
  if (!held_) return;
  held_ = false;
  table_->readers_[slot_].count[index_].fetch_sub(1, std::memory_order_seq_cst);
}

RangeTable::Found RangeTable::Pin::find(std::uintptr_t address) const noexcept {
  if (!held_) return {};
  return find_in(table_->copies_[index_], address);
}

RangeTable::Found RangeTable::find_in(const Copy& copy, std::uintptr_t address) noexcept {
  const std::uint32_t blocks = count_at_or_below(copy.mins, copy.count, address);
  if (blocks == 0) return {};
  const Block& block = *copy.blocks[blocks - 1];
  const std::uint32_t below = count_at_or_below(block.begin, block.count, address);
  if (below == 0 || address >= block.end[below - 1]) return {};
  return {block.owner[below - 1], block.begin[below - 1], block.end[below - 1]};
}

// ---- writers ---------------------------------------------------------------------------

std::uint64_t RangeTable::readers(unsigned index) const noexcept {
  // Each Pin decrements the slot it incremented, so no slot is ever read with an unmatched
  // decrement: the sum never undercounts the Pins that entered before the last flip.
  std::uint64_t total = 0;
  for (const ReaderSlot& slot : readers_) total += slot.count[index].load(std::memory_order_seq_cst);
  return total;
}

void RangeTable::wait_for_readers(unsigned index) const noexcept {
  // Readers are handlers resolving one fault: microseconds, or the length of one fallocate.
  for (unsigned spins = 0; readers(index) != 0; ++spins) {
    if (spins < 64) {
      sched_yield();
    } else {
      const timespec pause{0, 50'000};
      nanosleep(&pause, nullptr);
    }
  }
}

RangeTable::Needs RangeTable::needs_of(const Copy& copy, const Reservation& have) noexcept {
  Needs needs;
  needs.spare = copy.spare == nullptr && !have.spare;
  if (copy.count + 1 > copy.capacity) {
    const std::uint32_t wanted = copy.capacity == 0 ? 16 : copy.capacity * 2;
    if (have.capacity < wanted) needs.capacity = wanted;
  }
  return needs;
}

void RangeTable::allocate(const Needs& needs, Reservation& reservation) {
  if (needs.spare) reservation.spare = std::make_unique<Block>();
  if (needs.capacity != 0) {
    reservation.mins = std::make_unique<std::uintptr_t[]>(needs.capacity);
    reservation.blocks = std::make_unique<Block*[]>(needs.capacity);
    reservation.capacity = needs.capacity;
  }
}

void RangeTable::install(Copy& copy, Reservation& reservation) noexcept {
  if (copy.spare == nullptr && reservation.spare) copy.spare = reservation.spare.release();
  if (copy.count + 1 <= copy.capacity || reservation.capacity <= copy.capacity) return;
  std::uintptr_t* mins = reservation.mins.release();
  Block** blocks = reservation.blocks.release();
  const std::uint32_t capacity = reservation.capacity;
  if (copy.count != 0) {
    std::memcpy(mins, copy.mins, copy.count * sizeof *mins);
    std::memcpy(blocks, copy.blocks, copy.count * sizeof *blocks);
  }
  // The old arrays leave with the reservation, to be freed after the lock.
  reservation.mins.reset(copy.mins);
  reservation.blocks.reset(copy.blocks);
  reservation.capacity = 0;
  copy.mins = mins;
  copy.blocks = blocks;
  copy.capacity = capacity;
}

bool RangeTable::is_free(const Copy& copy, std::uintptr_t begin, std::uintptr_t end) noexcept {
  // No range may contain `begin`, and none may start in (begin, end).
  if (find_in(copy, begin).owner != nullptr) return false;
  const std::uint32_t blocks = count_at_or_below(copy.mins, copy.count, end - 1);
  if (blocks != 0) {
    const Block& block = *copy.blocks[blocks - 1];
    const std::uint32_t below = count_at_or_below(block.begin, block.count, end - 1);
    if (below != 0 && block.begin[below - 1] >= begin) return false;
  }
  return true;
}

void RangeTable::insert_into(Copy& copy, std::uintptr_t begin, std::uintptr_t end,
                             FaultOwner* owner) noexcept {
  if (copy.count == 0) {
    Block* block = copy.spare;
    copy.spare = nullptr;
    copy.blocks[0] = block;
    copy.mins[0] = begin;
    copy.count = 1;
  }
  std::uint32_t b = block_for(copy.mins, copy.count, begin);
  Block* block = copy.blocks[b];
  std::uint32_t at = count_at_or_below(block->begin, block->count, begin);
  if (block->count == kBlockEntries) {
    // Split in the middle, moving [32, 64) to the spare block inserted after this one.
    // (Splitting at the insertion point fills blocks completely under sequential
    // registration, but measured ~10% slower lookups here: 64-entry searches in place of 32.)
    Block* upper = copy.spare;
    copy.spare = nullptr;
    const std::uint32_t split = kBlockEntries / 2;
    upper->count = kBlockEntries - split;
    std::memcpy(upper->begin, block->begin + split, upper->count * sizeof(std::uintptr_t));
    std::memcpy(upper->end, block->end + split, upper->count * sizeof(std::uintptr_t));
    std::memcpy(upper->owner, block->owner + split, upper->count * sizeof(FaultOwner*));
    block->count = split;
    std::memmove(copy.mins + b + 2, copy.mins + b + 1, (copy.count - b - 1) * sizeof *copy.mins);
    std::memmove(copy.blocks + b + 2, copy.blocks + b + 1,
                 (copy.count - b - 1) * sizeof *copy.blocks);
    copy.mins[b + 1] = upper->begin[0];
    copy.blocks[b + 1] = upper;
    ++copy.count;
    if (at >= split) {
      ++b;
      block = upper;
      at -= split;
    }
  }
  const std::uint32_t tail = block->count - at;
  std::memmove(block->begin + at + 1, block->begin + at, tail * sizeof(std::uintptr_t));
  std::memmove(block->end + at + 1, block->end + at, tail * sizeof(std::uintptr_t));
  std::memmove(block->owner + at + 1, block->owner + at, tail * sizeof(FaultOwner*));
  block->begin[at] = begin;
  block->end[at] = end;
  block->owner[at] = owner;
  ++block->count;
  copy.mins[b] = block->begin[0];
  ++copy.entries;
}

bool RangeTable::erase_from(Copy& copy, std::uintptr_t begin, Block** freed) noexcept {
  if (copy.count == 0) return false;
  const std::uint32_t b = block_for(copy.mins, copy.count, begin);
  Block* block = copy.blocks[b];
  const std::uint32_t below = count_at_or_below(block->begin, block->count, begin);
  if (below == 0 || block->begin[below - 1] != begin) return false;
  const std::uint32_t at = below - 1;
  const std::uint32_t tail = block->count - at - 1;
  std::memmove(block->begin + at, block->begin + at + 1, tail * sizeof(std::uintptr_t));
  std::memmove(block->end + at, block->end + at + 1, tail * sizeof(std::uintptr_t));
  std::memmove(block->owner + at, block->owner + at + 1, tail * sizeof(FaultOwner*));
  --block->count;
  --copy.entries;
  if (block->count == 0) {
    // Keep one empty block as the spare; free any other.
    if (copy.spare == nullptr) {
      copy.spare = block;
    } else {
      *freed = block;
    }
    std::memmove(copy.mins + b, copy.mins + b + 1, (copy.count - b - 1) * sizeof *copy.mins);
    std::memmove(copy.blocks + b, copy.blocks + b + 1, (copy.count - b - 1) * sizeof *copy.blocks);
    --copy.count;
  } else {
    copy.mins[b] = block->begin[0];
  }
  return true;
}

void RangeTable::free_copy(Copy& copy) noexcept {
  for (std::uint32_t i = 0; i < copy.count; ++i) delete copy.blocks[i];
  delete copy.spare;
  delete[] copy.mins;
  delete[] copy.blocks;
  copy = Copy{};
}

void RangeTable::insert(std::uintptr_t begin, std::uintptr_t end, FaultOwner* owner) {
  if (begin >= end) throw std::invalid_argument("range table: empty range");
  // Memory for both copies, allocated with signals enabled and no lock held; freed (with
  // whatever install() replaced) when these go out of scope, after the lock.
  Reservation for_copy[2];
  for (;;) {
    Needs needs[2];
    bool overlaps = false;
    {
      const SignalBlocker blocked;
      const std::lock_guard lock(writer_);
      const std::uint64_t v = version_.load(std::memory_order_relaxed);
      const unsigned active = static_cast<unsigned>(v & 1);
      const unsigned inactive = active ^ 1;
      overlaps = !is_free(copies_[active], begin, end);
      needs[0] = needs_of(copies_[0], for_copy[0]);
      needs[1] = needs_of(copies_[1], for_copy[1]);
      const bool ready = !needs[0].spare && needs[0].capacity == 0 && !needs[1].spare &&
                         needs[1].capacity == 0;
      if (!overlaps && ready) {
        wait_for_readers(inactive);
        install(copies_[inactive], for_copy[inactive]);
        insert_into(copies_[inactive], begin, end, owner);
        version_.store(v + 1, std::memory_order_seq_cst);

        wait_for_readers(active);
        install(copies_[active], for_copy[active]);
        insert_into(copies_[active], begin, end, owner);
        return;
      }
    }
    if (overlaps) throw std::invalid_argument("range table: overlapping range");
    allocate(needs[0], for_copy[0]);
    allocate(needs[1], for_copy[1]);
  }
}

bool RangeTable::erase(std::uintptr_t begin) noexcept {
  Block* freed[2] = {nullptr, nullptr};
  bool erased = false;
  {
    const SignalBlocker blocked;
    const std::lock_guard lock(writer_);
    const std::uint64_t v = version_.load(std::memory_order_relaxed);
    const unsigned active = static_cast<unsigned>(v & 1);
    const unsigned inactive = active ^ 1;

    wait_for_readers(inactive);
    erased = erase_from(copies_[inactive], begin, &freed[0]);
    if (erased) {
      version_.store(v + 1, std::memory_order_seq_cst);
      // Handlers that found the owner through the old copy are counted in its reader slots.
      wait_for_readers(active);
      erase_from(copies_[active], begin, &freed[1]);
    }
  }
  delete freed[0];  // signals are enabled again
  delete freed[1];
  return erased;
}

void RangeTable::before_fork() noexcept {
  (void)os::set_signal_mask(SIG_BLOCK, os::kAllSignals, &fork_mask_);
  writer_.lock();
}

void RangeTable::after_fork_in_parent() noexcept {
  writer_.unlock();
  (void)os::set_signal_mask(SIG_SETMASK, fork_mask_, nullptr);
}

void RangeTable::after_fork_in_child() noexcept {
  // Only the forking thread exists here, and it holds no Pin: handlers release theirs
  // before anything that could fork. Counts left by the parent's other threads are stale.
  for (ReaderSlot& slot : readers_) {
    slot.count[0].store(0, std::memory_order_relaxed);
    slot.count[1].store(0, std::memory_order_relaxed);
  }
  writer_.unlock();
  (void)os::set_signal_mask(SIG_SETMASK, fork_mask_, nullptr);
}

std::size_t RangeTable::size() const {
  const SignalBlocker blocked;
  const std::lock_guard lock(writer_);
  return copies_[version_.load(std::memory_order_relaxed) & 1].entries;
}

RangeTable& fault_table() noexcept {
  // A union member is neither constructed at run time nor destroyed at exit.
  union Storage {
    RangeTable table;
    constexpr Storage() : table() {}
    ~Storage() {}
  };
  static constinit Storage storage;
  return storage.table;
}

}  // namespace mapwright::detail
