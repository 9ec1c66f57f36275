// tests/builder_failure_test.cc — growth that fails inside the builders, at every entry point
// of MappedMessageBuilder and WrapperWriter, for two causes:
//
//   FullTmpfs    the target is on an 8 MiB tmpfs that a filler file has filled up    ENOSPC
//   RlimitFsize  RLIMIT_FSIZE is lowered (setrlimit in the child) below what the
//                entry point needs; SIGXFSZ keeps its DEFAULT action, so a write past
//                the limit would kill the child instead of failing politely          EFBIG
//
// Each cell runs in a child. The entry point must throw a mapwright::Error with the cause's
// errno, naming the operation and the target's path; the child must go on — no SIGBUS from an
// Orphan destructor zeroing pages that were never backed, no SIGXFSZ — use what it documents
// as usable afterwards (a smaller blob, finish() or publish() retried once there is room),
// build and publish something else in the same directory, and leave nothing behind at the
// target: no partial file, no stray temporary (the parent lists the directory afterwards).
//
// "Arming" a cause happens in the child at the point each cell chooses: before the entry
// point, after what must still succeed. The filler is removed, and the limit raised, before
// the child builds something else ("disarming").
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <capnp/any.h>
#include <capnp/list.h>
#include <capnp/message.h>
#include <gtest/gtest.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <tuple>
#include <vector>

#include "child.h"
#include "content.h"
#include "mapwright/capnp.h"
#include "mapwright/error.h"
#include "mapwright/region.h"
#include "mapwright/wrapper.h"
#include "region_helpers.h"
#include "test.capnp.h"

namespace mapwright {
namespace {

namespace fs = std::filesystem;
using namespace test;  // the shared helpers in tests/support

constexpr std::uint64_t kTmpfsBytes = 8 * kMiB;
constexpr std::uint64_t kBig = 20 * kMiB;    // an entry's size: more than the tmpfs holds
constexpr std::uint64_t kBlob = 4 * kMiB;    // a blob past what the builder cells allow
constexpr std::uint64_t kBacked = kMiB;      // what a fresh builder backs (min_step)
constexpr std::chrono::milliseconds kChildTimeout{60'000};

enum class Cause { kFullTmpfs, kRlimitFsize };

const char* cause_name(Cause cause) {
  return cause == Cause::kFullTmpfs ? "FullTmpfs" : "RlimitFsize";
}

// What a cell's child works with.
struct Setting {
  Cause cause;
  fs::path dir;      // where targets go: the tmpfs, or a directory on disk
  fs::path sources;  // input files, on disk (never on the tmpfs)

  fs::path target() const { return dir / "target.out"; }
  int expected_errno() const { return cause == Cause::kFullTmpfs ? ENOSPC : EFBIG; }

  // From now on growth fails: under RLIMIT_FSIZE past `bytes`; on the tmpfs anywhere (a
  // filler file takes all the space left; `bytes` does not matter).
  void arm(std::uint64_t bytes) const {
    if (cause == Cause::kRlimitFsize) {
      rlimit limit{};
      CHILD_CHECK(::getrlimit(RLIMIT_FSIZE, &limit) == 0);
      limit.rlim_cur = bytes;
      CHILD_CHECK(::setrlimit(RLIMIT_FSIZE, &limit) == 0);
      return;
    }
    const int fd = ::open((dir / "filler").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    CHILD_CHECK(fd >= 0);
    static const std::vector<char> zeros(64 * kKiB);
    for (const std::size_t size : {zeros.size(), std::size_t{4096}}) {
      while (::write(fd, zeros.data(), size) > 0) {
      }
    }
    CHILD_CHECK_MSG(errno == ENOSPC, "the filler stopped before the tmpfs was full");
    ::close(fd);
    struct statvfs fs {};
    CHILD_CHECK(::statvfs(dir.c_str(), &fs) == 0 && fs.f_bavail == 0);
  }

  void disarm() const {
    if (cause == Cause::kRlimitFsize) {
      rlimit limit{};
      CHILD_CHECK(::getrlimit(RLIMIT_FSIZE, &limit) == 0);
      limit.rlim_cur = limit.rlim_max;
      CHILD_CHECK(::setrlimit(RLIMIT_FSIZE, &limit) == 0);
    } else {
      CHILD_CHECK(::unlink((dir / "filler").c_str()) == 0);
    }
  }
};

// In the child: `body` throws a mapwright::Error with the cause's errno whose message names
// `operation` and the target's path. Returns its message.
template <class Body>
std::string expect_failure(const Setting& setting, const std::string& operation, Body&& body) {
  const std::optional<Error> error = error_from(body);
  CHILD_CHECK_MSG(error.has_value(), "no Error was thrown (" + operation + ")");
  const std::string what = error->what();
  CHILD_CHECK_MSG(error->error() == setting.expected_errno(),
                  "errno " + std::to_string(error->error()) + ": " + what);
  CHILD_CHECK_MSG(what.find(operation) != std::string::npos, "no '" + operation + "': " + what);
  CHILD_CHECK_MSG(what.find(setting.target().string()) != std::string::npos,
                  "the path is not named: " + what);
  CHILD_CHECK_MSG(what.ends_with(std::strerror(setting.expected_errno())), what);
  say(("failed as expected: " + what + "\n").c_str());
  return what;
}

void expect_no_target(const Setting& setting) {
  CHILD_CHECK_MSG(!fs::exists(setting.target()), "a file was left at the target");
}

// ---- building something else afterwards ----------------------------------------------------

void build_another_message(const Setting& setting) {
  const fs::path path = setting.dir / "after.bin";
  {
    Region region = Region::staged(path);
    MappedMessageBuilder builder(region);
    builder.initRoot<TestAll>().setName("built after the failure");
    builder.finish();
    region.publish();
  }
  MappedMessageReader reader(path);
  CHILD_CHECK(reader.getRoot<TestAll>().getName() == "built after the failure");
  fs::remove(path);
}

void build_another_wrapper(const Setting& setting) {
  const fs::path path = setting.dir / "after.mwr";
  {
    WrapperWriter writer(path);
    const std::vector<std::byte> bytes(100 * kKiB, std::byte{7});
    writer.add_data("after", bytes);
    writer.publish();
  }
  const Wrapper wrapper = Wrapper::open(path);
  wrapper.verify();
  CHILD_CHECK(wrapper.entry("after").size == 100 * kKiB);
  fs::remove(path);
}

// ---- the entry points ----------------------------------------------------------------------

MappedMessageOptions small_segments() {
  MappedMessageOptions options;
  options.segment_words = 512;  // 4 KiB segments: a large object opens a new one
  return options;
}

void builder_constructor(const Setting& s) {
  s.arm(0);
  Region region = Region::staged(s.target());
  expect_failure(s, "growing region", [&] { MappedMessageBuilder builder(region); });
  s.disarm();
  build_another_message(s);
}

void builder_root_init(const Setting& s) {
  Region region = Region::staged(s.target());
  MappedMessageBuilder builder(region, small_segments());
  s.arm(kBacked);
  // The list does not fit in segment 0 and opens segment 1, whose landing pad Cap'n Proto
  // writes at once.
  expect_failure(s, "growing region", [&] {
    builder.initRoot<::capnp::AnyPointer>().initAs<::capnp::List<std::uint64_t>>(kBlob / 8);
  });
  // The failed allocation did not happen: a small root fits in what is backed.
  builder.initRoot<TestAll>().setName("small");
  builder.finish();
  expect_no_target(s);
  s.disarm();
  build_another_message(s);
}

void builder_new_aligned_data(const Setting& s) {
  Region region = Region::staged(s.target());
  MappedMessageBuilder builder(region);
  auto root = builder.initRoot<TestAll>();
  s.arm(kBacked);
  expect_failure(s, "growing region", [&] { (void)builder.new_aligned_data(kBlob); });
  auto small = builder.new_aligned_data(4096);  // still fits what is backed
  std::memset(small.get().begin(), 'x', 4096);
  root.adoptBlob(::kj::mv(small));
  builder.finish();
  expect_no_target(s);
  s.disarm();
  build_another_message(s);
}

void builder_fill_from_fd(const Setting& s) {
  const fs::path source = s.sources / "blob.bin";
  const int fd = ::open(source.c_str(), O_RDONLY | O_CLOEXEC);
  CHILD_CHECK(fd >= 0);
  Region region = Region::staged(s.target());
  MappedMessageBuilder builder(region);
  auto blob = builder.initRoot<TestAll>().initBlob(kBlob);  // a field: not backed yet
  s.arm(kBacked);
  expect_failure(s, "growing region",
                 [&] { builder.fill_from_fd(blob, fd, 0, kBlob, source.string()); });
  // The blob is still in the message, and cannot be backed: finish() says so too.
  expect_failure(s, "growing region", [&] { builder.finish(); });
  ::close(fd);
  expect_no_target(s);
  s.disarm();
  build_another_message(s);
}

void builder_finish(const Setting& s) {
  Region region = Region::staged(s.target());
  MappedMessageBuilder builder(region);
  builder.initRoot<TestAll>().initBlob(kBlob);  // never written: past what is backed
  s.arm(kBacked);
  expect_failure(s, "growing region", [&] { builder.finish(); });
  expect_no_target(s);
  s.disarm();
  // Once there is room, finish() works.
  const std::uint64_t size = builder.finish();
  CHILD_CHECK(size > kBlob && region.size() == size);
  build_another_message(s);
}

void builder_reopen(const Setting& s) {
  // An existing message, reopened in place to be extended: reserve() says beforehand that
  // the extension cannot be backed, and the file is left exactly as it was.
  const fs::path path = s.target();
  {
    Region region = Region::file(path);
    MappedMessageBuilder builder(region);
    builder.initRoot<TestAll>().setName("the original");
    builder.finish();
  }
  const std::vector<std::byte> before = read_file_bytes(path);
  {
    Region region = Region::open(path);
    MappedMessageBuilder builder(region, MappedMessageBuilder::kReopen);
    s.arm((region.size() + 4095) / 4096 * 4096);
    expect_failure(s, "growing region", [&] { builder.reserve(kBlob); });
    CHILD_CHECK(builder.getRoot<TestAll>().getName() == "the original");
  }
  CHILD_CHECK_MSG(read_file_bytes(path) == before, "the reopened file changed");
  MappedMessageReader reader(path);
  CHILD_CHECK(reader.getRoot<TestAll>().getName() == "the original");
  fs::remove(path);
  s.disarm();
  build_another_message(s);
}

void writer_constructor(const Setting& s) {
  s.arm(0);
  expect_failure(s, "growing region", [&] { WrapperWriter writer(s.target()); });
  expect_no_target(s);
  s.disarm();
  build_another_wrapper(s);
}

// An add_* that cannot be backed: the Error names the wrapper, the entry and the growth; the
// entry is not added, and the writer publishes what it has once there is room.
template <class Add>
void writer_add(const Setting& s, const std::string& entry, Add&& add) {
  {
    WrapperWriter writer(s.target());
    const std::vector<std::byte> first(64 * kKiB, std::byte{1});
    writer.add_data("first", first);
    s.arm(4 * kMiB);
    const std::string what = expect_failure(s, "writing wrapper", [&] { add(writer); });
    CHILD_CHECK_MSG(what.find("entry '" + entry + "'") != std::string::npos, what);
    CHILD_CHECK_MSG(what.find("growing region") != std::string::npos, what);
    CHILD_CHECK(writer.entry_count() == 1);
    expect_no_target(s);
  }  // dropped unpublished: the staged file goes with it
  expect_no_target(s);
  s.disarm();
  build_another_wrapper(s);
}

std::vector<std::byte> elf_bytes() {
  std::vector<std::byte> bytes(kBig);
  fill(bytes.data(), 0, kBig / 8, 0x11b);
  const unsigned char magic[4] = {0x7f, 'E', 'L', 'F'};
  std::memcpy(bytes.data(), magic, sizeof magic);
  return bytes;
}

void writer_add_library_path(const Setting& s) {
  writer_add(s, "lib", [&](WrapperWriter& w) { w.add_library("lib", s.sources / "lib.so"); });
}

void writer_add_library_span(const Setting& s) {
  const std::vector<std::byte> bytes = elf_bytes();
  writer_add(s, "lib", [&](WrapperWriter& w) { w.add_library("lib", std::span(bytes)); });
}

void writer_add_data_path(const Setting& s) {
  writer_add(s, "data", [&](WrapperWriter& w) { w.add_data("data", s.sources / "data.bin"); });
}

void writer_add_data_span(const Setting& s) {
  const std::vector<std::byte> bytes(kBig, std::byte{3});
  writer_add(s, "data", [&](WrapperWriter& w) { w.add_data("data", std::span(bytes)); });
}

void writer_add_data_fill(const Setting& s) {
  writer_add(s, "data", [&](WrapperWriter& w) {
    w.add_data("data", kBig, [](std::span<std::byte> chunk, std::uint64_t) {
      std::memset(chunk.data(), 5, chunk.size());
    });
  });
}

void writer_publish(const Setting& s) {
  WrapperWriter writer(s.target());
  // The only chunk starts at 32 KiB (the writer aligns a chunk to a power of two near 1/16
  // of its length: 32 KiB here) and ends where the first growth step ends (1 MiB): the
  // metadata needs the next byte.
  const std::vector<std::byte> bytes(kBacked - 32768, std::byte{9});
  writer.add_data("blob", bytes);
  s.arm(kBacked);
  expect_failure(s, "writing wrapper", [&] { writer.publish(); });
  expect_no_target(s);
  // Nothing was written: publish() works once there is room.
  s.disarm();
  CHILD_CHECK(writer.publish() > kBacked);
  const Wrapper wrapper = Wrapper::open(s.target());
  wrapper.verify();
  CHILD_CHECK(wrapper.entry("blob").size == bytes.size());
  fs::remove(s.target());
  build_another_wrapper(s);
}

struct EntryPoint {
  const char* name;
  void (*run)(const Setting&);
};

const std::vector<EntryPoint>& entry_points() {
  static const std::vector<EntryPoint> kPoints = {
      {"BuilderConstructor", builder_constructor},
      {"BuilderRootInit", builder_root_init},
      {"BuilderNewAlignedData", builder_new_aligned_data},
      {"BuilderFillFromFd", builder_fill_from_fd},
      {"BuilderFinish", builder_finish},
      {"BuilderReopen", builder_reopen},
      {"WriterConstructor", writer_constructor},
      {"WriterAddLibraryPath", writer_add_library_path},
      {"WriterAddLibrarySpan", writer_add_library_span},
      {"WriterAddDataPath", writer_add_data_path},
      {"WriterAddDataSpan", writer_add_data_span},
      {"WriterAddDataFill", writer_add_data_fill},
      {"WriterPublish", writer_publish},
  };
  return kPoints;
}

void PrintTo(const EntryPoint& point, std::ostream* out) { *out << point.name; }
void PrintTo(Cause cause, std::ostream* out) { *out << cause_name(cause); }

// Input files on disk, made once.
const fs::path& sources() {
  static const DiskDir dir;
  static const bool made = [] {
    EXPECT_TRUE(dir.ok());
    const std::vector<std::byte> elf = elf_bytes();
    std::ofstream(dir / "lib.so", std::ios::binary)
        .write(reinterpret_cast<const char*>(elf.data()), static_cast<std::streamsize>(elf.size()));
    const std::vector<char> data(kBig, 3);
    std::ofstream(dir / "data.bin", std::ios::binary).write(data.data(), static_cast<std::streamsize>(data.size()));
    std::vector<std::byte> blob(kBlob);
    fill(blob.data(), 0, kBlob / 8, 0xb10b);
    std::ofstream(dir / "blob.bin", std::ios::binary)
        .write(reinterpret_cast<const char*>(blob.data()), static_cast<std::streamsize>(blob.size()));
    return true;
  }();
  (void)made;
  return dir.path();
}

class BuilderFailure : public ::testing::TestWithParam<std::tuple<Cause, EntryPoint>> {};

TEST_P(BuilderFailure, IsAnErrorAndTheProcessGoesOn) {
  const Cause cause = std::get<0>(GetParam());
  const EntryPoint& point = std::get<1>(GetParam());
  std::unique_ptr<SmallTmpfs> tmpfs;
  std::unique_ptr<DiskDir> disk;
  fs::path dir;
  if (cause == Cause::kFullTmpfs) {
    tmpfs = std::make_unique<SmallTmpfs>(kTmpfsBytes);
    if (!tmpfs->ok()) GTEST_SKIP() << tmpfs->reason();
    dir = tmpfs->path();
  } else {
    disk = std::make_unique<DiskDir>();
    ASSERT_TRUE(disk->ok());
    dir = disk->path();
  }
  const Setting setting{cause, dir, sources()};

  const ChildResult result = run_in_child(
      [&] {
        no_core_dumps();
        point.run(setting);
        say("carried on\n");
      },
      kChildTimeout);
  EXPECT_FALSE(result.timed_out) << result.describe();
  EXPECT_TRUE(result.exited && result.exit_code == 0)
      << "the child must survive the failure (no SIGBUS, no SIGXFSZ): " << result.describe();
  EXPECT_NE(result.output.find("carried on"), std::string::npos) << result.describe();
  EXPECT_NE(result.output.find("failed as expected"), std::string::npos) << result.describe();
  RecordProperty("outcome", result.output);
  // Nothing left behind: no target, no temporary, no filler, nothing built afterwards.
  for (const auto& item : fs::directory_iterator(dir)) {
    ADD_FAILURE() << "left behind: " << item.path();
  }
}

std::string cell_name(const ::testing::TestParamInfo<std::tuple<Cause, EntryPoint>>& info) {
  return std::string(cause_name(std::get<0>(info.param))) + "_" + std::get<1>(info.param).name;
}

INSTANTIATE_TEST_SUITE_P(EntryPoints, BuilderFailure,
                         ::testing::Combine(::testing::Values(Cause::kFullTmpfs,
                                                              Cause::kRlimitFsize),
                                            ::testing::ValuesIn(entry_points())),
                         cell_name);

}  // namespace
}  // namespace mapwright
