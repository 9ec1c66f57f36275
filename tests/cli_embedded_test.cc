// `mapwright` and wrappers appended to other files (issue 12, part 1): `pack --append-to EXE`
// writes a copy of EXE with the wrapper after it, atomically, with EXE's mode, and the result
// still runs as EXE did; inspect, verify, extract and run read such a file, and damage in it
// is reported as damage.
#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "cli.h"
#include "mapwright/wrapper.h"

namespace mapwright {
namespace {

using namespace cli_test;  // NOLINT(google-build-using-namespace): the tests' own toolkit
using ::testing::HasSubstr;
using ::testing::Not;

mode_t mode_of(const fs::path& path) {
  struct stat status {};
  EXPECT_EQ(::stat(path.c_str(), &status), 0) << path;
  return status.st_mode & 07777;
}

std::uint64_t page_up(std::uint64_t bytes) { return (bytes + 4095) / 4096 * 4096; }

class CliEmbeddedTest : public CliTest {
 protected:
  // A copy of `program` (mode `mode`) as `name`.
  fs::path copy_program(const fs::path& program, const std::string& name, mode_t mode = 0755) {
    const fs::path copy = path(name);
    fs::copy_file(program, copy, fs::copy_options::overwrite_existing);
    EXPECT_EQ(::chmod(copy.c_str(), mode), 0);
    return copy;
  }

  // `pack --append-to exe -o out` with the fixture libraries (b needs a) and a blob.
  Outcome pack_appended(const fs::path& exe, const fs::path& out,
                        const std::vector<std::string>& more = {}) {
    write_file(path("blob.bin"), random_bytes(300 * 1024 + 17, 1));
    std::vector<std::string> args = {"pack", "--append-to", exe, "-o", out, "--no-progress",
                                      "--lib", "liba=" MAPWRIGHT_FIXTURE_A,
                                      "--lib", "libb=" MAPWRIGHT_FIXTURE_B ":liba",
                                      "--data", "blob=" + path("blob.bin").string()};
    args.insert(args.end(), more.begin(), more.end());
    return tool(args);
  }

  fs::path true_copy() {
    const std::string found = find_on_path("true");
    if (found.empty()) return {};
    return copy_program(found, "true");
  }
};

TEST_F(CliEmbeddedTest, EveryCommandReadsAFileWithAWrapperAppended) {
  const fs::path exe = true_copy();
  if (exe.empty()) GTEST_SKIP() << "no true(1) on PATH";
  const fs::path out = path("true.packed");
  const Outcome packed = pack_appended(exe, out);
  EXPECT_EXIT_CODE(packed, 0);
  const std::uint64_t offset = page_up(fs::file_size(exe));
  const std::uint64_t size = fs::file_size(out);
  EXPECT_EQ(packed.out, "wrote '" + out.string() + "': 3 entries, " + std::to_string(size) +
                            " bytes (a copy of '" + exe.string() + "', then the wrapper: " +
                            std::to_string(size - offset) + " bytes at byte " +
                            std::to_string(offset) + ")\n");
  EXPECT_EQ(read_file(out).substr(0, fs::file_size(exe)), read_file(exe));

  const Outcome text = tool({"inspect", out});
  EXPECT_EXIT_CODE(text, 0);
  EXPECT_THAT(lines_of(text.out).at(0),
              HasSubstr(std::to_string(size - offset) + " bytes at byte " + std::to_string(offset) +
                        " of a file of " + std::to_string(size) + " bytes, 3 entries"));

  const Json json = inspect_json(out);
  EXPECT_EQ(json["wrapper_offset"].number, offset);
  EXPECT_EQ(json["wrapper_size"].number, size - offset);
  EXPECT_EQ(json["file_size"].number, size);
  // Entry offsets are offsets in the file: the bytes there are the entry's.
  const Json& blob = json["entries"].array.at(2);
  EXPECT_EQ(blob["name"].string, "blob");
  EXPECT_GE(blob["offset"].number, offset);
  EXPECT_EQ(read_file(out).substr(blob["offset"].number, blob["size"].number),
            read_file(path("blob.bin")));

  const Outcome verified = tool({"verify", out});
  EXPECT_EXIT_CODE(verified, 0);
  EXPECT_THAT(verified.out, HasSubstr("3 entries ok, metadata and every other byte ok"));

  const Outcome extracted = tool({"extract", out, "blob", "-o", path("blob.out")});
  EXPECT_EXIT_CODE(extracted, 0);
  EXPECT_EQ(read_file(path("blob.out")), read_file(path("blob.bin")));
  const Outcome to_stdout = tool({"extract", out, "liba", "-o", "-"});
  EXPECT_EXIT_CODE(to_stdout, 0);
  EXPECT_EQ(to_stdout.out, read_file(MAPWRIGHT_FIXTURE_A));

  const Outcome ran = tool({"run", out, "libb", "fixture_b_main", "x"});
  EXPECT_EXIT_CODE(ran, 2);
  EXPECT_EQ(ran.out, "fixture_b_main argc=2 argv: libb x\n");

  // And it still runs as true(1) did: the kernel loads the ELF file's segments only.
  const Outcome itself = run_program(out, {});
  EXPECT_EXIT_CODE(itself, 0);
}

TEST_F(CliEmbeddedTest, TheResultRunsAsTheOriginalProgramAndFindsItsWrapper) {
  // embedded_reader opens Wrapper::open_embedded("/proc/self/exe"): with a wrapper appended by
  // the tool, it finds it, verifies it and calls into a library loaded from it.
  const fs::path exe = copy_program(MAPWRIGHT_EMBEDDED_READER, "reader");
  const fs::path out = path("reader.packed");
  EXPECT_EXIT_CODE(pack_appended(exe, out), 0);
  const Outcome ran = run_program(out, {"libb", "fixture_b_answer"});
  EXPECT_EXIT_CODE(ran, 0);
  const std::uint64_t offset = page_up(fs::file_size(exe));
  EXPECT_EQ(ran.out, "wrapper at byte " + std::to_string(offset) + ", " +
                         std::to_string(fs::file_size(out) - offset) +
                         " bytes, 3 entries: liba libb blob\nfixture_b_answer() = 43\n");
  // The original, without a wrapper, says it has none.
  const Outcome bare = run_program(exe, {});
  EXPECT_EXIT_CODE(bare, 2);
  EXPECT_THAT(bare.err, HasSubstr("ENOMSG"));
}

TEST_F(CliEmbeddedTest, PackAppendToGivesOutTheExecutablesMode) {
  const fs::path exe = true_copy();
  if (exe.empty()) GTEST_SKIP() << "no true(1) on PATH";
  for (const mode_t mode : {mode_t{0755}, mode_t{0700}, mode_t{0750}}) {
    SCOPED_TRACE(mode);
    ASSERT_EQ(::chmod(exe.c_str(), mode), 0);
    // A new OUT, and an existing one with another mode: both get EXE's.
    const fs::path fresh = path("fresh");
    fs::remove(fresh);
    EXPECT_EXIT_CODE(pack_appended(exe, fresh), 0);
    EXPECT_EQ(mode_of(fresh), mode);
    const fs::path existing = path("existing");
    write_file(existing, "old");
    ASSERT_EQ(::chmod(existing.c_str(), 0644), 0);
    EXPECT_EXIT_CODE(pack_appended(exe, existing), 0);
    EXPECT_EQ(mode_of(existing), mode);
    EXPECT_EXIT_CODE(run_program(existing, {}), 0);
  }
  // Set-user-ID and set-group-ID are not copied (as cp(1) does not).
  ASSERT_EQ(::chmod(exe.c_str(), 06755), 0);
  EXPECT_EXIT_CODE(pack_appended(exe, path("plain")), 0);
  EXPECT_EQ(mode_of(path("plain")), 0755u);
}

TEST_F(CliEmbeddedTest, AFailedPackAppendToLeavesOutAsItWas) {
  const fs::path exe = true_copy();
  if (exe.empty()) GTEST_SKIP() << "no true(1) on PATH";
  const fs::path out = path("out");
  write_file(out, "the previous file");
  ASSERT_EQ(::chmod(out.c_str(), 0640), 0);
  const auto unchanged = [&] {
    EXPECT_EQ(read_file(out), "the previous file");
    EXPECT_EQ(mode_of(out), 0640u);
  };
  // A source that is missing: refused after EXE was copied into the staged file.
  const Outcome missing = pack_appended(exe, out, {"--data", "gone=" + path("gone").string()});
  EXPECT_EXIT_CODE(missing, 3);
  expect_one_error_line(missing, {"gone"});
  unchanged();

  ASSERT_EQ(::mkfifo(path("fifo").c_str(), 0600), 0);
  struct Case {
    fs::path exe;
    std::string says;
  };
  const std::vector<Case> cases = {
      {out, "is the target itself: write the result to another path"},
      {dir_.path(), "is not a regular file: a directory"},
      {path("fifo"), "is not a regular file: a FIFO"},
      {"/proc/self/status", "is not a regular file: a file of procfs or sysfs"},
      {path("nothing"), "No such file or directory"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.exe.string());
    // timeout: a FIFO must be refused at once, never waited on.
    std::vector<std::string> args = {"-c", "exec timeout 10 \"$@\"", "sh", kTool, "pack",
                                     "--append-to", c.exe, "-o", out, "--no-progress",
                                     "--lib", "liba=" MAPWRIGHT_FIXTURE_A};
    const Outcome refused = run_program("/bin/sh", args);
    EXPECT_EXIT_CODE(refused, 3);
    expect_one_error_line(refused, {out.string(), "the file to append the wrapper to", c.says});
    unchanged();
  }
  // Nothing else was left in the directory (no staged files).
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir_.path())) names.push_back(entry.path().filename());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"blob.bin", "fifo", "out", "true"}));
}

TEST_F(CliEmbeddedTest, DamageInAnAppendedWrapperIsDamage) {
  const fs::path exe = true_copy();
  if (exe.empty()) GTEST_SKIP() << "no true(1) on PATH";
  const fs::path good = path("good");
  EXPECT_EXIT_CODE(pack_appended(exe, good), 0);
  const Json json = inspect_json(good);
  const std::uint64_t size = fs::file_size(good);
  const fs::path copy = path("damaged");
  const auto damaged_at = [&](std::uint64_t offset) {
    fs::copy_file(good, copy, fs::copy_options::overwrite_existing);
    flip_byte(copy, offset);
  };
  // An entry's byte: verify, run and extract refuse it (exit 1).
  damaged_at(json["entries"].array.at(2)["offset"].number + 1000);
  const Outcome verified = tool({"verify", copy});
  EXPECT_EXIT_CODE(verified, 1);
  expect_one_error_line(verified, {copy.string(), "digest mismatch in entry 'blob'"});
  const Outcome ran = tool({"run", copy, "liba", "fixture_answer"});
  EXPECT_EXIT_CODE(ran, 1);
  EXPECT_THAT(ran.err, HasSubstr("nothing was loaded"));
  EXPECT_EXIT_CODE(tool({"extract", copy, "blob", "-o", path("blob.out")}), 1);
  // The metadata (just before the trailer).
  damaged_at(size - kWrapperTrailerBytes - 16);
  const Outcome metadata = tool({"inspect", copy});
  EXPECT_EXIT_CODE(metadata, 1);
  expect_one_error_line(metadata, {copy.string(), "the metadata digest does not match"});
  // A zero byte of the wrapper's padding: verify finds it.
  damaged_at(json["wrapper_offset"].number + 2000);
  const Outcome padding = tool({"verify", copy});
  EXPECT_EXIT_CODE(padding, 1);
  expect_one_error_line(padding, {"byte 2000,", "is not zero"});
  // The trailer: the wrapper cannot be found any more.
  damaged_at(size - 40);
  const Outcome trailer = tool({"verify", copy});
  EXPECT_EXIT_CODE(trailer, 1);
  expect_one_error_line(trailer, {copy.string(), "no wrapper at the end of the file"});
  // The executable's own bytes are not the wrapper's business.
  damaged_at(100);
  EXPECT_EXIT_CODE(tool({"verify", copy}), 0);
}

TEST_F(CliEmbeddedTest, AFileWithoutAWrapperSaysSo) {
  const fs::path exe = true_copy();
  if (exe.empty()) GTEST_SKIP() << "no true(1) on PATH";
  for (const char* command : {"inspect", "verify"}) {
    const Outcome outcome = tool({command, exe});
    EXPECT_EXIT_CODE(outcome, 1);
    expect_one_error_line(outcome, {exe.string(), "no wrapper at the end of the file",
                                    "its last 88 bytes are not a wrapper's trailer"});
  }
}

// `--append-to ""` (an unset variable in `--append-to "$APP"`) is a usage error, not a plain
// wrapper published at OUT as if no --append-to had been given.
TEST_F(CliEmbeddedTest, PackAppendToAnEmptyPathIsAUsageError) {
  const fs::path out = path("out");
  const Outcome empty = tool({"pack", "--append-to", "", "-o", out, "--no-progress", "--lib",
                              "liba=" MAPWRIGHT_FIXTURE_A});
  EXPECT_EXIT_CODE(empty, 2);
  expect_one_error_line(empty, {"--append-to", "empty"});
  EXPECT_FALSE(fs::exists(out));
  // An existing OUT is left as it was.
  write_file(out, "the previous file");
  EXPECT_EXIT_CODE(tool({"pack", "--append-to=", "-o", out, "--no-progress", "--lib",
                         "liba=" MAPWRIGHT_FIXTURE_A}),
                   2);
  EXPECT_EQ(read_file(out), "the previous file");
}

// EXE a symbolic link to the program: OUT is a regular file (not a link), a copy of the
// program's bytes with the program's mode.
TEST_F(CliEmbeddedTest, PackAppendToALinkCopiesTheFileItNames) {
  const fs::path exe = true_copy();
  if (exe.empty()) GTEST_SKIP() << "no true(1) on PATH";
  ASSERT_EQ(::chmod(exe.c_str(), 0710), 0);
  fs::create_symlink(exe.filename(), path("link"));
  const fs::path out = path("out");
  EXPECT_EXIT_CODE(pack_appended(path("link"), out), 0);
  EXPECT_TRUE(fs::is_regular_file(fs::symlink_status(out)));
  EXPECT_EQ(mode_of(out), 0710u);
  EXPECT_EQ(read_file(out).substr(0, fs::file_size(exe)), read_file(exe));
  EXPECT_EXIT_CODE(run_program(out, {}), 0);
  EXPECT_EXIT_CODE(tool({"verify", out}), 0);
}

// OUT a symbolic link to a file: a failed pack leaves both as they were; a good one replaces
// the file (the link stays) and gives it EXE's mode.
TEST_F(CliEmbeddedTest, PackAppendToThroughALinkKeepsTheLink) {
  const fs::path exe = true_copy();
  if (exe.empty()) GTEST_SKIP() << "no true(1) on PATH";
  write_file(path("precious"), "the previous file");
  ASSERT_EQ(::chmod(path("precious").c_str(), 0640), 0);
  fs::create_symlink("precious", path("out"));
  const Outcome failed = pack_appended(exe, path("out"), {"--data", "gone=" + path("gone").string()});
  EXPECT_EXIT_CODE(failed, 3);
  EXPECT_TRUE(fs::is_symlink(path("out")));
  EXPECT_EQ(read_file(path("precious")), "the previous file");
  EXPECT_EQ(mode_of(path("precious")), 0640u);

  EXPECT_EXIT_CODE(pack_appended(exe, path("out")), 0);
  EXPECT_TRUE(fs::is_symlink(path("out")));
  EXPECT_EQ(mode_of(path("precious")), 0755u);
  EXPECT_EXIT_CODE(run_program(path("out"), {}), 0);
  EXPECT_EXIT_CODE(tool({"verify", path("out")}), 0);
}

// Under `ulimit -f` smaller than EXE (SIGXFSZ at its default action): exit 3 with one line
// naming RLIMIT_FSIZE, not death by SIGXFSZ; nothing at OUT and no temporary beside it.
TEST_F(CliEmbeddedTest, PackAppendToUnderUlimitFExitsThree) {
  const fs::path exe = path("exe");
  write_file(exe, random_bytes(3u << 20, 3));
  ASSERT_EQ(::chmod(exe.c_str(), 0755), 0);
  fs::create_directory(path("out"));
  const fs::path out = path("out") / "packed";
  // ulimit -f counts 1024-byte blocks: 1 MiB, and 1 MiB + 1 KiB (not a whole page).
  for (const char* blocks : {"1024", "1025"}) {
    SCOPED_TRACE(blocks);
    const Outcome limited = run_program(
        "/bin/sh", {"-c", std::string("ulimit -f ") + blocks + " && exec \"$0\" \"$@\"", kTool,
                    "pack", "--append-to", exe, "-o", out, "--no-progress", "--lib",
                    "liba=" MAPWRIGHT_FIXTURE_A});
    EXPECT_EXIT_CODE(limited, 3);
    expect_one_error_line(limited, {out.string(), "RLIMIT_FSIZE", "File too large"});
    EXPECT_TRUE(fs::is_empty(path("out")));
  }
}

// EXE that already ends with a wrapper: the new wrapper is appended after it (the old one is
// part of the copied EXE), open_embedded and every command find the new one, and pack warns
// that the old one is hidden.
TEST_F(CliEmbeddedTest, AppendingToAFileWithAWrapperWarnsAndTheNewOneIsFound) {
  const fs::path exe = true_copy();
  if (exe.empty()) GTEST_SKIP() << "no true(1) on PATH";
  const fs::path once = path("once");
  EXPECT_EXIT_CODE(pack_appended(exe, once), 0);
  const std::uint64_t first_offset = page_up(fs::file_size(exe));
  const std::uint64_t once_size = fs::file_size(once);
  write_file(path("second.bin"), random_bytes(5000, 2));
  const fs::path twice = path("twice");
  const Outcome packed = tool({"pack", "--append-to", once, "-o", twice, "--no-progress",
                               "--data", "second=" + path("second.bin").string()});
  EXPECT_EXIT_CODE(packed, 0);
  EXPECT_THAT(packed.err, HasSubstr("warning: '" + once.string() + "' already ends with a wrapper ("
                                    + std::to_string(once_size - first_offset) + " bytes at byte " +
                                    std::to_string(first_offset) + ")"));
  EXPECT_EQ(lines_of(packed.err).size(), 1u) << packed.err;
  EXPECT_EQ(read_file(twice).substr(0, once_size), read_file(once));
  const Json json = inspect_json(twice);
  EXPECT_EQ(json["wrapper_offset"].number, page_up(once_size));
  ASSERT_EQ(json["entries"].array.size(), 1u);
  EXPECT_EQ(json["entries"].array.at(0)["name"].string, "second");
  EXPECT_EXIT_CODE(tool({"verify", twice}), 0);
  EXPECT_EXIT_CODE(run_program(twice, {}), 0);
  // No warning for an EXE without one.
  const Outcome plain = pack_appended(exe, path("plain"));
  EXPECT_EXIT_CODE(plain, 0);
  EXPECT_EQ(plain.err, "");
}

TEST_F(CliEmbeddedTest, PackAppendToStandardOutputAndHelp) {
  const fs::path exe = true_copy();
  if (exe.empty()) GTEST_SKIP() << "no true(1) on PATH";
  const Outcome out = pack_appended(exe, "-");
  EXPECT_EXIT_CODE(out, 0);
  write_file(path("from_stdout"), out.out);
  EXPECT_EQ(out.out.substr(0, fs::file_size(exe)), read_file(exe));
  EXPECT_EXIT_CODE(tool({"verify", path("from_stdout")}), 0);

  const Outcome help = tool({"pack", "--help"});
  EXPECT_EXIT_CODE(help, 0);
  EXPECT_THAT(help.out, HasSubstr("--append-to EXE"));
  EXPECT_THAT(help.out, HasSubstr("Wrapper::open_embedded"));
}

}  // namespace
}  // namespace mapwright
