// Crash safety of wrapper packing: a packer killed by SIGKILL at any point of a large pack
// leaves the previous wrapper, or none, at the target — never a half-written one — and
// whatever is there passes verify().
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include "child.h"
#include "content.h"
#include "mapwright/wrapper.h"

namespace mapwright {
namespace {

using test::ChildResult;
using test::kMiB;
using test::run_in_child;
using test::TempDir;

// Half of the pack in each of two entries; at most 256 MiB in all (MAPWRIGHT_TEST_BYTES
// lowers it, as under the sanitizers).
std::uint64_t pack_bytes() { return std::min<std::uint64_t>(test::test_bytes(), 256 * kMiB); }

void fill_entry(std::span<std::byte> chunk, std::uint64_t offset, std::uint64_t seed) {
  auto* words = reinterpret_cast<std::uint64_t*>(chunk.data());
  for (std::size_t i = 0; i < chunk.size() / 8; ++i) words[i] = test::pattern(offset / 8 + i, seed);
}

// Writes a wrapper at `target` whose producer is `version` and whose two entries hold
// `bytes` in all; `on_progress` sees every progress report.
void pack(const std::filesystem::path& target, const std::string& version, std::uint64_t bytes,
          const std::function<void(const WriteProgress&)>& on_progress = {}) {
  WrapperWriterOptions options;
  options.producer = version;
  options.chunk_bytes = 16 * kMiB;
  options.progress = on_progress;
  WrapperWriter writer(target, options);
  for (const char* name : {"one", "two"}) {
    writer.add_data(name, bytes / 2, [&](std::span<std::byte> chunk, std::uint64_t offset) {
      fill_entry(chunk, offset, name[0]);
    });
  }
  writer.publish();
}

// "absent", or the producer of a wrapper that opens and verifies; anything else fails.
std::string state_of(const std::filesystem::path& target) {
  if (!std::filesystem::exists(target)) return "absent";
  const Wrapper wrapper = Wrapper::open(target);
  wrapper.verify();
  EXPECT_EQ(wrapper.entries().size(), 2u);
  return wrapper.producer();
}

ino_t inode(const std::filesystem::path& path) {
  struct stat info {};
  return ::stat(path.c_str(), &info) == 0 ? info.st_ino : 0;
}

enum class Point { kEarlyInFirst, kEndOfFirst, kMiddleOfSecond, kBeforePublish };

const char* to_string(Point point) {
  switch (point) {
    case Point::kEarlyInFirst: return "early in the first entry";
    case Point::kEndOfFirst: return "at the end of the first entry";
    case Point::kMiddleOfSecond: return "in the middle of the second entry";
    case Point::kBeforePublish: return "after the last entry, before publish";
  }
  return "?";
}

TEST(WrapperCrash, KilledAtEveryPointLeavesThePreviousWrapperOrNone) {
  const std::uint64_t bytes = pack_bytes();
  for (const bool with_previous : {false, true}) {
    for (const Point point : {Point::kEarlyInFirst, Point::kEndOfFirst, Point::kMiddleOfSecond,
                              Point::kBeforePublish}) {
      SCOPED_TRACE(std::string(to_string(point)) + (with_previous ? ", over a previous wrapper" : ""));
      TempDir dir;
      const std::filesystem::path target = dir / "app.mwr";
      if (with_previous) pack(target, "previous", 4 * kMiB);
      const ino_t before = inode(target);

      const ChildResult result = run_in_child([&] {
        pack(target, "killed", bytes, [&](const WriteProgress& p) {
          const bool first = p.entry == "one";
          const bool kill = (point == Point::kEarlyInFirst && first && p.entry_done >= bytes / 20) ||
                            (point == Point::kEndOfFirst && first && p.entry_done == p.entry_size) ||
                            (point == Point::kMiddleOfSecond && !first && p.entry_done >= bytes / 4) ||
                            (point == Point::kBeforePublish && !first && p.entry_done == p.entry_size);
          if (kill) ::raise(SIGKILL);
        });
        test::say("published");
      });
      EXPECT_EQ(result.signal, SIGKILL) << result.describe();

      EXPECT_EQ(state_of(target), with_previous ? "previous" : "absent");
      EXPECT_EQ(inode(target), before);
      // The staged file had no name (O_TMPFILE): nothing else is left in the directory.
      for (const auto& item : std::filesystem::directory_iterator(dir.path())) {
        EXPECT_EQ(item.path().filename(), "app.mwr") << "left behind: " << item.path();
      }
    }
  }
}

TEST(WrapperCrash, KilledAtRandomMomentsOfRepeatedPacksAlwaysLeavesAValidWrapper) {
  // A child publishes new versions in a loop; the parent kills it after a deadline that moves
  // through the packs and their publishes (fsync, link, rename). Whatever is at the target
  // afterwards opens and verifies, and is one of the versions.
  TempDir dir;
  const std::filesystem::path target = dir / "app.mwr";
  pack(target, "v0", 4 * kMiB);
  int killed = 0;
  std::vector<std::string> seen;
  const auto progressed = [&] {
    return std::any_of(seen.begin(), seen.end(), [](const std::string& s) { return s != "v0"; });
  };
  // At least 8 kills; more (with later deadlines) while no pack was ever published, as on a
  // machine loaded by other work, where an 8 MiB pack may take longer than 375 ms.
  for (int attempt = 0; attempt < 8 || (!progressed() && attempt < 24); ++attempt) {
    const ChildResult result = run_in_child(
        [&] {
          for (int version = 1;; ++version) pack(target, "v" + std::to_string(version), 8 * kMiB);
        },
        std::chrono::milliseconds(60 + 45 * attempt));
    ASSERT_TRUE(result.timed_out) << result.describe();
    ++killed;
    const std::string state = state_of(target);
    ASSERT_EQ(state.rfind('v', 0), 0u) << state;
    seen.push_back(state);
  }
  EXPECT_GE(killed, 8);
  // The packs did make progress between kills (the versions are not all v0).
  EXPECT_TRUE(progressed()) << "no pack was ever published";
}

}  // namespace
}  // namespace mapwright
