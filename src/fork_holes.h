// src/fork_holes.h — ranges marked MADV_DONTFORK, kept reserved in a child of fork().
//
// A lazy image, a kLazy pool slot's image and a memfd pool heap are MADV_DONTFORK (lazy.h,
// pool.h: in a child they would read as zeros, or share the parent's heap). The child gets a
// hole there, but it inherits the range table, whose entries still cover the hole: the next
// mapping the child makes could land in it, and registering it would then fail ("overlapping
// range", seen with a LazyImage made in a child of a process that had one), or a region would
// be found under another's owner. So the child fills each hole with an inaccessible
// reservation (MAP_FIXED_NOREPLACE: never over anything the child did inherit there), from a
// pthread_atfork child handler: the addresses stay taken, a touch is SIGSEGV, as before.
#pragma once

#include <cstdint>

namespace mapwright::detail {

// madvise(MADV_DONTFORK) of [base, base + length), remembered until forgotten. Returns 0 or
// the errno (ENOMEM when it cannot be remembered: nothing is marked then). Not
// async-signal-safe.
int dont_fork(void* base, std::uint64_t length) noexcept;
// Forgets the ranges that start in [begin, begin + length) (the range is being unmapped or
// mapped again). Not async-signal-safe.
void forget_dont_fork(void* begin, std::uint64_t length) noexcept;

// Forgets, when destroyed, the ranges dont_fork() remembered in [base, base + length). An
// owner declares it just before its Registration, so that it runs right after the range
// leaves the range table and before the mapping goes: a child forked earlier keeps the hole
// its inherited table names, one forked later has nothing to keep.
class ForgetDontForkOnExit {
 public:
  ForgetDontForkOnExit() = default;
  ForgetDontForkOnExit(const ForgetDontForkOnExit&) = delete;
  ForgetDontForkOnExit& operator=(const ForgetDontForkOnExit&) = delete;
  ~ForgetDontForkOnExit() {
    if (length_ != 0) forget_dont_fork(base_, length_);
  }
  void cover(void* base, std::uint64_t length) noexcept {
    base_ = base;
    length_ = length;
  }

 private:
  void* base_ = nullptr;
  std::uint64_t length_ = 0;
};

}  // namespace mapwright::detail
