// signal/fault_owner.h — what the range table maps an address range to.
//
// An owner is anything that can resolve a fault in its range: a file that grows upward from
// offset 0 (UpwardGrowth) or downward from a fixed top (DownwardGrowth), and later a
// copy-on-write slot or a lazily filled image. Each owner has two verbs:
//
//   * on_fault(): the handler's, resolving one SIGBUS in the range. The handler finds the
//     owner in the RangeTable and calls it while the table is pinned, so the owner is alive
//     for the whole call (invariant 4: unregistering waits for such handlers to finish).
//   * commit(): ordinary code's, making a range safe to hand to a system call BEFORE it is
//     touched. System calls never fault: read(2) into an unbacked or missing page fails with
//     EFAULT, with no signal for an owner to act on. For growth, commit() grows the file.
#pragma once

#include <cstdint>

namespace mapwright::detail {

inline constexpr std::uint64_t kNoOffset = UINT64_MAX;

enum class FaultOutcome {
  kResolved,  // retrying the access will succeed
  kFailed,    // it will not; the report says why
};

// One SIGBUS, as the handler saw it.
struct FaultContext {
  std::uintptr_t address = 0;  // si_addr
  int code = 0;                // si_code (only BUS_ADRERR reaches owners today)
};

// Why a fault or a commit() could not be resolved, as an owner says it: small plain data that
// lives on the handler's stack (which may be a 4 KiB sigaltstack), with no text formatted yet.
// `subject` points into the owner, so it is valid only while the owner is (in the handler:
// while the table is pinned); FailureRecord (recovery.h) is the copy that outlives it.
struct FaultReport {
  int error = 0;                 // an errno value
  const char* operation = "";    // a string literal: "growing region"
  const char* subject = "";      // the owner's name
  std::uint64_t size = 0;        // the size growth aimed at; 0: none
  std::uint64_t offset = kNoOffset;  // the fault's offset in the owner's file; kNoOffset: none
  const char* access = "store";  // a string literal: what was at `offset` ("store", "touch")
  const char* reason = nullptr;  // a string literal that explains, or null
};

class FaultOwner {
 public:
  // Resolves a SIGBUS inside this owner's range. Async-signal-safe: called from the signal
  // handler with every signal blocked. Must not allocate, throw, or wait for anything
  // ordinary code holds with signals enabled, and must return kResolved only when retrying
  // the access can succeed (invariant 1: the handler never loops).
  virtual FaultOutcome on_fault(const FaultContext& fault, FaultReport* report) noexcept = 0;

  // Makes [begin, end) of the owner's range safe for a system call (backed, present).
  // Not async-signal-safe.
  virtual FaultOutcome commit(std::uintptr_t begin, std::uintptr_t end,
                              FaultReport* report) noexcept = 0;

 protected:
  ~FaultOwner() = default;
};

}  // namespace mapwright::detail
