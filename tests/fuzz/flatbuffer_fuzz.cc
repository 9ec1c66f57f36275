// tests/fuzz/flatbuffer_fuzz.cc — libFuzzer target. The input is a FlatBuffers buffer of the
// test schema: MappedFlatBuffer over a memfd, root<Catalog>() with two sets of limits, and a
// walk of everything an accepted buffer leads to. What it checks is run_flatbuffer() in
// drivers.h, which tests/fuzz_regression_test.cc runs on the seeds and regressions too.
#include "drivers.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  mapwright::fuzz::run_flatbuffer({data, size});
  return 0;
}
