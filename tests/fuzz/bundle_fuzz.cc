// tests/fuzz/bundle_fuzz.cc — libFuzzer target. The input is a bundle message (share.h) and
// the fds sent with it (sealed memfds with its content, unsealed ones, a pipe); the byte
// layout is in drivers.h, whose run_bundle() tests/fuzz_regression_test.cc runs on the seed
// corpus and the saved regressions too.
#include "drivers.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  mapwright::fuzz::run_bundle({data, size});
  return 0;
}
