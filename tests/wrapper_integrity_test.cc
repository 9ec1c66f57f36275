// Whole-file integrity (format version 2, wrapper.capnp "Integrity"): every single-bit flip
// anywhere in a wrapper is refused by Wrapper::open() or Wrapper::verify(); open() finds
// truncation and trailing bytes and says so; version 1 files are still read, with their
// metadata unchecked.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "child.h"
#include "content.h"
#include "fixture_paths.h"
#include "mapwright/error.h"
#include "mapwright/wrapper.h"
#include "sanitizers.h"
#include "wrapper_helpers.h"
#include "wrapper_integrity.h"
#include "wrapper_v1_fixture.h"

namespace mapwright {
namespace {

using test::write_file;
using test::pattern_bytes;
using test::expect_error;

using test::TempDir;

// The wrapper the brief's exhaustive test wants: fixture library A, a data entry and an empty
// entry; `options` picks the layout.
std::vector<std::byte> small_wrapper(const TempDir& dir, WrapperWriterOptions options,
                                     std::size_t data_bytes) {
  const std::filesystem::path path = dir / "small.mwr";
  options.durable = false;
  WrapperWriter writer(path, options);
  writer.add_library("liba", std::filesystem::path(MAPWRIGHT_FIXTURE_A));
  writer.add_data("blob", pattern_bytes(data_bytes, 3));
  writer.add_data("empty", std::span<const std::byte>());
  writer.publish();
  return test::read_file_bytes(path);
}

// A memfd holding `bytes`, whose bits are flipped in place.
class FlipFile {
 public:
  explicit FlipFile(std::span<const std::byte> bytes) : fd_(::memfd_create("flips", MFD_CLOEXEC)) {
    EXPECT_GE(fd_, 0);
    EXPECT_EQ(::pwrite(fd_, bytes.data(), bytes.size(), 0), static_cast<ssize_t>(bytes.size()));
  }
  ~FlipFile() { ::close(fd_); }
  int fd() const { return fd_; }
  void put(std::uint64_t offset, std::byte value) {
    ASSERT_EQ(::pwrite(fd_, &value, 1, static_cast<off_t>(offset)), 1);
  }

 private:
  int fd_;
};

// True if open() or verify() refuses the file, with one of the errors wrapper.h promises.
bool refused(int fd, std::string* message) {
  try {
    const Wrapper wrapper = Wrapper::open(fd, {.name = "flipped"});
    wrapper.verify();
    return false;
  } catch (const Error& e) {
    *message = e.what();
    EXPECT_TRUE(e.error() == EINVAL || e.error() == EBADMSG) << e.what();
    return true;
  }
}

// Under the sanitizers each check is 5-10 times slower: there, one bit of every byte (bit
// offset % 8), so that every byte is still flipped; all eight in the other builds.
#if MAPWRIGHT_TEST_ASAN || MAPWRIGHT_TEST_TSAN
constexpr bool kEveryBit = false;
#else
constexpr bool kEveryBit = true;
#endif

// Flips every bit of `file` in turn (flip, check, flip back) and returns those that open()
// and verify() both accepted, as "byte N bit B". Two threads, each over its own copy and half
// of the bytes, when there are two CPUs (the flips are independent).
std::vector<std::string> surviving_flips(const std::vector<std::byte>& file) {
  {
    FlipFile unchanged(file);
    std::string message;
    EXPECT_FALSE(refused(unchanged.fd(), &message)) << "the unchanged file is refused: " << message;
  }
  const auto flip_range = [&file](std::uint64_t begin, std::uint64_t end,
                                  std::vector<std::string>* survivors) {
    FlipFile flips(file);
    std::string message;
    for (std::uint64_t offset = begin; offset < end; ++offset) {
      for (int bit = 0; bit < 8; ++bit) {
        if (!kEveryBit && bit != static_cast<int>(offset % 8)) continue;
        flips.put(offset, file[offset] ^ static_cast<std::byte>(1u << bit));
        if (!refused(flips.fd(), &message)) {
          survivors->push_back("byte " + std::to_string(offset) + " bit " + std::to_string(bit));
        }
      }
      flips.put(offset, file[offset]);
    }
  };
  std::vector<std::string> first_half;
  std::vector<std::string> second_half;
  const std::uint64_t middle = file.size() / 2;
  if (std::thread::hardware_concurrency() > 1) {
    std::thread other(flip_range, middle, file.size(), &second_half);
    flip_range(0, middle, &first_half);
    other.join();
  } else {
    flip_range(0, middle, &first_half);
    flip_range(middle, file.size(), &second_half);
  }
  first_half.insert(first_half.end(), second_half.begin(), second_half.end());
  return first_half;
}

std::string first_few(const std::vector<std::string>& items) {
  std::string out;
  for (std::size_t i = 0; i < items.size() && i < 20; ++i) out += items[i] + "; ";
  return out;
}

std::uint32_t segment_count(const std::vector<std::byte>& file) {
  std::uint32_t field;
  std::memcpy(&field, file.data(), 4);
  std::uint32_t used = 0;
  for (std::uint32_t i = 0; i <= field; ++i) {
    std::uint32_t words;
    std::memcpy(&words, file.data() + 4 + 4 * i, 4);
    if (words != 0) ++used;
  }
  return used;
}

// ---- (a), (b): every single-bit flip ---------------------------------------------------------

TEST(WrapperIntegrity, EveryBitFlipOfASingleSegmentWrapperIsRefused) {
  TempDir dir;
  const std::vector<std::byte> file = small_wrapper(dir, {}, 1000);
  ASSERT_EQ(segment_count(file), 1u);
  const auto survivors = surviving_flips(file);
  EXPECT_TRUE(survivors.empty()) << survivors.size() << " of " << file.size() * (kEveryBit ? 8 : 1)
                                 << " flips went unnoticed: " << first_few(survivors);
}

TEST(WrapperIntegrity, EveryBitFlipOfAMultiSegmentWrapperIsRefused) {
  TempDir dir;
  WrapperWriterOptions options;
  // Segments of one page (segment 0 rounded up to end on a page boundary) and chunks of
  // 4 KiB: every chunk lies in a segment of its own (liba's last one short, with an unused
  // tail after it), and the metadata, after the last chunk, reaches the others through far
  // pointers.
  options.chunk_bytes = 4096;
  options.message.segment_words = 4096 / 8;
  const std::vector<std::byte> file = small_wrapper(dir, options, 6000);
  {
    FlipFile copy(file);
    const Wrapper wrapper = Wrapper::open(copy.fd());
    std::size_t chunks = 0;
    for (const WrapperEntry& entry : wrapper.entries()) chunks += entry.chunks.size();
    ASSERT_EQ(chunks, 6u);
    ASSERT_EQ(segment_count(file), chunks);
  }
  const auto survivors = surviving_flips(file);
  EXPECT_TRUE(survivors.empty()) << survivors.size() << " of " << file.size() * (kEveryBit ? 8 : 1)
                                 << " flips went unnoticed: " << first_few(survivors);
}

// The FlatBuffers form (wrapper.fbs, "Integrity"): header, zero padding, chunks, metadata and
// trailer are each covered as well.
TEST(WrapperIntegrity, EveryBitFlipOfAFlatBuffersWrapperIsRefused) {
  TempDir dir;
  const std::filesystem::path path = dir / "flat.mwr";
  {
    // Without the library of small_wrapper(): the chunks' bits are the digest's business, which
    // the other tests cover; here the header, padding, metadata and trailer matter.
    WrapperWriterOptions options;
    options.format = WrapperFormat::kFlatBuffers;
    options.durable = false;
    WrapperWriter writer(path, options);
    writer.add_data("blob", pattern_bytes(1000, 3));
    writer.add_data("empty", std::span<const std::byte>());
    writer.publish();
  }
  const std::vector<std::byte> file = test::read_file_bytes(path);
  const auto survivors = surviving_flips(file);
  EXPECT_TRUE(survivors.empty()) << survivors.size() << " of " << file.size() * (kEveryBit ? 8 : 1)
                                 << " flips went unnoticed: " << first_few(survivors);
}

// A wrapper with no entries has metadata and a trailer too, and a sealed image of a wrapper is
// checked the same way.
TEST(WrapperIntegrity, AnEmptyWrapperAndASealedOneAreCheckedToo) {
  TempDir dir;
  const std::filesystem::path path = dir / "empty.mwr";
  {
    WrapperWriterOptions options;
    options.durable = false;
    WrapperWriter writer(path, options);
    writer.publish();
  }
  const std::vector<std::byte> file = test::read_file_bytes(path);
  {
    const Wrapper wrapper = Wrapper::open(path);
    EXPECT_TRUE(wrapper.metadata_checked());
    EXPECT_TRUE(wrapper.entries().empty());
    wrapper.verify();
  }
  const auto survivors = surviving_flips(file);
  EXPECT_TRUE(survivors.empty()) << survivors.size() << " of " << file.size() * (kEveryBit ? 8 : 1)
                                 << " flips went unnoticed: " << first_few(survivors);

  const std::vector<std::byte> small = small_wrapper(dir, {}, 1000);
  std::vector<std::byte> damaged = small;
  damaged[damaged.size() - kWrapperTrailerBytes - 1] ^= std::byte{0x04};  // metadata
  const std::vector<std::byte>* const both[] = {&small, &damaged};
  for (const std::vector<std::byte>* bytes : both) {
    Region region = Region::memfd("sealed wrapper");
    region.ensure(bytes->size());
    std::memcpy(region.data(), bytes->data(), bytes->size());
    region.finish(bytes->size());
    const SealedImage image = std::move(region).seal();
    if (bytes == &small) {
      const Wrapper wrapper = Wrapper::open(image);
      EXPECT_TRUE(wrapper.metadata_checked());
      wrapper.verify();
    } else {
      expect_error([&] { Wrapper::open(image); }, EBADMSG, {"the metadata digest does not match"});
    }
  }
}

// ---- what each kind of damage says -------------------------------------------------------------

TEST(WrapperIntegrity, DamageIsNamedByWhereItIs) {
  TempDir dir;
  const std::vector<std::byte> file = small_wrapper(dir, {}, 5000);
  const std::filesystem::path path = dir / "damaged.mwr";
  std::uint64_t padding_at = 0;
  {
    write_file(path, file);
    const Wrapper wrapper = Wrapper::open(path);
    EXPECT_TRUE(wrapper.metadata_checked());
    EXPECT_EQ(wrapper.format_version(), 2u);
    wrapper.verify();
    // liba's bytes end before the page where blob's start: zero padding follows them.
    padding_at = wrapper.entry("liba").offset + wrapper.entry("liba").size;
    EXPECT_LT(padding_at + 3, wrapper.entry("blob").offset);
  }
  const std::uint64_t message = file.size() - kWrapperTrailerBytes;

  // The metadata: the entry names are in it, just before the trailer.
  std::vector<std::byte> metadata = file;
  metadata[message - 1] ^= std::byte{0x01};
  write_file(path, metadata);
  expect_error([&] { Wrapper::open(path); }, EBADMSG,
               {"damaged.mwr", "the metadata digest does not match: the file is damaged"});

  // Padding after a chunk: open() does not read it; verify() names it.
  std::vector<std::byte> padding = file;
  padding[padding_at + 3] ^= std::byte{0x40};
  write_file(path, padding);
  {
    const Wrapper wrapper = Wrapper::open(path);
    for (const WrapperEntry& entry : wrapper.entries()) EXPECT_TRUE(wrapper.verify_entry(entry));
    expect_error([&] { wrapper.verify(); }, EBADMSG,
                 {"verifying wrapper", "byte " + std::to_string(padding_at + 3), "is not zero"});
    expect_error([&] { wrapper.verify_metadata(); }, EBADMSG, {"is not zero"});
  }

  // The trailer.
  std::vector<std::byte> trailer = file;
  trailer[message + 20] ^= std::byte{0x02};
  write_file(path, trailer);
  expect_error([&] { Wrapper::open(path); }, EBADMSG, {"damaged.mwr", "the trailer is damaged"});

  // The segment table, so that it disagrees with the trailer.
  std::vector<std::byte> table = file;
  table[4] ^= std::byte{0x01};
  write_file(path, table);
  expect_error([&] { Wrapper::open(path); }, EBADMSG,
               {"segment table says the message ends at byte", "the file is damaged"});
}

// ---- (e): truncation and trailing bytes -------------------------------------------------------

TEST(WrapperIntegrity, TruncationAndTrailingBytesAreNamed) {
  TempDir dir;
  const std::vector<std::byte> file = small_wrapper(dir, {}, 5000);
  const std::uint64_t size = file.size();
  const std::filesystem::path path = dir / "cut.mwr";
  // Into the trailer, to the end of the message, into the metadata, into the chunks.
  for (const std::uint64_t length : {size - 1, size - kWrapperTrailerBytes, size - 200, size / 2}) {
    SCOPED_TRACE(length);
    write_file(path, std::span(file).first(length));
    const bool message_whole = length >= size - kWrapperTrailerBytes;
    expect_error([&] { Wrapper::open(path); }, EBADMSG,
                 {"cut.mwr", "truncated at byte " + std::to_string(length) + " of " +
                                 (message_whole ? std::to_string(size) + " expected"
                                                : std::string("at least "))});
  }
  for (const std::uint64_t extra : {1, 8, 4096}) {
    SCOPED_TRACE(extra);
    std::vector<std::byte> longer = file;
    longer.resize(size + extra, std::byte{0x5a});
    write_file(path, longer);
    expect_error([&] { Wrapper::open(path); }, EBADMSG,
                 {"cut.mwr", std::to_string(extra) + " bytes after the wrapper, which ends at byte " +
                                 std::to_string(size)});
  }
}

// ---- (d): version 1 ------------------------------------------------------------------------------

TEST(WrapperIntegrity, AVersion1FileIsReadWithItsMetadataUnchecked) {
  TempDir dir;
  const std::vector<std::byte> v1 = test::wrapper_v1_fixture();
  const std::filesystem::path path = dir / "v1.mwr";
  write_file(path, v1);
  {
    const Wrapper wrapper = Wrapper::open(path);
    EXPECT_EQ(wrapper.format_version(), 1u);
    EXPECT_FALSE(wrapper.metadata_checked());
    ASSERT_EQ(wrapper.entries().size(), 2u);
    const WrapperEntry& greeting = wrapper.entry("greeting");
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(greeting.bytes().data()), greeting.size),
              test::kWrapperV1Greeting);
    EXPECT_EQ(wrapper.entry("empty").size, 0u);
    wrapper.verify();  // the entries' digests hold; there is no metadata digest to check
  }
  // A flip in its metadata goes unnoticed (the reason for version 2): the name 'greeting'
  // becomes 'greetinf' and the file still opens and verifies.
  std::vector<std::byte> renamed = v1;
  const std::string_view name = "greeting";
  const auto at = std::search(renamed.begin(), renamed.end(), name.begin(), name.end(),
                              [](std::byte b, char c) { return b == static_cast<std::byte>(c); });
  ASSERT_NE(at, renamed.end());
  at[7] ^= std::byte{0x01};
  write_file(path, renamed);
  {
    const Wrapper wrapper = Wrapper::open(path);
    EXPECT_NE(wrapper.find("greetinf"), nullptr);
    wrapper.verify();
  }
  // A version 1 file with bytes after it, or cut short, is named as such.
  std::vector<std::byte> longer = v1;
  longer.resize(v1.size() + 3);
  write_file(path, longer);
  expect_error([&] { Wrapper::open(path); }, EBADMSG,
               {"3 bytes after the wrapper, which ends at byte " + std::to_string(v1.size())});
  write_file(path, std::span(v1).first(v1.size() - 16));
  expect_error([&] { Wrapper::open(path); }, EBADMSG,
               {"truncated at byte " + std::to_string(v1.size() - 16) + " of at least " +
                std::to_string(v1.size())});
}

// ---- the trailer -------------------------------------------------------------------------------

TEST(WrapperIntegrity, TheTrailerIsAFixedSizeMessageThatGivesTheWrapperSize) {
  detail::Trailer trailer;
  trailer.wrapper_size = 123456;
  trailer.metadata_offset = 4096;
  trailer.metadata_digest = digest_of(std::as_bytes(std::span("x", 1)));
  const auto bytes = detail::encode_trailer(trailer);
  static_assert(sizeof(bytes) == kWrapperTrailerBytes);
  // One segment of exactly the rest.
  std::uint32_t table[2];
  std::memcpy(table, bytes.data(), sizeof table);
  EXPECT_EQ(table[0], 0u);
  EXPECT_EQ(table[1], (kWrapperTrailerBytes - 8) / 8);
  std::string why;
  const auto back = detail::decode_trailer(bytes, &why);
  ASSERT_TRUE(back.has_value()) << why;
  EXPECT_EQ(back->wrapper_size, trailer.wrapper_size);
  EXPECT_EQ(back->metadata_offset, trailer.metadata_offset);
  EXPECT_EQ(back->metadata_digest, trailer.metadata_digest);
  // Every single-bit flip of the trailer either fails to decode or changes a field.
  for (std::size_t i = 0; i < bytes.size() * 8; ++i) {
    auto flipped = bytes;
    flipped[i / 8] ^= static_cast<std::byte>(1u << (i % 8));
    const auto decoded = detail::decode_trailer(flipped, &why);
    EXPECT_TRUE(!decoded || decoded->wrapper_size != trailer.wrapper_size ||
                decoded->metadata_offset != trailer.metadata_offset ||
                decoded->metadata_digest != trailer.metadata_digest)
        << "bit " << i;
  }
}

}  // namespace
}  // namespace mapwright
