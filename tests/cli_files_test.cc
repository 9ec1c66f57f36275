// `mapwright` and the files it writes and reads (issue 11, items 1 and 3): outputs are staged
// beside the target and renamed over it, keep a replaced file's mode, and are never written
// through or removed when they are not regular files; inputs never block in open(), streams
// (stdin, FIFOs, /proc files) are read until their end, devices and non-regular wrappers are
// refused by what they are.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "cli.h"
#include "mapwright/wrapper.h"
#include "sanitizers.h"

namespace mapwright {
namespace {

using namespace cli_test;  // NOLINT(google-build-using-namespace): the tests' own toolkit
using ::testing::HasSubstr;
using ::testing::Not;

// The tool with `args`, run from `dir` and under `timeout 10`.
Outcome guarded_tool(const fs::path& dir, const std::vector<std::string>& args) {
  std::vector<std::string> all = {"-c", "cd \"$0\" && exec timeout 10 \"$@\"", dir, kTool};
  all.insert(all.end(), args.begin(), args.end());
  return run_program("/bin/sh", all);
}

bool is_symlink_to(const fs::path& link, const fs::path& target) {
  std::error_code error;
  return fs::is_symlink(fs::symlink_status(link, error)) && fs::read_symlink(link, error) == target;
}

mode_t mode_of(const fs::path& path) {
  struct stat status {};
  EXPECT_EQ(::stat(path.c_str(), &status), 0) << path;
  return status.st_mode & 07777;
}

std::vector<std::string> names_in(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& item : fs::directory_iterator(dir)) names.push_back(item.path().filename());
  std::sort(names.begin(), names.end());
  return names;
}

// ---- outputs --------------------------------------------------------------------------------

// The case: `extract -o LINK`, LINK a symbolic link to a file on a full 4 KiB tmpfs.
// The write fails (ENOSPC); the link must still be there, and the file it names must hold
// its old contents (the old tool truncated the file, then unlinked the link).
TEST_F(CliTest, ExtractOntoALinkToAFileOnAFullTmpfsKeepsBoth) {
  test::SmallTmpfs tmpfs(4096);
  if (!tmpfs.ok()) GTEST_SKIP() << tmpfs.reason();
  const fs::path wrapper = pack_standard();
  const fs::path file = tmpfs.path() / "file";
  write_file(file, "old contents\n");
  const fs::path link = path("link");
  fs::create_symlink(file, link);

  const Outcome extracted = tool({"extract", wrapper, "blob", "-o", link});
  EXPECT_EXIT_CODE(extracted, 3);
  expect_one_error_line(extracted, {"'blob'", link.string(), "No space left on device"});
  EXPECT_TRUE(is_symlink_to(link, file));
  EXPECT_EQ(read_file(file), "old contents\n");
  EXPECT_EQ(names_in(tmpfs.path()), std::vector<std::string>{"file"});
}

// A regular file on a full filesystem keeps its old contents when extract fails (the old
// tool opened it O_TRUNC and removed it after the failed write).
TEST_F(CliTest, ExtractThatFailsLeavesTheOldFileIntact) {
  test::SmallTmpfs tmpfs(64 * 1024);
  if (!tmpfs.ok()) GTEST_SKIP() << tmpfs.reason();
  const fs::path wrapper = pack_standard();
  const fs::path target = tmpfs.path() / "out.bin";
  const std::string old = random_bytes(20000, 9);
  write_file(target, old);
  const Outcome extracted = tool({"extract", wrapper, "blob", "-o", target});  // 300 KiB
  EXPECT_EXIT_CODE(extracted, 3);
  expect_one_error_line(extracted, {target.string(), "No space left on device", "left as it was"});
  EXPECT_EQ(read_file(target), old);
  EXPECT_EQ(names_in(tmpfs.path()), std::vector<std::string>{"out.bin"});
}

// extract -o onto what is not a regular file: refused with "not a regular file", before
// anything is written, and the thing is left as it was: a device node, a FIFO (where the old
// tool blocked forever in open()), a directory (with and without a trailing '/'), and a
// dangling symbolic link (through which the old tool created a file).
TEST_F(CliTest, ExtractRefusesTargetsThatAreNotRegularFiles) {
  const fs::path wrapper = pack_standard();
  const fs::path fifo = path("fifo");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  fs::create_directory(path("dir"));
  fs::create_symlink(path("nowhere"), path("dangling"));
  std::vector<std::pair<std::string, std::string>> targets = {
      {fifo, "a FIFO"},
      {path("dir"), "a directory"},
      {path("dir").string() + "/", "a directory"},
  };
  // A device node of our own (the null device's numbers), where allowed.
  const fs::path device = path("device");
  if (::mknod(device.c_str(), S_IFCHR | 0600, ::makedev(1, 3)) == 0) {
    targets.emplace_back(device, "a character device");
  }
  for (const auto& [target, kind] : targets) {
    SCOPED_TRACE(target);
    const Outcome extracted = guarded_tool(dir_.path(), {"extract", wrapper, "blob", "-o", target});
    EXPECT_EXIT_CODE(extracted, 3);
    expect_one_error_line(extracted, {"'blob'", target, "not a regular file: " + kind});
    // The refusal is the cause: no strerror() text after it.
    EXPECT_THAT(extracted.err, Not(HasSubstr("Invalid argument")));
    EXPECT_THAT(extracted.err, Not(HasSubstr("Is a directory")));
  }
  EXPECT_TRUE(fs::is_fifo(fifo));
  EXPECT_TRUE(fs::is_empty(path("dir")));
  if (fs::exists(device)) {
    EXPECT_TRUE(fs::is_character_file(device));
  }

  const Outcome dangling = tool({"extract", wrapper, "blob", "-o", path("dangling")});
  EXPECT_EXIT_CODE(dangling, 3);
  expect_one_error_line(dangling, {path("dangling").string(), "symbolic link to nothing"});
  EXPECT_TRUE(is_symlink_to(path("dangling"), path("nowhere")));
  EXPECT_FALSE(fs::exists(path("nowhere")));
}

// extract -o LINK, LINK a link to a regular file: the file is replaced, the link kept; and
// extracting over the wrapper itself (through a link too) is still refused.
TEST_F(CliTest, ExtractThroughALinkReplacesTheFileAndKeepsTheLink) {
  const fs::path wrapper = pack_standard();
  write_file(path("file"), "old");
  ASSERT_EQ(::chmod(path("file").c_str(), 0640), 0);
  fs::create_symlink(path("file"), path("link"));
  EXPECT_EXIT_CODE(tool({"extract", wrapper, "blob", "-o", path("link")}), 0);
  EXPECT_TRUE(is_symlink_to(path("link"), path("file")));
  EXPECT_EQ(read_file(path("file")), read_file(path("blob.bin")));
  EXPECT_EQ(mode_of(path("file")), 0640u);

  fs::create_symlink(wrapper, path("wrapper-link"));
  const std::string before = read_file(wrapper);
  for (const fs::path& target : {wrapper, path("wrapper-link")}) {
    const Outcome onto = tool({"extract", wrapper, "blob", "-o", target});
    EXPECT_EXIT_CODE(onto, 3);
    expect_one_error_line(onto, {"the wrapper itself"});
  }
  EXPECT_EQ(read_file(wrapper), before);
}

// Repacking over a 0600 wrapper leaves a 0600 wrapper (it was 0644), and extract over an
// existing file keeps its mode too.
TEST_F(CliTest, RepackAndExtractKeepTheReplacedFilesMode) {
  const fs::path wrapper = pack_standard();
  ASSERT_EQ(::chmod(wrapper.c_str(), 0600), 0);
  EXPECT_EXIT_CODE(tool({"pack", "-o", wrapper, "--data", "blob=" + path("blob.bin").string(),
                         "--no-progress"}),
                   0);
  EXPECT_EQ(mode_of(wrapper), 0600u);
  EXPECT_EXIT_CODE(tool({"verify", wrapper}), 0);

  write_file(path("out.bin"), "old");
  ASSERT_EQ(::chmod(path("out.bin").c_str(), 0604), 0);
  EXPECT_EXIT_CODE(tool({"extract", wrapper, "blob", "-o", path("out.bin")}), 0);
  EXPECT_EQ(mode_of(path("out.bin")), 0604u);
  EXPECT_EQ(read_file(path("out.bin")), read_file(path("blob.bin")));
}

// pack -o DIR and -o DIR/ are refused up front, with what DIR is — not after every byte was
// copied with "publishing region", nor "Not a directory". The forced progress bar proves
// nothing was copied: the error is the only line on stderr.
TEST_F(CliTest, PackOntoADirectoryIsRefusedBeforeCopying) {
  write_file(path("big.bin"), random_bytes(3u << 20, 4));
  fs::create_directory(path("dir"));
  for (const std::string& target : {path("dir").string(), path("dir").string() + "/"}) {
    SCOPED_TRACE(target);
    const Outcome packed =
        tool({"pack", "-o", target, "--data", "big=" + path("big.bin").string(), "--progress"});
    EXPECT_EXIT_CODE(packed, 3);
    expect_one_error_line(packed, {"writing wrapper '" + target + "'",
                                   "not a regular file: a directory"});
    EXPECT_THAT(packed.err, Not(HasSubstr("Is a directory")));  // no strerror() after the cause
    EXPECT_THAT(packed.err, Not(HasSubstr("publishing region")));
  }
  EXPECT_TRUE(fs::is_empty(path("dir")));
}

// pack -o onto a FIFO, a dangling link, a link to a directory: refused, left alone.
TEST_F(CliTest, PackRefusesTargetsThatAreNotRegularFiles) {
  write_file(path("small.bin"), random_bytes(1000, 5));
  ASSERT_EQ(::mkfifo(path("fifo").c_str(), 0600), 0);
  fs::create_directory(path("dir"));
  fs::create_symlink(path("dir"), path("dir-link"));
  fs::create_symlink(path("nowhere"), path("dangling"));
  for (const auto& [target, part] : std::vector<std::pair<std::string, std::string>>{
           {path("fifo"), "not a regular file: a FIFO"},
           {path("dir-link"), "not a regular file: a symbolic link to a directory"},
           {path("dangling"), "symbolic link to nothing"}}) {
    SCOPED_TRACE(target);
    const Outcome packed = guarded_tool(
        dir_.path(), {"pack", "-o", target, "--data", "s=" + path("small.bin").string()});
    EXPECT_EXIT_CODE(packed, 3);
    expect_one_error_line(packed, {target, part});
  }
  EXPECT_TRUE(fs::is_fifo(path("fifo")));
  EXPECT_TRUE(fs::is_empty(path("dir")));
  EXPECT_FALSE(fs::exists(path("nowhere")));
}

// pack -o LINK replaces the file LINK names and keeps the link.
TEST_F(CliTest, PackThroughALinkReplacesTheFileAndKeepsTheLink) {
  const fs::path wrapper = pack_standard();
  fs::create_symlink(wrapper, path("link"));
  EXPECT_EXIT_CODE(tool({"pack", "-o", path("link"), "--data",
                         "only=" + path("odd.bin").string(), "--no-progress"}),
                   0);
  EXPECT_TRUE(is_symlink_to(path("link"), wrapper));
  const Json listed = inspect_json(wrapper);
  ASSERT_EQ(listed["entries"].array.size(), 1u);
  EXPECT_EQ(listed["entries"].array[0]["name"].string, "only");
}

// pack -o - writes the wrapper to standard output (the old tool made a file named "-"), and
// nothing is left in the working directory or the temporary directory it used.
TEST_F(CliTest, PackToStandardOutputYieldsAValidWrapper) {
  write_file(path("blob.bin"), random_bytes(200000, 6));
  fs::create_directory(path("work"));
  fs::create_directory(path("tmp"));
  const Outcome packed = run_program(
      "/bin/sh", {"-c", "cd \"$1\" && TMPDIR=\"$2\" exec \"$0\" pack -o - --data blob=\"$3\" "
                        "--no-progress > \"$4\"",
                  kTool, path("work"), path("tmp"), path("blob.bin"), path("out.mwr")});
  EXPECT_EXIT_CODE(packed, 0);
  EXPECT_EQ(packed.err, "");
  EXPECT_TRUE(fs::is_empty(path("work"))) << ::testing::PrintToString(names_in(path("work")));
  EXPECT_TRUE(fs::is_empty(path("tmp"))) << ::testing::PrintToString(names_in(path("tmp")));
  EXPECT_EXIT_CODE(tool({"verify", path("out.mwr")}), 0);
  EXPECT_EXIT_CODE(tool({"extract", path("out.mwr"), "blob", "-o", path("back.bin")}), 0);
  EXPECT_EQ(read_file(path("back.bin")), read_file(path("blob.bin")));

  // Standard output that fails is exit 3.
  const Outcome full = run_program(
      "/bin/sh", {"-c", "exec \"$0\" pack -o - --data blob=\"$1\" --no-progress > /dev/full",
                  kTool, path("blob.bin")});
  EXPECT_EXIT_CODE(full, 3);
  expect_one_error_line(full, {"standard output", "No space left on device"});
}

// ---- inputs -----------------------------------------------------------------------------

// Every command given a FIFO as its wrapper answers at once, "not a regular file" (the old
// tool blocked forever in open()); so does a character device and a /proc file, which read
// as an "empty file" before.
TEST_F(CliTest, WrapperInputsThatAreNotRegularFilesAreRefusedWithoutBlocking) {
  ASSERT_EQ(::mkfifo(path("fifo").c_str(), 0600), 0);
  for (const std::string& input : {path("fifo").string(), std::string("/dev/zero"),
                                  std::string("/proc/self/status")}) {
    for (const std::vector<std::string>& command : std::vector<std::vector<std::string>>{
             {"inspect", input},
             {"inspect", "--json", input},
             {"verify", input},
             {"run", input, "lib", "symbol"},
             {"extract", input, "x", "-o", path("out").string()}}) {
      SCOPED_TRACE(command[0] + " " + input);
      const Outcome outcome = guarded_tool(dir_.path(), command);
      EXPECT_EXIT_CODE(outcome, 3);
      expect_one_error_line(outcome, {input, "not a regular file"});
      EXPECT_THAT(outcome.err, Not(HasSubstr("empty file")));
    }
  }
  EXPECT_FALSE(fs::exists(path("out")));
}

// pack --data x=FIFO with a writer: the FIFO is read until its writer closes it.
TEST_F(CliTest, PackReadsAFifoUntilItsEnd) {
  const std::string bytes = random_bytes(700000, 7);
  write_file(path("source.bin"), bytes);
  ASSERT_EQ(::mkfifo(path("fifo").c_str(), 0600), 0);
  const Outcome run = run_program(
      "/bin/sh", {"-c",
                  "timeout 10 /bin/sh -c 'cat \"$1\" > \"$2\" & exec \"$0\" pack -o \"$3\" "
                  "--data fifo=\"$2\" --no-progress' \"$0\" \"$1\" \"$2\" \"$3\"",
                  kTool, path("source.bin"), path("fifo"), path("w.mwr")});
  EXPECT_EXIT_CODE(run, 0);
  EXPECT_EXIT_CODE(tool({"verify", path("w.mwr")}), 0);
  EXPECT_EXIT_CODE(tool({"extract", path("w.mwr"), "fifo", "-o", path("back.bin")}), 0);
  EXPECT_EQ(read_file(path("back.bin")), bytes);
}

// A file whose size reads 0 but that has content is packed whole, not as 0 bytes: the
// packing process's own /proc/self/status ("Name:\t..." first, "Pid:" further on).
TEST_F(CliTest, PackStreamsAProcFileWhoseSizeReadsZero) {
  const Outcome packed = tool({"pack", "-o", path("w.mwr"), "--data", "status=/proc/self/status",
                               "--no-progress"});
  EXPECT_EXIT_CODE(packed, 0);
  const Json listed = inspect_json(path("w.mwr"));
  ASSERT_EQ(listed["entries"].array.size(), 1u);
  EXPECT_GT(listed["entries"].array[0]["size"].number, 100u);
  EXPECT_EXIT_CODE(tool({"verify", path("w.mwr")}), 0);
  const Outcome extracted = tool({"extract", path("w.mwr"), "status", "-o", "-"});
  EXPECT_EXIT_CODE(extracted, 0);
  EXPECT_TRUE(extracted.out.starts_with("Name:\t")) << extracted.out;
  EXPECT_THAT(extracted.out, HasSubstr("\nPid:\t"));
  EXPECT_EQ(extracted.out.size(), listed["entries"].array[0]["size"].number);
}

// --data NAME=- and --lib NAME=- read standard input (a file and a pipe), in full.
TEST_F(CliTest, PackReadsStandardInput) {
  const std::string bytes = random_bytes(300000, 8);
  write_file(path("source.bin"), bytes);
  const Outcome from_file = run_program(
      "/bin/sh", {"-c", "exec \"$0\" pack -o \"$1\" --data in=- --no-progress < \"$2\"", kTool,
                  path("a.mwr"), path("source.bin")});
  EXPECT_EXIT_CODE(from_file, 0);
  const Outcome from_pipe = run_program(
      "/bin/sh", {"-c",
                  "cat \"$3\" | \"$0\" pack -o \"$1\" --lib liba=\"$2\" --lib libb=-:liba "
                  "--no-progress",
                  kTool, path("b.mwr"), MAPWRIGHT_FIXTURE_A, MAPWRIGHT_FIXTURE_B});
  EXPECT_EXIT_CODE(from_pipe, 0);
  EXPECT_EXIT_CODE(tool({"extract", path("a.mwr"), "in", "-o", path("back.bin")}), 0);
  EXPECT_EQ(read_file(path("back.bin")), bytes);
  EXPECT_EXIT_CODE(tool({"extract", path("b.mwr"), "libb", "-o", path("libb.so")}), 0);
  EXPECT_EQ(read_file(path("libb.so")), read_file(MAPWRIGHT_FIXTURE_B));
  EXPECT_EXIT_CODE(tool({"verify", path("b.mwr")}), 0);
}

// Streaming does not hold the entry in memory: 1 GiB (MAPWRIGHT_TEST_BYTES) through a pipe
// packs with a peak resident set of a few tens of MiB. (With 256 MiB chunks for streams, the
// last chunk's unused tail, zeroed before its hole was punched, made it 263 MiB.) The peak
// is the pipeline's (wait4 of the shell covers its children); `head` adds little.
TEST_F(CliTest, PackingAStreamKeepsItsResidentSetBounded) {
#if MAPWRIGHT_TEST_ASAN || MAPWRIGHT_TEST_TSAN
  GTEST_SKIP() << "the sanitizers' shadow memory grows with the bytes the tool touches";
#endif
  const std::uint64_t bytes = test::test_bytes();
  const Outcome packed = run_program(
      "/bin/sh", {"-c",
                  "head -c \"$2\" /dev/zero | \"$0\" pack -o \"$1\" --data in=- --no-sync "
                  "--no-progress",
                  kTool, path("w.mwr"), std::to_string(bytes)});
  EXPECT_EXIT_CODE(packed, 0);
  RecordProperty("input_MiB", std::to_string(bytes >> 20));
  RecordProperty("peak_rss_MiB", std::to_string(packed.max_rss_kib >> 10));
  EXPECT_LT(packed.max_rss_kib, 100L * 1024) << "input of " << (bytes >> 20) << " MiB";
  const Json listed = inspect_json(path("w.mwr"));
  ASSERT_EQ(listed["entries"].array.size(), 1u);
  EXPECT_EQ(listed["entries"].array[0]["size"].number, bytes);
}

// A character device is refused as an entry (/dev/zero would never end), with what it is,
// and nothing is left at the target.
TEST_F(CliTest, PackRefusesADeviceAsAnEntry) {
  const Outcome packed =
      guarded_tool(dir_.path(), {"pack", "-o", path("w.mwr"), "--data", "zero=/dev/zero"});
  EXPECT_EXIT_CODE(packed, 3);
  expect_one_error_line(packed, {"'zero'", "/dev/zero", "not a regular file or a stream",
                                 "a character device"});
  EXPECT_FALSE(fs::exists(path("w.mwr")));
}

}  // namespace
}  // namespace mapwright
