// signal/recovery.h — guarded()'s recovery points, as the handler sees them.
//
// guarded() (include/mapwright/fault.h, src/fault.cc) pushes a RecoveryPoint on this thread's
// chain before it runs its body. When an owner fails a fault on a thread that has one, the
// handler copies the report into the point's FailureRecord while the owner is still pinned,
// then siglongjmps there; guarded() throws an Error made from the record.
//
// The record lives in guarded()'s frame on the thread's ordinary stack, not on the
// handler's (possibly tiny) alternate stack, and holds copies of the texts, so it outlives
// the owner it describes.
#pragma once

#include <setjmp.h>

#include "fault_owner.h"

namespace mapwright::detail {

// A failed fault or commit(), with its texts formatted: what an Error is made from.
struct FailureRecord {
  int error = 0;
  const char* operation = "";  // a string literal
  char subject[192] = {};      // the owner's name, truncated to fit
  char detail[192] = {};       // "to 8 GiB (store at offset 8589938688): reason"
};

// Copies `report` into `record`, formatting its numbers. Async-signal-safe.
void record_failure(const FaultReport& report, FailureRecord* record) noexcept;

// One guarded() frame on this thread's chain.
struct RecoveryPoint {
  sigjmp_buf env;
  RecoveryPoint* previous = nullptr;
  FailureRecord failure;
};

// Push and pop this thread's innermost recovery point. Async-signal-safe (a thread-local
// pointer with the initial-exec model: never allocated lazily).
void enter_recovery(RecoveryPoint& point) noexcept;
void leave_recovery(RecoveryPoint& point) noexcept;
// This thread's innermost recovery point, or null. Async-signal-safe.
RecoveryPoint* current_recovery() noexcept;

// Appends the report's numbers and reason: "to 8 GiB (store at offset 8589938688): reason".
// Async-signal-safe.
class LineWriter;
void describe_detail(const FaultReport& report, bool with_reason, LineWriter& out) noexcept;

}  // namespace mapwright::detail
