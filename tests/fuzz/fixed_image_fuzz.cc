// tests/fuzz/fixed_image_fuzz.cc — libFuzzer target. The input is a fixed-base image:
// FixedImage::map() at its base and relocated, with full and header-only checks. What it
// checks is run_fixed_image() in drivers.h, which tests/fuzz_regression_test.cc runs on the
// seeds and regressions too.
#include "drivers.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  mapwright::fuzz::run_fixed_image({data, size});
  return 0;
}
