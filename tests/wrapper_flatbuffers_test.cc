// Wrapper files in FlatBuffers form (include/mapwright/wrapper.fbs): the writer makes them
// with the same entries as the Cap'n Proto form, the reader reads both alike, `flatc` decodes
// the metadata and encodes metadata the reader takes, chunks past 4 GiB are addressed, and
// hostile metadata (valid digest, lying contents) is refused by name.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "child.h"
#include "cli.h"
#include "content.h"
#include "fixture_paths.h"
#include "mapwright/error.h"
#include "mapwright/wrapper.h"
#include "wrapper_flat.h"
#include "wrapper_helpers.h"

namespace mapwright {
namespace {

namespace fs = std::filesystem;
using test::expect_error;
using test::pattern_bytes;
using test::TempDir;

const std::string kSchema = std::string(MAPWRIGHT_TEST_SCHEMA_DIR) + "/../../include/mapwright/wrapper.fbs";

// The same entries in either form: two libraries (b depends on a), data from memory, an empty
// entry, data written by a fill callback in chunks, and data streamed from a pipe.
fs::path write_wrapper(const TempDir& dir, const std::string& file, WrapperFormat format,
                       WrapperWriterOptions options = {}) {
  const fs::path path = dir / file;
  options.format = format;
  options.durable = false;
  options.chunk_bytes = 64 << 10;  // several chunks per entry, joined into one run in FlatBuffers
  WrapperWriter writer(path, options);
  writer.add_library("liba", fs::path(MAPWRIGHT_FIXTURE_A));
  writer.add_library("libb", fs::path(MAPWRIGHT_FIXTURE_B), {"liba"});
  writer.add_data("blob", pattern_bytes(300'000, 1));
  writer.add_data("empty", std::span<const std::byte>());
  writer.add_data("filled", 200'000, [](std::span<std::byte> chunk, std::uint64_t at) {
    for (std::size_t i = 0; i < chunk.size(); ++i) chunk[i] = static_cast<std::byte>((at + i) * 7);
  });
  int pipe_fds[2];
  EXPECT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
  std::thread feeder([fd = pipe_fds[1]] {
    const std::vector<std::byte> bytes = pattern_bytes(150'000, 2);
    for (std::size_t done = 0; done < bytes.size();) {
      const ssize_t wrote = ::write(fd, bytes.data() + done, std::min<std::size_t>(9000, bytes.size() - done));
      if (wrote <= 0) break;
      done += static_cast<std::size_t>(wrote);
    }
    ::close(fd);
  });
  writer.add_data_stream("streamed", pipe_fds[0], "a pipe");
  feeder.join();
  ::close(pipe_fds[0]);
  writer.publish();
  return path;
}

TEST(FlatBuffersWrapper, HoldsWhatTheCapnProtoFormHolds) {
  TempDir dir;
  const Wrapper capnp = Wrapper::open(write_wrapper(dir, "c.mwr", WrapperFormat::kCapnProto));
  const Wrapper flat = Wrapper::open(write_wrapper(dir, "f.mwr", WrapperFormat::kFlatBuffers));
  EXPECT_EQ(capnp.format(), WrapperFormat::kCapnProto);
  EXPECT_EQ(flat.format(), WrapperFormat::kFlatBuffers);
  EXPECT_EQ(flat.format_version(), kFlatWrapperFormatVersion);
  EXPECT_TRUE(flat.metadata_checked());
  EXPECT_EQ(flat.producer(), "mapwright");
  EXPECT_TRUE(capnp.metadata().empty());
  EXPECT_FALSE(flat.metadata().empty());
  ASSERT_EQ(flat.entries().size(), capnp.entries().size());
  for (std::size_t i = 0; i < flat.entries().size(); ++i) {
    const WrapperEntry& a = capnp.entries()[i];
    const WrapperEntry& b = flat.entries()[i];
    SCOPED_TRACE(b.name);
    EXPECT_EQ(a.name, b.name);
    EXPECT_EQ(a.kind, b.kind);
    EXPECT_EQ(a.size, b.size);
    EXPECT_EQ(a.digest, b.digest);
    EXPECT_EQ(a.dependencies, b.dependencies);
    EXPECT_EQ(test::joined(a), test::joined(b));
    // One run per entry, page-aligned, however many chunks the writer cut it in.
    EXPECT_EQ(b.chunks.size(), b.size == 0 ? 0u : 1u);
    EXPECT_EQ(b.offset % kWrapperAlignment, 0u);
    EXPECT_TRUE(flat.verify_entry(b));
  }
  EXPECT_GT(capnp.entry("blob").chunks.size(), 1u);
  flat.verify();
  const LoadedLibraries loaded = flat.load_all();
  EXPECT_EQ(loaded.at("liba").function<int()>("fixture_answer")(), 42);
  EXPECT_EQ(flat.image("blob").size(), 300'000u);
}

TEST(FlatBuffersWrapper, CompressedEntriesAndASealedImageOfTheWrapper) {
  TempDir dir;
  WrapperWriterOptions options;
  options.compression.method = EntryCompression::kZstd;
  options.compression.frame_bytes = 16 << 10;
  const fs::path path = write_wrapper(dir, "z.mwr", WrapperFormat::kFlatBuffers, options);
  const Wrapper plain = Wrapper::open(write_wrapper(dir, "p.mwr", WrapperFormat::kFlatBuffers));
  const Wrapper flat = Wrapper::open(path);
  flat.verify();
  for (const WrapperEntry& entry : flat.entries()) {
    SCOPED_TRACE(entry.name);
    EXPECT_EQ(entry.compression, entry.size == 0 ? EntryCompression::kZstd : EntryCompression::kZstd);
    EXPECT_EQ(entry.digest, plain.entry(entry.name).digest);
    if (entry.size != 0) {
      const SealedImage image = flat.image(entry.name);
      EXPECT_EQ(std::vector<std::byte>(image.map().begin(), image.map().end()),
                test::joined(plain.entry(entry.name)));
    }
  }
  const LoadedLibraries loaded = flat.load_with_dependencies("libb");
  EXPECT_EQ(loaded.size(), 2u);
  // The same file as a sealed image: the same checks.
  RegionOptions region_options;
  Region region = Region::memfd("flat wrapper", region_options);
  const std::vector<std::byte> bytes = test::read_file_bytes(path);
  region.ensure(bytes.size());
  std::memcpy(region.data(), bytes.data(), bytes.size());
  region.finish(bytes.size());
  const SealedImage sealed = std::move(region).seal();
  const Wrapper from_image = Wrapper::open(sealed);
  EXPECT_EQ(from_image.format(), WrapperFormat::kFlatBuffers);
  from_image.verify();
}

TEST(FlatBuffersWrapper, AppendedToAnotherFileIsFoundFromItsEnd) {
  TempDir dir;
  const fs::path prefix = dir / "program";
  test::write_file(prefix, pattern_bytes(5000, 9));
  WrapperWriterOptions options;
  options.prefix = prefix;
  const fs::path path = write_wrapper(dir, "joined", WrapperFormat::kFlatBuffers, options);
  const Wrapper found = Wrapper::open_embedded(path);
  EXPECT_EQ(found.offset(), 8192u);
  EXPECT_EQ(found.format(), WrapperFormat::kFlatBuffers);
  found.verify();
  EXPECT_EQ(found.entry("blob").offset % 4096, 0u);
  expect_error([&] { (void)Wrapper::open(path); }, EINVAL,
               {"not a wrapper", "starts at byte 8192", "open_embedded"});
}

// ---- flatc, both ways ---------------------------------------------------------------------

TEST(FlatBuffersWrapper, FlatcDecodesTheMetadata) {
  TempDir dir;
  const Wrapper flat = Wrapper::open(write_wrapper(dir, "f.mwr", WrapperFormat::kFlatBuffers));
  test::write_file(dir / "meta.bin", flat.metadata());
  const auto decoded = cli_test::run_program(
      MAPWRIGHT_FLATC, {"--json", "--raw-binary", "--strict-json", "-o", dir.path().string(),
                        kSchema, "--", (dir / "meta.bin").string()});
  ASSERT_TRUE(decoded.exited && decoded.exit_code == 0) << decoded.describe();
  const std::string json = cli_test::read_file(dir / "meta.json");
  for (const char* part : {"\"format_version\": 1", "\"name\": \"libb\"", "\"dependencies\": [",
                           "\"liba\"", "\"kind\": \"Data\"", "\"size\": 300000", "\"offset\": "}) {
    EXPECT_NE(json.find(part), std::string::npos) << part << " not in:\n" << json;
  }
}

// A wrapper around `metadata` (detail::flat_wrapper_around), chunks at their offsets.
std::vector<std::byte> craft(const std::vector<std::pair<std::uint64_t, std::vector<std::byte>>>& chunks,
                             std::uint64_t metadata_at, const std::vector<std::byte>& metadata) {
  std::vector<detail::CraftedChunk> crafted;
  for (const auto& [offset, bytes] : chunks) crafted.push_back({offset, bytes});
  return detail::flat_wrapper_around(crafted, metadata_at, metadata);
}

std::string digest_json(const Digest& digest) {
  std::string out;
  for (const std::byte b : digest.bytes) out += (out.empty() ? "" : ", ") + std::to_string(static_cast<int>(b));
  return "[" + out + "]";
}

TEST(FlatBuffersWrapper, MetadataThatFlatcEncodedIsRead) {
  TempDir dir;
  const std::vector<std::byte> chunk = pattern_bytes(5000, 4);
  const std::string json =
      "{ \"format_version\": 1, \"producer\": \"flatc by hand\", \"entries\": [ { \"name\": "
      "\"greeting\", \"kind\": \"Data\", \"size\": 5000, \"digest\": " +
      digest_json(digest_of(chunk)) + ", \"chunks\": [ { \"offset\": 4096, \"size\": 5000 } ] } ] }";
  cli_test::write_file(dir / "meta.json", json);
  const auto encoded = cli_test::run_program(
      MAPWRIGHT_FLATC, {"--binary", "-o", dir.path().string(), kSchema, (dir / "meta.json").string()});
  ASSERT_TRUE(encoded.exited && encoded.exit_code == 0) << encoded.describe();
  const std::vector<std::byte> metadata = test::read_file_bytes(dir / "meta.mwrmeta");
  test::write_file(dir / "hand.mwr", craft({{4096, chunk}}, 4096 + 5000, metadata));
  const Wrapper wrapper = Wrapper::open(dir / "hand.mwr");
  EXPECT_EQ(wrapper.producer(), "flatc by hand");
  EXPECT_EQ(test::joined(wrapper.entry("greeting")), chunk);
  wrapper.verify();
}

// FlatBuffers 2 has 32-bit offsets, but the chunks are outside the buffer, addressed with
// 64-bit ones: an entry 5 GiB into a (sparse) wrapper is found and read.
TEST(FlatBuffersWrapper, ChunksPastFourGiBAreAddressed) {
  TempDir dir;
  const std::uint64_t far = 5ull << 30;
  const std::vector<std::byte> chunk = pattern_bytes(8192, 5);
  detail::RawEntry entry;
  entry.name = "far";
  entry.kind = 1;
  entry.size = chunk.size();
  const Digest digest = digest_of(chunk);
  entry.digest.assign(digest.bytes.begin(), digest.bytes.end());
  entry.chunks.push_back({far, chunk.size()});
  const std::vector<std::byte> metadata = detail::encode_flat_metadata("test", {entry});
  // Written sparse: the header, the chunk at 5 GiB, the metadata and trailer after it.
  const fs::path path = dir / "far.mwr";
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  const auto header = detail::encode_flat_header();
  const std::uint64_t m = far + chunk.size();
  detail::FlatTrailer trailer;
  trailer.wrapper_size = m + metadata.size() + kFlatWrapperTrailerBytes;
  trailer.metadata_offset = m;
  trailer.metadata_size = metadata.size();
  trailer.metadata_digest = detail::flat_metadata_digest(header, metadata, trailer.wrapper_size, m);
  const auto tail = detail::encode_flat_trailer(trailer);
  ASSERT_EQ(::pwrite(fd, header.data(), header.size(), 0), static_cast<ssize_t>(header.size()));
  ASSERT_EQ(::pwrite(fd, chunk.data(), chunk.size(), static_cast<off_t>(far)), static_cast<ssize_t>(chunk.size()));
  ASSERT_EQ(::pwrite(fd, metadata.data(), metadata.size(), static_cast<off_t>(m)),
            static_cast<ssize_t>(metadata.size()));
  ASSERT_EQ(::pwrite(fd, tail.data(), tail.size(), static_cast<off_t>(m + metadata.size())),
            static_cast<ssize_t>(tail.size()));
  ::close(fd);
  const Wrapper wrapper = Wrapper::open(path);
  EXPECT_EQ(wrapper.size(), trailer.wrapper_size);
  EXPECT_EQ(wrapper.entry("far").offset, far);
  EXPECT_EQ(test::joined(wrapper.entry("far")), chunk);
  EXPECT_TRUE(wrapper.verify_entry(wrapper.entry("far")));
}

// ---- hostile metadata: a valid digest over lying contents ---------------------------------

detail::RawEntry data_entry(const std::string& name, std::uint64_t offset, const std::vector<std::byte>& bytes) {
  detail::RawEntry entry;
  entry.name = name;
  entry.kind = 1;
  entry.size = bytes.size();
  const Digest digest = digest_of(bytes);
  entry.digest.assign(digest.bytes.begin(), digest.bytes.end());
  entry.chunks.push_back({offset, bytes.size()});
  return entry;
}

void expect_refused(const std::vector<std::byte>& file, int code,
                    std::initializer_list<std::string> parts) {
  TempDir dir;
  test::write_file(dir / "hostile.mwr", file);
  expect_error([&] { Wrapper::open(dir / "hostile.mwr", {.name = "hostile"}).verify(); }, code, parts);
}

TEST(FlatBuffersWrapper, LyingMetadataIsRefusedByName) {
  const std::vector<std::byte> bytes = pattern_bytes(4096, 6);
  const auto one = [&](detail::RawEntry entry, std::uint64_t metadata_at = 8192,
                       const std::string& producer = "x") {
    // Metadata placed over the chunk's room: the chunk's bytes are not written there.
    std::vector<std::pair<std::uint64_t, std::vector<std::byte>>> chunks;
    if (metadata_at >= 4096 + bytes.size()) chunks.push_back({4096, bytes});
    return craft(chunks, metadata_at, detail::encode_flat_metadata(producer, {entry}));
  };
  // Sanity: the honest one opens.
  {
    TempDir dir;
    test::write_file(dir / "ok.mwr", one(data_entry("a", 4096, bytes)));
    Wrapper::open(dir / "ok.mwr").verify();
  }
  expect_refused(one(data_entry("a", 0, bytes)), EINVAL, {"chunk 0 at byte 0 is not between the header"});
  expect_refused(one(data_entry("a", 4100, bytes)), EINVAL, {"not 4096-byte aligned"});
  // A chunk that runs into the metadata (a long producer keeps it inside the file).
  expect_refused(one(data_entry("a", 4096, bytes), 4096 + 2048, std::string(5000, 'p')), EINVAL,
                 {"chunk 0 at byte 4096 is not between the header (16 bytes) and the metadata (at byte 6144)"});
  expect_refused(one(data_entry("a", 1ull << 40, bytes)), EINVAL, {"lies outside the wrapper"});
  auto kind = data_entry("a", 4096, bytes);
  kind.kind = 7;
  expect_refused(one(kind), EINVAL, {"entry #0 'a': unknown kind 7"});
  auto digest = data_entry("a", 4096, bytes);
  digest.digest.pop_back();
  expect_refused(one(digest), EINVAL, {"the digest has 15 bytes"});
  auto size = data_entry("a", 4096, bytes);
  size.size = 4095;
  expect_refused(one(size), EINVAL, {"its size says 4095 bytes but its chunks hold 4096"});
  auto dependency = data_entry("a", 4096, bytes);
  dependency.kind = 0;
  dependency.dependencies = {"nobody"};
  expect_refused(one(dependency), EINVAL, {"nobody"});
  auto frames = data_entry("a", 4096, bytes);
  frames.compression = 1;
  frames.frame_size = 4096;
  frames.has_frame_ends = true;
  frames.frame_ends = {5000};
  expect_refused(one(frames), EINVAL, {"its zstd frames do not fit"});
  auto empty_name = data_entry("", 4096, bytes);
  expect_refused(one(empty_name), EINVAL, {"the name is empty"});
  // Two entries over the same bytes.
  expect_refused(craft({{4096, bytes}}, 8192,
                       detail::encode_flat_metadata("x", {data_entry("a", 4096, bytes),
                                                          data_entry("b", 4096, bytes)})),
                 EINVAL, {"its bytes overlap those of entry #0 'a'"});
  // Bytes that are no FlatBuffer, hashed as if they were.
  expect_refused(craft({{4096, bytes}}, 8192, pattern_bytes(64, 7)), EINVAL,
                 {"the metadata is not a valid wrapper FlatBuffer"});
  std::vector<std::byte> wrong_id = detail::encode_flat_metadata("x", {data_entry("a", 4096, bytes)});
  wrong_id[4] = std::byte{'X'};
  expect_refused(craft({{4096, bytes}}, 8192, wrong_id), EINVAL, {"file identifier \"MWRP\""});
  // A padding byte that is not zero: found by verify(), not open().
  std::vector<std::byte> padded = one(data_entry("a", 4096, bytes));
  padded[100] = std::byte{1};
  expect_refused(padded, EBADMSG, {"byte 100, before entry #0 'a' chunk 0, is not zero"});
}

TEST(FlatBuffersWrapper, DamagedEndsAndHeadersAreRefusedByName) {
  const std::vector<std::byte> bytes = pattern_bytes(4096, 6);
  const std::vector<std::byte> good =
      craft({{4096, bytes}}, 8192, detail::encode_flat_metadata("x", {data_entry("a", 4096, bytes)}));
  std::vector<std::byte> truncated(good.begin(), good.end() - 1);
  expect_refused(truncated, EBADMSG, {"no valid trailer at the end"});
  std::vector<std::byte> appended = good;
  appended.push_back(std::byte{0});
  expect_refused(appended, EBADMSG,
                 {"(1 bytes after the wrapper, which ends at byte " + std::to_string(good.size()) + ")"});
  std::vector<std::byte> version = good;
  version[8] = std::byte{2};
  expect_refused(version, EINVAL, {"FlatBuffers form version 2 is not supported"});
  std::vector<std::byte> reserved = good;
  reserved[13] = std::byte{1};
  expect_refused(reserved, EBADMSG, {"the header's reserved bytes are not zero"});
  std::vector<std::byte> digest = good;
  digest[good.size() - 20] ^= std::byte{1};
  expect_refused(digest, EBADMSG, {"the metadata digest does not match"});
  std::vector<std::byte> metadata = good;
  metadata[8192 + 20] ^= std::byte{1};
  expect_refused(metadata, EBADMSG, {"the metadata digest does not match"});
  expect_refused(std::vector<std::byte>(good.begin(), good.begin() + 40), EBADMSG, {"truncated"});
}

// ---- a file that cannot grow ---------------------------------------------------------------

// RLIMIT_FSIZE: an add that does not fit is EFBIG and gives its room back (the next entry
// starts where it would have); publish() that cannot back its metadata writes nothing and can
// be called again once there is room.
TEST(FlatBuffersWrapper, FileSizeLimitRefusesAddsAndPublishWithoutDamage) {
  TempDir dir;
  const fs::path path = dir / "limited.mwr";
  constexpr int kNamed = 300;  // empty entries with long names: some 900 KiB of metadata
  const auto long_name = [](int i) { return std::to_string(i) + std::string(3000, 'n'); };
  const auto result = test::run_in_child([&] {
    rlimit limit{1 << 20, RLIM_INFINITY};
    CHILD_CHECK(::setrlimit(RLIMIT_FSIZE, &limit) == 0);
    WrapperWriterOptions options;
    options.format = WrapperFormat::kFlatBuffers;
    options.durable = false;
    WrapperWriter writer(path, options);
    writer.add_data("first", pattern_bytes(600 << 10, 1));
    try {
      writer.add_data("too much", pattern_bytes(600 << 10, 2));
      CHILD_CHECK_MSG(false, "the second add fitted");
    } catch (const Error& e) {
      CHILD_CHECK_MSG(e.error() == EFBIG, e.what());
      CHILD_CHECK_MSG(std::string(e.what()).find("entry 'too much'") != std::string::npos, e.what());
    }
    writer.add_data("fits", pattern_bytes(100 << 10, 3));
    for (int i = 0; i < kNamed; ++i) writer.add_data(long_name(i), std::span<const std::byte>());
    for (int attempt = 0; attempt < 2; ++attempt) {
      try {
        writer.publish();
        CHILD_CHECK_MSG(false, "publish fitted under the limit");
      } catch (const Error& e) {
        CHILD_CHECK_MSG(e.error() == EFBIG, e.what());
        CHILD_CHECK_MSG(std::string(e.what()).find("metadata") != std::string::npos, e.what());
      }
    }
    limit.rlim_cur = RLIM_INFINITY;
    CHILD_CHECK(::setrlimit(RLIMIT_FSIZE, &limit) == 0);
    writer.publish();
  });
  test::expect_clean_exit(result);
  const Wrapper wrapper = Wrapper::open(path);
  ASSERT_EQ(wrapper.entries().size(), 2u + kNamed);
  EXPECT_EQ(test::joined(wrapper.entry("first")), pattern_bytes(600 << 10, 1));
  EXPECT_EQ(test::joined(wrapper.entry("fits")), pattern_bytes(100 << 10, 3));
  EXPECT_EQ(wrapper.entries().back().name, long_name(kNamed - 1));
  // "fits" went right after "first", where the refused entry had been.
  const WrapperEntry& first = wrapper.entry("first");
  EXPECT_EQ(wrapper.entry("fits").offset, (first.offset + first.size + 4095) / 4096 * 4096);
  wrapper.verify();
}

}  // namespace
}  // namespace mapwright
