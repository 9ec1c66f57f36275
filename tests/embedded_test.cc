// Wrappers inside larger files: Wrapper::open(fd, offset, size) at a 4096-aligned offset,
// Wrapper::open_embedded() finding one from the trailer at the end of a file (and refusing
// what is not there, apart from damage inside what is), the writer appending a wrapper to a
// copy of a file (WrapperWriterOptions::prefix, MappedMessageOptions::offset), and a real
// program that finds the wrapper appended to itself through /proc/self/exe.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "child.h"
#include "cli.h"
#include "content.h"
#include "fixture_paths.h"
#include "mapwright/capnp.h"
#include "mapwright/error.h"
#include "mapwright/region.h"
#include "mapwright/wrapper.h"
#include "wrapper_helpers.h"
#include "wrapper_v1_fixture.h"

namespace mapwright {
namespace {

namespace fs = std::filesystem;
using test::expect_error;
using test::joined;
using test::pattern_bytes;
using test::TempDir;
using test::write_file;
using Bytes = std::vector<std::byte>;

constexpr std::uint64_t kPage = kWrapperAlignment;

Bytes read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto* first = reinterpret_cast<const std::byte*>(text.data());
  return Bytes(first, first + text.size());
}

Bytes concat(std::initializer_list<const Bytes*> parts) {
  Bytes out;
  for (const Bytes* part : parts) out.insert(out.end(), part->begin(), part->end());
  return out;
}

// The fixture libraries (b needs a) and a data entry: the wrapper's bytes.
Bytes sample_wrapper(const TempDir& dir) {
  const fs::path path = dir / "sample.mwr";
  WrapperWriter writer(path);
  writer.add_library("liba", fs::path(MAPWRIGHT_FIXTURE_A));
  writer.add_library("libb", fs::path(MAPWRIGHT_FIXTURE_B), {"liba"});
  writer.add_data("blob", pattern_bytes(20000, 7));
  writer.publish();
  return read_bytes(path);
}

// A small wrapper (one data entry), for the exhaustive flips.
Bytes small_wrapper(const TempDir& dir) {
  const fs::path path = dir / "small.mwr";
  WrapperWriter writer(path);
  writer.add_data("greeting", pattern_bytes(3000, 3));
  writer.publish();
  return read_bytes(path);
}

class ReadOnlyFd {
 public:
  explicit ReadOnlyFd(const fs::path& path) : fd_(::open(path.c_str(), O_RDONLY | O_CLOEXEC)) {
    EXPECT_GE(fd_, 0) << path;
  }
  ~ReadOnlyFd() {
    if (fd_ >= 0) ::close(fd_);
  }
  ReadOnlyFd(const ReadOnlyFd&) = delete;
  ReadOnlyFd& operator=(const ReadOnlyFd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

// ---- open(fd, offset, size) ----------------------------------------------------------------

TEST(EmbeddedTest, OpensAWrapperAtAnOffsetAndReportsFileOffsets) {
  TempDir dir;
  const Bytes wrapper = sample_wrapper(dir);
  const Bytes prefix = pattern_bytes(4 * kPage, 11);  // random bytes, a whole number of pages
  const Bytes after = pattern_bytes(777, 12);         // and bytes after the wrapper's range
  write_file(dir / "file", concat({&prefix, &wrapper, &after}));
  const Wrapper alone = Wrapper::open(dir / "sample.mwr");
  const ReadOnlyFd fd(dir / "file");

  const Wrapper at = Wrapper::open(fd.get(), prefix.size(), wrapper.size());
  EXPECT_EQ(at.offset(), prefix.size());
  EXPECT_EQ(at.size(), wrapper.size());
  EXPECT_EQ(at.file_size(), wrapper.size());
  EXPECT_TRUE(at.metadata_checked());
  EXPECT_NO_THROW(at.verify());
  ASSERT_EQ(at.entries().size(), alone.entries().size());
  for (std::size_t i = 0; i < at.entries().size(); ++i) {
    const WrapperEntry& entry = at.entries()[i];
    SCOPED_TRACE(entry.name);
    // A file offset: the standalone offset moved by where the wrapper starts, and the bytes
    // there in the file are the entry's.
    EXPECT_EQ(entry.offset, prefix.size() + alone.entries()[i].offset);
    EXPECT_EQ(joined(entry), joined(alone.entries()[i]));
    Bytes there(entry.size);
    ASSERT_EQ(::pread(fd.get(), there.data(), there.size(), static_cast<off_t>(entry.offset)),
              static_cast<ssize_t>(there.size()));
    EXPECT_EQ(there, joined(entry));
  }
  // The loader copies from the fd at those offsets.
  {
    const Library a = at.load_library("liba");
    EXPECT_EQ(a.function<int()>("fixture_answer")(), 42);
  }
  const LoadedLibraries b = at.load_with_dependencies("libb");
  EXPECT_EQ(b.at("libb").function<int()>("fixture_b_answer")(), 43);

  // Size 0: up to the end of the file.
  write_file(dir / "to_end", concat({&prefix, &wrapper}));
  const ReadOnlyFd to_end(dir / "to_end");
  EXPECT_EQ(Wrapper::open(to_end.get(), prefix.size(), 0).size(), wrapper.size());
}

TEST(EmbeddedTest, RefusesAnOffsetThatIsNotAMultipleOf4096) {
  TempDir dir;
  const Bytes wrapper = sample_wrapper(dir);
  for (const std::uint64_t offset : std::vector<std::uint64_t>{8, 100, 2048, kPage + 8, 3 * kPage - 512}) {
    SCOPED_TRACE(offset);
    const Bytes prefix = pattern_bytes(offset, 5);
    write_file(dir / "file", concat({&prefix, &wrapper}));
    const ReadOnlyFd fd(dir / "file");
    expect_error([&] { Wrapper::open(fd.get(), offset, wrapper.size()); }, EINVAL,
                 {"offset " + std::to_string(offset) + " is not a multiple of 4096"});
  }
}

TEST(EmbeddedTest, RefusesARangeThatRunsPastTheEndOfTheFile) {
  TempDir dir;
  const Bytes wrapper = sample_wrapper(dir);
  const Bytes prefix = pattern_bytes(kPage, 5);
  write_file(dir / "file", concat({&prefix, &wrapper}));
  const ReadOnlyFd fd(dir / "file");
  const std::uint64_t file = prefix.size() + wrapper.size();
  expect_error([&] { Wrapper::open(fd.get(), kPage, wrapper.size() + 1); }, EINVAL,
               {"runs past the end of the file (" + std::to_string(file) + " bytes)"});
  expect_error([&] { Wrapper::open(fd.get(), kPage, UINT64_MAX); }, EINVAL,
               {"runs past the end of the file"});
  expect_error([&] { Wrapper::open(fd.get(), 16 * kPage, 1); }, EINVAL,
               {"offset 65536 is past the end of the file"});
  write_file(dir / "pages", prefix);
  const ReadOnlyFd pages(dir / "pages");
  expect_error([&] { Wrapper::open(pages.get(), kPage, 0); }, EINVAL, {"nothing after offset 4096"});
}

TEST(EmbeddedTest, BytesAfterTheWrapperInsideTheRangeAreRefused) {
  TempDir dir;
  const Bytes wrapper = sample_wrapper(dir);
  const Bytes prefix = pattern_bytes(2 * kPage, 5);
  const Bytes after = pattern_bytes(100, 6);
  write_file(dir / "file", concat({&prefix, &wrapper, &after}));
  const ReadOnlyFd fd(dir / "file");
  expect_error([&] { Wrapper::open(fd.get(), 2 * kPage, wrapper.size() + 100); }, EBADMSG,
               {"100 bytes after the wrapper"});
  expect_error([&] { Wrapper::open(fd.get(), 2 * kPage, 0); }, EBADMSG,
               {"100 bytes after the wrapper"});
  // The same bytes outside the range are not the wrapper's business.
  EXPECT_NO_THROW(Wrapper::open(fd.get(), 2 * kPage, wrapper.size()).verify());
}

TEST(EmbeddedTest, NothingOutsideTheRangeIsReadOrTrusted) {
  TempDir dir;
  const Bytes wrapper = sample_wrapper(dir);
  // A range one byte short of the wrapper: its trailer is not the range's last 88 bytes, and
  // the byte the file still has after the range does not help.
  const Bytes prefix = pattern_bytes(kPage, 5);
  write_file(dir / "file", concat({&prefix, &wrapper}));
  const ReadOnlyFd fd(dir / "file");
  EXPECT_THROW(Wrapper::open(fd.get(), kPage, wrapper.size() - 1), Error);
  // The range's first byte must be the wrapper's: starting a page early is not a wrapper.
  const Bytes zeros(kPage);
  write_file(dir / "padded", concat({&zeros, &wrapper}));
  const ReadOnlyFd padded(dir / "padded");
  EXPECT_THROW(Wrapper::open(padded.get(), 0, 0), Error);
  EXPECT_NO_THROW(Wrapper::open(padded.get(), kPage, 0).verify());
  // Whatever surrounds the range (here: other random bytes) changes nothing.
  for (unsigned seed = 20; seed < 23; ++seed) {
    const Bytes before = pattern_bytes(3 * kPage, seed);
    const Bytes after = pattern_bytes(5000, seed + 100);
    write_file(dir / "other", concat({&before, &wrapper, &after}));
    const ReadOnlyFd other(dir / "other");
    EXPECT_NO_THROW(Wrapper::open(other.get(), 3 * kPage, wrapper.size()).verify());
  }
}

// ---- open_embedded ---------------------------------------------------------------------------

TEST(EmbeddedTest, OpenEmbeddedFindsAWholeWrapperAtOffsetZero) {
  TempDir dir;
  const Bytes wrapper = sample_wrapper(dir);
  const Wrapper found = Wrapper::open_embedded(dir / "sample.mwr");
  EXPECT_EQ(found.offset(), 0u);
  EXPECT_EQ(found.size(), wrapper.size());
  EXPECT_EQ(found.name(), (dir / "sample.mwr").string());
  EXPECT_NO_THROW(found.verify());
  EXPECT_EQ(found.entries().size(), 3u);
}

TEST(EmbeddedTest, OpenEmbeddedFindsAWrapperAppendedToAFile) {
  TempDir dir;
  const Bytes wrapper = sample_wrapper(dir);
  // An "executable": random bytes padded with zeros to a page boundary.
  Bytes prefix = pattern_bytes(3 * kPage + 1234, 9);
  prefix.resize(4 * kPage);
  write_file(dir / "app", concat({&prefix, &wrapper}));
  const Wrapper found = Wrapper::open_embedded(dir / "app");
  EXPECT_EQ(found.offset(), 4 * kPage);
  EXPECT_EQ(found.size(), wrapper.size());
  EXPECT_NO_THROW(found.verify());
  const Wrapper alone = Wrapper::open(dir / "sample.mwr");
  EXPECT_EQ(found.entry("blob").offset, 4 * kPage + alone.entry("blob").offset);
  EXPECT_EQ(joined(found.entry("blob")), pattern_bytes(20000, 7));
  // Loading from it.
  const LoadedLibraries b = found.load_with_dependencies("libb");
  EXPECT_EQ(b.at("libb").function<int()>("fixture_b_answer")(), 43);
  // The fd form.
  const ReadOnlyFd fd(dir / "app");
  const Wrapper by_fd = Wrapper::open_embedded(fd.get());
  EXPECT_EQ(by_fd.offset(), 4 * kPage);
  EXPECT_EQ(by_fd.name(), "wrapper fd " + std::to_string(fd.get()));
}

// Opening such a file as a whole wrapper fails, and says where the appended one starts and
// how to open it; a file with no trailer gets no such hint.
TEST(EmbeddedTest, OpeningAnAppendedWrapperAsAWholeFilePointsToOpenEmbedded) {
  TempDir dir;
  const Bytes wrapper = sample_wrapper(dir);
  Bytes prefix = pattern_bytes(2 * kPage + 77, 5);
  prefix.resize(3 * kPage);
  write_file(dir / "app", concat({&prefix, &wrapper}));
  const std::string hint = "the file ends with a wrapper that starts at byte " +
                           std::to_string(3 * kPage) + ": open it with Wrapper::open_embedded()";
  expect_error([&] { Wrapper::open(dir / "app"); }, EINVAL, {"not a wrapper", hint});
  const ReadOnlyFd fd(dir / "app");
  expect_error([&] { Wrapper::open(fd.get()); }, EINVAL, {"not a wrapper", hint});
  write_file(dir / "plain", prefix);
  try {
    (void)Wrapper::open(dir / "plain");
    ADD_FAILURE() << "opened a file with no wrapper";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not a wrapper"), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find("open_embedded"), std::string::npos) << e.what();
  }
}

TEST(EmbeddedTest, OpenEmbeddedSaysThereIsNoWrapper) {
  TempDir dir;
  const Bytes wrapper = sample_wrapper(dir);
  Bytes prefix = pattern_bytes(3 * kPage + 1234, 9);
  prefix.resize(4 * kPage);
  struct Case {
    std::string what;
    Bytes bytes;
    std::string says;
  };
  const Bytes appended = concat({&prefix, &wrapper});
  const Bytes unaligned_prefix = pattern_bytes(100, 4);
  const std::vector<Case> cases = {
      {"only a prefix", pattern_bytes(5 * kPage + 3, 1),
       "its last 88 bytes are not a wrapper's trailer"},
      {"an empty file", {}, "the file has 0 bytes, fewer than a trailer's 88"},
      {"a short file", pattern_bytes(87, 1), "the file has 87 bytes, fewer than a trailer's 88"},
      {"a truncated trailer", Bytes(appended.begin(), appended.end() - 10),
       "its last 88 bytes are not a wrapper's trailer"},
      {"a trailer that claims more than the file",
       Bytes(wrapper.begin() + static_cast<std::ptrdiff_t>(kPage), wrapper.end()),
       "its trailer says the wrapper has " + std::to_string(wrapper.size()) +
           " bytes, more than the file's " + std::to_string(wrapper.size() - kPage)},
      {"an unaligned start", concat({&unaligned_prefix, &wrapper}),
       "its trailer puts the wrapper's first byte at 100, which is not a multiple of 4096"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    write_file(dir / "file", c.bytes);
    expect_error([&] { Wrapper::open_embedded(dir / "file"); }, ENOMSG,
                 {(dir / "file").string(), "no wrapper at the end of the file", c.says});
  }
}

TEST(EmbeddedTest, DamageInsideAFoundWrapperIsDamageNotAbsence) {
  TempDir dir;
  const Bytes wrapper = sample_wrapper(dir);
  Bytes prefix = pattern_bytes(2 * kPage, 9);
  Bytes file = concat({&prefix, &wrapper});
  // A byte of the metadata (just before the trailer): the digest does not match.
  file[file.size() - kWrapperTrailerBytes - 20] ^= std::byte{0x40};
  write_file(dir / "app", file);
  expect_error([&] { Wrapper::open_embedded(dir / "app"); }, EBADMSG,
               {"the metadata digest does not match"});
  // A whole wrapper without a usable end is what Wrapper::open says it is, not "no wrapper".
  const Bytes cut(wrapper.begin(), wrapper.end() - 1);
  write_file(dir / "cut", cut);
  expect_error([&] { Wrapper::open_embedded(dir / "cut"); }, EBADMSG,
               {"truncated at byte " + std::to_string(cut.size()) + " of " +
                std::to_string(wrapper.size()) + " expected"});
  const Bytes x = {std::byte{'x'}};
  write_file(dir / "longer", concat({&wrapper, &x}));
  expect_error([&] { Wrapper::open_embedded(dir / "longer"); }, EBADMSG,
               {"1 bytes after the wrapper"});
}

// A well-formed trailer at the end of the file that puts the wrapper where there is none (its
// size field damaged, or the bytes where it points overwritten): a wrapper was found and is
// damaged (EBADMSG, as README promises), not "not a wrapper" (EINVAL), and the message says
// where the trailer put it.
TEST(EmbeddedTest, ATrailerThatPointsAtNoWrapperIsDamage) {
  TempDir dir;
  const Bytes wrapper = sample_wrapper(dir);
  const Bytes prefix = pattern_bytes(3 * kPage, 9);
  const Bytes file = concat({&prefix, &wrapper});
  // The trailer's wrapper_size: the 8 bytes that hold wrapper.size() in the last 88.
  const std::uint64_t trailer_at = file.size() - kWrapperTrailerBytes;
  std::uint64_t field = 0;
  for (std::uint64_t at = trailer_at; at + 8 <= file.size(); ++at) {
    std::uint64_t value = 0;
    std::memcpy(&value, &file[at], 8);
    if (value == wrapper.size()) field = at;
  }
  ASSERT_NE(field, 0u);
  const auto with_size = [&](std::uint64_t size) {
    Bytes changed = file;
    std::memcpy(&changed[field], &size, 8);
    return changed;
  };
  struct Case {
    std::string what;
    Bytes bytes;
    std::uint64_t start;
  };
  const std::vector<Case> cases = {
      // One page too far back: into the prefix.
      {"a page earlier", with_size(wrapper.size() + kPage), 2 * kPage},
      // At byte 0 of the file: the prefix is not a wrapper either.
      {"the whole file", with_size(file.size()), 0},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    write_file(dir / "app", c.bytes);
    expect_error([&] { Wrapper::open_embedded(dir / "app"); }, EBADMSG,
                 {(dir / "app").string(), "its trailer puts a wrapper of",
                  "at byte " + std::to_string(c.start) + ", but there is none there"});
  }
  // The bytes where the trailer points overwritten: the same.
  Bytes overwritten = file;
  std::fill(overwritten.begin() + static_cast<std::ptrdiff_t>(prefix.size()),
            overwritten.begin() + static_cast<std::ptrdiff_t>(prefix.size() + 16), std::byte{0xff});
  write_file(dir / "app", overwritten);
  expect_error([&] { Wrapper::open_embedded(dir / "app"); }, EBADMSG,
               {"at byte " + std::to_string(prefix.size()) + ", but there is none there"});
}

TEST(EmbeddedTest, OpenEmbeddedRefusesVersion1SayingSo) {
  TempDir dir;
  const Bytes v1 = test::wrapper_v1_fixture();
  write_file(dir / "v1.mwr", v1);
  expect_error([&] { Wrapper::open_embedded(dir / "v1.mwr"); }, ENOTSUP,
               {"format version 1", "no trailer", "open it as a whole file"});
  EXPECT_EQ(Wrapper::open(dir / "v1.mwr").format_version(), 1u);  // still read whole
  // Appended to a file, a version 1 wrapper cannot be found at all.
  const Bytes prefix = pattern_bytes(kPage, 2);
  write_file(dir / "app", concat({&prefix, &v1}));
  expect_error([&] { Wrapper::open_embedded(dir / "app"); }, ENOMSG, {"no wrapper at the end"});
}

TEST(EmbeddedTest, OpenEmbeddedRefusesWhatIsNotARegularFile) {
  TempDir dir;
  ASSERT_EQ(::mkfifo((dir / "fifo").c_str(), 0600), 0);
  expect_error([&] { Wrapper::open_embedded(dir / "fifo"); }, ENODEV, {"not a regular file: a FIFO"});
  expect_error([&] { Wrapper::open_embedded(dir.path()); }, ENODEV, {"not a regular file"});
  expect_error([&] { Wrapper::open_embedded("/proc/self/status"); }, ENODEV, {"procfs"});
  expect_error([&] { Wrapper::open_embedded(dir / "missing"); }, ENOENT, {"missing"});
}

// Every byte of an embedded wrapper, one bit each: open_embedded() or verify() refuses it.
// Bits flipped in the file before the wrapper change nothing.
TEST(EmbeddedTest, EveryFlippedBitInAnEmbeddedWrapperIsCaught) {
  TempDir dir;
  const Bytes wrapper = small_wrapper(dir);
  const Bytes prefix = pattern_bytes(2 * kPage, 13);
  const Bytes file = concat({&prefix, &wrapper});
  const int fd = ::memfd_create("embedded", MFD_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::pwrite(fd, file.data(), file.size(), 0), static_cast<ssize_t>(file.size()));
  const auto opens_and_verifies = [&] {
    try {
      Wrapper::open_embedded(fd).verify();
      return true;
    } catch (const Error&) {
      return false;
    }
  };
  ASSERT_TRUE(opens_and_verifies());
  const auto flip = [&](std::uint64_t at, unsigned bit) {
    std::byte b = file[at] ^ static_cast<std::byte>(1u << bit);
    ASSERT_EQ(::pwrite(fd, &b, 1, static_cast<off_t>(at)), 1);
  };
  const auto restore = [&](std::uint64_t at) {
    ASSERT_EQ(::pwrite(fd, &file[at], 1, static_cast<off_t>(at)), 1);
  };
  std::uint64_t missed = 0;
  for (std::uint64_t at = prefix.size(); at < file.size(); ++at) {
    flip(at, static_cast<unsigned>(at % 8));
    if (opens_and_verifies()) {
      ++missed;
      ADD_FAILURE() << "a flip of bit " << at % 8 << " of byte " << at << " went unnoticed";
    }
    restore(at);
    if (missed > 5) break;
  }
  for (std::uint64_t at = 0; at < prefix.size(); at += 97) {
    flip(at, static_cast<unsigned>(at % 8));
    EXPECT_TRUE(opens_and_verifies()) << "byte " << at << " of the prefix";
    restore(at);
  }
  ::close(fd);
}

// ---- writing: a prefix before the wrapper ------------------------------------------------------

TEST(EmbeddedTest, TheWriterAppendsTheWrapperToACopyOfAFile) {
  TempDir dir;
  const Bytes exe = pattern_bytes(10000, 21);
  write_file(dir / "exe", exe);
  ASSERT_EQ(::chmod((dir / "exe").c_str(), 0750), 0);
  // An existing target with another mode: replaced, and given the prefix's mode.
  write_file(dir / "out", pattern_bytes(100, 1));
  ASSERT_EQ(::chmod((dir / "out").c_str(), 0600), 0);

  WrapperWriterOptions options;
  options.prefix = dir / "exe";
  WrapperWriter writer(dir / "out", options);
  EXPECT_EQ(writer.wrapper_offset(), 3 * kPage);
  writer.add_library("liba", fs::path(MAPWRIGHT_FIXTURE_A));
  writer.add_data("blob", pattern_bytes(50000, 22));
  const std::uint64_t size = writer.publish();

  const Bytes out = read_bytes(dir / "out");
  EXPECT_EQ(out.size(), size);
  EXPECT_TRUE(std::equal(exe.begin(), exe.end(), out.begin()));
  EXPECT_TRUE(std::all_of(out.begin() + static_cast<std::ptrdiff_t>(exe.size()),
                          out.begin() + static_cast<std::ptrdiff_t>(3 * kPage),
                          [](std::byte b) { return b == std::byte{0}; }));
  struct stat status {};
  ASSERT_EQ(::stat((dir / "out").c_str(), &status), 0);
  EXPECT_EQ(status.st_mode & 07777, 0750u);

  const Wrapper found = Wrapper::open_embedded(dir / "out");
  EXPECT_EQ(found.offset(), 3 * kPage);
  EXPECT_EQ(found.size(), size - 3 * kPage);
  EXPECT_NO_THROW(found.verify());
  EXPECT_EQ(joined(found.entry("blob")), pattern_bytes(50000, 22));
  EXPECT_EQ(found.load_library("liba").function<int()>("fixture_answer")(), 42);
  // The wrapper alone, cut out of the file, is a whole wrapper.
  write_file(dir / "alone.mwr", Bytes(out.begin() + static_cast<std::ptrdiff_t>(3 * kPage), out.end()));
  EXPECT_NO_THROW(Wrapper::open(dir / "alone.mwr").verify());
}

TEST(EmbeddedTest, AnEmptyPrefixGivesAWholeWrapperWithItsMode) {
  TempDir dir;
  write_file(dir / "empty", Bytes{});
  ASSERT_EQ(::chmod((dir / "empty").c_str(), 0755), 0);
  WrapperWriterOptions options;
  options.prefix = dir / "empty";
  WrapperWriter writer(dir / "out", options);
  EXPECT_EQ(writer.wrapper_offset(), 0u);
  writer.add_data("x", pattern_bytes(10, 1));
  writer.publish();
  EXPECT_EQ(Wrapper::open(dir / "out").entries().size(), 1u);
  struct stat status {};
  ASSERT_EQ(::stat((dir / "out").c_str(), &status), 0);
  EXPECT_EQ(status.st_mode & 07777, 0755u);
}

TEST(EmbeddedTest, TheWriterRefusesAPrefixThatIsTheTargetOrNotAFile) {
  TempDir dir;
  const Bytes old = pattern_bytes(5000, 3);
  write_file(dir / "out", old);
  std::error_code ignored;
  fs::create_symlink(dir / "out", dir / "link", ignored);
  ASSERT_EQ(::mkfifo((dir / "fifo").c_str(), 0600), 0);
  struct Case {
    fs::path prefix;
    int error;
    std::string says;
  };
  const std::vector<Case> cases = {
      {dir / "out", EINVAL, "is the target itself"},
      {dir / "link", EINVAL, "is the target itself"},
      {dir.path(), EINVAL, "is not a regular file: a directory"},
      {dir / "fifo", EINVAL, "is not a regular file: a FIFO"},
      {"/proc/self/status", EINVAL, "is not a regular file: a file of procfs or sysfs"},
      {dir / "missing", ENOENT, "missing"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.prefix.string());
    WrapperWriterOptions options;
    options.prefix = c.prefix;
    expect_error([&] { WrapperWriter writer(dir / "out", options); }, c.error,
                 {"the file to append the wrapper to", c.says});
    EXPECT_EQ(read_bytes(dir / "out"), old);
  }
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 3);
}

TEST(EmbeddedTest, AMessageCanStartAtAPageOffsetOfItsRegion) {
  TempDir dir;
  Region region = Region::file(dir / "message");
  region.ensure(2 * kPage);
  std::memset(region.data(), 0x5a, 2 * kPage);
  region.finish(2 * kPage);
  MappedMessageOptions options;
  options.offset = 2 * kPage;
  MappedMessageBuilder builder(region, options);
  auto text = builder.initRoot<::capnp::Text>(5);
  std::memcpy(text.begin(), "hello", 5);
  const std::uint64_t size = builder.finish();
  EXPECT_EQ(region.size(), 2 * kPage + size);
  EXPECT_EQ(region.data()[0], std::byte{0x5a});
  EXPECT_EQ(region.data()[2 * kPage - 1], std::byte{0x5a});
  const ReadOnlyFd fd(dir / "message");
  MappedMessageReader reader(fd.get(), 2 * kPage, 0);
  EXPECT_EQ(reader.size(), size);
  EXPECT_EQ(std::string(reader.getRoot<::capnp::Text>().cStr()), "hello");

  // The offset must be page-aligned, and the region must hold exactly the bytes before it.
  Region other = Region::file(dir / "other");
  options.offset = 100;
  expect_error([&] { MappedMessageBuilder b(other, options); }, EINVAL, {"offset 100"});
  options.offset = kPage;
  expect_error([&] { MappedMessageBuilder b(other, options); }, EINVAL,
               {"must hold exactly the 4096 bytes before the message"});
}

// What the writer relies on for the prefix's mode: publish() can set the new file's mode,
// before the rename, whatever the file it replaces had; by default it keeps that one's.
TEST(EmbeddedTest, PublishCanGiveTheNewFileAMode) {
  TempDir dir;
  const auto mode_of = [](const fs::path& path) {
    struct stat status {};
    EXPECT_EQ(::stat(path.c_str(), &status), 0);
    return status.st_mode & 07777;
  };
  const auto publish = [&](const fs::path& target, int mode) {
    Region region = Region::staged(target);
    region.ensure(10);
    std::memcpy(region.data(), "new bytes", 10);
    region.finish(10);
    region.publish(Region::PublishOptions{.durable = false, .mode = mode});
  };
  write_file(dir / "old", pattern_bytes(10, 1));
  ASSERT_EQ(::chmod((dir / "old").c_str(), 0600), 0);
  publish(dir / "old", 0755);
  EXPECT_EQ(mode_of(dir / "old"), 0755u);
  publish(dir / "old", -1);
  EXPECT_EQ(mode_of(dir / "old"), 0755u);  // kept
  publish(dir / "new", 0710);
  EXPECT_EQ(mode_of(dir / "new"), 0710u);
}

// ---- a real program -------------------------------------------------------------------------

// A copy of embedded_reader with a wrapper appended finds it through /proc/self/exe, verifies
// it and loads from it; the program itself, without one, says there is none (ENOMSG).
TEST(EmbeddedTest, AProgramFindsTheWrapperAppendedToItself) {
  TempDir dir;
  std::uint64_t offset = 0;
  {
    // Gone before the program runs: its writable fd would make execve() fail (ETXTBSY).
    WrapperWriterOptions options;
    options.prefix = MAPWRIGHT_EMBEDDED_READER;
    options.durable = false;
    WrapperWriter writer(dir / "reader", options);
    writer.add_library("liba", fs::path(MAPWRIGHT_FIXTURE_A));
    writer.add_library("libb", fs::path(MAPWRIGHT_FIXTURE_B), {"liba"});
    offset = writer.wrapper_offset();
    EXPECT_GT(offset, 0u);
    writer.publish();
  }

  const cli_test::Outcome ran =
      cli_test::run_program((dir / "reader").string(), {"libb", "fixture_b_answer"});
  EXPECT_TRUE(ran.exited && ran.exit_code == 0) << ran.describe();
  EXPECT_EQ(ran.out, "wrapper at byte " + std::to_string(offset) + ", " +
                         std::to_string(fs::file_size(dir / "reader") - offset) +
                         " bytes, 2 entries: liba libb\nfixture_b_answer() = 43\n");
  // Through a symbolic link, from another directory: /proc/self/exe is the file itself.
  fs::create_symlink(dir / "reader", dir / "link");
  const cli_test::Outcome linked = cli_test::run_program((dir / "link").string(), {});
  EXPECT_TRUE(linked.exited && linked.exit_code == 0) << linked.describe();

  const cli_test::Outcome bare = cli_test::run_program(MAPWRIGHT_EMBEDDED_READER, {});
  EXPECT_TRUE(bare.exited && bare.exit_code == 2) << bare.describe();
  EXPECT_NE(bare.err.find("ENOMSG: opening wrapper '/proc/self/exe' (no wrapper at the end of the file"),
            std::string::npos)
      << bare.err;
}

}  // namespace
}  // namespace mapwright
