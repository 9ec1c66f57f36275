// The wrapper library's inputs and outputs (issue 11, items 1 and 3): WrapperWriter streams
// entries of unknown size (pipes, FIFOs, /proc files) into chunks allocated as the bytes
// come, refuses targets and inputs that are not regular files (or streams), keeps a
// replaced file's mode; Wrapper::open refuses what is not a regular file without blocking.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "child.h"
#include "content.h"
#include "fixture_paths.h"
#include "mapwright/error.h"
#include "mapwright/wrapper.h"
#include "wrapper_helpers.h"

namespace mapwright {
namespace {

using test::write_file;
using test::pattern_bytes;
using test::joined;
using test::expect_error;

namespace fs = std::filesystem;
using test::kKiB;
using test::kMiB;
using test::TempDir;

// A pipe whose write end a thread feeds with `bytes`, in writes of `piece` bytes, then
// closes: the read end is a stream of exactly those bytes.
class FedPipe {
 public:
  FedPipe(std::vector<std::byte> bytes, std::size_t piece = 4096) : bytes_(std::move(bytes)) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe2");
    read_fd_ = fds[0];
    writer_ = std::thread([this, fd = fds[1], piece] {
      for (std::size_t done = 0; done < bytes_.size();) {
        const ssize_t n = ::write(fd, bytes_.data() + done, std::min(piece, bytes_.size() - done));
        if (n <= 0) break;  // the reader went away
        done += static_cast<std::size_t>(n);
      }
      ::close(fd);
    });
  }
  ~FedPipe() {
    ::close(read_fd_);  // a writer still blocked gets EPIPE (SIGPIPE is ignored below)
    writer_.join();
  }
  int fd() const { return read_fd_; }

 private:
  std::vector<std::byte> bytes_;
  int read_fd_ = -1;
  std::thread writer_;
};

class WrapperIo : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { ::signal(SIGPIPE, SIG_IGN); }
  fs::path path(const std::string& name) const { return dir_.path() / name; }
  TempDir dir_;
};

// Streams of every interesting length through a pipe, with chunk_bytes 128 KiB (chunks of 64,
// 128, 128... KiB): the end at 0 bytes, in the first chunk, exactly at a chunk's end, in the
// middle of a later chunk, over many chunks. Each entry reads back byte for byte, its chunks
// back to back and page-aligned, no chunk empty; an entry added after a stream (whose last
// chunk was given back in part) reads back too.
TEST_F(WrapperIo, StreamsOfAnyLengthReadBackExactly) {
  const std::vector<std::size_t> sizes = {0,          1,          64 * kKiB - 1, 64 * kKiB,
                                          64 * kKiB + 1, 192 * kKiB, 250 * kKiB,
                                          1 * kMiB + 123};
  WrapperWriterOptions options;
  options.chunk_bytes = 128 * kKiB;
  // (name, done, size, size known): WriteProgress::entry is valid during the call only.
  std::vector<std::tuple<std::string, std::uint64_t, std::uint64_t, bool>> reports;
  options.progress = [&](const WriteProgress& p) {
    reports.emplace_back(std::string(p.entry), p.entry_done, p.entry_size, p.entry_size_known);
  };
  WrapperWriter writer(path("w.mwr"), options);
  std::vector<std::vector<std::byte>> contents;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    contents.push_back(pattern_bytes(sizes[i], static_cast<unsigned>(i)));
    FedPipe pipe(contents.back(), 3000);  // writes that do not fall on page boundaries
    writer.add_data_stream("s" + std::to_string(i), pipe.fd(), "pipe " + std::to_string(i));
  }
  const std::vector<std::byte> after = pattern_bytes(10000, 99);
  writer.add_data("after", after);
  writer.publish();

  const Wrapper wrapper = Wrapper::open(path("w.mwr"));
  wrapper.verify();
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    SCOPED_TRACE(sizes[i]);
    const WrapperEntry& entry = wrapper.entry("s" + std::to_string(i));
    EXPECT_EQ(entry.size, sizes[i]);
    EXPECT_TRUE(joined(entry) == contents[i]);
    EXPECT_TRUE(entry.contiguous());
    for (const auto& chunk : entry.chunks) {
      EXPECT_NE(chunk.size(), 0u);
      EXPECT_LE(chunk.size(), 128 * kKiB);
    }
    if (sizes[i] > 0) {
      EXPECT_EQ(entry.offset % kWrapperAlignment, 0u);
    }
  }
  EXPECT_EQ(wrapper.entry("s0").chunks.size(), 0u);
  EXPECT_EQ(wrapper.entry("s3").chunks.size(), 1u);  // 64 KiB: the first chunk, full
  EXPECT_EQ(wrapper.entry("s5").chunks.size(), 2u);  // 192 KiB: 64 + 128, full
  EXPECT_TRUE(joined(wrapper.entry("after")) == after);
  // The last report of each stream gives its final size; none claims a known size early.
  bool saw_stream_end = false;
  for (const auto& [entry, done, size, known] : reports) {
    if (entry == "s7") {
      EXPECT_FALSE(known);
      EXPECT_EQ(size, done);
      saw_stream_end = done == sizes[7];
    }
  }
  EXPECT_TRUE(saw_stream_end);
}

// The given-back tail of a stream's last chunk costs no space: the file is about as large
// as its content (not a whole last chunk larger).
TEST_F(WrapperIo, AStreamsUnusedTailIsGivenBack) {
  WrapperWriterOptions options;
  options.chunk_bytes = 64 * kMiB;
  WrapperWriter writer(path("w.mwr"), options);
  FedPipe pipe(pattern_bytes(100 * kKiB, 3), 65536);  // chunks of 64 KiB, then 128 KiB (28 used)
  writer.add_data_stream("s", pipe.fd(), "pipe");
  const std::uint64_t size = writer.publish();
  EXPECT_LT(size, 100 * kKiB + 8 * kKiB);
  EXPECT_EQ(fs::file_size(path("w.mwr")), size);
}

// Paths that are streams: a FIFO with a writer, /proc/self/status (size 0, content), a file
// whose size reads 0 and is empty. Devices and directories are refused, nothing added.
TEST_F(WrapperIo, PathsToStreamsAreReadUntilTheirEnd) {
  const std::vector<std::byte> bytes = pattern_bytes(300 * kKiB + 5, 4);
  ASSERT_EQ(::mkfifo(path("fifo").c_str(), 0600), 0);
  std::thread feeder([&] {
    std::ofstream out(path("fifo"), std::ios::binary);  // blocks until the writer opens it
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  });
  write_file(path("empty"), {});
  WrapperWriter writer(path("w.mwr"));
  writer.add_data("fifo", path("fifo"));
  feeder.join();
  writer.add_data("status", fs::path("/proc/self/status"));
  writer.add_data("empty", path("empty"));
  expect_error([&] { writer.add_data("zero", fs::path("/dev/zero")); }, EINVAL,
               {"'zero'", "/dev/zero", "not a regular file or a stream", "character device"});
  expect_error([&] { writer.add_data("dir", dir_.path()); }, EINVAL, {"'dir'", "a directory"});
  EXPECT_EQ(writer.entry_count(), 3u);
  writer.publish();

  const Wrapper wrapper = Wrapper::open(path("w.mwr"));
  wrapper.verify();
  EXPECT_TRUE(joined(wrapper.entry("fifo")) == bytes);
  const std::vector<std::byte> status = joined(wrapper.entry("status"));
  const std::string text(reinterpret_cast<const char*>(status.data()), status.size());
  EXPECT_TRUE(text.starts_with("Name:\t")) << text;
  EXPECT_NE(text.find("\nPid:\t"), std::string::npos) << text;
  EXPECT_EQ(wrapper.entry("empty").size, 0u);
}

// A library streamed from a pipe is checked as any library: ELF magic, or refused.
TEST_F(WrapperIo, StreamedLibrariesAreCheckedLikeOthers) {
  std::ifstream in(MAPWRIGHT_FIXTURE_A, std::ios::binary);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::byte> library(text.size());
  std::memcpy(library.data(), text.data(), text.size());
  WrapperWriter writer(path("w.mwr"));
  {
    FedPipe pipe(library);
    writer.add_library_stream("liba", pipe.fd(), "standard input");
  }
  {
    FedPipe pipe(pattern_bytes(5000, 5));
    expect_error([&] { writer.add_library_stream("junk", pipe.fd(), "standard input"); }, EINVAL,
                 {"'junk'", "ELF"});
  }
  writer.publish();
  const Wrapper wrapper = Wrapper::open(path("w.mwr"));
  EXPECT_TRUE(joined(wrapper.entry("liba")) == library);
  EXPECT_EQ(wrapper.entries().size(), 1u);
}

// A full disk while streaming is an Error naming the entry; nothing is added, and the
// writer still publishes what it had.
TEST_F(WrapperIo, AFullDiskWhileStreamingIsAnErrorNamingTheEntry) {
  test::SmallTmpfs tmpfs(2 * kMiB);
  if (!tmpfs.ok()) GTEST_SKIP() << tmpfs.reason();
  const fs::path target = tmpfs.path() / "w.mwr";
  WrapperWriterOptions options;
  options.chunk_bytes = 256 * kKiB;
  options.region.min_step = 64 * kKiB;
  options.region.max_step = 64 * kKiB;
  WrapperWriter writer(target, options);
  const std::vector<std::byte> small = pattern_bytes(1000, 6);
  writer.add_data("small", small);
  {
    FedPipe pipe(pattern_bytes(8 * kMiB, 7), 65536);
    expect_error([&] { writer.add_data_stream("big", pipe.fd(), "pipe"); }, ENOSPC,
                 {target.string(), "'big'", "No space left on device"});
  }
  EXPECT_EQ(writer.entry_count(), 1u);
  writer.publish();
  const Wrapper wrapper = Wrapper::open(target);
  wrapper.verify();
  EXPECT_EQ(wrapper.entries().size(), 1u);
  EXPECT_TRUE(joined(wrapper.entry("small")) == small);
}

// MappedMessageBuilder::shrink: the tail of the newest blob goes back to the arena (the
// next blob starts at the first aligned offset after the kept bytes), the kept bytes stay,
// the tail reads zero; growing is refused.
TEST_F(WrapperIo, ShrinkGivesTheNewestBlobsTailBack) {
  Region region = Region::memfd("shrink");
  MappedMessageBuilder builder(region);
  auto blob = builder.new_aligned_data(64 * kKiB, 4096);
  const auto offset = [&](const ::capnp::Data::Reader& r) {
    return static_cast<std::uint64_t>(reinterpret_cast<const std::byte*>(r.begin()) -
                                      region.data());
  };
  const std::uint64_t first = offset(blob.getReader());
  std::memset(blob.get().begin(), 0xab, 64 * kKiB);
  expect_error([&] { builder.shrink(blob, 64 * kKiB + 1); }, EINVAL, {"shrinking"});
  builder.shrink(blob, 100);
  ASSERT_EQ(blob.getReader().size(), 100u);
  for (const auto byte : blob.getReader()) ASSERT_EQ(byte, 0xab);
  const std::byte* tail = region.data() + first + 100;
  for (std::size_t i = 0; i < 64 * kKiB - 104; ++i) ASSERT_EQ(tail[i], std::byte{0}) << i;
  auto next = builder.new_aligned_data(4096, 4096);
  EXPECT_EQ(offset(next.getReader()), first + 4096);
  builder.shrink(next, 0);
  EXPECT_EQ(next.getReader().size(), 0u);
  builder.discard(std::move(next));
  builder.discard(std::move(blob));
}

// ---- targets --------------------------------------------------------------------------------

// The constructor refuses, before creating anything, a target that is a directory ("dir" or
// "dir/"), a FIFO (without blocking), a link to a directory, a dangling link.
TEST_F(WrapperIo, TargetsThatAreNotRegularFilesAreRefusedUpFront) {
  fs::create_directory(path("dir"));
  ASSERT_EQ(::mkfifo(path("fifo").c_str(), 0600), 0);
  fs::create_directory_symlink(path("dir"), path("dir-link"));
  fs::create_symlink(path("nowhere"), path("dangling"));
  expect_error([&] { WrapperWriter writer(path("dir")); }, EISDIR,
               {"writing wrapper", "not a regular file: a directory"});
  expect_error([&] { WrapperWriter writer(path("dir").string() + "/"); }, EISDIR,
               {"not a regular file: a directory"});
  expect_error([&] { WrapperWriter writer(path("fifo")); }, EINVAL, {"not a regular file: a FIFO"});
  expect_error([&] { WrapperWriter writer(path("dir-link")); }, EISDIR,
               {"a symbolic link to a directory"});
  expect_error([&] { WrapperWriter writer(path("dangling")); }, ENOENT,
               {"symbolic link to nothing"});
  expect_error([&] { (void)Region::staged(path("fifo")); }, EINVAL, {"not a regular file"});
  EXPECT_TRUE(fs::is_empty(path("dir")));
  EXPECT_TRUE(fs::is_fifo(path("fifo")));
  EXPECT_FALSE(fs::exists(path("nowhere")));
}

// publish() over an existing file gives the new one the old one's mode; over a link to a
// file it replaces the file and keeps the link.
TEST_F(WrapperIo, PublishKeepsTheModeAndTheLink) {
  const std::vector<std::byte> bytes = pattern_bytes(5000, 8);
  for (const mode_t mode : {0600u, 0640u, 0604u}) {
    write_file(path("w.mwr"), bytes);
    ASSERT_EQ(::chmod(path("w.mwr").c_str(), mode), 0);
    WrapperWriter writer(path("w.mwr"));
    writer.add_data("x", bytes);
    writer.publish();
    struct stat status {};
    ASSERT_EQ(::stat(path("w.mwr").c_str(), &status), 0);
    EXPECT_EQ(status.st_mode & 07777, mode);
  }
  if (::geteuid() == 0) {  // root may give the new file the old one's owner and group
    ASSERT_EQ(::chown(path("w.mwr").c_str(), 4321, 4322), 0);
    WrapperWriter writer(path("w.mwr"));
    writer.add_data("x", bytes);
    writer.publish();
    struct stat status {};
    ASSERT_EQ(::stat(path("w.mwr").c_str(), &status), 0);
    EXPECT_EQ(status.st_uid, 4321u);
    EXPECT_EQ(status.st_gid, 4322u);
  }
  fs::create_symlink(path("w.mwr"), path("link"));
  WrapperWriter writer(path("link"));
  writer.add_data("y", bytes);
  writer.publish();
  EXPECT_TRUE(fs::is_symlink(fs::symlink_status(path("link"))));
  EXPECT_NE(Wrapper::open(path("w.mwr")).find("y"), nullptr);
}

// ---- wrapper inputs ---------------------------------------------------------------------------

// Wrapper::open refuses a FIFO (at once: no writer is waited for), a device, a /proc file as
// "not a regular file", not as an "empty file".
TEST_F(WrapperIo, OpeningWhatIsNotARegularFileIsRefusedAtOnce) {
  ::alarm(20);  // a build whose open() waits for a writer dies here instead of hanging
  ASSERT_EQ(::mkfifo(path("fifo").c_str(), 0600), 0);
  for (const fs::path& input :
       {path("fifo"), fs::path("/dev/zero"), fs::path("/proc/self/status")}) {
    SCOPED_TRACE(input);
    expect_error([&] { (void)Wrapper::open(input); }, ENODEV,
                 {input.string(), "not a regular file"});
  }
  ::alarm(0);
}

}  // namespace
}  // namespace mapwright
