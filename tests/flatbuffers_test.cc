// FlatBuffers built in place (MappedFlatBufferBuilder) and read back (MappedFlatBuffer):
// byte identity with the stock builder, interop with the real flatc both ways, growth that
// never moves data, a full disk and RLIMIT_FSIZE at the builder call that needed room, the
// 2 GiB limit, and the reader's refusals.
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "child.h"
#include "mapwright/flatbuffers.h"
#include "region_helpers.h"
#include "sanitizers.h"
#include "test_generated.h"

namespace mapwright {
namespace {

using test::error_from;
namespace fb = ::mapwright::test::fb;

constexpr std::uint64_t kKiB = 1024;
constexpr std::uint64_t kMiB = 1024 * kKiB;
constexpr std::uint64_t kGiB = 1024 * kMiB;

std::uint8_t pattern(std::uint64_t i) { return static_cast<std::uint8_t>(i * 131 + (i >> 9)); }

// The same calls on any builder, stock or mapped: `items` tables with strings and tag lists,
// a page-aligned blob of `blob_bytes` (PreAlign + CreateUninitializedVector, what
// aligned_bytes() does), numbers, shared strings, a child catalog. Returns the root.
flatbuffers::Offset<fb::Catalog> build_catalog(flatbuffers::FlatBufferBuilder& fbb, int items,
                                               std::uint64_t blob_bytes) {
  std::vector<flatbuffers::Offset<fb::Item>> offsets;
  for (int i = 0; i < items; ++i) {
    const std::string name = "item-" + std::to_string(i) + std::string(i % 37, 'x');
    std::vector<flatbuffers::Offset<flatbuffers::String>> tags;
    for (int t = 0; t < i % 4; ++t) tags.push_back(fbb.CreateSharedString("tag" + std::to_string(t)));
    offsets.push_back(fb::CreateItem(fbb, fbb.CreateString(name), static_cast<std::uint64_t>(i) * 7919,
                                     tags.empty() ? 0 : fbb.CreateVector(tags)));
  }
  const auto items_vector = fbb.CreateVector(offsets);
  std::uint8_t* blob = nullptr;
  fbb.PreAlign(blob_bytes, 4096);
  const auto blob_vector = fbb.CreateUninitializedVector(blob_bytes, &blob);
  for (std::uint64_t i = 0; i < blob_bytes; ++i) blob[i] = pattern(i);
  std::vector<std::uint32_t> numbers(1000);
  for (std::uint32_t i = 0; i < numbers.size(); ++i) numbers[i] = i * i;
  const auto child = fb::CreateCatalog(fbb, fbb.CreateString("child"));
  return fb::CreateCatalog(fbb, fbb.CreateString("catalog"), items_vector, blob_vector,
                           fbb.CreateVector(numbers), child);
}

// What a catalog from build_catalog() must read as.
void expect_catalog(const fb::Catalog* catalog, int items, std::uint64_t blob_bytes) {
  ASSERT_NE(catalog, nullptr);
  EXPECT_EQ(catalog->title()->str(), "catalog");
  ASSERT_EQ(catalog->items()->size(), static_cast<unsigned>(items));
  for (int i = 0; i < items; i += std::max(1, items / 50)) {
    const fb::Item* item = catalog->items()->Get(i);
    EXPECT_EQ(item->name()->str(), "item-" + std::to_string(i) + std::string(i % 37, 'x'));
    EXPECT_EQ(item->value(), static_cast<std::uint64_t>(i) * 7919);
  }
  ASSERT_EQ(catalog->blob()->size(), blob_bytes);
  for (std::uint64_t i = 0; i < blob_bytes; i += 4093) {
    ASSERT_EQ(catalog->blob()->Get(i), pattern(i)) << i;
  }
  EXPECT_EQ(catalog->numbers()->Get(999), 999u * 999u);
  EXPECT_EQ(catalog->child()->title()->str(), "child");
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::string stock_bytes(int items, std::uint64_t blob_bytes) {
  flatbuffers::FlatBufferBuilder stock;
  stock.Finish(build_catalog(stock, items, blob_bytes), fb::CatalogIdentifier());
  return std::string(reinterpret_cast<const char*>(stock.GetBufferPointer()), stock.GetSize());
}

std::string file_bytes(int fd) {
  struct stat st {};
  EXPECT_EQ(::fstat(fd, &st), 0);
  std::string bytes(static_cast<std::size_t>(st.st_size), '\0');
  EXPECT_EQ(::pread(fd, bytes.data(), bytes.size(), 0), static_cast<ssize_t>(bytes.size()));
  return bytes;
}

// Enough calls for many growths from the 64 KiB first block: about 4.5 MiB.
constexpr int kItems = 30'000;
constexpr std::uint64_t kBlob = 3 * kMiB + 123;

TEST(FlatBuffersBuilder, IsByteIdenticalToTheStockBuilderOnAMemfd) {
  MappedFlatBufferBuilder builder(FlatBufferTarget::memfd("catalog"));
  const FlatBufferFinish done =
      builder.finish(build_catalog(builder, kItems, kBlob), fb::CatalogIdentifier());
  const std::string expected = stock_bytes(kItems, kBlob);
  EXPECT_EQ(done.size, expected.size());
  EXPECT_EQ(done.method, FlatBufferFinish::Method::kCopy);  // no collapse on tmpfs
  EXPECT_EQ(file_bytes(builder.fd()), expected);
  EXPECT_EQ(std::memcmp(builder.data(), expected.data(), expected.size()), 0);
  const MappedFlatBufferStats stats = builder.stats();
  EXPECT_GE(stats.growths, 5u);
  EXPECT_EQ(stats.data_bytes_moved, 0u);
  EXPECT_EQ(stats.failures, 0u);

  const SealedImage image = builder.seal();
  const MappedFlatBuffer reader(image);
  expect_catalog(reader.root<fb::Catalog>(fb::CatalogIdentifier()), kItems, kBlob);
}

TEST(FlatBuffersBuilder, IsByteIdenticalOnADiskFileAndCollapsesAPageAlignedBuffer) {
  test::DiskDir dir;
  ASSERT_TRUE(dir.ok());
  const auto path = dir / "catalog.mwft";
  MappedFlatBufferBuilder builder(FlatBufferTarget::file(path));
  // The page-aligned blob makes the whole buffer a multiple of 4096 bytes (PreAlign), so its
  // start is on a block boundary and ext4 or xfs take the front off without a copy.
  const FlatBufferFinish done =
      builder.finish(build_catalog(builder, kItems, kBlob), fb::CatalogIdentifier());
  EXPECT_EQ(done.size % 4096, 0u);
  struct statfs fs {};
  ASSERT_EQ(::statfs(dir.path().c_str(), &fs), 0);
  constexpr long kExt4 = 0xEF53, kXfs = 0x58465342;  // the filesystems with COLLAPSE_RANGE
  if (fs.f_type == kExt4 || fs.f_type == kXfs) {
    EXPECT_EQ(done.method, FlatBufferFinish::Method::kCollapse);
    EXPECT_EQ(done.bytes_copied, 0u);
  } else {
    // Elsewhere the copy must still be exact.
    EXPECT_EQ(done.method, FlatBufferFinish::Method::kCopy);
    EXPECT_EQ(done.bytes_copied, done.size);
  }
  builder.sync();
  const std::string expected = stock_bytes(kItems, kBlob);
  EXPECT_EQ(read_file(path), expected);
  const MappedFlatBuffer reader(path);
  expect_catalog(reader.root<fb::Catalog>(fb::CatalogIdentifier()), kItems, kBlob);
  // The blob is page-aligned in the file.
  const auto* catalog = reader.root<fb::Catalog>();
  EXPECT_EQ((catalog->blob()->data() - reader.data()) % 4096, 0);
}

TEST(FlatBuffersBuilder, CopiesABufferThatDoesNotStartOnABlockBoundary) {
  test::DiskDir dir;
  ASSERT_TRUE(dir.ok());
  const auto path = dir / "odd.mwft";
  MappedFlatBufferBuilder builder(FlatBufferTarget::file(path));
  flatbuffers::FlatBufferBuilder stock;
  for (auto* fbb : {static_cast<flatbuffers::FlatBufferBuilder*>(&builder), &stock}) {
    std::vector<flatbuffers::Offset<fb::Item>> items;
    for (int i = 0; i < 5000; ++i) items.push_back(fb::CreateItem(*fbb, fbb->CreateString("odd"), i));
    fbb->Finish(fb::CreateCatalog(*fbb, fbb->CreateString("odd"), fbb->CreateVector(items)));
  }
  ASSERT_NE(stock.GetSize() % 4096, 0u);
  const FlatBufferFinish done = builder.finish();
  EXPECT_EQ(done.method, FlatBufferFinish::Method::kCopy);
  EXPECT_EQ(read_file(path),
            std::string(reinterpret_cast<const char*>(stock.GetBufferPointer()), stock.GetSize()));
}

TEST(FlatBuffersBuilder, StagedAppearsOnlyWhenPublished) {
  test::DiskDir dir;
  ASSERT_TRUE(dir.ok());
  const auto path = dir / "staged.mwft";
  {
    std::ofstream(path) << "old";
  }
  MappedFlatBufferBuilder builder(FlatBufferTarget::staged(path));
  builder.finish(build_catalog(builder, 100, 10'000), fb::CatalogIdentifier());
  EXPECT_EQ(read_file(path), "old");
  builder.publish();
  EXPECT_EQ(read_file(path), stock_bytes(100, 10'000));
}

// flatc, the real tool, with the schema: what the builder wrote decodes to the same JSON as
// what the stock builder wrote; and a buffer flatc encoded reads through MappedFlatBuffer.
int run(const std::string& command) { return std::system(command.c_str()); }

TEST(FlatBuffersInterop, FlatcDecodesWhatTheBuilderWrote) {
  test::TempDir dir;
  const auto path = dir / "built.mwft";
  {
    MappedFlatBufferBuilder builder(FlatBufferTarget::file(path));
    builder.finish(build_catalog(builder, 40, 64), fb::CatalogIdentifier());
  }
  const std::string schema = std::string(MAPWRIGHT_TEST_SCHEMA_DIR) + "/test.fbs";
  ASSERT_EQ(run(std::string(MAPWRIGHT_FLATC) + " --json --strict-json --raw-binary -o " +
                dir.path().string() + " " + schema + " -- " + path.string()),
            0);
  const std::string json = read_file(dir / "built.json");
  EXPECT_NE(json.find("\"title\": \"catalog\""), std::string::npos) << json.substr(0, 400);
  EXPECT_NE(json.find("\"name\": \"item-39xx"), std::string::npos);
  EXPECT_NE(json.find("\"value\": 308841"), std::string::npos);  // 39 * 7919
  EXPECT_NE(json.find("\"tag2\""), std::string::npos);
  EXPECT_NE(json.find("\"title\": \"child\""), std::string::npos);
}

TEST(FlatBuffersInterop, ReadsWhatFlatcEncoded) {
  test::TempDir dir;
  const auto json = dir / "input.json";
  std::ofstream(json) << R"({"title": "from flatc", "items": [{"name": "a", "value": 1},
    {"name": "b", "value": 18446744073709551615, "tags": ["x", "y"]}],
    "blob": [1, 2, 3], "numbers": [7, 8], "child": {"title": "inner"}})";
  const std::string schema = std::string(MAPWRIGHT_TEST_SCHEMA_DIR) + "/test.fbs";
  ASSERT_EQ(run(std::string(MAPWRIGHT_FLATC) + " --binary -o " + dir.path().string() + " " +
                schema + " " + json.string()),
            0);
  const MappedFlatBuffer reader(dir / "input.mwft");
  const fb::Catalog* catalog = reader.root<fb::Catalog>(fb::CatalogIdentifier());
  EXPECT_EQ(catalog->title()->str(), "from flatc");
  ASSERT_EQ(catalog->items()->size(), 2u);
  EXPECT_EQ(catalog->items()->Get(1)->value(), UINT64_MAX);
  EXPECT_EQ(catalog->items()->Get(1)->tags()->Get(1)->str(), "y");
  EXPECT_EQ(catalog->blob()->size(), 3u);
  EXPECT_EQ(catalog->child()->title()->str(), "inner");
}

TEST(FlatBuffersReader, ReadsARangeOfAnFd) {
  test::TempDir dir;
  const auto path = dir / "embedded.bin";
  const std::string buffer = stock_bytes(10, 100);
  {
    std::ofstream out(path, std::ios::binary);
    out << std::string(4096, 'E') << buffer << "trailing bytes";
  }
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  const MappedFlatBuffer reader(fd, 4096, buffer.size());
  ::close(fd);  // the view does not need it
  EXPECT_EQ(reader.size(), buffer.size());
  expect_catalog(reader.root<fb::Catalog>(fb::CatalogIdentifier()), 10, 100);
  EXPECT_EQ(reader.name(), "fd " + std::to_string(fd) + " at offset 4096");
}

TEST(FlatBuffersReader, RefusesBadInputsByName) {
  test::TempDir dir;
  const auto write = [&](const std::string& name, const std::string& bytes) {
    const auto path = dir / name;
    std::ofstream(path, std::ios::binary) << bytes;
    return path;
  };
  const auto refusal = [](const auto& make) {
    const std::optional<Error> error = error_from(make);
    EXPECT_TRUE(error.has_value());
    return error ? std::string(error->what()) + " errno " + std::to_string(error->code().value()) : "";
  };
  const std::string good = stock_bytes(20, 50);

  const auto empty = write("empty", "");
  EXPECT_NE(refusal([&] { MappedFlatBuffer r(empty); }).find("empty file"), std::string::npos);

  // Corrupt (arbitrary flips are flatbuffer_fuzz's work): a root offset far past the end.
  std::string corrupt = good;
  corrupt[0] = static_cast<char>(0xff);
  const auto corrupt_path = write("corrupt", corrupt);
  const std::string why =
      refusal([&] { MappedFlatBuffer(corrupt_path).root<fb::Catalog>(); });
  EXPECT_NE(why.find("reading FlatBuffer"), std::string::npos) << why;
  EXPECT_NE(why.find(corrupt_path.string()), std::string::npos) << why;
  EXPECT_NE(why.find("Verifier refused"), std::string::npos) << why;

  const auto truncated = write("truncated", good.substr(0, good.size() / 2));
  EXPECT_NE(refusal([&] { MappedFlatBuffer(truncated).root<fb::Catalog>(); }).find("Verifier"),
            std::string::npos);

  const auto good_path = write("good", good);
  const std::string wrong_id =
      refusal([&] { MappedFlatBuffer(good_path).root<fb::Catalog>("ABCD"); });
  EXPECT_NE(wrong_id.find("not a \"ABCD\" buffer: its file identifier is \"MWFT\""),
            std::string::npos)
      << wrong_id;

  const int fd = ::open(good_path.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  EXPECT_NE(refusal([&] { MappedFlatBuffer r(fd, 4, 0); }).find("not a multiple of 8"),
            std::string::npos);
  EXPECT_NE(refusal([&] { MappedFlatBuffer r(fd, 0, good.size() + 1); }).find("runs past the end"),
            std::string::npos);
  ::close(fd);

  // More than FlatBuffers can address: refused before its Verifier (which would assert).
  const auto huge = dir / "huge";
  {
    const int h = ::open(huge.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    ASSERT_GE(h, 0);
    ASSERT_EQ(::ftruncate(h, static_cast<off_t>(3 * kGiB)), 0);  // sparse
    ::close(h);
  }
  EXPECT_NE(refusal([&] { MappedFlatBuffer r(huge); }).find("at most 2 GiB"), std::string::npos);

  EXPECT_NE(refusal([&] { MappedFlatBuffer r(dir / "missing"); }).find("No such file"),
            std::string::npos);

  // Special files: refused at once, never waited on (a FIFO with no writer) or misread.
  const auto fifo = dir / "fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_NE(refusal([&] { MappedFlatBuffer r(fifo); }).find("not a regular file: a FIFO"),
            std::string::npos);
  EXPECT_NE(refusal([&] { MappedFlatBuffer r("/proc/self/status"); }).find("/proc or /sys"),
            std::string::npos);
  EXPECT_NE(refusal([&] { MappedFlatBuffer r("/dev/null"); }).find("character device"),
            std::string::npos);
  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  EXPECT_NE(refusal([&] { MappedFlatBuffer r(pipe_fds[0], 0, 0); }).find("not a regular file"),
            std::string::npos);
  ::close(pipe_fds[0]);
  ::close(pipe_fds[1]);
  // And as a builder's target: nothing written to it.
  EXPECT_NE(refusal([&] { MappedFlatBufferBuilder b(FlatBufferTarget::file(fifo)); })
                .find("not a regular file: a FIFO"),
            std::string::npos);
}

TEST(FlatBuffersReader, SizesTheTableLimitToTheBuffer) {
  // 1.2 million tables: FlatBuffers' default Verifier (1,000,000 tables) refuses the buffer,
  // the reader's, sized to it, does not; an explicit limit is honoured.
  flatbuffers::FlatBufferBuilder stock;
  std::vector<flatbuffers::Offset<fb::Item>> items;
  items.reserve(1'200'000);
  for (int i = 0; i < 1'200'000; ++i) items.push_back(fb::CreateItem(stock, 0, i));
  stock.Finish(fb::CreateCatalog(stock, 0, stock.CreateVector(items)));
  flatbuffers::Verifier plain(stock.GetBufferPointer(), stock.GetSize());
  EXPECT_FALSE(plain.VerifyBuffer<fb::Catalog>(nullptr));

  Region region = Region::memfd("tables");
  region.ensure(stock.GetSize());
  std::memcpy(region.data(), stock.GetBufferPointer(), stock.GetSize());
  region.finish(stock.GetSize());
  const SealedImage image = std::move(region).seal();
  const MappedFlatBuffer reader(image);
  EXPECT_EQ(reader.root<fb::Catalog>()->items()->size(), 1'200'000u);
  FlatBufferReaderOptions strict;
  strict.max_tables = 1000;
  EXPECT_TRUE(error_from([&] { reader.root<fb::Catalog>(nullptr, strict); }).has_value());
}

// The calls of the failure tests: top-level objects only (strings, vectors, aligned bytes),
// so that a call that failed can be compared with the stock builder's state before it.
std::vector<std::function<void(flatbuffers::FlatBufferBuilder&)>> growing_calls() {
  std::vector<std::function<void(flatbuffers::FlatBufferBuilder&)>> calls;
  for (int i = 0; i < 60; ++i) {
    const std::uint64_t size = 3000 + static_cast<std::uint64_t>(i) * 2371 % 90'000;
    switch (i % 4) {
      case 0:
        calls.push_back([size](flatbuffers::FlatBufferBuilder& fbb) {
          fbb.CreateString(std::string(size, 's'));
        });
        break;
      case 1:
        calls.push_back([size](flatbuffers::FlatBufferBuilder& fbb) {
          std::vector<std::uint32_t> v(size / 4, 7);
          fbb.CreateVector(v);
        });
        break;
      case 2:
        calls.push_back([size](flatbuffers::FlatBufferBuilder& fbb) {
          std::uint8_t* data = nullptr;
          fbb.PreAlign(size, 4096);
          fbb.CreateUninitializedVector(size, &data);
          std::memset(data, 0x5a, size);
        });
        break;
      default:
        calls.push_back([i](flatbuffers::FlatBufferBuilder& fbb) {
          fb::CreateItem(fbb, fbb.CreateString("t"), static_cast<std::uint64_t>(i));
        });
        break;
    }
  }
  return calls;
}

// Runs the calls on `builder` and a stock builder in step until one of the builder's throws;
// returns its Error and checks that the bytes built before the failing call are intact.
std::optional<Error> run_until_failure(MappedFlatBufferBuilder& builder, std::size_t* failed_at) {
  flatbuffers::FlatBufferBuilder stock;
  const auto calls = growing_calls();
  for (std::size_t i = 0; i < calls.size(); ++i) {
    const std::optional<Error> error = error_from([&] { calls[i](builder); });
    if (error) {
      *failed_at = i;
      // The data at the top never moved and nothing of it was lost.
      EXPECT_GE(builder.GetSize(), stock.GetSize());
      if (stock.GetSize() != 0) {
        const std::uint8_t* ours = builder.GetCurrentBufferPointer() + builder.GetSize() - stock.GetSize();
        EXPECT_EQ(std::memcmp(ours, stock.GetCurrentBufferPointer(), stock.GetSize()), 0);
      }
      // The builder is consistent: it can be cleared and used again within its room.
      builder.Clear();
      builder.Finish(fb::CreateCatalog(builder, builder.CreateString("after")));
      EXPECT_EQ(flatbuffers::GetRoot<fb::Catalog>(builder.GetBufferPointer())->title()->str(),
                "after");
      return error;
    }
    calls[i](stock);
  }
  return std::nullopt;
}

TEST(FlatBuffersBuilder, AFullDiskIsAnErrorAtTheBuilderCallThatNeededRoom) {
  std::set<std::size_t> failing_calls;
  for (std::uint64_t bytes = 160 * kKiB; bytes <= 1600 * kKiB; bytes += 96 * kKiB) {
    test::SmallTmpfs tmpfs(bytes);
    if (!tmpfs.ok()) GTEST_SKIP() << tmpfs.reason();
    const auto path = tmpfs.path() / "full.mwft";
    MappedFlatBufferOptions options;
    options.initial_size = 4096;
    MappedFlatBufferBuilder builder(FlatBufferTarget::file(path), options);
    std::size_t at = 0;
    const std::optional<Error> error = run_until_failure(builder, &at);
    ASSERT_TRUE(error.has_value()) << bytes;
    EXPECT_EQ(error->code().value(), ENOSPC) << error->what();
    EXPECT_NE(std::string(error->what()).find(path.string()), std::string::npos) << error->what();
    EXPECT_NE(std::string(error->what()).find("the filesystem is full"), std::string::npos)
        << error->what();
    EXPECT_EQ(builder.stats().failures, 1u);
    failing_calls.insert(at);
  }
  // The failure moved from call to call as the disk grew.
  EXPECT_GE(failing_calls.size(), 5u);
}

TEST(FlatBuffersBuilder, RlimitFsizeIsAnErrorAtTheBuilderCallNeverSigxfsz) {
  for (const rlim_t limit : {200 * kKiB, 700 * kKiB, 1300 * kKiB}) {
    const test::ChildResult result = test::run_in_child([limit] {
      test::DiskDir dir;
      CHILD_CHECK(dir.ok());
      const struct rlimit lower {limit, RLIM_INFINITY};
      CHILD_CHECK(::setrlimit(RLIMIT_FSIZE, &lower) == 0);
      MappedFlatBufferBuilder builder(FlatBufferTarget::file(dir / "limited.mwft"));
      std::size_t at = 0;
      const std::optional<Error> error = run_until_failure(builder, &at);
      CHILD_CHECK(error.has_value());
      CHILD_CHECK_MSG(error->code().value() == EFBIG, error->what());
      CHILD_CHECK_MSG(std::string(error->what()).find("RLIMIT_FSIZE") != std::string::npos,
                      error->what());
      test::say("refused\n");
    });
    test::expect_clean_exit(result);
    EXPECT_NE(result.output.find("refused"), std::string::npos) << result.describe();
  }
}

TEST(FlatBuffersBuilder, UnderUlimitVTheCapacityShrinksAndItsRefusalNamesRlimitAs) {
#if defined(MAPWRIGHT_TEST_ASAN) || defined(MAPWRIGHT_TEST_TSAN)
  GTEST_SKIP() << "the sanitizers reserve terabytes of shadow memory: RLIMIT_AS cannot be set";
#endif
  const test::ChildResult result = test::run_in_child([] {
    std::ifstream statm("/proc/self/statm");
    std::uint64_t pages = 0;
    statm >> pages;
    const rlim_t limit = pages * 4096 + 512 * kMiB;
    const struct rlimit lower {limit, limit};
    CHILD_CHECK(::setrlimit(RLIMIT_AS, &lower) == 0);
    MappedFlatBufferBuilder builder(FlatBufferTarget::memfd("ulimit-v"));
    std::optional<Error> error;
    while (!(error = error_from([&] { builder.CreateString(std::string(kMiB, 'v')); }))) {
    }
    CHILD_CHECK_MSG(error->code().value() == ENOMEM, error->what());
    CHILD_CHECK_MSG(std::string(error->what()).find("RLIMIT_AS") != std::string::npos,
                    error->what());
    CHILD_CHECK_MSG(builder.GetSize() > 16 * kMiB, std::to_string(builder.GetSize()));
    test::say("refused\n");
  });
  test::expect_clean_exit(result);
  EXPECT_NE(result.output.find("refused"), std::string::npos) << result.describe();
}

TEST(FlatBuffersBuilder, RefusesToPassTwoGiBWithAnErrorNotAnAbort) {
  // Untouched vector bytes of a memfd cost no memory: only the length words are written.
  MappedFlatBufferBuilder builder(FlatBufferTarget::memfd("huge"));
  std::uint64_t added = 0;
  std::optional<Error> error;
  for (int i = 0; i < 16 && !error; ++i) {
    error = error_from([&] {
      std::uint8_t* data = nullptr;
      builder.CreateUninitializedVector(256 * kMiB, &data);
      added += 256 * kMiB;
    });
  }
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->code().value(), EFBIG);
  EXPECT_NE(std::string(error->what()).find("at most 2 GiB"), std::string::npos) << error->what();
  // Exact, not early: seven 256 MiB vectors (1.75 GiB) fit, the eighth cannot.
  EXPECT_EQ(added, 7 * 256 * kMiB);
  EXPECT_LT(builder.GetSize(), kMaxFlatBufferBytes);
  EXPECT_EQ(builder.stats().data_bytes_moved, 0u);
  // Small objects still fit in what is left, up to the limit and no further.
  std::optional<Error> small;
  std::uint64_t strings = 0;
  while (!(small = error_from([&] { builder.CreateString(std::string(1 * kMiB, 'z')); }))) {
    ++strings;
  }
  EXPECT_EQ(small->code().value(), EFBIG);
  EXPECT_GT(builder.GetSize(), kMaxFlatBufferBytes - 2 * kMiB);
  EXPECT_LT(builder.GetSize(), kMaxFlatBufferBytes);
  EXPECT_GT(strings, 200u);
}

TEST(FlatBuffersBuilder, ACapacityRefusalIsExact) {
  MappedFlatBufferOptions options;
  options.capacity = 1 * kMiB;
  options.initial_size = 4096;
  MappedFlatBufferBuilder builder(FlatBufferTarget::memfd("small"), options);
  std::optional<Error> error;
  while (!(error = error_from([&] { builder.CreateString(std::string(3000, 'q')); }))) {
  }
  EXPECT_EQ(error->code().value(), ENOMEM);
  EXPECT_NE(std::string(error->what()).find("past the builder's capacity of 1048576 bytes"),
            std::string::npos)
      << error->what();
  // Refused only when the string could not fit: the buffer filled the capacity.
  EXPECT_GT(builder.GetSize(), 1 * kMiB - 3100);
}

TEST(FlatBuffersBuilder, FillAndFillFromFdWritePageAlignedBytesInTheFile) {
  test::TempDir dir;
  const auto source = dir / "source.bin";
  std::string content(5 * kMiB + 17, '\0');
  for (std::size_t i = 0; i < content.size(); ++i) content[i] = static_cast<char>(pattern(i));
  std::ofstream(source, std::ios::binary) << content;
  const int fd = ::open(source.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);

  MappedFlatBufferBuilder builder(FlatBufferTarget::memfd("filled"));
  const auto bytes = builder.aligned_bytes(content.size() - 100);
  const std::optional<Error> early =
      error_from([&] { builder.fill_from_fd(bytes.data, fd, 200, content.size() - 100, "src"); });
  ASSERT_TRUE(early.has_value());
  EXPECT_NE(std::string(early->what()).find("ended after"), std::string::npos);
  const std::optional<Error> outside = error_from(
      [&] { builder.fill_from_fd(bytes.data - 4096 * 1024, fd, 0, 10, "src"); });
  ASSERT_TRUE(outside.has_value());
  EXPECT_EQ(outside->code().value(), EINVAL);
  builder.fill_from_fd(bytes.data, fd, 100, content.size() - 100, source.string());
  ::close(fd);
  // fill() writes through the file: the mapping sees it at once.
  const std::string replaced(8192, 'F');
  builder.fill(bytes.data + 4096, replaced.data(), replaced.size());
  EXPECT_EQ(bytes.data[4096], 'F');
  EXPECT_EQ(bytes.data[4096 + 8191], 'F');
  content.replace(100 + 4096, replaced.size(), replaced);
  const std::optional<Error> fill_outside = error_from(
      [&] { builder.fill(bytes.data + content.size() - 100, replaced.data(), 8192); });
  ASSERT_TRUE(fill_outside.has_value());
  EXPECT_EQ(fill_outside->code().value(), EINVAL);
  builder.finish(fb::CreateCatalog(builder, 0, 0, bytes.offset));

  const MappedFlatBuffer reader(builder.seal());
  const fb::Catalog* catalog = reader.root<fb::Catalog>();
  ASSERT_EQ(catalog->blob()->size(), content.size() - 100);
  EXPECT_EQ(std::memcmp(catalog->blob()->data(), content.data() + 100, content.size() - 100), 0);
  EXPECT_EQ((catalog->blob()->data() - reader.data()) % 4096, 0);
}

TEST(FlatBuffersBuilder, MisuseIsRefusedByName) {
  MappedFlatBufferBuilder builder(FlatBufferTarget::memfd("misuse"));
  builder.CreateString("x");
  std::optional<Error> error = error_from([&] { builder.finish(); });
  ASSERT_TRUE(error);
  EXPECT_NE(std::string(error->what()).find("call Finish(root)"), std::string::npos);
  EXPECT_TRUE(error_from([&] { builder.sync(); }));
  EXPECT_TRUE(error_from([&] { builder.seal(); }));
  builder.finish(fb::CreateCatalog(builder, builder.CreateString("done")));
  EXPECT_TRUE(error_from([&] { builder.finish(); }));
  EXPECT_TRUE(error_from([&] { builder.publish(); }));  // not staged
  error = error_from([&] { builder.CreateString(std::string(100'000, 'y')); });
  ASSERT_TRUE(error);
  EXPECT_NE(std::string(error->what()).find("finished"), std::string::npos) << error->what();
  EXPECT_TRUE(error_from([&] { builder.aligned_bytes(10, 3); }));

  MappedFlatBufferOptions bad;
  bad.initial_size = 0;
  EXPECT_TRUE(error_from([&] { MappedFlatBufferBuilder b(FlatBufferTarget::memfd("b"), bad); }));
  test::DiskDir dir;
  ASSERT_TRUE(dir.ok());
  MappedFlatBufferBuilder file(FlatBufferTarget::file(dir / "f"));
  file.finish(fb::CreateCatalog(file));
  EXPECT_TRUE(error_from([&] { file.seal(); }));  // not a memfd
  EXPECT_TRUE(error_from(
      [&] { MappedFlatBufferBuilder b(FlatBufferTarget::staged(dir.path() / "")); }));
}

TEST(FlatBuffersBuilder, KeepsTheResidentSetNearOneGrowthStep) {
#if defined(MAPWRIGHT_TEST_TSAN)
  GTEST_SKIP() << "TSan's shadow memory for every page the builder touches is resident too";
#endif
  const test::ChildResult result = test::run_in_child([] {
    const auto peak = [] {
      std::ifstream status("/proc/self/status");
      std::string line;
      while (std::getline(status, line)) {
        if (line.rfind("VmHWM:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
      }
      return 0ull;
    };
    const std::uint64_t before = peak();
    MappedFlatBufferBuilder builder(FlatBufferTarget::memfd("resident"));
    const std::string piece(kMiB, 'r');  // made once: no heap churn (ASan keeps freed blocks)
    for (int i = 0; i < 96; ++i) builder.CreateString(piece);
    builder.finish(fb::CreateCatalog(builder));
    const std::uint64_t grown = peak() - before;
    CHILD_CHECK_MSG(builder.size() > 96 * kMiB, std::to_string(builder.size()));
    // The stock builder holds the whole buffer and a copy during its last growth (about
    // 1.5x); the mapped one about its newest growth step (a third) and a 1 MiB string.
    CHILD_CHECK_MSG(grown < 60 * kMiB, std::to_string(grown));
  });
  test::expect_clean_exit(result);
}

TEST(FlatBuffersBuilder, SeveralBuildersOnSeveralThreads) {
  std::vector<std::thread> threads;
  std::atomic<int> good{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([t, &good] {
      MappedFlatBufferBuilder builder(FlatBufferTarget::memfd("thread" + std::to_string(t)));
      builder.finish(build_catalog(builder, 2000 + t * 1000, 100'000 + t), fb::CatalogIdentifier());
      const MappedFlatBuffer reader(builder.seal());
      const fb::Catalog* catalog = reader.root<fb::Catalog>(fb::CatalogIdentifier());
      if (catalog->items()->size() == static_cast<unsigned>(2000 + t * 1000)) ++good;
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(good.load(), 4);
}

}  // namespace
}  // namespace mapwright
