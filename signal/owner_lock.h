// signal/owner_lock.h — the spin lock an owner holds while it changes its file, and what a
// fork() does to it.
//
// Taken either in the handler (every signal blocked) or by ordinary code under a
// SignalBlocker, so a handler never waits for its own thread (invariant 2). Held for one
// ftruncate/fallocate at most.
//
// fork(): a child has only the forking thread. A lock that another thread of the parent held
// at the fork would stay held forever in the child. So the lock word records the fork
// generation of its holder — a counter the child side of pthread_atfork increments — and a
// waiter that finds a lock taken in an earlier generation takes it over: its holder does not
// exist in this process.
#pragma once

#include <atomic>
#include <cstdint>

namespace mapwright::detail {

// This process's fork generation: 1 in the first process, one more in each child forked
// (through fork() or anything that runs pthread_atfork handlers). Async-signal-safe.
std::uint32_t fork_generation() noexcept;
// Called by the child side of the pthread_atfork handlers. Async-signal-safe.
void next_fork_generation() noexcept;

class OwnerLock {
 public:
  constexpr OwnerLock() noexcept = default;
  // Spins (sched_yield) until it holds the lock. Async-signal-safe; call only with every
  // signal blocked.
  void lock() noexcept;
  // Async-signal-safe.
  void unlock() noexcept { word_.store(0, std::memory_order_release); }

 private:
  std::atomic<std::uint32_t> word_{0};  // 0: free; else the fork generation of the holder
};

}  // namespace mapwright::detail
