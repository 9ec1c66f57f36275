// Wrapper files: WrapperWriter and Wrapper, end to end through the library — what is written
// is read back byte for byte, every malformed input is refused with the entry named, every
// flipped byte is caught, libraries load from the wrapper with their dependencies.
#include "mapwright/wrapper.h"
#include "sanitizers.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include "child.h"
#include "content.h"
#include "fixture_paths.h"
#include "mapwright/error.h"
#include "wrapper.capnp.h"
#include "wrapper_helpers.h"
#include "wrapper_integrity.h"

namespace mapwright {
namespace {

using test::write_file;
using test::pattern_bytes;
using test::joined;
using test::expect_error;

using test::kKiB;
using test::kMiB;
using test::TempDir;

// A wrapper of the two fixture libraries (b needs a), a data blob and an empty entry.
struct Sample {
  std::vector<std::byte> blob = pattern_bytes(300 * kKiB + 123, 1);
  std::filesystem::path path;
};

Sample write_sample(const TempDir& dir, WrapperWriterOptions options = {}) {
  Sample sample;
  sample.path = dir / "sample.mwr";
  WrapperWriter writer(sample.path, std::move(options));
  writer.add_library("liba", std::filesystem::path(MAPWRIGHT_FIXTURE_A));
  writer.add_library("libb", std::filesystem::path(MAPWRIGHT_FIXTURE_B), {"liba"});
  writer.add_data("blob", sample.blob);
  writer.add_data("empty", std::span<const std::byte>());
  writer.publish();
  return sample;
}

// A message with the wrapper schema written by MallocMessageBuilder, with a valid version 2
// trailer (so open() gets past the metadata digest): for inputs the writer refuses to make.
template <class Build>
std::filesystem::path craft(const TempDir& dir, const std::string& name, Build&& build) {
  ::capnp::MallocMessageBuilder message;
  auto root = message.initRoot<schema::WrapperFile>();
  root.setMagic(kWrapperMagic);
  root.setFormatVersion(kWrapperFormatVersion);
  root.setProducer("crafted");
  build(root);
  const std::filesystem::path path = dir / name;
  const auto words = ::capnp::messageToFlatArray(message);
  std::vector<std::byte> bytes(reinterpret_cast<const std::byte*>(words.asBytes().begin()),
                               reinterpret_cast<const std::byte*>(words.asBytes().end()));
  const auto trailer = detail::trailer_for_metadata_only(bytes);
  bytes.insert(bytes.end(), trailer.begin(), trailer.end());
  write_file(path, bytes);
  return path;
}

// A version 2 file changed on purpose: its trailer rewritten with the digest of the metadata
// as it now is, so that open() gets past the digest to the check under test.
void reseal(std::vector<std::byte>& file, std::uint64_t metadata_offset = 0) {
  const std::uint64_t message = file.size() - kWrapperTrailerBytes;
  const auto old = detail::decode_trailer(std::span(file).subspan(message), nullptr);
  ASSERT_TRUE(old.has_value());
  detail::Trailer trailer = *old;
  if (metadata_offset != 0) trailer.metadata_offset = metadata_offset;
  trailer.metadata_digest =
      detail::metadata_digest(file.data(), detail::hashed_prefix_end(file.data()),
                              trailer.metadata_offset, message, trailer.wrapper_size);
  const auto bytes = detail::encode_trailer(trailer);
  std::memcpy(file.data() + message, bytes.data(), bytes.size());
}

void add_empty(schema::WrapperFile::Builder root, std::initializer_list<const char*> names,
               std::initializer_list<std::vector<std::string>> deps = {}) {
  auto list = root.initEntries(static_cast<::capnp::uint>(names.size()));
  auto dep = deps.begin();
  ::capnp::uint i = 0;
  for (const char* name : names) {
    list[i].setName(name);
    list[i].setKind(schema::Kind::SHARED_LIBRARY);
    list[i].setDigest(::capnp::Data::Reader(
        reinterpret_cast<const ::kj::byte*>(digest_of({}).bytes.data()), 16));
    if (dep != deps.end()) {
      auto d = list[i].initDependencies(static_cast<::capnp::uint>(dep->size()));
      for (::capnp::uint k = 0; k < dep->size(); ++k) d.set(k, (*dep)[k]);
      ++dep;
    }
    ++i;
  }
}

// ---- writing and reading back ----------------------------------------------------------------

TEST(Wrapper, WhatIsWrittenReadsBackByteForByte) {
  TempDir dir;
  const Sample sample = write_sample(dir);
  const Wrapper wrapper = Wrapper::open(sample.path);
  EXPECT_EQ(wrapper.format_version(), kWrapperFormatVersion);
  EXPECT_EQ(wrapper.producer(), "mapwright");
  EXPECT_EQ(wrapper.file_size(), std::filesystem::file_size(sample.path));
  ASSERT_EQ(wrapper.entries().size(), 4u);

  const std::vector<std::byte> a = test::read_file_bytes(MAPWRIGHT_FIXTURE_A);
  const std::vector<std::byte> b = test::read_file_bytes(MAPWRIGHT_FIXTURE_B);
  const WrapperEntry& liba = wrapper.entry("liba");
  const WrapperEntry& libb = wrapper.entry("libb");
  const WrapperEntry& blob = wrapper.entry("blob");
  const WrapperEntry& empty = wrapper.entry("empty");
  EXPECT_EQ(liba.kind, EntryKind::kSharedLibrary);
  EXPECT_EQ(blob.kind, EntryKind::kData);
  EXPECT_EQ(libb.dependencies, std::vector<std::string>{"liba"});
  EXPECT_TRUE(liba.dependencies.empty());
  EXPECT_EQ(joined(liba), a);
  EXPECT_EQ(joined(libb), b);
  EXPECT_EQ(joined(blob), sample.blob);
  EXPECT_EQ(empty.size, 0u);
  EXPECT_TRUE(empty.chunks.empty());
  EXPECT_TRUE(empty.bytes().empty());

  // The offsets are file offsets, page-aligned, and the file holds the bytes there.
  const std::vector<std::byte> file = test::read_file_bytes(sample.path);
  for (const WrapperEntry* e : {&liba, &libb, &blob}) {
    EXPECT_EQ(e->offset % kWrapperAlignment, 0u) << e->name;
    ASSERT_LE(e->offset + e->size, file.size());
    EXPECT_EQ(std::memcmp(file.data() + e->offset, e->bytes().data(), e->size), 0) << e->name;
    EXPECT_EQ(e->digest, digest_of(e->bytes())) << e->name;
  }
  // XXH3-128 of nothing, as xxh128sum prints it for an empty file.
  EXPECT_EQ(empty.digest.hex(), "99aa06d3014798d86001c324468d497f");
  EXPECT_EQ(wrapper.find("nope"), nullptr);
  expect_error([&] { (void)wrapper.entry("nope"); }, ENOENT, {"'nope'", sample.path.string()});
  EXPECT_NO_THROW(wrapper.verify());
}

TEST(Wrapper, LargeEntriesAreChunkedBackToBack) {
  TempDir dir;
  WrapperWriterOptions options;
  options.chunk_bytes = 64 * kKiB;
  const Sample sample = write_sample(dir, options);
  const Wrapper wrapper = Wrapper::open(sample.path);
  const WrapperEntry& blob = wrapper.entry("blob");
  EXPECT_EQ(blob.chunks.size(), (sample.blob.size() + 64 * kKiB - 1) / (64 * kKiB));
  for (std::size_t i = 0; i + 1 < blob.chunks.size(); ++i) {
    EXPECT_EQ(blob.chunks[i].size(), 64 * kKiB);
  }
  EXPECT_TRUE(blob.contiguous());
  ASSERT_EQ(blob.bytes().size(), sample.blob.size());
  EXPECT_EQ(std::memcmp(blob.bytes().data(), sample.blob.data(), sample.blob.size()), 0);
  EXPECT_TRUE(wrapper.verify_entry(blob));
}

// Large entries start where the page cache can hold them in large folios (wrapper.h,
// chunk_bytes): at a power of two near 1/16 of the first chunk, up to 2 MiB, that divides
// chunk_bytes, so that the chunks still follow each other; small ones and streams at 4096.
TEST(Wrapper, LargeEntriesStartAtLargeFolioBoundariesAndStayContiguous) {
  TempDir dir;
  struct Case {
    const char* name;
    std::uint64_t size;
    std::uint64_t chunk_bytes;
    std::uint64_t alignment;
  };
  const Case cases[] = {
      {"small", 100 * kKiB, kDefaultChunkBytes, 4 * kKiB},        // 6.25 KiB -> 4 KiB
      {"medium", 1 * kMiB + 5, kDefaultChunkBytes, 64 * kKiB},    // 64 KiB
      {"big", 40 * kMiB, kDefaultChunkBytes, 2 * kMiB},           // 2.5 MiB -> 2 MiB
      {"odd_chunks", 10 * kMiB, 3 * kMiB, 128 * kKiB},            // 192 KiB -> 128 KiB, | 1 MiB
      {"page_chunks", 1 * kMiB, 12 * kKiB, 4 * kKiB},             // 12 KiB chunks: 4 KiB
      {"mib_chunks", 5 * kMiB + 77, 1 * kMiB + 4 * kKiB, 4 * kKiB},  // divides: 4 KiB
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const std::filesystem::path input = dir / (std::string(c.name) + ".bin");
    const std::vector<std::byte> bytes = pattern_bytes(c.size, 7);
    write_file(input, bytes);
    WrapperWriterOptions options;
    options.chunk_bytes = c.chunk_bytes;
    const std::filesystem::path path = dir / (std::string(c.name) + ".mwr");
    {
      WrapperWriter writer(path, options);
      writer.add_data("first", std::span<const std::byte>(bytes.data(), 5000));  // unaligned end
      writer.add_data(c.name, input);
      writer.add_data("again", bytes);  // from memory: the same rule
      writer.publish();
    }
    const Wrapper wrapper = Wrapper::open(path);
    for (const char* name : {c.name, "again"}) {
      const WrapperEntry& entry = wrapper.entry(name);
      EXPECT_EQ(entry.offset % c.alignment, 0u) << name << " at " << entry.offset;
      EXPECT_TRUE(entry.contiguous()) << name;
      EXPECT_EQ(entry.chunks.size(), (c.size + c.chunk_bytes - 1) / c.chunk_bytes) << name;
      ASSERT_EQ(entry.bytes().size(), bytes.size());
      EXPECT_EQ(std::memcmp(entry.bytes().data(), bytes.data(), bytes.size()), 0) << name;
    }
    EXPECT_NO_THROW(wrapper.verify());
    // The padding is at most 1/16 of a chunk per entry (and a hole): the file stays close to
    // what it holds.
    EXPECT_LT(std::filesystem::file_size(path),
              5000 + 2 * c.size + 2 * std::min(c.size, c.chunk_bytes) / 16 + 64 * kKiB);
  }
}

TEST(Wrapper, ChunksSplitAcrossSegmentsStillReadAndLoad) {
  TempDir dir;
  WrapperWriterOptions options;
  // 12 KiB segments hold one 8 KiB chunk each: the next one leaves a 4 KiB gap behind (as a
  // 4 GiB segment does in a big file, whose end is not page-aligned).
  options.chunk_bytes = 8 * kKiB;
  options.message.segment_words = 12 * kKiB / 8;
  const Sample sample = write_sample(dir, options);
  const Wrapper wrapper = Wrapper::open(sample.path);
  const WrapperEntry& liba = wrapper.entry("liba");
  ASSERT_GT(liba.chunks.size(), 1u);
  EXPECT_FALSE(liba.contiguous());
  expect_error([&] { (void)liba.bytes(); }, EINVAL, {"'liba'", "not contiguous"});
  EXPECT_EQ(joined(liba), test::read_file_bytes(MAPWRIGHT_FIXTURE_A));
  EXPECT_EQ(joined(wrapper.entry("blob")), sample.blob);
  EXPECT_NO_THROW(wrapper.verify());
  // The loader gets the gathered bytes.
  const LoadedLibraries libraries = wrapper.load_with_dependencies("libb");
  EXPECT_EQ(libraries.at("libb").function<int()>("fixture_b_answer")(), 43);
}

TEST(Wrapper, CallbackWritesInPlaceChunkByChunk) {
  TempDir dir;
  const std::filesystem::path path = dir / "cb.mwr";
  WrapperWriterOptions options;
  options.chunk_bytes = 64 * kKiB;
  constexpr std::uint64_t kSize = 200 * kKiB + 8;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> calls;  // (offset, size)
  {
    WrapperWriter writer(path, options);
    writer.add_data("table", kSize, [&](std::span<std::byte> chunk, std::uint64_t offset) {
      calls.emplace_back(offset, chunk.size());
      for (std::size_t i = 0; i < chunk.size(); ++i) {
        EXPECT_EQ(chunk[i], std::byte{0});  // fresh pages
        chunk[i] = static_cast<std::byte>((offset + i) * 31 >> 3);
      }
    });
    writer.publish();
  }
  const std::vector<std::pair<std::uint64_t, std::uint64_t>> expected{
      {0, 64 * kKiB}, {64 * kKiB, 64 * kKiB}, {128 * kKiB, 64 * kKiB}, {192 * kKiB, 8 * kKiB + 8}};
  EXPECT_EQ(calls, expected);
  const Wrapper wrapper = Wrapper::open(path);
  const auto bytes = wrapper.entry("table").bytes();
  ASSERT_EQ(bytes.size(), kSize);
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    ASSERT_EQ(bytes[i], static_cast<std::byte>(i * 31 >> 3)) << i;
  }
  EXPECT_NO_THROW(wrapper.verify());
}

TEST(Wrapper, ProgressReportsEveryEntry) {
  TempDir dir;
  WrapperWriterOptions options;
  std::vector<std::string> seen;
  std::uint64_t last_total = 0;
  options.progress = [&](const WriteProgress& p) {
    if (seen.empty() || seen.back() != p.entry) seen.emplace_back(p.entry);
    EXPECT_GE(p.total_done, last_total);
    EXPECT_LE(p.entry_done, p.entry_size);
    last_total = p.total_done;
  };
  const Sample sample = write_sample(dir, options);
  EXPECT_EQ(seen, (std::vector<std::string>{"liba", "libb", "blob", "empty"}));
  EXPECT_EQ(last_total, std::filesystem::file_size(MAPWRIGHT_FIXTURE_A) +
                            std::filesystem::file_size(MAPWRIGHT_FIXTURE_B) + sample.blob.size());
}

// ---- what the writer refuses ------------------------------------------------------------------

TEST(WrapperWriter, RefusesBadNamesAndKeepsGoing) {
  TempDir dir;
  WrapperWriter writer(dir / "w.mwr");
  const std::vector<std::byte> bytes = pattern_bytes(100, 2);
  writer.add_data("x", bytes);
  expect_error([&] { writer.add_data("", bytes); }, EINVAL, {"name is empty"});
  expect_error([&] { writer.add_data(std::string_view("a\0b", 3), bytes); }, EINVAL, {"NUL"});
  expect_error([&] { writer.add_data(std::string(kMaxEntryNameBytes + 1, 'n'), bytes); }, EINVAL,
               {"longer than"});
  expect_error([&] { writer.add_data("x", bytes); }, EEXIST, {"'x'", "already used"});
  expect_error([&] { writer.add_data("missing", dir / "no-such-file"); }, ENOENT,
               {"'missing'", "no-such-file"});
  expect_error([&] { writer.add_data("dir", dir.path()); }, EINVAL, {"not a regular file"});
  expect_error([&] { writer.add_library("notelf", bytes); }, EINVAL, {"'notelf'", "ELF"});
  expect_error([&] { writer.add_library("nothing", std::span<const std::byte>()); }, EINVAL,
               {"'nothing'", "ELF"});
  EXPECT_THROW(writer.add_data("thrower", 10 * kKiB,
                               [](std::span<std::byte>, std::uint64_t) {
                                 throw std::runtime_error("fill failed");
                               }),
               std::runtime_error);
  EXPECT_EQ(writer.entry_count(), 1u);
  writer.add_data("thrower", bytes);  // the name was not taken by the failed add
  writer.publish();
  const Wrapper wrapper = Wrapper::open(dir / "w.mwr");
  ASSERT_EQ(wrapper.entries().size(), 2u);
  EXPECT_NO_THROW(wrapper.verify());
  expect_error([&] { writer.publish(); }, EINVAL, {"already run"});
}

TEST(WrapperWriter, RefusesBadChunkSizes) {
  TempDir dir;
  for (const std::uint64_t chunk : {0ull, 1000ull, 512ull << 20}) {
    WrapperWriterOptions options;
    options.chunk_bytes = chunk;
    expect_error([&] { WrapperWriter writer(dir / "w.mwr", options); }, EINVAL, {"chunk size"});
  }
}

TEST(WrapperWriter, RefusesBadDependenciesAtPublishAndPublishesNothing) {
  struct Case {
    const char* what;
    std::vector<std::pair<std::string, std::vector<std::string>>> libraries;
    bool with_data;
    std::string expected;
  };
  const std::vector<Case> cases{
      {"missing", {{"a", {"ghost"}}}, false, "entry 'a': depends on 'ghost', which is not in"},
      {"itself", {{"a", {"a"}}}, false, "entry 'a': depends on itself"},
      {"data", {{"a", {"d"}}}, true, "entry 'a': depends on 'd', which is a data entry"},
      {"cycle", {{"a", {"b"}}, {"b", {"c"}}, {"c", {"a"}}}, false, "dependency cycle"},
  };
  const std::vector<std::byte> bytes = test::read_file_bytes(MAPWRIGHT_FIXTURE_A);
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    TempDir dir;
    WrapperWriter writer(dir / "w.mwr");
    for (const auto& [name, deps] : c.libraries) writer.add_library(name, bytes, deps);
    if (c.with_data) writer.add_data("d", bytes);
    expect_error([&] { writer.publish(); }, EINVAL, {c.expected});
    EXPECT_FALSE(std::filesystem::exists(dir / "w.mwr"));
  }
}

TEST(WrapperWriter, UnpublishedLeavesNothingAndPublishReplacesAtomically) {
  TempDir dir;
  const std::filesystem::path path = dir / "w.mwr";
  {
    WrapperWriter writer(path);
    writer.add_data("x", pattern_bytes(kMiB, 3));
  }
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));

  {
    WrapperWriter writer(path);
    writer.add_data("old", pattern_bytes(1000, 4));
    writer.publish();
  }
  const Wrapper old_one = Wrapper::open(path);
  {
    WrapperWriter writer(path);
    writer.add_data("new", pattern_bytes(1000, 5));
    // Until publish() the target is the old wrapper.
    EXPECT_NE(Wrapper::open(path).find("old"), nullptr);
    writer.publish();
  }
  EXPECT_NE(Wrapper::open(path).find("new"), nullptr);
  // A wrapper opened before keeps its (replaced) file.
  EXPECT_NO_THROW(old_one.verify());
  EXPECT_NE(old_one.find("old"), nullptr);
}

// A wrapper whose entries span many segments (as a file over 4 GiB does; here 96 KiB
// segments holding one 64 KiB chunk each) holds disk blocks only for its content: the unused
// tails of the segments' spans, and the blobs of an entry the writer refused, are holes —
// although growth allocated them (fallocate) and the refused bytes were written.
TEST(WrapperWriter, SegmentTailsAndRefusedEntriesHoldNoDiskBlocks) {
  test::DiskDir dir;
  ASSERT_TRUE(dir.ok());
  WrapperWriterOptions options;
  options.chunk_bytes = 64 * kKiB;
  options.message.segment_words = 96 * kKiB / 8;
  const std::vector<std::byte> data = pattern_bytes(kMiB, 6);
  const std::filesystem::path path = dir / "sparse.mwr";
  {
    WrapperWriter writer(path, options);
    writer.add_data("data", data);
    expect_error([&] { writer.add_library("bad", pattern_bytes(512 * kKiB, 7)); }, EINVAL,
                 {"'bad'", "ELF"});
    writer.publish();
  }
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  const auto size = static_cast<std::uint64_t>(st.st_size);
  const auto allocated = static_cast<std::uint64_t>(st.st_blocks) * 512;
  RecordProperty("file_size", std::to_string(size));
  RecordProperty("allocated", std::to_string(allocated));
  EXPECT_GE(size, 24 * 96 * kKiB - 96 * kKiB) << "24 segments: 16 chunks and 8 refused ones";
  EXPECT_LE(allocated, kMiB + 64 * kKiB) << "file size " << size;
  const Wrapper wrapper = Wrapper::open(path);
  EXPECT_EQ(wrapper.entries().size(), 1u);
  EXPECT_EQ(joined(wrapper.entry("data")), data);
  EXPECT_NO_THROW(wrapper.verify());
}

// The writer's resident set does not grow with what it writes: whatever it copied, or a fill
// function wrote, is dropped from its page tables once hashed (the digest's reads map pages
// back by fault-around: 64 KiB around each read, which with 4 KiB chunks was nearly all of
// them). Measured in a child: its peak RSS (ru_maxrss) over its RSS before writing, for two
// 64 MiB entries (one copied from a file, one filled in place), in 4 KiB and 1 MiB chunks.
TEST(WrapperWriter, ResidentSetDoesNotGrowWithTheEntries) {
#if MAPWRIGHT_TEST_TSAN
  GTEST_SKIP() << "ThreadSanitizer keeps shadow memory for every page written: the resident "
                  "set measures TSan, not the writer";
#endif
  constexpr std::uint64_t kEntry = 64 * kMiB;
  test::DiskDir dir;
  ASSERT_TRUE(dir.ok());
  write_file(dir / "source.bin", pattern_bytes(kEntry, 8));
  for (const std::uint64_t chunk : {4 * kKiB, kMiB}) {
    SCOPED_TRACE("chunks of " + std::to_string(chunk) + " bytes");
    const test::ChildResult result = test::run_in_child([&] {
      const auto rss_kib = [] {
        std::ifstream statm("/proc/self/statm");
        long size = 0;
        long resident = 0;
        statm >> size >> resident;
        return resident * (::sysconf(_SC_PAGESIZE) / 1024);
      };
      const long before = rss_kib();
      WrapperWriterOptions options;
      options.chunk_bytes = chunk;
      WrapperWriter writer(dir / "rss.mwr", options);
      writer.add_data("copied", dir / "source.bin");
      writer.add_data("filled", kEntry, [](std::span<std::byte> bytes, std::uint64_t) {
        std::memset(bytes.data(), 0x5a, bytes.size());
      });
      writer.publish();
      rusage usage {};
      ::getrusage(RUSAGE_SELF, &usage);
      const long grown = usage.ru_maxrss - before;
      test::say(("peak RSS grew by " + std::to_string(grown) + " KiB\n").c_str());
      // A few 8 MiB pieces: written and waiting for the digest (16 MiB at most), hashed and
      // waiting to be released (8 MiB), the digest's read-ahead.
      CHILD_CHECK_MSG(grown < 48 * 1024, "for 128 MiB written: " + std::to_string(grown) + " KiB");
    });
    test::expect_clean_exit(result);
    RecordProperty("chunk_" + std::to_string(chunk), result.output);
    std::filesystem::remove(dir / "rss.mwr");
  }
}

// ---- what open() refuses ----------------------------------------------------------------------

TEST(WrapperOpen, RefusesFilesThatAreNotWrappers) {
  TempDir dir;
  expect_error([&] { Wrapper::open(dir / "absent.mwr"); }, ENOENT, {"absent.mwr"});
  write_file(dir / "empty.mwr", {});
  expect_error([&] { Wrapper::open(dir / "empty.mwr"); }, EINVAL, {"empty.mwr", "not a wrapper"});
  write_file(dir / "noise.mwr", pattern_bytes(10000, 6));
  expect_error([&] { Wrapper::open(dir / "noise.mwr"); }, EINVAL, {"noise.mwr", "not a wrapper"});

  const auto bad_magic = craft(dir, "magic.mwr", [](auto root) { root.setMagic(42); });
  expect_error([&] { Wrapper::open(bad_magic); }, EINVAL, {"magic"});
  const auto bad_version = craft(dir, "version.mwr", [](auto root) { root.setFormatVersion(4); });
  expect_error([&] { Wrapper::open(bad_version); }, EINVAL,
               {"format version 4 is not supported", "reads versions 1 to 3"});
}

TEST(WrapperOpen, RefusesATruncatedWrapperAtEveryLength) {
  TempDir dir;
  const Sample sample = write_sample(dir);
  const std::vector<std::byte> whole = test::read_file_bytes(sample.path);
  const std::filesystem::path cut = dir / "cut.mwr";
  for (std::size_t length : {std::size_t{0}, std::size_t{4}, std::size_t{8}, whole.size() / 2,
                             whole.size() - 8, whole.size() - 1}) {
    SCOPED_TRACE(length);
    write_file(cut, std::span(whole).first(length));
    // Up to the segment table it is not a wrapper at all; past it, a damaged one.
    if (length <= 8) {
      expect_error([&] { Wrapper::open(cut); }, EINVAL, {"cut.mwr", "not a wrapper"});
    } else {
      expect_error([&] { Wrapper::open(cut); }, EBADMSG,
                   {"cut.mwr", "truncated at byte " + std::to_string(length) + " of "});
    }
  }
}

TEST(WrapperOpen, RefusesMalformedEntriesNamingThem) {
  TempDir dir;
  struct Case {
    const char* name;
    std::function<void(schema::WrapperFile::Builder)> build;
    std::vector<std::string> expected;
  };
  const std::vector<Case> cases{
      {"duplicate", [](auto root) { add_empty(root, {"x", "x"}); },
       {"entry 'x'", "used by an earlier entry"}},
      {"cycle", [](auto root) { add_empty(root, {"p", "q"}, {{"q"}, {"p"}}); },
       {"dependency cycle"}},
      {"self", [](auto root) { add_empty(root, {"p"}, {{"p"}}); }, {"entry 'p'", "itself"}},
      {"missing dep", [](auto root) { add_empty(root, {"p"}, {{"zz"}}); },
       {"entry 'p'", "'zz'"}},
      {"data with deps",
       [](auto root) {
         add_empty(root, {"p", "q"}, {{}, {"p"}});
         root.getEntries()[1].setKind(schema::Kind::DATA);
       },
       {"entry 'q'", "data entry cannot have dependencies"}},
      {"empty name", [](auto root) { add_empty(root, {""}); }, {"entry #0", "name is empty"}},
      {"unknown kind",
       [](auto root) {
         add_empty(root, {"k"});
         root.getEntries()[0].setKind(static_cast<schema::Kind>(7));
       },
       {"entry #0 'k'", "unknown kind 7"}},
      {"digest length",
       [](auto root) {
         add_empty(root, {"d"});
         root.getEntries()[0].initDigest(3);
       },
       {"entry #0 'd'", "digest has 3 bytes"}},
      {"digest algorithm",
       [](auto root) {
         add_empty(root, {"d"});
         root.getEntries()[0].setDigestAlgorithm(static_cast<schema::DigestAlgorithm>(9));
       },
       {"entry #0 'd'", "unknown digest algorithm 9"}},
      {"size overflows",
       [](auto root) {
         add_empty(root, {"s"});
         root.getEntries()[0].setSize(UINT64_MAX);
       },
       {"entry #0 's'", "size says 18446744073709551615 bytes but its chunks hold 0"}},
      {"unaligned chunk",
       [](auto root) {
         add_empty(root, {"u"});
         auto entry = root.getEntries()[0];
         entry.setKind(schema::Kind::DATA);
         entry.setSize(100);
         entry.initChunks(1).init(0, 100);
       },
       {"entry #0 'u'", "not 4096-byte aligned"}},
      {"empty chunk",
       [](auto root) {
         add_empty(root, {"e"});
         root.getEntries()[0].initChunks(1).init(0, 0);
       },
       {"entry #0 'e'", "chunk 0 is empty"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const auto path = craft(dir, "crafted.mwr", c.build);
    try {
      Wrapper::open(path);
      ADD_FAILURE() << "opened";
    } catch (const Error& e) {
      EXPECT_EQ(e.error(), EINVAL);
      for (const std::string& part : c.expected) {
        EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
      }
    }
  }
}

// The 8-byte word of the file that is a Cap'n Proto byte-list pointer to `target` of `count`
// bytes, searched from `from`. A real wrapper's chunk pointers can be found, and redirected,
// that way.
std::size_t find_blob_pointer(const std::vector<std::byte>& file, std::size_t from,
                              std::uint64_t target, std::uint64_t count) {
  for (std::size_t at = from / 8 * 8; at + 8 <= file.size(); at += 8) {
    std::uint64_t word;
    std::memcpy(&word, file.data() + at, 8);
    if ((word & 3) != 1 || ((word >> 32) & 7) != 2 || (word >> 35) != count) continue;
    const auto offset = static_cast<std::int32_t>(static_cast<std::uint32_t>(word) & ~3u) >> 2;
    if (static_cast<std::int64_t>(at) + 8 + std::int64_t{offset} * 8 ==
        static_cast<std::int64_t>(target)) {
      return at;
    }
  }
  return 0;
}

std::uint64_t blob_pointer(std::size_t at, std::uint64_t target, std::uint64_t count) {
  const std::int64_t offset = (static_cast<std::int64_t>(target) - static_cast<std::int64_t>(at) - 8) / 8;
  return 1 | (static_cast<std::uint64_t>(static_cast<std::uint32_t>(offset) << 2)) |
         (std::uint64_t{2} << 32) | (count << 35);
}

TEST(WrapperOpen, RefusesOverlappingAndOutOfBoundsChunksBeforeReadingThem) {
  TempDir dir;
  const Sample sample = write_sample(dir);
  std::vector<std::byte> file = test::read_file_bytes(sample.path);
  std::uint64_t a_offset, blob_offset, blob_size;
  {
    const Wrapper wrapper = Wrapper::open(sample.path);
    a_offset = wrapper.entry("liba").offset;
    blob_offset = wrapper.entry("blob").offset;
    blob_size = wrapper.entry("blob").size;
  }
  const std::size_t at = find_blob_pointer(file, blob_offset + blob_size, blob_offset, blob_size);
  ASSERT_NE(at, 0u) << "the blob's chunk pointer was not found";

  // blob's chunk now starts at liba's bytes (same size, so the sizes still add up).
  std::vector<std::byte> overlap = file;
  const std::uint64_t word = blob_pointer(at, a_offset, blob_size);
  std::memcpy(overlap.data() + at, &word, 8);
  write_file(dir / "overlap.mwr", overlap);
  // The pointer is metadata: as it is, the digest refuses the file first.
  expect_error([&] { Wrapper::open(dir / "overlap.mwr"); }, EBADMSG,
               {"overlap.mwr", "the metadata digest does not match"});
  reseal(overlap);
  write_file(dir / "overlap.mwr", overlap);
  expect_error([&] { Wrapper::open(dir / "overlap.mwr"); }, EINVAL,
               {"overlap.mwr", "overlap", "'liba'"});

  // A chunk that runs past the end of the file.
  std::vector<std::byte> outside = file;
  const std::uint64_t past = blob_pointer(at, blob_offset, file.size() * 2);
  std::memcpy(outside.data() + at, &past, 8);
  reseal(outside);
  write_file(dir / "outside.mwr", outside);
  expect_error([&] { Wrapper::open(dir / "outside.mwr"); }, EINVAL, {"outside.mwr", "malformed"});

  // Metadata that starts inside the last chunk: in version 2 no byte is both an entry's
  // and the metadata's.
  std::vector<std::byte> inside = file;
  const std::uint64_t last = std::max({a_offset, blob_offset});
  reseal(inside, last);
  write_file(dir / "inside.mwr", inside);
  expect_error([&] { Wrapper::open(dir / "inside.mwr"); }, EINVAL,
               {"inside.mwr", "is not between the segment table",
                "and the metadata (at byte " + std::to_string(last) + ")"});
}

// ---- verify -------------------------------------------------------------------------------------

TEST(WrapperVerify, AFlippedByteInAnyEntryIsCaughtAndNamed) {
  TempDir dir;
  const Sample sample = write_sample(dir);
  const std::vector<std::byte> file = test::read_file_bytes(sample.path);
  std::vector<std::pair<std::string, std::uint64_t>> targets;
  {
    const Wrapper wrapper = Wrapper::open(sample.path);
    for (const WrapperEntry& e : wrapper.entries()) {
      if (e.size == 0) continue;
      targets.emplace_back(e.name, e.offset);
      targets.emplace_back(e.name, e.offset + e.size / 2);
      targets.emplace_back(e.name, e.offset + e.size - 1);
    }
  }
  for (const auto& [name, offset] : targets) {
    SCOPED_TRACE(name + " @ " + std::to_string(offset));
    std::vector<std::byte> damaged = file;
    damaged[offset] ^= std::byte{0x10};
    write_file(dir / "damaged.mwr", damaged);
    const Wrapper wrapper = Wrapper::open(dir / "damaged.mwr");
    for (const WrapperEntry& e : wrapper.entries()) {
      EXPECT_EQ(wrapper.verify_entry(e), e.name != name) << e.name;
    }
    expect_error([&] { wrapper.verify(); }, EBADMSG, {"damaged.mwr", "entry '" + name + "'"});
  }
}

TEST(WrapperVerify, ConcurrentVerifiesAgree) {
  TempDir dir;
  const Sample sample = write_sample(dir);
  const Wrapper wrapper = Wrapper::open(sample.path);
  std::vector<std::thread> threads;
  std::atomic<int> good{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 20; ++i) {
        bool all = true;
        for (const WrapperEntry& e : wrapper.entries()) all = all && wrapper.verify_entry(e);
        if (all) ++good;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(good.load(), 80);
}

// ---- loading --------------------------------------------------------------------------------

TEST(WrapperLoad, LibrariesLoadWithTheirDependenciesAndWriteNothing) {
  TempDir dir;
  const Sample sample = write_sample(dir);
  const long long before = test::proc_write_bytes();
  {
    const Wrapper wrapper = Wrapper::open(sample.path);
    wrapper.verify();
    const LoadedLibraries libraries = wrapper.load_with_dependencies("libb");
    ASSERT_EQ(libraries.size(), 2u);
    EXPECT_EQ(libraries[0].name(), sample.path.string() + ":liba");
    EXPECT_EQ(libraries[1].name(), sample.path.string() + ":libb");
    EXPECT_EQ(libraries.at("libb").function<int()>("fixture_b_answer")(), 43);
    EXPECT_EQ(libraries.at("liba").function<int()>("fixture_answer")(), 42);
    EXPECT_EQ(libraries[1].strategy(), LoadStrategy::kMemfdCopy);
    EXPECT_EQ(libraries[1].report().bytes_written_to_disk, 0u);
    expect_error([&] { (void)libraries.at("blob"); }, ENOENT, {"'blob'"});

    // A second set beside the first would be refused (liba's SONAME is loaded already: the
    // new libb would bind to the old liba); in a namespace of their own they load, together.
    expect_error([&] { (void)wrapper.load_all(); }, EEXIST, {":liba'", "libmwfixture_a.so"});
    LoadOptions isolated;
    isolated.link_namespace = LoadOptions::Namespace::kNew;
    const LoadedLibraries all = wrapper.load_all(isolated);
    ASSERT_EQ(all.size(), 2u);
    EXPECT_EQ(all[0].name(), sample.path.string() + ":liba");
    EXPECT_NE(all[0].namespace_id(), 0);
    EXPECT_EQ(all[1].namespace_id(), all[0].namespace_id());
    EXPECT_EQ(all.at("libb").function<int()>("fixture_b_answer")(), 43);

    expect_error([&] { (void)wrapper.load_library("blob"); }, EINVAL, {"blob", "data entry"});
    expect_error([&] { (void)wrapper.load_library("ghost"); }, ENOENT, {"'ghost'"});
  }
  const long long after = test::proc_write_bytes();
  if (before < 0 || after < 0) GTEST_SKIP() << "/proc/self/io is not readable here";
  EXPECT_EQ(after, before) << "bytes were written to disk while loading from the wrapper";
}

TEST(WrapperLoad, ALibraryChangedAfterOpenIsNotLoaded) {
  // The file is rewritten in place after open() and verify() (what WrapperWriter never does):
  // the copy that would be loaded no longer matches the digest, and is refused.
  TempDir dir;
  const Sample sample = write_sample(dir);
  const Wrapper wrapper = Wrapper::open(sample.path);
  wrapper.verify();
  const WrapperEntry& liba = wrapper.entry("liba");
  const int fd = ::open(sample.path.c_str(), O_WRONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  const char junk = 0x55;
  ASSERT_EQ(::pwrite(fd, &junk, 1, static_cast<off_t>(liba.offset + liba.size - 100)), 1);
  ::close(fd);
  expect_error([&] { (void)wrapper.load_library("liba"); }, EBADMSG,
               {"liba", "do not match the entry's digest"});
}

TEST(WrapperLoad, WithoutItsDependencyALibraryDoesNotLoad) {
  // In a child: a failed dlopen may leave the dependency search state behind.
  TempDir dir;
  const Sample sample = write_sample(dir);
  const test::ChildResult result = test::run_in_child([&] {
    const Wrapper wrapper = Wrapper::open(sample.path);
    try {
      (void)wrapper.load_library("libb");
      test::say("loaded");
    } catch (const Error& e) {
      CHILD_CHECK(e.error() == ENOEXEC);
      CHILD_CHECK(std::string(e.what()).find("libmwfixture_a.so") != std::string::npos);
    }
  });
  test::expect_clean_exit(result);
  EXPECT_EQ(result.output.find("loaded"), std::string::npos) << result.output;
}

TEST(WrapperLoad, ASealedWrapperOpensAndLoads) {
  TempDir dir;
  const Sample sample = write_sample(dir);
  const std::vector<std::byte> file = test::read_file_bytes(sample.path);
  Region region = Region::memfd("sealed wrapper");
  region.ensure(file.size());
  std::memcpy(region.data(), file.data(), file.size());
  region.finish(file.size());
  const SealedImage image = std::move(region).seal();
  const Wrapper wrapper = Wrapper::open(image);
  EXPECT_NO_THROW(wrapper.verify());
  const LoadedLibraries libraries = wrapper.load_all();
  EXPECT_EQ(libraries.at("libb").function<int()>("fixture_b_answer")(), 43);
  // An fd works too, and the caller keeps its own.
  const int fd = ::open(sample.path.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  {
    const Wrapper by_fd = Wrapper::open(fd);
    EXPECT_NE(by_fd.fd(), fd);
    EXPECT_EQ(by_fd.entries().size(), 4u);
  }
  EXPECT_EQ(::fcntl(fd, F_GETFD), FD_CLOEXEC);
  ::close(fd);
}

}  // namespace
}  // namespace mapwright
