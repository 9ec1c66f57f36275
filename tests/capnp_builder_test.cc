// MappedMessageBuilder: messages built in place are standard stream-framed Cap'n Proto that
// every stock reader accepts, with the same canonical form as MallocMessageBuilder's.
#include <capnp/any.h>
#include <capnp/message.h>
#include <capnp/serialize.h>
#include <gtest/gtest.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "child.h"
#include "content.h"
#include "region_helpers.h"
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

namespace mapwright {
namespace {

using test::kKiB;
using test::kMiB;

std::uint64_t allocated_bytes(int fd) {
  struct stat st {};
  EXPECT_EQ(::fstat(fd, &st), 0);
  return static_cast<std::uint64_t>(st.st_blocks) * 512;
}

std::uint64_t file_size_of(int fd) {
  struct stat st {};
  EXPECT_EQ(::fstat(fd, &st), 0);
  return static_cast<std::uint64_t>(st.st_size);
}

// `count` blobs of `blob_bytes` placed with new_aligned_data(alignment), each filled with
// the test pattern and adopted into TestAll.blobs; returns the message's size.
std::uint64_t build_blobs(Region& region, const MappedMessageOptions& options, unsigned count,
                          std::uint64_t blob_bytes, std::uint64_t alignment = 0) {
  MappedMessageBuilder builder(region, options);
  auto root = builder.initRoot<TestAll>();
  root.setName("blobs");
  auto blobs = root.initBlobs(count);
  for (unsigned i = 0; i < count; ++i) {
    auto blob = builder.new_aligned_data(blob_bytes, alignment);
    test::fill(reinterpret_cast<std::byte*>(blob.get().begin()), 0, blob_bytes / 8, i + 1);
    blobs.adopt(i, kj::mv(blob));
  }
  return builder.finish();
}

void expect_blobs(const Region& region, unsigned count, std::uint64_t blob_bytes) {
  capnp::ReaderOptions unlimited;
  unlimited.traversalLimitInWords = UINT64_MAX / 8;
  capnp::FlatArrayMessageReader reader(words_of(region), unlimited);
  const auto blobs = reader.getRoot<TestAll>().getBlobs();
  ASSERT_EQ(blobs.size(), count);
  for (unsigned i = 0; i < count; ++i) {
    ASSERT_EQ(blobs[i].size(), blob_bytes);
    const auto* words = reinterpret_cast<const std::uint64_t*>(blobs[i].begin());
    for (std::uint64_t w = 0; w < blob_bytes / 8; w += 97) {
      ASSERT_EQ(words[w], test::pattern(w, i + 1)) << "blob " << i << " word " << w;
    }
  }
}

// Every segment but the last spans its full size in the file (the stream format puts them
// back to back), but the unused tail of each span costs no disk blocks: 160 KiB blobs in
// 256 KiB segments leave 96 KiB tails that growth (fallocate) had allocated.
TEST(MappedMessageBuilder, SegmentTailsCostNoDiskBlocks) {
  constexpr unsigned kCount = 12;
  constexpr std::uint64_t kBlobBytes = 160 * kKiB;
  MappedMessageOptions options;
  options.segment_words = 256 * kKiB / 8;
  options.max_segments = kMaxSegments;
  test::on_disk_file("tails.bin", [&](Region& region) {
    const std::uint64_t size = build_blobs(region, options, kCount, kBlobBytes);
    region.sync();
    const std::uint64_t content = kCount * kBlobBytes;
    EXPECT_EQ(file_size_of(region.fd()), size);
    EXPECT_GE(size, content + (kCount - 1) * 90 * kKiB) << "the spans are in the file";
    // Content; per segment the page after its blob, which holds the far-pointer landing pad
    // of the blob's adoption; the segment table and the root: nothing else.
    const std::uint64_t allocated = allocated_bytes(region.fd());
    RecordProperty("file_size", std::to_string(size));
    RecordProperty("allocated", std::to_string(allocated));
    EXPECT_LE(allocated, content + kCount * 4 * kKiB + 16 * kKiB)
        << "file size " << size << ": the unused tails hold blocks";
    expect_blobs(region, kCount, kBlobBytes);
  });
}

// Alignment padding is never written: on a memfd, where a store is what allocates memory,
// 60 KiB of padding before each 64 KiB-aligned blob costs nothing (an Orphan destructor would
// have zeroed it).
TEST(MappedMessageBuilder, AlignmentPaddingIsNeverWritten) {
  constexpr unsigned kCount = 16;
  constexpr std::uint64_t kBlobBytes = 4 * kKiB + 8;
  RegionOptions small;
  small.capacity = 256 * kMiB;
  Region region = Region::memfd("capnp-padding", small);
  MappedMessageOptions options;
  options.max_segments = 1;
  build_blobs(region, options, kCount, kBlobBytes, 64 * kKiB);
  // Each blob: two pages (4 KiB + 8 bytes); then the root, table and list pointers.
  const std::uint64_t allocated = allocated_bytes(region.fd());
  RecordProperty("allocated", std::to_string(allocated));
  EXPECT_LE(allocated, kCount * 8 * kKiB + 16 * kKiB) << "padding pages hold memory";
  EXPECT_GE(region.size(), kCount * 64 * kKiB);
  expect_blobs(region, kCount, kBlobBytes);
}

// Memory the builder stores into itself is backed before it stores: with grow_on_fault off,
// every store past what ensure() backed would be a crash. Building in small segments
// (new segments, the filler that closes the old ones, landing pads for the adopted blobs),
// placing blobs, filling one from an fd and finishing therefore all run with no fault, given
// reserve() before the builder calls that allocate small objects.
TEST(MappedMessageBuilder, EveryStoreOfTheBuilderIsBackedFirst) {
  test::TempDir dir;
  const auto source = dir / "source.bin";
  {
    std::vector<std::byte> bytes(100 * kKiB);
    test::fill(bytes.data(), 0, bytes.size() / 8, 3);
    std::ofstream(source, std::ios::binary)
        .write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  }
  const test::ChildResult result = test::run_in_child([&] {
    test::no_core_dumps();
    RegionOptions strict;
    strict.capacity = 256 * kMiB;
    strict.grow_on_fault = false;
    strict.min_step = 4096;  // backs no more than asked, so an unbacked store shows
    strict.max_step = 4096;
    Region region = Region::memfd("capnp-strict", strict);
    MappedMessageOptions options;
    options.segment_words = 512;
    options.max_segments = kMaxSegments;
    MappedMessageBuilder builder(region, options);
    builder.reserve(4 * kKiB);
    auto root = builder.initRoot<TestAll>();
    root.setName("strict");
    auto blobs = root.initBlobs(4);
    const int fd = ::open(source.c_str(), O_RDONLY | O_CLOEXEC);
    CHILD_CHECK(fd >= 0);
    for (unsigned i = 0; i < 4; ++i) {
      auto blob = builder.new_aligned_data(100 * kKiB);
      if (i % 2 == 0) {
        builder.fill_from_fd(blob.get(), fd, 0, 100 * kKiB, source.string());
      } else {
        test::fill(reinterpret_cast<std::byte*>(blob.get().begin()), 0, 100 * kKiB / 8, 3);
      }
      builder.reserve(64);  // the landing pad of the adoption
      blobs.adopt(i, kj::mv(blob));
    }
    ::close(fd);
    builder.finish();
    capnp::FlatArrayMessageReader reader(words_of(region));
    const auto read = reader.getRoot<TestAll>();
    CHILD_CHECK(read.getName() == "strict");
    for (unsigned i = 0; i < 4; ++i) {
      const auto* words = reinterpret_cast<const std::uint64_t*>(read.getBlobs()[i].begin());
      CHILD_CHECK(words[0] == test::pattern(0, 3) && words[12799] == test::pattern(12799, 3));
    }
    test::say("built\n");
  });
  test::expect_clean_exit_unreported(result);
  EXPECT_NE(result.output.find("built"), std::string::npos) << result.describe();
}

// discard(): a blob given up reads as zero afterwards and its whole pages cost nothing; the
// message stays valid. On a memfd and on a disk file.
TEST(MappedMessageBuilder, DiscardedBlobsReadAsZeroAndHoldNoBlocks) {
  const auto check = [](Region& region) {
    MappedMessageBuilder builder(region);
    auto root = builder.initRoot<TestAll>();
    root.setName("kept");
    auto blob = builder.new_aligned_data(kMiB + 100);
    const auto offset = static_cast<std::uint64_t>(
        reinterpret_cast<std::byte*>(blob.get().begin()) - region.data());
    std::memset(blob.get().begin(), 0xab, kMiB + 100);
    const std::uint64_t before = allocated_bytes(region.fd());
    builder.discard(kj::mv(blob));
    EXPECT_TRUE(blob == nullptr);
    EXPECT_LE(allocated_bytes(region.fd()) + kMiB, before) << "the blob's pages were not freed";
    std::vector<unsigned char> bytes(kMiB + 100);
    ASSERT_EQ(test::pread_all(region.fd(), bytes.data(), bytes.size(), offset), bytes.size());
    EXPECT_TRUE(std::all_of(bytes.begin(), bytes.end(), [](unsigned char b) { return b == 0; }));
    builder.discard({});  // a null orphan is ignored
    builder.finish();
    capnp::FlatArrayMessageReader reader(words_of(region));
    EXPECT_EQ(reader.getRoot<TestAll>().getName(), "kept");
  };
  Region memfd = Region::memfd("capnp-discard");
  check(memfd);
  test::on_disk_file("discard.bin", check);
}

}  // namespace
}  // namespace mapwright
