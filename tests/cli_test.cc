// tests/cli_test.cc — the `mapwright` tool end to end, run as a child process the way a
// person or a script runs it: pack → inspect (text and JSON) → verify → extract → run, the
// digest against xxh128sum, chunking, damaged files (a flipped byte in each entry, a
// truncated file, another format version), usage errors, error lines, the progress bar.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <vector>

#include <capnp/any.h>
#include <capnp/serialize.h>

#include "cli.h"
#include "mapwright/wrapper.h"
#include "wrapper.capnp.h"
#include "wrapper_integrity.h"

namespace mapwright {
namespace {

using namespace cli_test;  // NOLINT(google-build-using-namespace): the tests' own toolkit


// ---- end to end ---------------------------------------------------------------------------

TEST_F(CliTest, PackInspectVerifyExtractRun) {
  const fs::path wrapper = pack_standard();
  ASSERT_TRUE(fs::exists(wrapper));

  // inspect, text: the header line, then one row per entry with its kind and size.
  const Outcome text = tool({"inspect", wrapper});
  EXPECT_EXIT_CODE(text, 0);
  EXPECT_EQ(text.err, "");
  const std::vector<std::string> lines = lines_of(text.out);
  ASSERT_EQ(lines.size(), 2 + sources_.size()) << text.out;
  EXPECT_THAT(lines[0], HasSubstr("format version " + std::to_string(kWrapperFormatVersion)));
  EXPECT_THAT(lines[0], HasSubstr(std::to_string(fs::file_size(wrapper)) + " bytes"));
  EXPECT_THAT(lines[0], HasSubstr("5 entries"));
  EXPECT_THAT(lines[1], HasSubstr("NAME"));
  for (std::size_t i = 0; i < sources_.size(); ++i) {
    const Source& source = sources_[i];
    const std::string& row = lines[2 + i];
    const std::string shown =
        source.name == kOddName
            ? "odd \"name\" with \\\\back\\\\slash\\x01\\n and \u00fcnicode \u2603"
            : source.name;
    EXPECT_TRUE(row.starts_with(shown)) << row;
    EXPECT_THAT(row, HasSubstr(" " + source.kind + " "));
    EXPECT_THAT(row, HasSubstr(" " + std::to_string(fs::file_size(source.path)) + " "));
  }
  EXPECT_THAT(lines[2 + 2], HasSubstr(" liba")) << "libb's dependency";

  // inspect --json: every key, the values, and names that read back exactly.
  const Json json = inspect_json(wrapper);
  EXPECT_EQ(json["format_version"].number, kWrapperFormatVersion);
  EXPECT_EQ(json["producer"].string, kProducer);
  EXPECT_EQ(json["file_size"].number, fs::file_size(wrapper));
  const std::vector<Json>& entries = json["entries"].array;
  ASSERT_EQ(entries.size(), sources_.size());
  for (std::size_t i = 0; i < sources_.size(); ++i) {
    const Source& source = sources_[i];
    const Json& entry = entries[i];
    for (const char* key : {"name", "kind", "offset", "size", "digest", "dependencies", "chunks"}) {
      EXPECT_TRUE(entry.has(key)) << key;
    }
    EXPECT_EQ(entry["name"].string, source.name);
    EXPECT_EQ(entry["kind"].string, source.kind);
    const std::uint64_t size = fs::file_size(source.path);
    EXPECT_EQ(entry["size"].number, size) << source.name;
    EXPECT_EQ(entry["chunks"].number, size == 0 ? 0u : 1u) << source.name;
    EXPECT_EQ(entry["digest"].string.size(), 32u);
    EXPECT_EQ(entry["digest"].string.find_first_not_of("0123456789abcdef"), std::string::npos);
    std::vector<std::string> dependencies;
    for (const Json& dependency : entry["dependencies"].array)
      dependencies.push_back(dependency.string);
    EXPECT_EQ(dependencies, source.dependencies) << source.name;
    if (size > 0) {
      EXPECT_EQ(entry["offset"].number % 4096, 0u) << source.name;
      EXPECT_LE(entry["offset"].number + size, fs::file_size(wrapper)) << source.name;
    }
  }

  // verify: one "ok" line per entry, then the summary.
  const Outcome verified = tool({"verify", wrapper});
  EXPECT_EXIT_CODE(verified, 0);
  EXPECT_EQ(verified.err, "");
  const std::vector<std::string> verify_lines = lines_of(verified.out);
  ASSERT_EQ(verify_lines.size(), sources_.size() + 1) << verified.out;
  for (std::size_t i = 0; i < sources_.size(); ++i) {
    EXPECT_TRUE(verify_lines[i].starts_with("ok ")) << verify_lines[i];
  }

  // extract: each entry byte for byte, to a file and to stdout.
  for (const Source& source : sources_) {
    const fs::path out = path("extracted.bin");
    const Outcome extracted = tool({"extract", wrapper, source.name, "-o", out});
    EXPECT_EXIT_CODE(extracted, 0);
    EXPECT_EQ(read_file(out), read_file(source.path)) << source.name;
    EXPECT_EQ(fs::status(out).permissions() & fs::perms::owner_write, fs::perms::owner_write);
    const Outcome to_stdout = tool({"extract", wrapper, source.name, "-o", "-"});
    EXPECT_EXIT_CODE(to_stdout, 0);
    EXPECT_TRUE(to_stdout.out == read_file(source.path)) << source.name;
  }

  // run: b loaded after a, from the wrapper; its exit value is argc via a (42 + 1 - 43 + 4).
  const Outcome ran = tool({"run", wrapper, "libb", "fixture_b_main", "x", "y", "z"});
  EXPECT_EXIT_CODE(ran, 4);
  EXPECT_EQ(ran.out, "fixture_b_main argc=4 argv: libb x y z\n");
  EXPECT_EQ(ran.err, "");
}

// Everything after SYMBOL is the function's, options included; a "--" right after it is
// dropped, a later one is not.
TEST_F(CliTest, RunPassesOptionLikeArgumentsThrough) {
  const fs::path wrapper = pack_standard();
  struct Case {
    std::vector<std::string> args;
    std::string line;
  };
  const std::vector<Case> cases = {
      {{}, "fixture_b_main argc=1 argv: libb"},
      {{"--", "--flag", "-h"}, "fixture_b_main argc=3 argv: libb --flag -h"},
      {{"--flag", "x", "--help"}, "fixture_b_main argc=4 argv: libb --flag x --help"},
      {{"x", "--", "-v"}, "fixture_b_main argc=4 argv: libb x -- -v"},
      {{"--version"}, "fixture_b_main argc=2 argv: libb --version"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> args = {"run", wrapper, "libb", "fixture_b_main"};
    args.insert(args.end(), c.args.begin(), c.args.end());
    const Outcome ran = tool(args);
    const int argc = static_cast<int>(std::count(c.line.begin(), c.line.end(), ' ')) - 2;
    EXPECT_EXIT_CODE(ran, argc);
    EXPECT_EQ(ran.out, c.line + "\n");
  }
}

// The digest inspect shows is what xxh128sum prints for the extracted entry.
TEST_F(CliTest, DigestIsWhatXxh128sumPrints) {
  const std::string xxh128sum = find_on_path("xxh128sum");
  if (xxh128sum.empty()) GTEST_SKIP() << "xxh128sum is not on PATH (Debian package xxhash)";
  const fs::path wrapper = pack_standard();
  const Json json = inspect_json(wrapper);
  for (const Json& entry : json["entries"].array) {
    const fs::path out = path("extracted.bin");
    EXPECT_EXIT_CODE(tool({"extract", wrapper, entry["name"].string, "-o", out}), 0);
    const Outcome summed = run_program(xxh128sum, {out});
    EXPECT_EXIT_CODE(summed, 0);
    EXPECT_EQ(summed.out.substr(0, summed.out.find(' ')), entry["digest"].string)
        << entry["name"].string;
  }
}

// --chunk-size splits an entry; the chunks read back as one.
TEST_F(CliTest, ChunkSizeSplitsEntries) {
  struct Case {
    std::string chunk_size;
    std::uint64_t chunk_bytes;
  };
  const std::string bytes = random_bytes((1u << 20) + 1000, 3);  // 16 full chunks and a bit
  write_file(path("big.bin"), bytes);
  for (const Case& c : {Case{"65536", 65536}, Case{"64k", 65536}, Case{"4096", 4096}}) {
    const fs::path wrapper = path("chunked.mwr");
    EXPECT_EXIT_CODE(tool({"pack", "-o", wrapper, "--chunk-size", c.chunk_size, "--data",
                           "big=" + path("big.bin").string()}),
                     0);
    const Json json = inspect_json(wrapper);
    ASSERT_EQ(json["entries"].array.size(), 1u);
    EXPECT_EQ(json["entries"].array[0]["chunks"].number,
              (bytes.size() + c.chunk_bytes - 1) / c.chunk_bytes)
        << c.chunk_size;
    EXPECT_EXIT_CODE(tool({"verify", wrapper}), 0);
    EXPECT_EXIT_CODE(tool({"extract", wrapper, "big", "-o", path("big.out")}), 0);
    EXPECT_TRUE(read_file(path("big.out")) == bytes) << c.chunk_size;
  }
}

// A PATH with ':' in it: a whole text that names a file is the path; otherwise the last ':'
// starts the dependency list.
TEST_F(CliTest, LibraryPathMayContainColons) {
  fs::create_directories(path("odd:dir"));
  const fs::path a_copy = path("odd:dir") / "liba:copy.so";
  fs::copy_file(MAPWRIGHT_FIXTURE_A, a_copy);
  const fs::path wrapper = path("colons.mwr");
  EXPECT_EXIT_CODE(tool({"pack", "-o", wrapper, "--lib", "liba=" + a_copy.string(), "--lib",
                         "libb=" MAPWRIGHT_FIXTURE_B ":liba", "--lib",
                         "liba2=" + a_copy.string() + ":liba,libb", "--no-progress"}),
                   0);
  const Json json = inspect_json(wrapper);
  ASSERT_EQ(json["entries"].array.size(), 3u);
  EXPECT_EQ(json["entries"].array[0]["dependencies"].array.size(), 0u);
  EXPECT_EQ(json["entries"].array[0]["size"].number, fs::file_size(a_copy));
  ASSERT_EQ(json["entries"].array[2]["dependencies"].array.size(), 2u);
  EXPECT_EQ(json["entries"].array[2]["dependencies"].array[0].string, "liba");
  EXPECT_EQ(json["entries"].array[2]["dependencies"].array[1].string, "libb");
  const Outcome ran = tool({"run", wrapper, "libb", "fixture_b_main", "q"});
  EXPECT_EXIT_CODE(ran, 2);
  EXPECT_EQ(ran.out, "fixture_b_main argc=2 argv: libb q\n");
}

// ---- damaged wrappers ---------------------------------------------------------------------

// A byte flipped inside any entry: verify names that entry and exits 1; run loads nothing and
// calls nothing; extract refuses that entry unless --no-verify.
TEST_F(CliTest, FlippedByteInEachEntryIsCaught) {
  const fs::path wrapper = pack_standard();
  const Json json = inspect_json(wrapper);
  int damaged_entries = 0;
  for (const Json& entry : json["entries"].array) {
    const std::string& name = entry["name"].string;
    if (entry["size"].number == 0) continue;  // nothing to flip
    ++damaged_entries;
    SCOPED_TRACE(name);
    const fs::path copy = path("damaged.mwr");
    fs::copy_file(wrapper, copy, fs::copy_options::overwrite_existing);
    flip_byte(copy, entry["offset"].number + entry["size"].number / 2);

    const Outcome verified = tool({"verify", copy});
    EXPECT_EXIT_CODE(verified, 1);
    const std::string shown =
        name == kOddName ? "odd \"name\" with \\\\back\\\\slash\\x01\\n and \u00fcnicode \u2603"
                         : name;
    EXPECT_THAT(verified.out, HasSubstr("DIGEST MISMATCH  " + shown + "\n"));
    EXPECT_EQ(std::count(verified.out.begin(), verified.out.end(), 'D'),
              std::count(shown.begin(), shown.end(), 'D') + 1)
        << "only one entry is damaged:\n"
        << verified.out;
    expect_one_error_line(verified, {"'" + shown + "'", "digest mismatch"});

    const Outcome ran = tool({"run", copy, "libb", "fixture_b_main", "x"});
    EXPECT_EXIT_CODE(ran, 1);
    EXPECT_THAT(ran.out, Not(HasSubstr("fixture_b_main")));
    expect_one_error_line(ran, {"'" + shown + "'", "digest mismatch"});

    const Outcome refused = tool({"extract", copy, name, "-o", path("out.bin")});
    EXPECT_EXIT_CODE(refused, 1);
    expect_one_error_line(refused, {"digest mismatch"});
    EXPECT_FALSE(fs::exists(path("out.bin"))) << "nothing is written for a damaged entry";
    const Outcome forced = tool({"extract", copy, name, "-o", path("out.bin"), "--no-verify"});
    EXPECT_EXIT_CODE(forced, 0);
    const std::string original =
        read_file(wrapper).substr(entry["offset"].number, entry["size"].number);
    const std::string extracted = read_file(path("out.bin"));
    ASSERT_EQ(extracted.size(), original.size());
    std::size_t differences = 0;
    for (std::size_t i = 0; i < original.size(); ++i) differences += extracted[i] != original[i];
    EXPECT_EQ(differences, 1u);
    fs::remove(path("out.bin"));
  }
  EXPECT_EQ(damaged_entries, 4);
}

// A truncated file is refused when it is opened: exit 1 and one line naming it.
TEST_F(CliTest, TruncatedWrapperIsRefused) {
  const fs::path wrapper = pack_standard();
  const std::uint64_t size = fs::file_size(wrapper);
  for (const std::uint64_t new_size : {size / 2, size - 1, std::uint64_t{8}, std::uint64_t{0}}) {
    SCOPED_TRACE(new_size);
    const fs::path copy = path("truncated.mwr");
    fs::copy_file(wrapper, copy, fs::copy_options::overwrite_existing);
    fs::resize_file(copy, new_size);
    for (const char* command : {"verify", "inspect"}) {
      const Outcome outcome = tool({command, copy});
      EXPECT_EXIT_CODE(outcome, 1);
      expect_one_error_line(outcome, {copy.string()});
    }
    const Outcome ran = tool({"run", copy, "libb", "fixture_b_main"});
    EXPECT_EXIT_CODE(ran, 1);
    EXPECT_EQ(ran.out, "");
  }
}

// Another format version in the root struct: refused, and the message says why. (In format
// version 2 the root is covered by the metadata digest: the trailer is rewritten to match, as
// a writer of that other version would have, so that the version is what open() refuses.)
TEST_F(CliTest, OtherFormatVersionIsRefused) {
  const fs::path wrapper = pack_standard();
  // Find formatVersion's file offset through the schema: the root's data section holds the
  // magic (bytes 0..7), then formatVersion (bytes 8..11).
  const std::string file = read_file(wrapper);
  kj::Array<capnp::word> words = kj::heapArray<capnp::word>(file.size() / sizeof(capnp::word));
  std::memcpy(words.begin(), file.data(), words.size() * sizeof(capnp::word));
  std::uint64_t version_offset = 0;
  {
    capnp::FlatArrayMessageReader reader(words);
    const schema::WrapperFile::Reader root = reader.getRoot<schema::WrapperFile>();
    ASSERT_EQ(root.getMagic(), kWrapperMagic);
    ASSERT_EQ(root.getFormatVersion(), kWrapperFormatVersion);
    const capnp::Data::Reader data = capnp::AnyStruct::Reader(root).getDataSection();
    ASSERT_GE(data.size(), 12u);
    version_offset = static_cast<std::uint64_t>(
                         data.begin() - reinterpret_cast<const capnp::byte*>(words.begin())) +
                     8;
  }
  std::uint32_t stored = 0;
  std::memcpy(&stored, file.data() + version_offset, sizeof stored);
  ASSERT_EQ(stored, kWrapperFormatVersion) << "formatVersion is not where the schema says";

  const std::uint32_t other = kWrapperFormatVersion + 98;
  const int fd = ::open(wrapper.c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::pwrite(fd, &other, sizeof other, static_cast<off_t>(version_offset)),
            static_cast<ssize_t>(sizeof other));
  ::close(fd);
  {
    std::string changed = read_file(wrapper);
    const std::uint64_t message = changed.size() - kWrapperTrailerBytes;
    const auto* bytes = reinterpret_cast<const std::byte*>(changed.data());
    auto trailer = detail::decode_trailer({bytes + message, kWrapperTrailerBytes}, nullptr);
    ASSERT_TRUE(trailer.has_value());
    trailer->metadata_digest =
        detail::metadata_digest(bytes, detail::hashed_prefix_end(bytes), trailer->metadata_offset,
                                message, trailer->wrapper_size);
    const auto encoded = detail::encode_trailer(*trailer);
    std::memcpy(changed.data() + message, encoded.data(), encoded.size());
    write_file(wrapper, changed);
  }

  for (const char* command : {"verify", "inspect"}) {
    const Outcome outcome = tool({command, wrapper});
    EXPECT_EXIT_CODE(outcome, 1);
    expect_one_error_line(outcome, {wrapper.string(), "version", std::to_string(other)});
  }
  const Outcome ran = tool({"run", wrapper, "libb", "fixture_b_main"});
  EXPECT_EXIT_CODE(ran, 1);
  EXPECT_EQ(ran.out, "");
}

// ---- usage, help, version -----------------------------------------------------------------

TEST_F(CliTest, UsageErrorsExitTwoWithOneLine) {
  const std::string w = path("w.mwr");
  struct Case {
    std::vector<std::string> args;
    std::string says;
  };
  const std::vector<Case> cases = {
      {{}, "subcommand"},
      {{"bogus"}, "'bogus'"},
      {{"--bogus"}, "'--bogus'"},
      {{"pack", "--data", "a=b"}, "--output"},
      {{"pack", "-o"}, "--output"},
      {{"pack", "-o", w, "--lib", "no-equals-sign"}, "NAME=PATH"},
      {{"pack", "-o", w, "--data", "=nameless"}, "NAME=PATH"},
      {{"pack", "-o", w, "--chunk-size", "1000"}, "4096"},
      {{"pack", "-o", w, "--chunk-size", "lots"}, "--chunk-size"},
      {{"pack", "-o", w, "--progress", "--no-progress"}, "excludes"},
      {{"inspect"}, "FILE"},
      {{"inspect", w, "--yaml"}, "--yaml"},
      {{"verify", w, w}, "not expected"},
      {{"extract", w, "liba"}, "--output"},
      {{"extract", w}, "NAME"},
      {{"run", w, "libb"}, "SYMBOL"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(::testing::PrintToString(c.args));
    const Outcome outcome = tool(c.args);
    EXPECT_EXIT_CODE(outcome, 2);
    EXPECT_EQ(outcome.out, "");
    expect_one_error_line(outcome, {c.says});
  }
  EXPECT_FALSE(fs::exists(w));
}

// Standard output that cannot take what a command prints (`> /dev/full`) is a failure with
// one line that says so, never a silent exit 0 (issue 11).
TEST_F(CliTest, AFullStandardOutputIsExitThree) {
  const fs::path wrapper = pack_standard();
  write_file(path("small.txt"), "small");
  const std::vector<std::vector<std::string>> commands = {
      {"inspect", wrapper.string()},
      {"inspect", "--json", wrapper.string()},
      {"verify", wrapper.string()},
      {"pack", "-o", path("again.mwr").string(), "--data", "s=" + path("small.txt").string(),
       "--no-progress"},
  };
  for (const auto& args : commands) {
    SCOPED_TRACE(args.front() + (args.size() > 1 ? " " + args[1] : ""));
    std::vector<std::string> shell = {"-c", "exec \"$0\" \"$@\" > /dev/full", kTool};
    shell.insert(shell.end(), args.begin(), args.end());
    const Outcome outcome = run_program("/bin/sh", shell);
    EXPECT_EXIT_CODE(outcome, 3);
    EXPECT_NE(outcome.err.find("mapwright: writing to standard output: No space left on device"),
              std::string::npos)
        << outcome.describe();
  }
}

// A pack with no entries is a usage error, and an existing wrapper at -o is left alone.
TEST_F(CliTest, EmptyPackIsRefusedAndLeavesTheTargetAlone) {
  const fs::path wrapper = pack_standard();
  const std::string before = read_file(wrapper);
  const Outcome outcome = tool({"pack", "-o", wrapper.string(), "--no-progress"});
  EXPECT_EXIT_CODE(outcome, 2);
  EXPECT_NE(outcome.err.find("nothing to pack"), std::string::npos) << outcome.describe();
  EXPECT_EQ(read_file(wrapper), before);
}

// A dependency named twice is refused at pack (it was stored twice), naming both entries.
TEST_F(CliTest, DuplicateDependencyIsRefused) {
  const fs::path wrapper = path("twice.mwr");
  const Outcome outcome =
      tool({"pack", "-o", wrapper, "--lib", "liba=" MAPWRIGHT_FIXTURE_A, "--lib",
            "libb=" MAPWRIGHT_FIXTURE_B ":liba,liba", "--no-progress"});
  EXPECT_EXIT_CODE(outcome, 3);
  expect_one_error_line(outcome, {"'libb'", "depends on 'liba' twice"});
  EXPECT_FALSE(fs::exists(wrapper));
}

TEST_F(CliTest, VersionAndHelp) {
  const Outcome version = tool({"--version"});
  EXPECT_EXIT_CODE(version, 0);
  EXPECT_EQ(version.out, "mapwright " MAPWRIGHT_VERSION "\n");

  const Outcome help = tool({"--help"});
  EXPECT_EXIT_CODE(help, 0);
  for (const char* part :
       {"Usage", "pack", "inspect", "verify", "extract", "run", "Exit codes", "2  usage error"}) {
    EXPECT_THAT(help.out, HasSubstr(part));
  }
  for (const char* command : {"pack", "inspect", "verify", "extract", "run"}) {
    SCOPED_TRACE(command);
    for (const char* flag : {"--help", "-h"}) {
      const Outcome sub = tool({command, flag});
      EXPECT_EXIT_CODE(sub, 0);
      EXPECT_THAT(sub.out, HasSubstr(std::string("mapwright ") + command));
      EXPECT_THAT(sub.out, HasSubstr("Exit codes"));
      EXPECT_EQ(sub.err, "");
    }
  }
  const Outcome pack_help = tool({"pack", "--help"});
  EXPECT_THAT(pack_help.out, HasSubstr("LAST ':'"));
  EXPECT_THAT(pack_help.out, HasSubstr("--chunk-size"));
  EXPECT_THAT(pack_help.out, HasSubstr("--progress"));
}

// ---- failures that are not damage ---------------------------------------------------------

TEST_F(CliTest, FailuresExitThreeWithOneLine) {
  const fs::path wrapper = pack_standard();
  const std::string missing = path("no-such.mwr");

  for (const char* command : {"verify", "inspect"}) {
    const Outcome outcome = tool({command, missing});
    EXPECT_EXIT_CODE(outcome, 3);
    expect_one_error_line(outcome, {missing, "No such file"});
  }
  const Outcome directory = tool({"verify", dir_.path()});
  EXPECT_EXIT_CODE(directory, 3);
  expect_one_error_line(directory, {dir_.path().string()});

  const Outcome unknown_entry = tool({"extract", wrapper, "nope", "-o", path("x")});
  EXPECT_EXIT_CODE(unknown_entry, 3);
  expect_one_error_line(unknown_entry, {"'nope'", "no such entry"});
  EXPECT_FALSE(fs::exists(path("x")));

  const Outcome unwritable = tool({"extract", wrapper, "blob", "-o", path("no-dir") / "x"});
  EXPECT_EXIT_CODE(unwritable, 3);
  expect_one_error_line(unwritable, {(path("no-dir") / "x").string()});

  const Outcome onto_itself = tool({"extract", wrapper, "blob", "-o", wrapper});
  EXPECT_EXIT_CODE(onto_itself, 3);
  EXPECT_EXIT_CODE(tool({"verify", wrapper}), 0) << "the wrapper survived";

  const Outcome no_symbol = tool({"run", wrapper, "libb", "no_such_function"});
  EXPECT_EXIT_CODE(no_symbol, 3);
  expect_one_error_line(no_symbol, {"no_such_function"});
  EXPECT_EQ(no_symbol.out, "");

  const Outcome no_library = tool({"run", wrapper, "libz", "main"});
  EXPECT_EXIT_CODE(no_library, 3);
  expect_one_error_line(no_library, {"'libz'"});

  const Outcome data_entry = tool({"run", wrapper, "blob", "main"});
  EXPECT_EXIT_CODE(data_entry, 3);
  expect_one_error_line(data_entry, {"'blob'", "not a library"});
}

// A pack that fails leaves the target as it was (publish is atomic) and says why in one line.
TEST_F(CliTest, FailedPackLeavesTargetUntouched) {
  const fs::path wrapper = pack_standard();
  const std::string before = read_file(wrapper);
  struct Case {
    std::vector<std::string> args;
    std::string says;
  };
  const std::string missing = path("missing.bin");
  const std::vector<Case> cases = {
      {{"--data", "gone=" + missing}, missing},
      {{"--data", "a=" + path("blob.bin").string(), "--data", "a=" + path("blob.bin").string()},
       "'a'"},
      {{"--lib", "libb=" MAPWRIGHT_FIXTURE_B ":nothere"}, "nothere"},
      {{"--lib", "loop=" MAPWRIGHT_FIXTURE_A ":loop"}, "loop"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(::testing::PrintToString(c.args));
    std::vector<std::string> args = {"pack", "-o", wrapper, "--progress"};
    args.insert(args.end(), c.args.begin(), c.args.end());
    const Outcome outcome = tool(args);
    EXPECT_EXIT_CODE(outcome, 3);
    // The progress bar, if it was drawn, ends its line before the error.
    const std::string err = outcome.err.substr(outcome.err.rfind('\n', outcome.err.size() - 2) + 1);
    EXPECT_TRUE(err.starts_with("mapwright: ")) << outcome.describe();
    EXPECT_THAT(err, HasSubstr(c.says));
    EXPECT_TRUE(read_file(wrapper) == before);
  }
  write_file(path("small.txt"), "small");
  EXPECT_EXIT_CODE(tool({"pack", "-o", path("no-dir") / "w.mwr", "--data",
                         "s=" + path("small.txt").string()}),
                   3);
}

// ---- growth that fails, a kill, the resident set ---------------------------------------------

// The names in `dir`, sorted.
std::vector<std::string> names_in(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& item : fs::directory_iterator(dir)) names.push_back(item.path().filename());
  std::sort(names.begin(), names.end());
  return names;
}

// Fills the filesystem of `dir` with a file "filler" until it is full.
void fill_filesystem(const fs::path& dir) {
  const int fd = ::open((dir / "filler").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  const std::string zeros(64 * 1024, '\0');
  for (const std::size_t size : {zeros.size(), std::size_t{4096}}) {
    while (::write(fd, zeros.data(), size) > 0) {
    }
  }
  EXPECT_EQ(errno, ENOSPC);
  ::close(fd);
}

// The last line of stderr: after a progress bar (redrawn with \r, ended by \n) the error.
std::string last_line(const std::string& err) {
  const std::size_t end = err.size() > 1 ? err.rfind('\n', err.size() - 2) : std::string::npos;
  return end == std::string::npos ? err : err.substr(end + 1);
}

// `mapwright pack` onto a small tmpfs, with an entry larger than the tmpfs, and onto a full
// one: exit 3 with one line naming the target, the entry and the cause — not death by SIGBUS
// (exit 135 in a shell) from a blob's destructor storing into pages that were never backed —
// and nothing is left on the tmpfs.
TEST_F(CliTest, PackOntoASmallOrFullTmpfsExitsThree) {
  test::SmallTmpfs tmpfs(8u << 20);
  if (!tmpfs.ok()) GTEST_SKIP() << tmpfs.reason();
  write_file(path("big.bin"), random_bytes(20u << 20, 5));
  const fs::path target = tmpfs.path() / "out.mwr";
  const std::vector<std::string> pack = {"pack", "-o", target, "--data",
                                         "blob=" + path("big.bin").string(), "--progress"};
  const Outcome small = tool(pack);
  EXPECT_EXIT_CODE(small, 3);
  const std::string line = last_line(small.err);
  EXPECT_TRUE(line.starts_with("mapwright: writing wrapper '" + target.string() + "' entry 'blob'"))
      << small.describe();
  EXPECT_THAT(line, HasSubstr("No space left on device"));
  EXPECT_TRUE(names_in(tmpfs.path()).empty()) << ::testing::PrintToString(names_in(tmpfs.path()));

  fill_filesystem(tmpfs.path());
  write_file(path("small.bin"), random_bytes(1000, 6));
  const Outcome full = tool({"pack", "-o", target, "--data", "s=" + path("small.bin").string()});
  EXPECT_EXIT_CODE(full, 3);
  expect_one_error_line(full, {target.string(), "No space left on device"});
  EXPECT_EQ(names_in(tmpfs.path()), std::vector<std::string>{"filler"});
}

// Under `ulimit -f` (RLIMIT_FSIZE, with SIGXFSZ at its default action, as in a shell): exit 3
// with one line saying "File too large" — not death by SIGXFSZ or SIGBUS — nothing at the
// target, no temporary beside it; what fits under the limit still packs.
TEST_F(CliTest, PackUnderUlimitFExitsThree) {
  fs::create_directory(path("out"));
  const fs::path target = path("out") / "limited.mwr";
  write_file(path("big.bin"), random_bytes(20u << 20, 7));
  write_file(path("small.bin"), random_bytes(100000, 8));
  const auto limited = [&](const std::string& spec) {
    // ulimit -f counts 1024-byte blocks: 4 MiB.
    return run_program("/bin/sh", {"-c", "ulimit -f 4096 && exec \"$0\" \"$@\"", kTool, "pack",
                                   "-o", target, "--data", spec, "--no-progress"});
  };
  const Outcome big = limited("blob=" + path("big.bin").string());
  EXPECT_EXIT_CODE(big, 3);
  expect_one_error_line(big, {target.string(), "'blob'", "RLIMIT_FSIZE", "File too large"});
  EXPECT_TRUE(names_in(path("out")).empty()) << ::testing::PrintToString(names_in(path("out")));

  const Outcome small = limited("small=" + path("small.bin").string());
  EXPECT_EXIT_CODE(small, 0);
  EXPECT_EQ(names_in(path("out")), std::vector<std::string>{"limited.mwr"});
  EXPECT_EXIT_CODE(tool({"verify", target}), 0);
}

// SIGKILL in the middle of a pack leaves the previous wrapper (or none) and nothing else.
TEST_F(CliTest, PackKilledMidwayLeavesThePreviousWrapper) {
  const std::uint64_t bytes = std::min<std::uint64_t>(test::test_bytes(), 256u << 20);
  {
    const int fd = ::open(path("big.bin").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::ftruncate(fd, static_cast<off_t>(bytes)), 0);  // sparse: reads as zeros
    ::close(fd);
  }
  fs::create_directory(path("out"));
  const fs::path target = path("out") / "app.mwr";
  write_file(path("small.bin"), random_bytes(5000, 9));
  EXPECT_EXIT_CODE(tool({"pack", "-o", target, "--data", "v=" + path("small.bin").string()}), 0);
  const std::string before = read_file(target);

  bool killed = false;
  const Outcome outcome =
      run_program(kTool, {"pack", "-o", target, "--data", "big=" + path("big.bin").string(),
                          "--progress"},
                  [&](pid_t pid, const std::string& err) {
                    if (!killed && err.find('%') != std::string::npos) {
                      ::kill(pid, SIGKILL);
                      killed = true;
                    }
                  });
  ASSERT_TRUE(killed) << outcome.describe();
  EXPECT_EQ(outcome.signal, SIGKILL) << outcome.describe();
  EXPECT_EQ(names_in(path("out")), std::vector<std::string>{"app.mwr"});
  EXPECT_TRUE(read_file(target) == before) << "the previous wrapper changed";
  EXPECT_EXIT_CODE(tool({"verify", target}), 0);
}

// The tool's peak resident set does not grow with what it packs: pages of the output mapping
// are dropped once hashed. MAPWRIGHT_TEST_BYTES (default 1 GiB) of input, a bound of 300 MiB
// (it was the input's size plus ~20 MiB before).
TEST_F(CliTest, PackKeepsItsResidentSetBounded) {
  const std::uint64_t bytes = test::test_bytes();
  {
    const int fd = ::open(path("big.bin").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::ftruncate(fd, static_cast<off_t>(bytes)), 0);  // sparse; the copy is not
    ::close(fd);
  }
  const Outcome packed = tool({"pack", "-o", path("big.mwr"), "--data",
                               "big=" + path("big.bin").string(), "--no-sync", "--no-progress"});
  EXPECT_EXIT_CODE(packed, 0);
  RecordProperty("input_MiB", std::to_string(bytes >> 20));
  RecordProperty("peak_rss_MiB", std::to_string(packed.max_rss_kib >> 10));
  EXPECT_LT(packed.max_rss_kib, 300L * 1024) << "input of " << (bytes >> 20) << " MiB";
  EXPECT_EXIT_CODE(tool({"verify", path("big.mwr")}), 0);
}

// ---- progress bar -------------------------------------------------------------------------

TEST_F(CliTest, ProgressBarOnlyWhenAskedIntoAPipe) {
  write_file(path("big.bin"), random_bytes(8u << 20, 4));
  const std::vector<std::string> base = {"pack",
                                         "-o",
                                         path("p.mwr"),
                                         "--data",
                                         "big=" + path("big.bin").string(),
                                         "--lib",
                                         "liba=" MAPWRIGHT_FIXTURE_A};

  std::vector<std::string> forced = base;
  forced.push_back("--progress");
  const Outcome shown = tool(forced);
  EXPECT_EXIT_CODE(shown, 0);
  EXPECT_THAT(shown.err, HasSubstr("%"));
  EXPECT_THAT(shown.err, HasSubstr("100%"));
  EXPECT_THAT(shown.err, HasSubstr("\r"));
  EXPECT_TRUE(shown.err.ends_with("\n")) << shown.err;
  EXPECT_EQ(std::count(shown.err.begin(), shown.err.end(), '\n'), 1) << "one line, redrawn";
  EXPECT_THAT(shown.out, HasSubstr("p.mwr"));

  std::vector<std::string> off = base;
  off.push_back("--no-progress");
  const Outcome quiet = tool(off);
  EXPECT_EXIT_CODE(quiet, 0);
  EXPECT_EQ(quiet.err, "");

  const Outcome automatic = tool(base);  // stderr is a pipe, not a terminal
  EXPECT_EXIT_CODE(automatic, 0);
  EXPECT_EQ(automatic.err, "");
}

}  // namespace
}  // namespace mapwright
