// tests/capnp_reader_test.cc — MappedMessageReader: messages written by stock Cap'n Proto
// (capnp::writeMessageToFd, single- and multi-segment) read back through the path, the
// (fd, offset, length) and the SealedImage constructors; every way a stream header can be
// wrong refused with a mapwright::Error that says what is wrong; and random mutations and
// truncations of a valid message, which must parse or be refused, never crash (run this suite
// under the asan preset too).
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <capnp/any.h>
#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/exception.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "child.h"
#include "mapwright/capnp.h"
#include "mapwright/error.h"
#include "mapwright/region.h"
#include "mapwright/sealed_image.h"
#include "region_helpers.h"
#include "test.capnp.h"

namespace mapwright {
namespace {

using namespace test;  // the shared helpers in tests/support

using Bytes = std::vector<std::byte>;

// ---- messages ---------------------------------------------------------------------------

// Fills every field of TestAll; `n` scales the lists (and so the segment count of a builder
// with small fixed-size segments).
void fill_message(TestAll::Builder root, unsigned n) {
  root.setId(0x0123456789abcdefull + n);
  root.setName("name-" + std::to_string(n));
  auto blob = root.initBlob(n * 3 + 1);
  for (unsigned i = 0; i < blob.size(); ++i) blob[i] = static_cast<kj::byte>(i * 7 + n);
  auto words = root.initWords(n * 10);
  for (unsigned i = 0; i < words.size(); ++i) words.set(i, 1000003ull * i + n);
  auto names = root.initNames(n);
  for (unsigned i = 0; i < n; ++i) names.set(i, "names-" + std::to_string(i));
  auto nested = root.initNested(n);
  for (unsigned i = 0; i < n; ++i) {
    auto inner = nested.init(i, i % 5);
    for (unsigned j = 0; j < inner.size(); ++j) inner.set(j, i * 100 + j);
  }
  root.getChoice().setLabel("label-" + std::to_string(n));
  auto items = root.initItems(n);
  for (unsigned i = 0; i < n; ++i) {
    items[i].setKey("key-" + std::to_string(i));
    items[i].setValue(i * 11ull);
  }
}

// Checks what fill_message stored; returns "" or the first difference.
std::string check_message(TestAll::Reader root, unsigned n) {
  if (root.getId() != 0x0123456789abcdefull + n) return "id";
  if (root.getName() != ("name-" + std::to_string(n)).c_str()) return "name";
  const auto blob = root.getBlob();
  if (blob.size() != n * 3 + 1) return "blob size";
  for (unsigned i = 0; i < blob.size(); ++i) {
    if (blob[i] != static_cast<kj::byte>(i * 7 + n)) return "blob[" + std::to_string(i) + "]";
  }
  const auto words = root.getWords();
  if (words.size() != n * 10) return "words size";
  for (unsigned i = 0; i < words.size(); ++i) {
    if (words[i] != 1000003ull * i + n) return "words[" + std::to_string(i) + "]";
  }
  const auto names = root.getNames();
  if (names.size() != n) return "names size";
  for (unsigned i = 0; i < n; ++i) {
    if (names[i] != ("names-" + std::to_string(i)).c_str()) return "names[" + std::to_string(i) + "]";
  }
  const auto nested = root.getNested();
  if (nested.size() != n) return "nested size";
  for (unsigned i = 0; i < n; ++i) {
    const auto inner = nested[i];
    if (inner.size() != i % 5) return "nested[" + std::to_string(i) + "] size";
    for (unsigned j = 0; j < inner.size(); ++j) {
      if (inner[j] != i * 100 + j) return "nested[" + std::to_string(i) + "][" + std::to_string(j) + "]";
    }
  }
  if (!root.getChoice().isLabel()) return "choice is not label";
  if (root.getChoice().getLabel() != ("label-" + std::to_string(n)).c_str()) return "label";
  const auto items = root.getItems();
  if (items.size() != n) return "items size";
  for (unsigned i = 0; i < n; ++i) {
    if (items[i].getKey() != ("key-" + std::to_string(i)).c_str()) return "items[" + std::to_string(i) + "].key";
    if (items[i].getValue() != i * 11ull) return "items[" + std::to_string(i) + "].value";
  }
  return "";
}

// A stock builder holding fill_message(n). words_per_segment 0: Cap'n Proto's defaults (one
// segment for small n); else fixed-size segments of that many words (many segments).
struct Stock {
  explicit Stock(unsigned n, unsigned words_per_segment = 0)
      : builder(words_per_segment == 0 ? ::capnp::SUGGESTED_FIRST_SEGMENT_WORDS
                                       : words_per_segment,
                words_per_segment == 0 ? ::capnp::SUGGESTED_ALLOCATION_STRATEGY
                                       : ::capnp::AllocationStrategy::FIXED_SIZE) {
    fill_message(builder.initRoot<TestAll>(), n);
  }
  std::size_t segments() { return builder.getSegmentsForOutput().size(); }
  // The bytes capnp::writeMessage produces (messageToFlatArray is the same framing).
  Bytes bytes() {
    const kj::Array<::capnp::word> flat = ::capnp::messageToFlatArray(builder);
    const auto raw = flat.asBytes();
    Bytes out(raw.size());
    std::memcpy(out.data(), raw.begin(), raw.size());
    return out;
  }
  ::capnp::MallocMessageBuilder builder;
};

// ---- files ------------------------------------------------------------------------------

void write_all(int fd, const void* data, std::size_t length) {
  const auto* p = static_cast<const char*>(data);
  while (length != 0) {
    const ssize_t n = ::write(fd, p, length);
    if (n < 0 && errno == EINTR) continue;
    ASSERT_GT(n, 0) << std::strerror(errno);
    p += n;
    length -= static_cast<std::size_t>(n);
  }
}

void write_file(const std::filesystem::path& path, const Bytes& bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0) << std::strerror(errno);
  write_all(fd, bytes.data(), bytes.size());
  ::close(fd);
}

// An fd open on a fresh memfd holding `bytes`; closed by the destructor.
struct Memfd {
  explicit Memfd(const Bytes& bytes = {}) {
    fd = ::memfd_create("capnp_reader_test", MFD_CLOEXEC);
    if (fd >= 0 && !bytes.empty()) write_all(fd, bytes.data(), bytes.size());
  }
  ~Memfd() {
    if (fd >= 0) ::close(fd);
  }
  Memfd(const Memfd&) = delete;
  Memfd& operator=(const Memfd&) = delete;
  // Replaces the whole content.
  void set(const Bytes& bytes) const {
    ASSERT_EQ(::ftruncate(fd, 0), 0);
    ASSERT_EQ(::pwrite(fd, bytes.data(), bytes.size(), 0), static_cast<ssize_t>(bytes.size()));
  }
  int fd = -1;
};

// A sealed memfd image holding `bytes`: Region::memfd, memcpy, finish, seal.
SealedImage sealed_image(const Bytes& bytes) {
  Region region = Region::memfd("capnp_reader_test");
  if (!bytes.empty()) {
    region.ensure(bytes.size());
    std::memcpy(region.data(), bytes.data(), bytes.size());
  }
  region.finish(bytes.size());
  return std::move(region).seal();
}

int open_fd_count() {
  int count = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    ++count;
  }
  return count;
}

// ---- stream headers by hand -------------------------------------------------------------

void put32(Bytes& bytes, std::size_t at, std::uint32_t value) {
  if (bytes.size() < at + 4) bytes.resize(at + 4);
  for (int i = 0; i < 4; ++i) bytes[at + i] = static_cast<std::byte>(value >> (8 * i));
}

// A stream header for `sizes` (in words), padded, followed by that many zero words.
Bytes framed(const std::vector<std::uint32_t>& sizes) {
  Bytes bytes;
  put32(bytes, 0, static_cast<std::uint32_t>(sizes.size() - 1));
  for (std::size_t i = 0; i < sizes.size(); ++i) put32(bytes, 4 + 4 * i, sizes[i]);
  bytes.resize((bytes.size() + 7) / 8 * 8);
  std::uint64_t words = 0;
  for (const auto size : sizes) words += size;
  bytes.resize(bytes.size() + words * 8);
  return bytes;
}

// Expects reading `bytes` through all three constructors to fail with EINVAL and a what()
// containing `detail`.
void expect_refused(const Bytes& bytes, const std::string& detail) {
  TempDir dir;
  const auto path = dir / "message.bin";
  write_file(path, bytes);
  const auto by_path = error_from([&] { MappedMessageReader reader(path); });
  ASSERT_TRUE(by_path.has_value()) << "path: accepted";
  EXPECT_EQ(by_path->error(), EINVAL);
  EXPECT_NE(std::string(by_path->what()).find(detail), std::string::npos) << by_path->what();
  EXPECT_EQ(by_path->operation(), "reading Cap'n Proto message");
  EXPECT_EQ(by_path->subject(), path.string());

  const Memfd memfd(bytes);
  const auto by_fd = error_from([&] { MappedMessageReader reader(memfd.fd, 0, 0); });
  ASSERT_TRUE(by_fd.has_value()) << "fd: accepted";
  EXPECT_EQ(by_fd->error(), EINVAL);
  EXPECT_NE(std::string(by_fd->what()).find(detail), std::string::npos) << by_fd->what();
  EXPECT_EQ(by_fd->subject(), "fd " + std::to_string(memfd.fd));

  const SealedImage image = sealed_image(bytes);
  const auto by_image = error_from([&] { MappedMessageReader reader(image); });
  ASSERT_TRUE(by_image.has_value()) << "image: accepted";
  EXPECT_EQ(by_image->error(), EINVAL);
  EXPECT_NE(std::string(by_image->what()).find(detail), std::string::npos) << by_image->what();
  EXPECT_EQ(by_image->subject(), "sealed image fd " + std::to_string(image.fd()));
}

// ---- reading stock messages -------------------------------------------------------------

TEST(CapnpReader, SingleSegmentByPath) {
  TempDir dir;
  Stock stock(20);
  ASSERT_EQ(stock.segments(), 1u);
  const auto path = dir / "single.bin";
  {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0);
    ::capnp::writeMessageToFd(fd, stock.builder);
    ::close(fd);
  }
  const int fds_before = open_fd_count();
  MappedMessageReader reader(path);
  EXPECT_EQ(open_fd_count(), fds_before) << "the path constructor keeps an fd open";
  EXPECT_EQ(reader.size(), std::filesystem::file_size(path));
  EXPECT_EQ(reader.segment_count(), 1u);
  EXPECT_EQ(check_message(reader.getRoot<TestAll>(), 20), "");
}

TEST(CapnpReader, MultiSegmentByPath) {
  TempDir dir;
  Stock stock(60, 16);
  const std::size_t segments = stock.segments();
  ASSERT_GT(segments, 10u);
  const auto path = dir / "multi.bin";
  {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0);
    ::capnp::writeMessageToFd(fd, stock.builder);
    ::close(fd);
  }
  MappedMessageReader reader(path);
  EXPECT_EQ(reader.segment_count(), segments);
  EXPECT_EQ(reader.size(), std::filesystem::file_size(path));
  const auto output = stock.builder.getSegmentsForOutput();
  for (unsigned i = 0; i < segments; ++i) {
    EXPECT_EQ(reader.getSegment(i).size(), output[i].size()) << "segment " << i;
  }
  EXPECT_EQ(check_message(reader.getRoot<TestAll>(), 60), "");
}

TEST(CapnpReader, GetSegmentOutOfRangeIsEmpty) {
  TempDir dir;
  Stock stock(3, 16);
  write_file(dir / "m.bin", stock.bytes());
  MappedMessageReader reader(dir / "m.bin");
  EXPECT_TRUE(reader.getSegment(reader.segment_count()) == nullptr);
  EXPECT_TRUE(reader.getSegment(~0u) == nullptr);
  EXPECT_FALSE(reader.getSegment(0) == nullptr);
}

TEST(CapnpReader, FdAtAlignedOffsetInsideLargerFile) {
  TempDir dir;
  Stock stock(40, 32);
  ASSERT_GT(stock.segments(), 1u);
  const Bytes message = stock.bytes();
  // 5000: 8-aligned but not page-aligned; junk before and after the message.
  const std::size_t offset = 5000;
  const auto path = dir / "container.bin";
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  const Bytes prefix(offset, std::byte{0xa5});
  const Bytes suffix(123, std::byte{0x5a});
  write_all(fd, prefix.data(), prefix.size());
  ::capnp::writeMessageToFd(fd, stock.builder);
  write_all(fd, suffix.data(), suffix.size());
  {
    MappedMessageReader reader(fd, offset, message.size());
    EXPECT_EQ(reader.size(), message.size());
    EXPECT_EQ(reader.segment_count(), stock.segments());
    EXPECT_EQ(check_message(reader.getRoot<TestAll>(), 40), "");
  }
  // The fd need not outlive the reader.
  const int copy = ::dup(fd);
  std::optional<MappedMessageReader> reader;
  reader.emplace(copy, offset, message.size());
  ::close(copy);
  EXPECT_EQ(check_message(reader->getRoot<TestAll>(), 40), "");
  reader.reset();

  // Length 0 is "to the end of the file": the suffix is then trailing garbage.
  const auto error = error_from([&] { MappedMessageReader r(fd, offset, 0); });
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->error(), EINVAL);
  EXPECT_NE(std::string(error->what()).find("123 bytes after the message"), std::string::npos)
      << error->what();
  // Without the suffix it is accepted.
  ASSERT_EQ(::ftruncate(fd, static_cast<off_t>(offset + message.size())), 0);
  MappedMessageReader to_end(fd, offset, 0);
  EXPECT_EQ(to_end.size(), message.size());
  EXPECT_EQ(check_message(to_end.getRoot<TestAll>(), 40), "");
  ::close(fd);
}

TEST(CapnpReader, SealedImage) {
  Stock stock(30, 16);
  ASSERT_GT(stock.segments(), 1u);
  const Bytes message = stock.bytes();
  std::optional<MappedMessageReader> reader;
  {
    const SealedImage image = sealed_image(message);
    reader.emplace(image);
  }  // the reader keeps the image (fd and mapping) alive
  EXPECT_EQ(reader->size(), message.size());
  EXPECT_EQ(reader->segment_count(), stock.segments());
  EXPECT_EQ(check_message(reader->getRoot<TestAll>(), 30), "");
}

TEST(CapnpReader, MappingOutlivesTheFile) {
  TempDir dir;
  Stock stock(10);
  write_file(dir / "m.bin", stock.bytes());
  MappedMessageReader reader(dir / "m.bin");
  std::filesystem::remove(dir / "m.bin");
  EXPECT_EQ(check_message(reader.getRoot<TestAll>(), 10), "");
}

TEST(CapnpReader, ZeroLengthSegmentsAnd511Segments) {
  // A real single-segment message followed by 510 empty segments: the most a header may
  // announce, and empty segments are valid.
  Stock stock(5);
  const Bytes single = stock.bytes();
  ASSERT_EQ(single.size() % 8, 0u);
  std::uint32_t words0 = 0;
  std::memcpy(&words0, single.data() + 4, 4);
  std::vector<std::uint32_t> sizes(511, 0);
  sizes[0] = words0;
  Bytes bytes = framed(sizes);
  const std::size_t header = bytes.size() - std::size_t{words0} * 8;
  EXPECT_EQ(header, 4u + 4 * 511);  // no padding needed
  std::memcpy(bytes.data() + header, single.data() + 8, std::size_t{words0} * 8);
  TempDir dir;
  write_file(dir / "m.bin", bytes);
  MappedMessageReader reader(dir / "m.bin");
  EXPECT_EQ(reader.segment_count(), 511u);
  EXPECT_EQ(reader.getSegment(510).size(), 0u);
  EXPECT_EQ(check_message(reader.getRoot<TestAll>(), 5), "");

  // A message that is nothing but an empty segment 0 parses (it has no root to read).
  write_file(dir / "empty0.bin", framed({0}));
  MappedMessageReader empty(dir / "empty0.bin");
  EXPECT_EQ(empty.size(), 8u);
  EXPECT_EQ(empty.segment_count(), 1u);
}

TEST(CapnpReader, ReaderOptions) {
  TempDir dir;
  Stock stock(3);
  write_file(dir / "m.bin", stock.bytes());
  {
    MappedMessageReader reader(dir / "m.bin");
    EXPECT_EQ(reader.getOptions().traversalLimitInWords, 8ull << 20);
    EXPECT_EQ(reader.getOptions().nestingLimit, 64);
  }
  {
    MappedReaderOptions options;
    options.traversal_limit_words = 5;
    options.nesting_limit = 3;
    MappedMessageReader reader(dir / "m.bin", options);
    EXPECT_EQ(reader.getOptions().traversalLimitInWords, 5u);
    EXPECT_EQ(reader.getOptions().nestingLimit, 3);
    // Five words are not enough to read the list of 30 words.
    EXPECT_THROW(reader.getRoot<TestAll>().getWords(), kj::Exception);
  }
  {
    // A large message: twice its size in words.
    const std::uint64_t words = 5ull << 20;  // 40 MiB
    Bytes bytes = framed({static_cast<std::uint32_t>(words)});
    Memfd memfd(bytes);
    MappedMessageReader reader(memfd.fd, 0, 0);
    EXPECT_EQ(reader.getOptions().traversalLimitInWords, 2 * (words + 1));
  }
}

// ---- refusals ---------------------------------------------------------------------------

TEST(CapnpReaderRefuses, EmptyFile) {
  TempDir dir;
  write_file(dir / "empty.bin", {});
  const auto by_path = error_from([&] { MappedMessageReader reader(dir / "empty.bin"); });
  ASSERT_TRUE(by_path.has_value());
  EXPECT_EQ(by_path->error(), EINVAL);
  EXPECT_NE(std::string(by_path->what()).find("empty file"), std::string::npos) << by_path->what();

  const Memfd memfd;
  const auto by_fd = error_from([&] { MappedMessageReader reader(memfd.fd, 0, 0); });
  ASSERT_TRUE(by_fd.has_value());
  EXPECT_EQ(by_fd->error(), EINVAL);
  EXPECT_NE(std::string(by_fd->what()).find("empty file"), std::string::npos) << by_fd->what();

  const SealedImage image = sealed_image({});
  const auto by_image = error_from([&] { MappedMessageReader reader(image); });
  ASSERT_TRUE(by_image.has_value());
  EXPECT_EQ(by_image->error(), EINVAL);
  EXPECT_NE(std::string(by_image->what()).find("empty file"), std::string::npos)
      << by_image->what();
}

TEST(CapnpReaderRefuses, TruncatedHeader) {
  expect_refused(Bytes(4, std::byte{0}), "truncated header: 4 bytes");
  expect_refused(Bytes(7, std::byte{0}), "truncated header: 7 bytes");
}

TEST(CapnpReaderRefuses, TableLargerThanTheFile) {
  Bytes bytes(16, std::byte{0});
  put32(bytes, 0, 9);  // 10 segments: a 48-byte table
  expect_refused(bytes, "segment table of 10 segments needs 48 bytes, but the file has 16");
}

TEST(CapnpReaderRefuses, SegmentPastTheEnd) {
  Bytes bytes = framed({1});
  put32(bytes, 4, 100);
  expect_refused(bytes, "segment 0 (100 words at byte 8) runs past the end of the file (16 bytes)");

  Bytes second = framed({1, 2, 3});
  put32(second, 8, 4);  // segment 1 claims 4 words, leaving too few for segment 2
  expect_refused(second, "segment 2 (3 words at byte 56) runs past the end of the file (64 bytes)");

  // The largest sizes a table can hold: each within u64 arithmetic, none wraps.
  Bytes huge(24, std::byte{0});
  put32(huge, 0, 1);
  put32(huge, 4, static_cast<std::uint32_t>(kMaxSegmentWords));
  put32(huge, 8, static_cast<std::uint32_t>(kMaxSegmentWords));
  expect_refused(huge, "segment 0 (536870911 words at byte 16) runs past the end");
  put32(huge, 4, 0xffffffffu);
  expect_refused(huge, "segment 0 (4294967295 words) is larger than a Cap'n Proto segment");
}

TEST(CapnpReaderRefuses, TooManySegments) {
  // 512 is what capnp::readMessage refuses first ("segmentCount < 512").
  Bytes bytes = framed(std::vector<std::uint32_t>(512, 0));
  expect_refused(bytes, "segment count 512 (count field 511) is more than 511");
}

TEST(CapnpReaderRefuses, CountFieldAllOnes) {
  Bytes bytes(16, std::byte{0});
  put32(bytes, 0, 0xffffffffu);
  expect_refused(bytes, "segment count 4294967296 (count field 4294967295) is more than 511");
}

TEST(CapnpReaderRefuses, TrailingBytes) {
  Stock stock(4);
  Bytes bytes = stock.bytes();
  const std::size_t size = bytes.size();
  bytes.resize(size + 3, std::byte{0x11});  // length not a multiple of 8
  expect_refused(bytes, "3 bytes after the message (which ends at byte " + std::to_string(size));
  bytes.resize(size + 8, std::byte{0x11});
  expect_refused(bytes, "8 bytes after the message");
  // An odd length shorter than the segments: the segment runs past the end.
  Bytes short_one = framed({2});
  short_one.resize(13);
  expect_refused(short_one, "segment 0 (2 words at byte 8) runs past the end of the file (13 bytes)");
}

TEST(CapnpReaderRefuses, FdRanges) {
  Stock stock(4);
  const Bytes message = stock.bytes();
  Bytes file(64, std::byte{0});
  file.insert(file.end(), message.begin(), message.end());
  const Memfd memfd(file);
  const auto unaligned = error_from([&] { MappedMessageReader reader(memfd.fd, 4, 0); });
  ASSERT_TRUE(unaligned.has_value());
  EXPECT_EQ(unaligned->error(), EINVAL);
  EXPECT_NE(std::string(unaligned->what()).find("offset 4 is not a multiple of 8"),
            std::string::npos)
      << unaligned->what();

  const auto past = error_from([&] { MappedMessageReader reader(memfd.fd, 4096, 0); });
  ASSERT_TRUE(past.has_value());
  EXPECT_EQ(past->error(), EINVAL);
  EXPECT_NE(std::string(past->what()).find("offset 4096 is past the end of the file"),
            std::string::npos)
      << past->what();

  const auto at_end = error_from([&] { MappedMessageReader reader(memfd.fd, file.size(), 0); });
  ASSERT_TRUE(at_end.has_value());
  EXPECT_EQ(at_end->error(), EINVAL);
  EXPECT_NE(std::string(at_end->what()).find("empty file"), std::string::npos) << at_end->what();

  const auto too_long =
      error_from([&] { MappedMessageReader reader(memfd.fd, 64, message.size() + 8); });
  ASSERT_TRUE(too_long.has_value());
  EXPECT_EQ(too_long->error(), EINVAL);
  EXPECT_NE(std::string(too_long->what()).find("runs past the end of the file"),
            std::string::npos)
      << too_long->what();

  const auto wraps = error_from([&] { MappedMessageReader reader(memfd.fd, 64, ~0ull - 7); });
  ASSERT_TRUE(wraps.has_value());
  EXPECT_EQ(wraps->error(), EINVAL);

  // A range shorter than the message: its segments run past the range's end.
  const auto short_range =
      error_from([&] { MappedMessageReader reader(memfd.fd, 64, message.size() - 8); });
  ASSERT_TRUE(short_range.has_value());
  EXPECT_EQ(short_range->error(), EINVAL);
  EXPECT_NE(std::string(short_range->what()).find("runs past the end"), std::string::npos)
      << short_range->what();

  MappedMessageReader good(memfd.fd, 64, message.size());
  EXPECT_EQ(check_message(good.getRoot<TestAll>(), 4), "");

  const auto bad_fd = error_from([&] { MappedMessageReader reader(-1, 0, 0); });
  ASSERT_TRUE(bad_fd.has_value());
  EXPECT_EQ(bad_fd->error(), EBADF);
}

TEST(CapnpReaderRefuses, MissingPath) {
  TempDir dir;
  const auto error = error_from([&] { MappedMessageReader reader(dir / "absent.bin"); });
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->error(), ENOENT);
  EXPECT_EQ(error->subject(), (dir / "absent.bin").string());
}

// ---- random damage ----------------------------------------------------------------------

// Reads everything a TestAll reader offers; kj::Exception (Cap'n Proto's bounds and limit
// checks) is an acceptable outcome, a crash is not.
std::uint64_t traverse(MappedMessageReader& reader) {
  std::uint64_t sum = 0;
  try {
    sum += reader.getRoot<::capnp::AnyPointer>().targetSize().wordCount;
  } catch (const kj::Exception&) {
    sum += 1;
  }
  try {
    const auto root = reader.getRoot<TestAll>();
    sum += root.getId() + root.getName().size() + root.getBlob().size();
    for (const auto word : root.getWords()) sum += word;
    for (const auto name : root.getNames()) sum += name.size();
    for (const auto inner : root.getNested()) {
      for (const auto value : inner) sum += value;
    }
    const auto choice = root.getChoice();
    switch (choice.which()) {
      case TestAll::Choice::NONE: break;
      case TestAll::Choice::NUMBER: sum += static_cast<std::uint64_t>(choice.getNumber()); break;
      case TestAll::Choice::LABEL: sum += choice.getLabel().size(); break;
    }
    for (const auto item : root.getItems()) sum += item.getKey().size() + item.getValue();
  } catch (const kj::Exception&) {
    sum += 2;
  }
  return sum;
}

void fuzz(const Bytes& original, std::uint64_t seed) {
  std::mt19937_64 random(seed);
  const Memfd memfd;
  ASSERT_GE(memfd.fd, 0);
  const std::uint32_t interesting[] = {0, 1, 2, 7, 8, 255, 511, 512, 513, 0x1fffffff, 0x20000000,
                                       0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff};
  int parsed = 0;
  int refused = 0;
  std::uint64_t sink = 0;
  for (int iteration = 0; iteration < 2000; ++iteration) {
    Bytes bytes = original;
    const std::size_t span = std::min<std::size_t>(64, bytes.size());
    const int mutations = 1 + static_cast<int>(random() % 4);
    for (int m = 0; m < mutations; ++m) {
      switch (random() % 3) {
        case 0:  // one random byte
          bytes[random() % span] = static_cast<std::byte>(random());
          break;
        case 1:  // one bit
          bytes[random() % span] ^= static_cast<std::byte>(1u << (random() % 8));
          break;
        default: {  // an aligned u32 set to an interesting value (the header's fields)
          const std::size_t at = (random() % (span / 4)) * 4;
          put32(bytes, at, interesting[random() % std::size(interesting)]);
        }
      }
    }
    if (random() % 4 == 0) bytes.resize(random() % (bytes.size() + 1));  // truncation
    SCOPED_TRACE("seed " + std::to_string(seed) + " iteration " + std::to_string(iteration));
    ASSERT_NO_FATAL_FAILURE(memfd.set(bytes));
    try {
      MappedMessageReader reader(memfd.fd, 0, 0);
      ++parsed;
      sink += traverse(reader);
    } catch (const Error& e) {
      ++refused;
      ASSERT_TRUE(e.error() == EINVAL) << e.what();
    }
  }
  EXPECT_GT(parsed, 0);
  EXPECT_GT(refused, 0);
  ::testing::Test::RecordProperty("parsed", parsed);
  ::testing::Test::RecordProperty("refused", refused);
  ::testing::Test::RecordProperty("sink", static_cast<int>(sink & 0xffff));
}

TEST(CapnpReaderFuzz, SingleSegmentMutations) {
  Stock stock(3);
  ASSERT_EQ(stock.segments(), 1u);
  fuzz(stock.bytes(), 1);
}

TEST(CapnpReaderFuzz, MultiSegmentMutations) {
  Stock stock(3, 8);
  ASSERT_GT(stock.segments(), 2u);
  fuzz(stock.bytes(), 2);
}

}  // namespace
}  // namespace mapwright
