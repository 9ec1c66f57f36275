// tests/fuzz/sealed_image_fuzz.cc — libFuzzer target. The input chooses fds of every kind
// (memfds with any seals, files, pipes, sockets, bad numbers) for SealedImage::adopt() and
// receive_image(); the byte layout is in drivers.h.
// What it checks is run_sealed_image() in drivers.h, which tests/fuzz_regression_test.cc
// runs on the seed corpus and the saved regressions too.
#include "drivers.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  mapwright::fuzz::run_sealed_image({data, size});
  return 0;
}
