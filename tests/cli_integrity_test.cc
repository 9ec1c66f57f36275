// `mapwright` and whole-file integrity (format version 2): verify refuses a flipped bit in the
// metadata (names, kinds, dependencies), the segment table, the padding and the trailer, not
// just in the entries' bytes; truncated files and trailing bytes are named as such; version 1
// files are read with a warning; stock `capnp decode` still reads the file.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <capnp/any.h>
#include <capnp/serialize.h>

#include <cstring>
#include <string>
#include <vector>

#include "cli.h"
#include "mapwright/wrapper.h"
#include "wrapper.capnp.h"
#include "wrapper_v1_fixture.h"

namespace mapwright {
namespace {

using namespace cli_test;
using ::testing::HasSubstr;

// Where the schema says the parts of a packed wrapper are, found with a stock reader over the
// file's first message (so that the test finds them in whatever layout the writer chose).
struct Layout {
  std::uint64_t size = 0;
  std::uint64_t name = 0;        // the first byte of entry "libb"'s name
  std::uint64_t kind = 0;        // the byte holding entry "liba"'s kind
  std::uint64_t dependency = 0;  // the first byte of libb's dependency "liba"
  std::uint64_t dependency_count = 0;  // the byte of libb's dependency list pointer with bit 3
                                       // = bit 35, the lowest bit of the element count
  std::uint64_t data_kind = 0;   // the byte holding entry "data"'s kind
  std::uint64_t producer = 0;    // the first byte of the producer text
  std::uint64_t first_chunk = 0; // entry "liba"'s first byte
  std::uint64_t after_chunk = 0; // a padding byte after liba's bytes
};

Layout layout_of(const std::string& file) {
  Layout layout;
  layout.size = file.size();
  kj::Array<capnp::word> words = kj::heapArray<capnp::word>(file.size() / sizeof(capnp::word));
  std::memcpy(words.begin(), file.data(), words.size() * sizeof(capnp::word));
  capnp::FlatArrayMessageReader reader(words);
  const auto* base = reinterpret_cast<const capnp::byte*>(words.begin());
  const auto at = [&](const void* p) {
    return static_cast<std::uint64_t>(static_cast<const capnp::byte*>(p) - base);
  };
  const auto root = reader.getRoot<schema::WrapperFile>();
  layout.producer = at(root.getProducer().begin());
  for (const auto entry : root.getEntries()) {
    const std::string name = entry.getName();
    if (name == "liba") {
      // kind is the data section's first 16 bits (schema: kind @1 :Kind, the first field
      // that is not a pointer).
      layout.kind = at(capnp::AnyStruct::Reader(entry).getDataSection().begin());
      const auto chunk = entry.getChunks()[0];
      layout.first_chunk = at(chunk.begin());
      layout.after_chunk = at(chunk.begin()) + entry.getSize() + 3;
    }
    if (name == "libb") {
      layout.name = at(entry.getName().begin());
      layout.dependency = at(entry.getDependencies()[0].begin());
      // The pointer section follows the data section; dependencies is its third pointer
      // (name @0, digest @4, dependencies @5, chunks @6).
      const auto data = capnp::AnyStruct::Reader(entry).getDataSection();
      layout.dependency_count = at(data.end()) + 2 * sizeof(capnp::word) + 4;
    }
    if (name == "data") layout.data_kind = at(capnp::AnyStruct::Reader(entry).getDataSection().begin());
  }
  return layout;
}

class CliIntegrityTest : public CliTest {
 protected:
  fs::path pack_libraries() {
    write_file(path("data.bin"), random_bytes(5000, 7));
    const fs::path wrapper = path("libs.mwr");
    const Outcome packed =
        tool({"pack", "-o", wrapper, "--lib", "liba=" MAPWRIGHT_FIXTURE_A, "--lib",
              "libb=" MAPWRIGHT_FIXTURE_B ":liba", "--data", "data=" + path("data.bin").string(),
              "--no-progress"});
    EXPECT_EXIT_CODE(packed, 0);
    return wrapper;
  }
};

// (c) One flipped bit in each part of the file: verify exits 1 with one line. (Before format
// version 2, the flips of a name, of data's kind, of the dependency count, of the producer
// and of the padding all verified "ok".)
TEST_F(CliIntegrityTest, VerifyRefusesAFlippedBitAnywhere) {
  const fs::path wrapper = pack_libraries();
  const std::string original = read_file(wrapper);
  const Layout layout = layout_of(original);
  ASSERT_EQ(original[layout.name], 'l');
  ASSERT_EQ(original[layout.dependency], 'l');
  ASSERT_EQ(original[layout.after_chunk], '\0');
  // A list pointer's high word: element size 6 (pointers) in bits 0-2, count 1 from bit 3.
  ASSERT_EQ(original[layout.dependency_count], 1 << 3 | 6) << "not libb's dependency list pointer";
  struct Case {
    const char* part;
    std::uint64_t offset;
    int bit;
  };
  const std::vector<Case> cases = {
      {"entry name", layout.name + 3, 0},                  // libb -> libc
      {"entry kind", layout.kind, 0},                      // library -> data
      {"entry kind of data", layout.data_kind, 0},         // data -> library
      {"dependency count", layout.dependency_count, 3},    // libb needs nothing
      {"dependency", layout.dependency + 3, 1},            // liba -> libc
      {"producer", layout.producer, 5},
      {"segment table", 0, 4},                             // the segment count
      {"unused segment table slot", 12, 0},
      {"padding after the segment table", 1000, 2},
      {"padding after a chunk", layout.after_chunk, 7},
      {"a chunk", layout.first_chunk + 100, 3},
      {"the last byte", layout.size - 1, 0},
      {"near the end", layout.size - 60, 6},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.part);
    std::string damaged = original;
    damaged[c.offset] = static_cast<char>(damaged[c.offset] ^ (1 << c.bit));
    const fs::path copy = path("damaged.mwr");
    write_file(copy, damaged);
    const Outcome verified = tool({"verify", copy});
    EXPECT_EXIT_CODE(verified, 1);
    expect_one_error_line(verified, {copy.string()});
    EXPECT_THAT(verified.out, Not(HasSubstr("entries ok"))) << verified.describe();
  }
}

// `run` checks every byte too before it loads anything: a flipped padding bit (which no
// entry's digest covers) is exit 1, and the function is not called.
TEST_F(CliIntegrityTest, RunLoadsNothingFromAWrapperWithDamagedPadding) {
  const fs::path wrapper = pack_libraries();
  std::string damaged = read_file(wrapper);
  damaged[layout_of(damaged).after_chunk] ^= 0x10;
  write_file(wrapper, damaged);
  const Outcome ran = tool({"run", wrapper, "libb", "fixture_b_main"});
  EXPECT_EXIT_CODE(ran, 1);
  EXPECT_EQ(ran.out, "");
  expect_one_error_line(ran, {wrapper.string(), "is not zero", "nothing was loaded"});
}

// (d) A version 1 file (as the tool wrote it before): read, with a warning that its metadata
// is unchecked, in inspect, inspect --json and verify.
TEST_F(CliIntegrityTest, AVersion1FileIsReadWithAWarning) {
  const std::vector<std::byte> v1 = test::wrapper_v1_fixture();
  const fs::path wrapper = path("v1.mwr");
  write_file(wrapper, std::string(reinterpret_cast<const char*>(v1.data()), v1.size()));
  const std::string warning = "warning: wrapper '" + wrapper.string() +
                              "' is format version 1: no digest covers its metadata";

  const Outcome inspected = tool({"inspect", wrapper});
  EXPECT_EXIT_CODE(inspected, 0);
  EXPECT_THAT(inspected.out, HasSubstr("format version 1 (metadata unchecked: repack)"));
  EXPECT_THAT(inspected.out, HasSubstr("greeting"));
  expect_one_error_line(inspected, {warning});

  const Outcome json = tool({"inspect", "--json", wrapper});
  EXPECT_EXIT_CODE(json, 0);
  const Json parsed = parse_json(json.out);
  EXPECT_EQ(parsed["format_version"].number, 1u);
  EXPECT_EQ(parsed["metadata_checked"].type, Json::Type::kBool);
  EXPECT_FALSE(parsed["metadata_checked"].boolean);
  expect_one_error_line(json, {warning});

  const Outcome verified = tool({"verify", wrapper});
  EXPECT_EXIT_CODE(verified, 0);
  EXPECT_THAT(verified.out, HasSubstr("2 entries ok, metadata UNCHECKED (format version 1"));
  expect_one_error_line(verified, {warning});

  const Outcome extracted = tool({"extract", wrapper, "greeting", "-o", "-"});
  EXPECT_EXIT_CODE(extracted, 0);
  EXPECT_EQ(extracted.out, test::kWrapperV1Greeting);

  // And a version 2 file says its metadata is checked, with no warning.
  const fs::path current = pack_libraries();
  const Outcome now = tool({"inspect", "--json", current});
  EXPECT_EXIT_CODE(now, 0);
  EXPECT_EQ(now.err, "");
  EXPECT_EQ(parse_json(now.out)["format_version"].number, kWrapperFormatVersion);
  EXPECT_TRUE(parse_json(now.out)["metadata_checked"].boolean);
  const Outcome checked = tool({"verify", current});
  EXPECT_EXIT_CODE(checked, 0);
  EXPECT_EQ(checked.err, "");
  EXPECT_THAT(checked.out, HasSubstr("metadata and every other byte ok (format version 2)"));
}

// (e) A truncated wrapper and one with bytes after it are named as such, not "not a wrapper".
TEST_F(CliIntegrityTest, TruncatedAndTrailingBytesAreNamed) {
  const fs::path wrapper = pack_libraries();
  const std::string original = read_file(wrapper);
  const std::uint64_t size = original.size();
  const fs::path copy = path("changed.mwr");
  struct Case {
    std::string bytes;
    std::string says;
  };
  const std::vector<Case> cases = {
      {original.substr(0, size - 1),
       "truncated at byte " + std::to_string(size - 1) + " of " + std::to_string(size) + " expected"},
      {original.substr(0, size - kWrapperTrailerBytes),
       "truncated at byte " + std::to_string(size - kWrapperTrailerBytes) + " of " +
           std::to_string(size) + " expected"},
      {original.substr(0, size / 2), "truncated at byte " + std::to_string(size / 2) + " of at least"},
      {original + "x", "1 bytes after the wrapper, which ends at byte " + std::to_string(size)},
      {original + original, std::to_string(size) + " bytes after the wrapper"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.says);
    write_file(copy, c.bytes);
    for (const char* command : {"inspect", "verify"}) {
      const Outcome outcome = tool({command, copy});
      EXPECT_EXIT_CODE(outcome, 1);
      expect_one_error_line(outcome, {copy.string(), c.says});
      EXPECT_THAT(outcome.err, Not(HasSubstr("not a wrapper")));
    }
  }
}

// (f) Stock `capnp decode` reads a version 2 wrapper: the wrapper's root, then the trailer's.
TEST_F(CliIntegrityTest, StockCapnpDecodeShowsTheWrapperAndItsTrailer) {
  if (find_on_path("capnp").empty()) GTEST_SKIP() << "the capnp tool is not installed";
  const fs::path wrapper = pack_libraries();
  const std::uint64_t size = fs::file_size(wrapper);
  const std::string schema =
      fs::path(MAPWRIGHT_TEST_SCHEMA_DIR).parent_path().parent_path() / "include" / "mapwright" /
      "wrapper.capnp";
  const Outcome decoded =
      run_program("/bin/sh", {"-c", "capnp decode '" + schema + "' WrapperFile < '" +
                                        wrapper.string() + "'"});
  EXPECT_EXIT_CODE(decoded, 0);
  const std::string& out = decoded.out;
  // Two structs, each with the magic.
  std::size_t magics = 0;
  for (std::size_t at = out.find("magic = "); at != std::string::npos;
       at = out.find("magic = ", at + 1)) {
    ++magics;
  }
  EXPECT_EQ(magics, 2u) << out.substr(0, 2000);
  EXPECT_THAT(out, HasSubstr("name = \"libb\""));
  EXPECT_THAT(out, HasSubstr("dependencies = [\"liba\"]"));
  EXPECT_THAT(out, HasSubstr("wrapperSize = " + std::to_string(size)));
  EXPECT_THAT(out, HasSubstr("metadataDigest = "));
  // The trailer comes last.
  EXPECT_GT(out.rfind("wrapperSize = " + std::to_string(size)), out.rfind("name = \"data\""));
}

}  // namespace
}  // namespace mapwright
