// tests/fuzz/wrapper_fuzz.cc — libFuzzer target. The input is a wrapper file: Wrapper::open
// over a memfd holding it, verify(), every byte of every entry; never load_library().
// What it checks is run_wrapper() in drivers.h, which tests/fuzz_regression_test.cc
// runs on the seed corpus and the saved regressions too.
#include <cstdio>
#include <cstdlib>

#include "drivers.h"

namespace mapwright::fuzz {

void check_failed(const char* what, const char* file, int line) {
  std::fprintf(stderr, "%s:%d: fuzz check failed: %s\n", file, line, what);
  std::abort();  // libFuzzer reports a crash and saves the input
}

}  // namespace mapwright::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  mapwright::fuzz::run_wrapper({data, size});
  return 0;
}
