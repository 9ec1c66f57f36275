#include "mapwright/fault.h"

#include "handler.h"
#include "mapwright/error.h"
#include "recovery.h"

namespace mapwright {

void install_fault_handler() {
  if (const int err = detail::install_handler(); err != 0) {
    throw Error(err, "installing the SIGBUS handler", "", "with sigaction");
  }
}

namespace detail {

void run_guarded(void (*body)(void*), void* context) {
  RecoveryPoint point;
  if (sigsetjmp(point.env, 1) != 0) {
    // Landed here from the signal handler: the body was abandoned at the faulting store.
    leave_recovery(point);
    const FailureRecord& failure = point.failure;
    throw Error(failure.error, failure.operation, failure.subject, failure.detail);
  }
  enter_recovery(point);
  struct Leave {
    RecoveryPoint& point;
    ~Leave() { leave_recovery(point); }
  } leave{point};
  body(context);
}

}  // namespace detail
}  // namespace mapwright
