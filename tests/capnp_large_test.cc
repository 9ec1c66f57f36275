// A Cap'n Proto message larger than 4 GiB (more than one segment can hold), built in place
// in a file on disk and read back with the stock readers. Only a few words of each big list
// are stored, so the file's ~6 GiB are mostly never written: the growth fallocates them
// (unwritten extents, no data) and the test takes seconds. Label: capnp_large_test.
#include <capnp/message.h>
#include <capnp/serialize.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>

#include "child.h"
#include "mapwright/capnp.h"
#include "mapwright/fault.h"
#include "sanitizers.h"
#include "test.capnp.h"

namespace mapwright {
namespace {

constexpr std::uint32_t kInnerLists = 3;
constexpr std::uint32_t kInnerElements = (1u << 29) - 1;  // the most a list holds: ~2 GiB of UInt32

std::uint32_t sample(std::uint32_t list, std::uint32_t index) { return list * 1'000'003u + index; }

void check_samples(TestAll::Reader root) {
  ASSERT_EQ(root.getNested().size(), kInnerLists);
  for (std::uint32_t l = 0; l < kInnerLists; ++l) {
    const auto inner = root.getNested()[l];
    ASSERT_EQ(inner.size(), kInnerElements);
    for (const std::uint32_t i : {0u, 12345u, kInnerElements / 2, kInnerElements - 1}) {
      EXPECT_EQ(inner[i], sample(l, i)) << l << " " << i;
    }
    EXPECT_EQ(inner[7], 0u);  // never stored: zero, and never written to the disk
  }
  EXPECT_EQ(root.getName(), "larger than one segment");
}

// Builds the message at `path`; returns its size.
std::uint64_t build_large_message(const std::filesystem::path& path) {
  Region region = Region::file(path);
  MappedMessageBuilder builder(region);
  guarded([&] {
    auto root = builder.initRoot<TestAll>();
    root.setName("larger than one segment");
    auto nested = root.initNested(kInnerLists);
    for (std::uint32_t l = 0; l < kInnerLists; ++l) {
      auto inner = nested.init(l, kInnerElements);
      for (const std::uint32_t i : {0u, 12345u, kInnerElements / 2, kInnerElements - 1}) {
        inner.set(i, sample(l, i));
      }
    }
  });
  const std::uint64_t size = builder.finish();
  EXPECT_GE(builder.segment_count(), 2u);
  region.sync();
  return size;
}

capnp::ReaderOptions unlimited() {
  capnp::ReaderOptions options;
  options.traversalLimitInWords = UINT64_MAX / 8;
  return options;
}

TEST(LargeMessage, MoreThanFourGiBBuiltInPlaceAndReadZeroCopy) {
  test::DiskDir dir;
  ASSERT_TRUE(dir.ok());
  const auto path = dir / "large.bin";
  const std::uint64_t size = build_large_message(path);
  ASSERT_GT(size, 4ull << 30);
  {
    // Zero-copy, validated.
    MappedMessageReader reader(path);
    EXPECT_EQ(reader.size(), size);
    EXPECT_GE(reader.segment_count(), 2u);
    check_samples(reader.getRoot<TestAll>());
  }
  {
    // The stock flat-array reader over a plain read-only mapping of the file.
    Region mapped = Region::open(path);  // nothing is written through it
    capnp::FlatArrayMessageReader reader(
        {reinterpret_cast<const capnp::word*>(mapped.data()), size / sizeof(capnp::word)},
        unlimited());
    check_samples(reader.getRoot<TestAll>());
  }
}

// The stock stream reader copies the whole ~6 GiB into memory (about a minute on the 2-core
// VM, whose first touch of memory is slow), so it is a test of its own; skipped under the
// sanitizers, whose shadow memory would double that.
TEST(LargeMessage, MoreThanFourGiBReadByTheStockStreamReader) {
#if defined(MAPWRIGHT_TEST_ASAN) || defined(MAPWRIGHT_TEST_TSAN)
  GTEST_SKIP() << "copies ~6 GiB into memory; run without sanitizers";
#else
  test::DiskDir dir;
  ASSERT_TRUE(dir.ok());
  const auto path = dir / "large.bin";
  ASSERT_GT(build_large_message(path), 4ull << 30);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  {
    capnp::StreamFdMessageReader reader(fd, unlimited());
    check_samples(reader.getRoot<TestAll>());
  }
  ::close(fd);
#endif
}

}  // namespace
}  // namespace mapwright
