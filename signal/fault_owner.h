// signal/fault_owner.h — what the range table maps an address range to.
//
// An owner is anything that can resolve a fault in its range: a growable file (GrowthOwner),
// and later a page filled from an image, a copy-on-write slot. The handler finds the owner in
// the RangeTable and calls on_fault() while the table is pinned, so the owner is alive for
// the whole call (invariant 4: unregistering waits for such handlers to finish).
#pragma once

#include <cstdint>

#include "mapwright/fault.h"

namespace mapwright::detail {

enum class FaultOutcome {
  kResolved,  // retrying the access will succeed
  kFailed,    // it will not; `failure` says why
};

class FaultOwner {
 public:
  // Resolves a SIGBUS with si_code == BUS_ADRERR at `address`, inside this owner's range.
  // Async-signal-safe: called from the signal handler. Must not allocate, throw, or wait for
  // anything ordinary code holds with signals enabled, and must return kResolved only when
  // retrying the access can succeed (invariant 1: the handler never loops).
  virtual FaultOutcome on_fault(std::uintptr_t address, FaultFailure* failure) noexcept = 0;

 protected:
  ~FaultOwner() = default;
};

}  // namespace mapwright::detail
