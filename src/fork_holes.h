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

}  // namespace mapwright::detail
