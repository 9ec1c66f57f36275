// tests/fuzz_regression_test.cc — every input the fuzz targets found a problem with
// (tests/fuzz/regressions/<target>/) and every seed (tests/fuzz/corpus/<target>/), run through
// the same drivers as the libFuzzer targets (tests/fuzz/drivers.h), in the ordinary suite and
// under every preset. A driver's broken property throws here instead of aborting, so one bad
// input fails one test, named after the file.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#include "fuzz/drivers.h"

namespace mapwright::fuzz {

void check_failed(const char* what, const char* file, int line) {
  throw std::logic_error(std::string(file) + ":" + std::to_string(line) + ": " + what);
}

}  // namespace mapwright::fuzz

namespace {

namespace fs = std::filesystem;
using Driver = void (*)(mapwright::fuzz::Input);

// From CMake, not __FILE__: a compiler launcher (ccache with a base directory) may make
// __FILE__ relative to the build directory, and ctest runs tests from another one.
const fs::path kFuzzDir = MAPWRIGHT_TEST_FUZZ_DIR;

struct Case {
  std::string target;  // wrapper_fuzz, ...
  std::string kind;    // corpus, regressions
  fs::path path;
};

std::vector<Case> cases() {
  std::vector<Case> all;
  for (const char* target : mapwright::fuzz::kTargets) {
    for (const char* kind : {"corpus", "regressions"}) {
      const fs::path dir = kFuzzDir / kind / target;
      if (!fs::is_directory(dir)) continue;
      std::vector<fs::path> files;
      for (const auto& entry : fs::directory_iterator(dir)) {
        if (entry.is_regular_file()) files.push_back(entry.path());
      }
      std::sort(files.begin(), files.end());
      for (const fs::path& file : files) all.push_back({target, kind, file});
    }
  }
  return all;
}

Driver driver_for(const std::string& target) {
  if (target == "wrapper_fuzz") return mapwright::fuzz::run_wrapper;
  if (target == "segment_table_fuzz") return mapwright::fuzz::run_segment_table;
  if (target == "elf_info_fuzz") return mapwright::fuzz::run_elf_info;
  if (target == "bundle_fuzz") return mapwright::fuzz::run_bundle;
  if (target == "flatbuffer_fuzz") return mapwright::fuzz::run_flatbuffer;
  if (target == "fixed_image_fuzz") return mapwright::fuzz::run_fixed_image;
  return mapwright::fuzz::run_sealed_image;
}

std::vector<std::uint8_t> read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<std::uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

class FuzzInput : public testing::TestWithParam<Case> {};

TEST_P(FuzzInput, PassesTheDriversChecks) {
  const Case& c = GetParam();
  SCOPED_TRACE(c.path.string());
  const std::vector<std::uint8_t> bytes = read_file(c.path);
  const int fds_before = mapwright::fuzz::open_fd_count();
  try {
    driver_for(c.target)(bytes);
  } catch (const std::logic_error& e) {
    FAIL() << e.what();
  }
  EXPECT_EQ(mapwright::fuzz::open_fd_count(), fds_before);
}

std::string case_name(const testing::TestParamInfo<Case>& info) {
  std::string name = info.param.target + "_" + info.param.kind + "_" + info.param.path.filename().string();
  for (char& ch : name) {
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  }
  return name;
}

INSTANTIATE_TEST_SUITE_P(Saved, FuzzInput, testing::ValuesIn(cases()), case_name);

// The corpora are committed: an empty list would make the suite above pass by testing nothing.
TEST(FuzzInputs, EveryTargetHasSeeds) {
  for (const char* target : mapwright::fuzz::kTargets) {
    const auto all = cases();
    EXPECT_TRUE(std::any_of(all.begin(), all.end(), [&](const Case& c) {
      return c.target == target && c.kind == "corpus";
    })) << target;
  }
}

}  // namespace
