#include "recovery.h"

#include "line.h"

namespace mapwright::detail {
namespace {

// This thread's innermost guarded() frame. initial-exec TLS: a fixed offset from the thread
// pointer, never allocated lazily, so reading it in the handler is async-signal-safe.
constinit thread_local RecoveryPoint* t_recovery [[gnu::tls_model("initial-exec")]] = nullptr;

}  // namespace

void enter_recovery(RecoveryPoint& point) noexcept {
  point.previous = t_recovery;
  t_recovery = &point;
}

void leave_recovery(RecoveryPoint& point) noexcept { t_recovery = point.previous; }

RecoveryPoint* current_recovery() noexcept { return t_recovery; }

void describe_detail(const FaultReport& report, bool with_reason, LineWriter& out) noexcept {
  const bool sized = report.size != 0;
  const bool placed = report.offset != kNoOffset;
  if (sized) out.text("to ").bytes(report.size);
  if (placed) {
    out.text(sized ? " (" : "(").text(report.access).text(" at offset ").number(report.offset).text(")");
  }
  if (with_reason && report.reason != nullptr) {
    out.text(sized || placed ? ": " : "").text(report.reason);
  }
}

void record_failure(const FaultReport& report, FailureRecord* record) noexcept {
  record->error = report.error;
  record->operation = report.operation;
  LineWriter(record->subject, sizeof record->subject).text(report.subject);
  LineWriter detail(record->detail, sizeof record->detail);
  describe_detail(report, true, detail);
}

}  // namespace mapwright::detail
