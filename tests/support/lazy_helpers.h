// tests/support/lazy_helpers.h — what the tests of lazy images share: why userfaultfd cannot
// be used here (Docker's seccomp profile, an old kernel, no privilege), and the skip that says
// so.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "mapwright/error.h"
#include "mapwright/lazy.h"

namespace mapwright::test {

// Why lazy images cannot be made here, or "" when they can (probed once).
inline std::string lazy_unavailable() {
  static const std::string why = [] {
    const std::vector<std::byte> one(16, std::byte{1});
    try {
      LazyImage probe(LazySource::memory(one));
      return std::string();
    } catch (const Error& e) {
      return std::string(e.what());
    }
  }();
  return why;
}

}  // namespace mapwright::test

#define SKIP_WITHOUT_USERFAULTFD()                                                         \
  do {                                                                                     \
    if (!::mapwright::test::lazy_unavailable().empty())                                    \
      GTEST_SKIP() << "no userfaultfd: " << ::mapwright::test::lazy_unavailable();         \
  } while (0)
