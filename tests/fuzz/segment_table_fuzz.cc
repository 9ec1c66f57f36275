// tests/fuzz/segment_table_fuzz.cc — libFuzzer target. The input is a Cap'n Proto stream
// message: MappedMessageReader at offsets 0 and 8 of a memfd, then AnyPointer::targetSize().
// What it checks is run_segment_table() in drivers.h, which tests/fuzz_regression_test.cc
// runs on the seed corpus and the saved regressions too.
#include "drivers.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  mapwright::fuzz::run_segment_table({data, size});
  return 0;
}
