#include "mapwright/fault.h"

#include "handler.h"
#include "mapwright/error.h"

namespace mapwright {

void install_fault_handler() {
  if (const int err = detail::install_handler(); err != 0) {
    throw Error(err, "installing the SIGBUS handler", "", "with sigaction");
  }
}

namespace detail {

void throw_fault(const FaultFailure& failure) {
  throw Error(failure.error, failure.operation, failure.subject, failure.detail);
}

}  // namespace detail
}  // namespace mapwright
