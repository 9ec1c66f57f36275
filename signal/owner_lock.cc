#include "owner_lock.h"

#include <sched.h>

namespace mapwright::detail {
namespace {

constinit std::atomic<std::uint32_t> g_generation{1};

}  // namespace

std::uint32_t fork_generation() noexcept { return g_generation.load(std::memory_order_acquire); }

void next_fork_generation() noexcept { g_generation.fetch_add(1, std::memory_order_acq_rel); }

void OwnerLock::lock() noexcept {
  const std::uint32_t mine = fork_generation();
  for (;;) {
    std::uint32_t seen = 0;
    if (word_.compare_exchange_weak(seen, mine, std::memory_order_acquire)) return;
    if (seen != 0 && seen != mine &&
        word_.compare_exchange_strong(seen, mine, std::memory_order_acquire)) {
      return;  // held by a thread of a parent process: it will never let go here
    }
    sched_yield();
  }
}

}  // namespace mapwright::detail
