// tests/cli_usage_test.cc — the command line's own errors: numbers parsed strictly (a sign, hex
// or a fraction is not a size; a size out of range is not called "not a multiple"), and an
// option of the tool itself given after a command blamed on the right place.
#include <string>
#include <vector>

#include "cli.h"

namespace mapwright {
namespace {

using namespace cli_test;  // NOLINT(google-build-using-namespace): the tests' own toolkit

class CliUsageTest : public CliTest {
 protected:
  Outcome pack_with_chunk_size(const std::string& size) {
    write_file(path("d.bin"), random_bytes(20000, 7));
    return tool({"pack", "-o", path("w.mwr"), "--data", "d=" + path("d.bin").string(),
                 "--chunk-size", size, "--no-progress"});
  }
};

TEST_F(CliUsageTest, ChunkSizesAreParsedStrictly) {
  struct Case {
    std::string size;
    std::vector<std::string> message;
  };
  const std::vector<Case> refused = {
      // CLI11's size parsing took this as 2^64 - 4096 and called it "not a multiple of 4096".
      {"-4096", {"--chunk-size", "'-4096' is not a size"}},
      // A multiple of 4096, but too large: the range is the problem.
      {"512m", {"536870912 bytes is out of range", "536866816"}},
      {"0x1000", {"'0x1000' is not a size"}},
      {"1e4", {"'1e4' is not a size"}},
      {"4096.0", {"'4096.0' is not a size"}},
      {"4096x", {"'4096x' is not a size"}},
      {"+4096", {"'+4096' is not a size"}},
      {"99999999999999999999", {"is too large"}},
      {"18014398509481984k", {"is too large"}},  // 2^54 KiB = 2^64 bytes
      {"0", {"0 bytes is out of range"}},
      {"1000", {"1000 bytes is not a multiple of 4096"}},
  };
  for (const Case& c : refused) {
    SCOPED_TRACE(c.size);
    const Outcome outcome = pack_with_chunk_size(c.size);
    EXPECT_EXIT_CODE(outcome, 2);
    expect_one_error_line(outcome, c.message);
    if (c.size != "1000") {
      EXPECT_THAT(outcome.err, Not(HasSubstr("not a multiple")));
    }
    EXPECT_FALSE(fs::exists(path("w.mwr")));
  }
  for (const std::string size : {"4096", "4k", "8K", "16KiB", "1m", "1MiB", "511m"}) {
    SCOPED_TRACE(size);
    EXPECT_EXIT_CODE(pack_with_chunk_size(size), 0);
  }
}

TEST_F(CliUsageTest, AToolOptionAfterTheCommandSaysWhereItGoes) {
  const fs::path wrapper = pack_standard();
  for (const std::string command : {"inspect", "verify"}) {
    SCOPED_TRACE(command);
    const Outcome outcome = tool({command, "--version", wrapper});
    EXPECT_EXIT_CODE(outcome, 2);
    expect_one_error_line(outcome, {"--version is an option of 'mapwright' itself, not of '" +
                                        command + "'",
                                    "before the command"});
  }
  // An unknown option is still the command's own error, with its help.
  const Outcome unknown = tool({"verify", "-q", wrapper});
  EXPECT_EXIT_CODE(unknown, 2);
  expect_one_error_line(unknown, {"-q", "see 'mapwright verify --help'"});
}

}  // namespace
}  // namespace mapwright
