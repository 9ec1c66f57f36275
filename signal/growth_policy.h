// signal/growth_policy.h — how far a file grows when it must cover `need` bytes: a pure
// function, unit-tested on its own (tests/growth_policy_test.cc).
#pragma once

#include <cstdint>

namespace mapwright::detail {

// Validated and page-rounded by the caller (src/region.cc): 0 < min_step <= max_step <=
// capacity, all multiples of the page size, capacity <= 2^47.
struct GrowthPolicy {
  std::uint64_t capacity = 0;  // bytes reserved; growth never goes past it
  std::uint64_t min_step = 0;  // smallest growth step
  std::uint64_t max_step = 0;  // the geometric (x2) step is capped at this
  bool grow_on_fault = true;   // false: only explicit growth; a stray store fails
};

// The size a file of `current` bytes grows to so that it covers `need` bytes: the result of
// repeated geometric steps (each step the size so far, at least min_step, at most
// max_step), rounded up to `page`, at most the capacity. Returns `current` when it already
// covers `need`. Requires need <= policy.capacity. Computed in O(log(capacity / min_step))
// (at most 48 doublings), never one step at a time, so that a 4 KiB step over 16 TiB costs
// what a 1 GiB step does. Async-signal-safe (pure).
constexpr std::uint64_t growth_target(std::uint64_t current, std::uint64_t need,
                                      const GrowthPolicy& policy, std::uint64_t page) noexcept {
  if (need <= current) return current;
  std::uint64_t target = current;
  if (target < policy.min_step) target += policy.min_step;  // step: min_step
  while (target < need && target < policy.max_step) target += target;  // step: the size
  if (target < need) {  // step: max_step, as many as it takes
    const std::uint64_t steps = (need - target + policy.max_step - 1) / policy.max_step;
    target += steps * policy.max_step;
  }
  target = (target + page - 1) / page * page;
  return target < policy.capacity ? target : policy.capacity;
}

}  // namespace mapwright::detail
