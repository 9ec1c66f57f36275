// tests/cli_compressed_test.cc — `mapwright pack --compress zstd` end to end, as a person runs
// it: inspect shows what is stored and how (text and JSON), verify, extract (to a file and to
// standard output) and run decode the frames and give back the packed bytes; a damaged frame is
// damage (exit 1), never a crash or a partial output file; bad compression options are usage
// errors (exit 2) that leave the target alone.
#include <string>
#include <vector>

#include "cli.h"
#include "mapwright/wrapper.h"

namespace mapwright {
namespace {

using namespace cli_test;  // NOLINT(google-build-using-namespace): the tests' own toolkit

// Text that compresses well but not to nothing: numbered lines with a pseudo-random word.
std::string compressible(std::size_t size, std::uint64_t seed) {
  std::string text;
  std::uint64_t state = seed * 0x9E3779B97F4A7C15ull + 1;
  while (text.size() < size) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    text += "line " + std::to_string(text.size()) + ": word" + std::to_string(state >> 52) + "\n";
  }
  text.resize(size);
  return text;
}

class CliCompressedTest : public CliTest {
 protected:
  // liba and libb (b needs a), 700 KiB of text, 70 KiB of random bytes (which zstd cannot
  // shrink) and an empty file, in frames of 64 KiB.
  fs::path pack_compressed(const std::string& name = "z.mwr") {
    write_file(path("text.txt"), compressible(700 * 1024 + 5, 3));
    write_file(path("random.bin"), random_bytes(70 * 1024 + 1, 4));
    write_file(path("empty.bin"), "");
    sources_ = {
        {"liba", "library", MAPWRIGHT_FIXTURE_A, {}},
        {"text", "data", path("text.txt"), {}},
        {"libb", "library", MAPWRIGHT_FIXTURE_B, {"liba"}},
        {"random", "data", path("random.bin"), {}},
        {"empty", "data", path("empty.bin"), {}},
    };
    const fs::path wrapper = path(name);
    const Outcome packed = tool(
        {"pack", "-o", wrapper, "--compress", "zstd", "--frame-size", "64k", "--level", "5",
         "--lib", "liba=" MAPWRIGHT_FIXTURE_A, "--data", "text=" + path("text.txt").string(),
         "--lib", "libb=" MAPWRIGHT_FIXTURE_B ":liba", "--data",
         "random=" + path("random.bin").string(), "--data", "empty=" + path("empty.bin").string(),
         "--no-progress"});
    EXPECT_EXIT_CODE(packed, 0);
    EXPECT_EQ(packed.err, "");
    return wrapper;
  }
};

TEST_F(CliCompressedTest, PackInspectVerifyExtractRun) {
  const fs::path wrapper = pack_compressed();

  // inspect, text: version 3, and a STORED column saying "zstd N (x%)".
  const Outcome text = tool({"inspect", wrapper});
  EXPECT_EXIT_CODE(text, 0);
  const std::vector<std::string> lines = lines_of(text.out);
  ASSERT_EQ(lines.size(), 2 + sources_.size()) << text.out;
  EXPECT_THAT(lines[0], HasSubstr("format version " + std::to_string(kWrapperCompressedFormatVersion)));
  EXPECT_THAT(lines[1], HasSubstr("STORED"));
  for (std::size_t i = 0; i < sources_.size(); ++i) {
    EXPECT_THAT(lines[2 + i], HasSubstr(" zstd ")) << lines[2 + i];
  }

  // inspect --json: the compression, the stored size, the frames.
  const Json json = inspect_json(wrapper);
  EXPECT_EQ(json["format_version"].number, kWrapperCompressedFormatVersion);
  const std::vector<Json>& entries = json["entries"].array;
  ASSERT_EQ(entries.size(), sources_.size());
  for (std::size_t i = 0; i < sources_.size(); ++i) {
    const Json& entry = entries[i];
    SCOPED_TRACE(sources_[i].name);
    const std::uint64_t size = fs::file_size(sources_[i].path);
    EXPECT_EQ(entry["size"].number, size);
    EXPECT_EQ(entry["compression"].string, "zstd");
    EXPECT_EQ(entry["frame_size"].number, 65536u);
    EXPECT_EQ(entry["frames"].number, (size + 65535) / 65536);
    if (size > 0) {
      EXPECT_GT(entry["stored_size"].number, 0u);
      EXPECT_LE(entry["offset"].number + entry["stored_size"].number, fs::file_size(wrapper));
    }
  }
  EXPECT_LT(entries[1]["stored_size"].number * 3, entries[1]["size"].number)
      << "numbered text shrinks to less than a third";
  EXPECT_GT(entries[3]["stored_size"].number, entries[3]["size"].number)
      << "random bytes do not shrink (frame headers and checksums only add)";

  // verify decodes every frame and checks the digest of the plain bytes.
  const Outcome verified = tool({"verify", wrapper});
  EXPECT_EXIT_CODE(verified, 0);
  EXPECT_EQ(verified.err, "");
  EXPECT_EQ(std::count(verified.out.begin(), verified.out.end(), '\n'), sources_.size() + 1);
  EXPECT_THAT(verified.out, Not(HasSubstr("MISMATCH")));

  // extract gives back the packed bytes, to a file and to standard output.
  for (const Source& source : sources_) {
    SCOPED_TRACE(source.name);
    const fs::path out = path("extracted.bin");
    const Outcome extracted = tool({"extract", wrapper, source.name, "-o", out});
    EXPECT_EXIT_CODE(extracted, 0);
    EXPECT_TRUE(read_file(out) == read_file(source.path));
    const Outcome to_stdout = tool({"extract", wrapper, source.name, "-o", "-"});
    EXPECT_EXIT_CODE(to_stdout, 0);
    EXPECT_TRUE(to_stdout.out == read_file(source.path));
  }

  // run loads the compressed libraries (decoded into sealed memfds) in dependency order.
  const Outcome ran = tool({"run", wrapper, "libb", "fixture_b_main", "x", "y", "z"});
  EXPECT_EXIT_CODE(ran, 4);
  EXPECT_EQ(ran.out, "fixture_b_main argc=4 argv: libb x y z\n");
  EXPECT_EQ(ran.err, "");

  // The digest is of the plain bytes, so it is the same as when packed uncompressed.
  const fs::path plain = path("plain.mwr");
  const Outcome packed_plain =
      tool({"pack", "-o", plain, "--data", "text=" + path("text.txt").string(), "--no-progress"});
  EXPECT_EXIT_CODE(packed_plain, 0);
  EXPECT_EQ(inspect_json(plain)["entries"].array[0]["digest"].string, entries[1]["digest"].string);
  EXPECT_EQ(inspect_json(plain)["format_version"].number, kWrapperFormatVersion)
      << "nothing compressed: still version 2, for readers that know only that";
}

// A byte flipped in the middle of an entry's frames: verify names the entry, extract writes
// nothing (with or without --no-verify: a frame that does not decode has no bytes to give),
// and run loads nothing.
TEST_F(CliCompressedTest, ADamagedFrameIsDamage) {
  const fs::path wrapper = pack_compressed();
  const Json json = inspect_json(wrapper);
  for (const std::size_t index : {std::size_t{1}, std::size_t{0}}) {  // text, then liba
    const Json& entry = json["entries"].array[index];
    const std::string& name = entry["name"].string;
    SCOPED_TRACE(name);
    const fs::path copy = path("damaged.mwr");
    fs::copy_file(wrapper, copy, fs::copy_options::overwrite_existing);
    flip_byte(copy, entry["offset"].number + entry["stored_size"].number / 2);

    const Outcome verified = tool({"verify", copy});
    EXPECT_EXIT_CODE(verified, 1);
    EXPECT_THAT(verified.out, HasSubstr("DIGEST MISMATCH  " + name + "\n"));
    expect_one_error_line(verified, {"'" + name + "'"});

    const fs::path out = path("out.bin");
    const Outcome refused = tool({"extract", copy, name, "-o", out});
    EXPECT_EXIT_CODE(refused, 1);
    expect_one_error_line(refused, {"digest mismatch"});
    EXPECT_FALSE(fs::exists(out));
    const Outcome forced = tool({"extract", copy, name, "-o", out, "--no-verify"});
    EXPECT_EXIT_CODE(forced, 1);
    expect_one_error_line(forced, {"does not decode"});
    EXPECT_FALSE(fs::exists(out)) << "no partial output";

    const Outcome ran = tool({"run", copy, "libb", "fixture_b_main", "x"});
    EXPECT_EXIT_CODE(ran, 1);
    EXPECT_THAT(ran.out, Not(HasSubstr("fixture_b_main")));
  }
}

TEST_F(CliCompressedTest, BadCompressionOptionsAreUsageErrors) {
  write_file(path("a.txt"), "a");
  const std::string w = path("w.mwr");
  const std::string data = "a=" + path("a.txt").string();
  struct Case {
    std::vector<std::string> args;
    std::string says;
  };
  const std::vector<Case> cases = {
      {{"--compress", "lz4"}, "--compress"},
      {{"--compress", "zstd", "--frame-size", "1000"}, "4096"},
      {{"--compress", "zstd", "--frame-size", "2048"}, "4096"},
      {{"--compress", "zstd", "--frame-size", "128m"}, "frame size"},
      {{"--compress", "zstd", "--frame-size", "big"}, "--frame-size"},
      {{"--compress", "zstd", "--level", "0"}, "--level"},
      {{"--compress", "zstd", "--level", "20"}, "--level"},
      {{"--frame-size", "64k"}, "--frame-size only applies with --compress zstd"},
      {{"--compress", "none", "--level", "9"}, "--level only applies with --compress zstd"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> args = {"pack", "-o", w, "--data", data};
    args.insert(args.end(), c.args.begin(), c.args.end());
    SCOPED_TRACE(::testing::PrintToString(args));
    const Outcome outcome = tool(args);
    EXPECT_EXIT_CODE(outcome, 2);
    EXPECT_EQ(outcome.out, "");
    expect_one_error_line(outcome, {c.says});
  }
  EXPECT_FALSE(fs::exists(w));
}

// A stream (standard input) is compressed as it arrives, and a frame size that does not
// divide the entry leaves a short last frame.
TEST_F(CliCompressedTest, StandardInputIsCompressedAsItArrives) {
  const std::string bytes = compressible(300 * 1024 + 123, 9);
  write_file(path("in.txt"), bytes);
  const fs::path wrapper = path("s.mwr");
  const Outcome packed = run_program("/bin/sh", {"-c", std::string("'") + kTool +
                                                           "' pack -o '" + wrapper.string() +
                                                           "' --compress zstd --frame-size 128k "
                                                           "--data in=- --no-progress < '" +
                                                           path("in.txt").string() + "'"});
  EXPECT_EXIT_CODE(packed, 0);
  const Json json = inspect_json(wrapper);
  EXPECT_EQ(json["entries"].array[0]["frames"].number, 3u);
  EXPECT_EQ(json["entries"].array[0]["size"].number, bytes.size());
  const Outcome out = tool({"extract", wrapper, "in", "-o", "-"});
  EXPECT_EXIT_CODE(out, 0);
  EXPECT_TRUE(out.out == bytes);
}

}  // namespace
}  // namespace mapwright
