// src/os/retry.h — the one EINTR loop of src/os/ (private to it).
#pragma once

#include <cerrno>

namespace mapwright::os::detail {

// Runs `call` until it does not fail with EINTR. Returns 0, or the errno it failed with
// (a call fails when it returns -1). The caller's errno is preserved,
// so the async-signal-safe wrappers stay transparent. Async-signal-safe.
template <class Call>
int retry(Call call) noexcept {
  const int saved = errno;
  int result = 0;
  for (;;) {
    if (call() != -1) break;
    if (errno == EINTR) continue;
    result = errno;
    break;
  }
  errno = saved;
  return result;
}

}  // namespace mapwright::os::detail
