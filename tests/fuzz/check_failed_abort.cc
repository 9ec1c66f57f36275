// tests/fuzz/check_failed_abort.cc — what a failed check does inside a fuzz target (drivers.h
// declares it): print where, then abort, so that libFuzzer reports a crash and saves the
// input. tests/fuzz_regression_test.cc defines its own, which fails the test instead.
#include <cstdio>
#include <cstdlib>

#include "drivers.h"

namespace mapwright::fuzz {

void check_failed(const char* what, const char* file, int line) {
  std::fprintf(stderr, "%s:%d: fuzz check failed: %s\n", file, line, what);
  std::abort();
}

}  // namespace mapwright::fuzz
