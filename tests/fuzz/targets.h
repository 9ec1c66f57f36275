// tests/fuzz/targets.h — every fuzz target, by name: its corpus and regressions directories,
// its program (tests/fuzz/<name>.cc), its driver in drivers.h. build.sh and
// tests/fuzz/CMakeLists.txt list the same names.
#pragma once

#include <array>

namespace mapwright::fuzz {

inline constexpr std::array<const char*, 7> kTargets = {
    "wrapper_fuzz", "segment_table_fuzz", "sealed_image_fuzz", "elf_info_fuzz",
    "bundle_fuzz",  "flatbuffer_fuzz",    "fixed_image_fuzz"};

}  // namespace mapwright::fuzz
