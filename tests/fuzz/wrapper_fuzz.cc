// tests/fuzz/wrapper_fuzz.cc — libFuzzer target. The input is a wrapper file: Wrapper::open
// over a memfd holding it, verify(), every byte of every entry; never load_library().
// What it checks is run_wrapper() in drivers.h, which tests/fuzz_regression_test.cc
// runs on the seed corpus and the saved regressions too.
#include "drivers.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  mapwright::fuzz::run_wrapper({data, size});
  return 0;
}
