// MappedMessageBuilder: messages built in place are standard stream-framed Cap'n Proto that
// every stock reader accepts, with the same canonical form as MallocMessageBuilder's.
#include <capnp/any.h>
#include <capnp/message.h>
#include <capnp/serialize.h>
#include <gtest/gtest.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "child.h"
#include "mapwright/capnp.h"
#include "mapwright/error.h"
#include "mapwright/fault.h"
#include "test.capnp.h"

#ifndef MAPWRIGHT_TEST_SCHEMA_DIR
#error "MAPWRIGHT_TEST_SCHEMA_DIR must name tests/schema"
#endif

namespace mapwright {
namespace {

using test::TempDir;

// Fills every kind of field; `scale` sets list lengths (and so the message's size).
void fill_message(TestAll::Builder root, std::uint32_t scale) {
  root.setId(0x1234'5678'9abc'def0ull + scale);
  root.setName("mapwright in place");
  auto blob = root.initBlob(scale * 3 + 5);
  for (std::size_t i = 0; i < blob.size(); ++i) blob[i] = static_cast<kj::byte>(i * 7);
  auto words = root.initWords(scale * 10);
  for (std::uint32_t i = 0; i < words.size(); ++i) words.set(i, 0x9E3779B97F4A7C15ull * i);
  auto names = root.initNames(scale);
  for (std::uint32_t i = 0; i < names.size(); ++i) names.set(i, "name-" + std::to_string(i));
  auto nested = root.initNested(scale % 50 + 3);
  for (std::uint32_t i = 0; i < nested.size(); ++i) {
    auto inner = nested.init(i, i + 1);
    for (std::uint32_t j = 0; j < inner.size(); ++j) inner.set(j, i * 1000 + j);
  }
  root.getChoice().setLabel("chosen");
  auto items = root.initItems(scale);
  for (std::uint32_t i = 0; i < items.size(); ++i) {
    items[i].setKey("key-" + std::to_string(i));
    items[i].setValue(i * 3ull);
  }
}

kj::Array<capnp::word> canonical(capnp::MessageReader& reader) {
  return capnp::AnyStruct::Reader(reader.getRoot<TestAll>()).canonicalize();
}

kj::Array<capnp::word> canonical_of_malloc(std::uint32_t scale, capnp::uint first_segment_words) {
  capnp::MallocMessageBuilder builder(first_segment_words, capnp::AllocationStrategy::FIXED_SIZE);
  fill_message(builder.initRoot<TestAll>(), scale);
  capnp::SegmentArrayMessageReader reader(builder.getSegmentsForOutput());
  return canonical(reader);
}

kj::ArrayPtr<const capnp::word> words_of(const Region& region) {
  return {reinterpret_cast<const capnp::word*>(region.data()),
          static_cast<std::size_t>(region.size() / sizeof(capnp::word))};
}

bool same_words(kj::ArrayPtr<const capnp::word> a, kj::ArrayPtr<const capnp::word> b) {
  return a.size() == b.size() && std::memcmp(a.begin(), b.begin(), a.size() * 8) == 0;
}

TEST(MappedMessageBuilder, SingleSegmentHasAnEightByteHeader) {
  RegionOptions small;
  small.capacity = 64ull << 20;  // fits one segment: the single-segment form
  Region region = Region::memfd("capnp-single", small);
  MappedMessageBuilder builder(region);
  guarded([&] { fill_message(builder.initRoot<TestAll>(), 100); });
  const std::uint64_t size = builder.finish();
  EXPECT_EQ(region.size(), size);
  const auto* table = reinterpret_cast<const std::uint32_t*>(region.data());
  EXPECT_EQ(table[0], 0u);                          // one segment
  EXPECT_EQ(8 + table[1] * 8ull, size);             // header + segment 0, nothing else
  capnp::FlatArrayMessageReader reader(words_of(region));
  EXPECT_TRUE(same_words(canonical(reader), canonical_of_malloc(100, 1024)));
}

TEST(MappedMessageBuilder, DefaultCapacityReservesATableAndReadersAcceptEmptySlots) {
  Region region = Region::memfd("capnp-default");  // 64 GiB: 17 slots of 4 GiB - 8 bytes
  MappedMessageBuilder builder(region);
  fill_message(builder.initRoot<TestAll>(), 10);
  builder.finish();
  const auto* table = reinterpret_cast<const std::uint32_t*>(region.data());
  EXPECT_EQ(table[0], 16u);
  for (int i = 2; i <= 17; ++i) EXPECT_EQ(table[i], 0u) << i;
  capnp::FlatArrayMessageReader reader(words_of(region));
  EXPECT_EQ(reader.getRoot<TestAll>().getName(), "mapwright in place");
  EXPECT_TRUE(same_words(canonical(reader), canonical_of_malloc(10, 1024)));
}

// Small segments force far pointers between segments; the canonical form is still the same
// as a MallocMessageBuilder's, and the stock readers accept the layout.
TEST(MappedMessageBuilder, SmallSegmentsForceFarPointersAndStillMatch) {
  for (const std::uint64_t segment_words : {64ull, 200ull, 4096ull}) {
    RegionOptions small;
    small.capacity = 256ull << 20;
    Region region = Region::memfd("capnp-far", small);
    MappedMessageOptions options;
    options.segment_words = segment_words;
    options.max_segments = kMaxSegments;
    MappedMessageBuilder builder(region, options);
    fill_message(builder.initRoot<TestAll>(), 300);
    builder.finish();
    EXPECT_GE(builder.segment_count(), segment_words < 1000 ? 4u : 2u) << segment_words;
    capnp::ReaderOptions unlimited;
    unlimited.traversalLimitInWords = UINT64_MAX / 8;
    capnp::FlatArrayMessageReader reader(words_of(region), unlimited);
    EXPECT_TRUE(same_words(canonical(reader), canonical_of_malloc(300, 64))) << segment_words;
  }
}

TEST(MappedMessageBuilder, StreamFdReaderReadsTheFile) {
  TempDir dir;
  Region region = Region::file(dir / "message.bin");
  MappedMessageBuilder builder(region);
  fill_message(builder.initRoot<TestAll>(), 50);
  builder.finish();
  region.sync();
  ASSERT_EQ(::lseek(region.fd(), 0, SEEK_SET), 0);
  capnp::StreamFdMessageReader reader(region.fd());
  EXPECT_TRUE(same_words(canonical(reader), canonical_of_malloc(50, 1024)));
}

// The stock command-line tool decodes what the builder wrote, in every layout it writes:
// the 8-byte single-segment header, a reserved table with empty slots, far pointers across
// small segments, and a page-aligned blob.
TEST(MappedMessageBuilder, CapnpToolDecodesEveryLayout) {
  struct Layout {
    const char* name;
    std::uint64_t capacity;
    std::uint64_t segment_words;
    bool aligned_blob;
  };
  for (const Layout layout : {Layout{"single", 64ull << 20, kMaxSegmentWords, false},
                              Layout{"table", 64ull << 30, kMaxSegmentWords, false},
                              Layout{"far", 256ull << 20, 64, false},
                              Layout{"blob", 64ull << 30, kMaxSegmentWords, true}}) {
    TempDir dir;
    const auto path = dir / "decode.bin";
    {
      RegionOptions options;
      options.capacity = layout.capacity;
      Region region = Region::staged(path, options);
      MappedMessageOptions message_options;
      message_options.segment_words = layout.segment_words;
      message_options.max_segments = layout.segment_words < 1000 ? kMaxSegments : 0;
      MappedMessageBuilder builder(region, message_options);
      fill_message(builder.initRoot<TestAll>(), 40);
      if (layout.aligned_blob) {
        auto blob = builder.new_aligned_data(10000);
        std::memset(blob.get().begin(), 'x', 10000);
        builder.getRoot<TestAll>().adoptBlob(kj::mv(blob));
      }
      builder.finish();
      region.publish();
    }
    const std::string command = "capnp decode -I " MAPWRIGHT_TEST_SCHEMA_DIR
                                " " MAPWRIGHT_TEST_SCHEMA_DIR "/test.capnp TestAll < '" +
                                path.string() + "' 2>&1";
    FILE* pipe = ::popen(command.c_str(), "r");
    ASSERT_NE(pipe, nullptr);
    std::string output;
    char buffer[4096];
    while (const std::size_t n = std::fread(buffer, 1, sizeof buffer, pipe)) output.append(buffer, n);
    const int status = ::pclose(pipe);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << layout.name << ": " << output;
    EXPECT_NE(output.find("name = \"mapwright in place\""), std::string::npos) << layout.name;
    EXPECT_NE(output.find("label = \"chosen\""), std::string::npos) << layout.name;
    EXPECT_NE(output.find("key = \"key-39\""), std::string::npos) << layout.name;
    if (layout.aligned_blob) {
      EXPECT_NE(output.find("xxxxxxxx"), std::string::npos) << layout.name;
    }
  }
}

TEST(MappedMessageBuilder, SeveralBuildersOnSeveralThreads) {
  constexpr int kThreads = 4;
  std::vector<std::thread> threads;
  std::vector<int> ok(kThreads, 0);
  const auto expected = canonical_of_malloc(2000, 1024);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Region region = Region::memfd("capnp-thread-" + std::to_string(t));
      MappedMessageBuilder builder(region);
      fill_message(builder.initRoot<TestAll>(), 2000);
      builder.finish();
      capnp::FlatArrayMessageReader reader(words_of(region));
      ok[t] = same_words(canonical(reader), expected) ? 1 : 0;
    });
  }
  for (auto& thread : threads) thread.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(ok[t], 1) << t;
}

TEST(MappedMessageBuilder, EmptyMessageIsStillAValidMessage) {
  Region region = Region::memfd("capnp-empty");
  MappedMessageBuilder builder(region);
  builder.finish();
  capnp::FlatArrayMessageReader reader(words_of(region));
  EXPECT_EQ(reader.getRoot<TestAll>().getId(), 0u);
}

TEST(MappedMessageBuilder, RefusesANonEmptyRegion) {
  Region region = Region::memfd("capnp-nonempty");
  region.ensure(4096);
  try {
    MappedMessageBuilder builder(region);
    FAIL() << "accepted a region that is not empty";
  } catch (const Error& e) {
    EXPECT_EQ(e.error(), EINVAL);
    EXPECT_NE(std::string(e.what()).find("capnp-nonempty"), std::string::npos) << e.what();
  }
}

TEST(MappedMessageBuilder, RunningOutOfTableSlotsIsAnError) {
  RegionOptions small;
  small.capacity = 16ull << 20;
  Region region = Region::memfd("capnp-slots", small);
  MappedMessageOptions options;
  options.segment_words = 64;
  options.max_segments = 2;
  MappedMessageBuilder builder(region, options);
  try {
    fill_message(builder.initRoot<TestAll>(), 100);
    FAIL() << "a message needing many segments fit in two";
  } catch (const Error& e) {
    EXPECT_EQ(e.error(), ENOSPC);
    EXPECT_NE(std::string(e.what()).find("max_segments"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace mapwright

namespace mapwright {
namespace {

// Blobs placed with new_aligned_data() start on the requested boundary in the file, hold
// the bytes written in place (or copied from an fd), and the message still reads back.
TEST(MappedMessageBuilder, AlignedDataBlobsLandOnTheBoundary) {
  test::TempDir dir;
  const auto source_path = dir / "source.bin";
  std::vector<std::uint8_t> source(300'000);
  for (std::size_t i = 0; i < source.size(); ++i) source[i] = static_cast<std::uint8_t>(i * 13 + 1);
  {
    FILE* f = std::fopen(source_path.c_str(), "wb");
    ASSERT_NE(f, nullptr);
    ASSERT_EQ(std::fwrite(source.data(), 1, source.size(), f), source.size());
    std::fclose(f);
  }
  const int source_fd = ::open(source_path.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(source_fd, 0);

  struct Case { std::uint64_t segment_words; std::uint64_t alignment; };
  for (const Case c : {Case{kMaxSegmentWords, 0}, Case{kMaxSegmentWords, 65536}, Case{512, 0}}) {
    RegionOptions small;
    small.capacity = 256ull << 20;
    Region region = Region::memfd("capnp-aligned", small);
    MappedMessageOptions options;
    options.segment_words = c.segment_words;
    options.max_segments = kMaxSegments;
    MappedMessageBuilder builder(region, options);
    auto root = builder.initRoot<TestAll>();
    root.setName("before the blob");  // something allocated ahead of it
    auto blob = builder.new_aligned_data(source.size(), c.alignment);
    const std::uint64_t offset =
        static_cast<std::uint64_t>(reinterpret_cast<std::byte*>(blob.get().begin()) - region.data());
    EXPECT_EQ(offset % (c.alignment ? c.alignment : 4096), 0u) << offset;
    builder.fill_from_fd(blob.get(), source_fd, 0, source.size(), source_path.string());
    root.adoptBlob(kj::mv(blob));
    auto words = root.initWords(100);  // and something after it
    words.set(99, 42);
    builder.finish();

    capnp::ReaderOptions unlimited;
    unlimited.traversalLimitInWords = UINT64_MAX / 8;
    capnp::FlatArrayMessageReader reader(words_of(region), unlimited);
    const auto read = reader.getRoot<TestAll>();
    ASSERT_EQ(read.getBlob().size(), source.size());
    EXPECT_EQ(std::memcmp(read.getBlob().begin(), source.data(), source.size()), 0);
    EXPECT_EQ(static_cast<std::uint64_t>(reinterpret_cast<const std::byte*>(read.getBlob().begin()) -
                                         region.data()),
              offset);
    EXPECT_EQ(read.getWords()[99], 42u);
    EXPECT_EQ(read.getName(), "before the blob");
  }
  ::close(source_fd);
}

TEST(MappedMessageBuilder, FillFromFdReportsAShortSource) {
  test::TempDir dir;
  const auto path = dir / "short.bin";
  { FILE* f = std::fopen(path.c_str(), "wb"); std::fputs("tiny", f); std::fclose(f); }
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  Region region = Region::memfd("capnp-short");
  MappedMessageBuilder builder(region);
  auto blob = builder.new_aligned_data(100);
  try {
    builder.fill_from_fd(blob.get(), fd, 0, 100, path.string());
    FAIL() << "a 4-byte file filled 100 bytes";
  } catch (const Error& e) {
    EXPECT_EQ(e.error(), EIO);
    EXPECT_NE(std::string(e.what()).find("short.bin"), std::string::npos) << e.what();
  }
  ::close(fd);
}

}  // namespace
}  // namespace mapwright

namespace mapwright {
namespace {

// Built in place, sealed, read back zero-copy from the sealed image: the runtime's path.
TEST(MappedMessageBuilder, SealedImageReadsBackThroughMappedMessageReader) {
  Region region = Region::memfd("capnp-sealed");
  MappedMessageBuilder builder(region);
  fill_message(builder.initRoot<TestAll>(), 500);
  const std::uint64_t size = builder.finish();
  const SealedImage image = std::move(region).seal();
  ASSERT_EQ(image.size(), size);
  MappedMessageReader reader(image);
  EXPECT_EQ(reader.size(), size);
  EXPECT_EQ(reader.segment_count(), 17u);  // the default 64 GiB capacity reserves 17 slots
  EXPECT_TRUE(same_words(canonical(reader), canonical_of_malloc(500, 1024)));
  // Zero-copy: segment 0 is a view into the image's own mapping.
  EXPECT_EQ(reinterpret_cast<const std::byte*>(reader.getSegment(0).begin()),
            image.map().data() + 72);
}

}  // namespace
}  // namespace mapwright

namespace mapwright {
namespace {

// A message written, closed, reopened from the file and extended in place: old fields stay,
// new ones land after them, and the stock reader sees the whole.
TEST(MappedMessageBuilder, ReopenExtendsAMessageInPlace) {
  test::TempDir dir;
  const auto path = dir / "reopen.bin";
  std::uint64_t first_size = 0;
  {
    Region region = Region::file(path);
    MappedMessageBuilder builder(region);
    fill_message(builder.initRoot<TestAll>(), 10);
    first_size = builder.finish();
    region.sync();
  }
  for (const int round : {1, 2}) {
    Region region = Region::open(path);
    ASSERT_EQ(region.size() >= first_size, true);
    MappedMessageBuilder builder(region, MappedMessageBuilder::kReopen);
    auto root = builder.getRoot<TestAll>();
    EXPECT_EQ(root.getName(), "mapwright in place");
    root.setId(round);
    auto items = root.initItems(5000 * round);  // much larger than before: grows the file
    for (std::uint32_t i = 0; i < items.size(); ++i) items[i].setValue(i + round);
    const std::uint64_t size = builder.finish();
    EXPECT_GT(size, first_size);
    region.sync();
  }
  Region region = Region::open(path);
  capnp::ReaderOptions unlimited;
  unlimited.traversalLimitInWords = UINT64_MAX / 8;
  capnp::FlatArrayMessageReader reader(words_of(region), unlimited);
  const auto root = reader.getRoot<TestAll>();
  EXPECT_EQ(root.getId(), 2u);
  EXPECT_EQ(root.getName(), "mapwright in place");
  EXPECT_EQ(root.getWords().size(), 100u);
  EXPECT_EQ(root.getItems().size(), 10000u);
  EXPECT_EQ(root.getItems()[9999].getValue(), 9999u + 2);
}

TEST(MappedMessageBuilder, ReopenRefusesEmptyAndMalformedRegions) {
  Region empty = Region::memfd("reopen-empty");
  EXPECT_THROW(MappedMessageBuilder(empty, MappedMessageBuilder::kReopen), Error);
  Region garbage = Region::memfd("reopen-garbage");
  garbage.ensure(64);
  std::memset(garbage.data(), 0xff, 64);
  garbage.finish(64);
  try {
    MappedMessageBuilder builder(garbage, MappedMessageBuilder::kReopen);
    FAIL() << "reopened a malformed message";
  } catch (const Error& e) {
    EXPECT_EQ(e.error(), EINVAL);
    EXPECT_NE(std::string(e.what()).find("reopen-garbage"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace mapwright
