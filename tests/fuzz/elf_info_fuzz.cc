// tests/fuzz/elf_info_fuzz.cc — libFuzzer target. The input is a shared library's bytes, read by
// detail::read_elf() (src/elf_info.h), which the wrapper writer and the loader use on untrusted
// bytes. What it checks is run_elf_info() in drivers.h, which tests/fuzz_regression_test.cc runs
// on the seed corpus and the saved regressions too.
#include "drivers.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  mapwright::fuzz::run_elf_info({data, size});
  return 0;
}
