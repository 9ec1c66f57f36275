// tests/fault_matrix_test.cc — growth that cannot happen, as a table: every cause of a failed
// growth (rows) on every kind of region it applies to, in every way growth is asked for
// (columns). One CTest test per cell, named <Cause>_<Kind>_<Mode>.
//
// Causes (the errno each yields today; signal/growth.cc, src/region.cc):
//   SealedGrow     F_SEAL_GROW added behind the region's back (fcntl on fd())   EPERM
//   RlimitFsize    RLIMIT_FSIZE below the store (setrlimit in the child)        EFBIG
//   Capacity       RegionOptions::capacity; the store lands in the guard zone   ENOMEM
//                  reserved just past it
//   FullDisk       a file region on a 4 MiB tmpfs                                ENOSPC
//   EioShutdown    a REAL EIO from the kernel: a file region on an ext4 image on a loop
//                  device, shut down with FS_IOC_SHUTDOWN (what a filesystem does after a
//                  fatal I/O error: every later fallocate, pread... fails with EIO). Skipped
//                  where loop devices, mkfs.ext4 or mount(2) are unavailable (not root).
//                  There is no device-level EIO here: the kernel of the development VM has
//                  no device-mapper (no dm "error" target), and a loop device cannot be
//                  made to fail reads or writes on demand.
//   EioSeccomp     EIO (simulated by seccomp): fallocate(2) and ftruncate(2) fail with EIO
//
// Modes:
//   Guarded   a store past the end inside guarded(): a thrown mapwright::Error with the
//             errno, naming the operation ("growing region"), the region, the store's offset
//             and the cause; the body is abandoned at the store.
//   Outside   the same store outside guarded(): death by SIGBUS, promptly, after exactly one
//             "mapwright: " line on stderr naming the same things.
//   Ensure    region.ensure() past the limit: the same Error, thrown normally, no signal and
//             nothing on stderr.
//
// In every cell: 256 KiB written before the failure are intact afterwards, read back with
// pread(2) (in the child, or — for file regions, whose file outlives the child, and for the
// shut-down filesystem, which refuses reads until it is mounted again — by the parent); after
// an Error, size() did not move, the failure was counted in stats(), and the region carries
// on as documented (what still fits can be grown to and stored into).
//
// This matrix is the one table of failed growth steps. tests/failure_test.cc has the causes
// that are not a growth step (truncation and holes behind the region's back,
// grow_on_fault=false), partial growth on a full disk or an unaligned RLIMIT_FSIZE, and
// guarded() itself (nesting, exceptions, threads).
#include <errno.h>
#include <fcntl.h>
#include <linux/loop.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <tuple>
#include <vector>

#include "child.h"
#include "content.h"
#include "mapwright/error.h"
#include "mapwright/fault.h"
#include "mapwright/region.h"
#include "region_helpers.h"

namespace mapwright {
namespace {

using namespace test;  // the shared helpers in tests/support

constexpr std::chrono::milliseconds kChildTimeout{20'000};
constexpr std::uint64_t kPrefix = 256 * kKiB;  // written before each failure, checked after
constexpr std::uint64_t kSeed = 0x5eed;
constexpr std::uint64_t kLimit = 4 * kMiB;     // RLIMIT_FSIZE, and the small tmpfs
constexpr std::uint64_t kCapacity = 2 * kMiB;

// ---- a filesystem that fails with EIO ----------------------------------------------------

// FS_IOC_SHUTDOWN (ext4, xfs, f2fs), not in Debian 12's linux/fs.h; flags 0 is
// FS_SHUTDOWN_FLAGS_DEFAULT: freeze (so written data reaches the device), then shut down.
constexpr unsigned long kFsIocShutdown = _IOR('X', 125, std::uint32_t);

// A small ext4 filesystem in an image file (in a TempDir) on a loop device, mounted on a
// fresh directory. ok() is false and reason() says why when any step is refused (no root,
// no loop devices, no mkfs.ext4). Unmounted on destruction; the loop device detaches
// itself (LO_FLAGS_AUTOCLEAR).
class LoopExt4 {
 public:
  explicit LoopExt4(std::uint64_t bytes) {
    const std::string image = (dir_ / "image").string();
    const int fd = ::open(image.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || ::ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
      reason_ = std::string("cannot make the image: ") + std::strerror(errno);
      if (fd >= 0) ::close(fd);
      return;
    }
    ::close(fd);
    const std::string mkfs = "mkfs.ext4 -q -F -E nodiscard " + image + " >/dev/null 2>&1";
    if (std::system(mkfs.c_str()) != 0) {
      reason_ = "mkfs.ext4 failed or is not installed";
      return;
    }
    std::filesystem::create_directory(mount_point());
    mount();
  }
  ~LoopExt4() {
    if (mounted_) ::umount2(mount_point().c_str(), MNT_DETACH);
  }
  LoopExt4(const LoopExt4&) = delete;
  LoopExt4& operator=(const LoopExt4&) = delete;

  bool ok() const { return mounted_; }
  const std::string& reason() const { return reason_; }
  std::filesystem::path mount_point() const { return dir_ / "mnt"; }

  // Unmounts (a shut-down filesystem can be) and mounts the image again: readable again.
  bool remount() {
    if (mounted_ && ::umount2(mount_point().c_str(), 0) != 0) {
      reason_ = std::string("umount: ") + std::strerror(errno);
      return false;
    }
    mounted_ = false;
    return mount();
  }

 private:
  bool mount() {
    const std::string image = (dir_ / "image").string();
    const int backing = ::open(image.c_str(), O_RDWR | O_CLOEXEC);
    const int control = ::open("/dev/loop-control", O_RDWR | O_CLOEXEC);
    if (backing < 0 || control < 0) {
      reason_ = std::string("no loop devices: ") + std::strerror(errno);
      if (backing >= 0) ::close(backing);
      if (control >= 0) ::close(control);
      return false;
    }
    std::string device;
    int loop = -1;  // kept open until mounted: with AUTOCLEAR, its last close detaches it
    // Another process may take the free device between GET_FREE and CONFIGURE: retry.
    for (int attempt = 0; attempt < 20 && loop < 0; ++attempt) {
      const int n = ::ioctl(control, LOOP_CTL_GET_FREE);
      if (n < 0) break;
      device = "/dev/loop" + std::to_string(n);
      loop = ::open(device.c_str(), O_RDWR | O_CLOEXEC);
      if (loop < 0) continue;
      loop_config config{};
      config.fd = static_cast<std::uint32_t>(backing);
      config.info.lo_flags = LO_FLAGS_AUTOCLEAR;
      if (::ioctl(loop, LOOP_CONFIGURE, &config) != 0) {
        const int error = errno;
        reason_ = std::string("LOOP_CONFIGURE: ") + std::strerror(error);
        ::close(loop);
        loop = -1;
        if (error != EBUSY) break;
      }
    }
    ::close(control);
    ::close(backing);
    if (loop < 0) {
      if (reason_.empty()) reason_ = "no free loop device";
      return false;
    }
    const int mounted = ::mount(device.c_str(), mount_point().c_str(), "ext4", 0, "");
    const int error = errno;
    ::close(loop);  // the mount holds the device now; AUTOCLEAR detaches it at umount
    if (mounted != 0) {
      reason_ = "mount of " + device + ": " + std::strerror(error);
      return false;
    }
    mounted_ = true;
    return true;
  }

  TempDir dir_;
  bool mounted_ = false;
  std::string reason_;
};

// ---- the table ---------------------------------------------------------------------------

enum class Kind { kMemfd, kFile, kStaged };
enum class Mode { kGuarded, kOutside, kEnsure };
enum class Where { kDisk, kTmpfs, kShutdownExt4 };  // where a file region's directory is

const char* kind_name(Kind kind) {
  switch (kind) {
    case Kind::kMemfd: return "Memfd";
    case Kind::kFile: return "File";
    case Kind::kStaged: return "Staged";
  }
  return "?";
}

const char* mode_name(Mode mode) {
  switch (mode) {
    case Mode::kGuarded: return "Guarded";
    case Mode::kOutside: return "Outside";
    case Mode::kEnsure: return "Ensure";
  }
  return "?";
}

void PrintTo(Mode mode, std::ostream* out) { *out << mode_name(mode); }

struct Cell;

struct Row {
  const char* cause;          // test-name part
  const char* label;          // for messages: "EIO (simulated by seccomp)"
  Kind kind;
  Where where;
  int error;                  // the errno every mode must report
  const char* message_part;   // appears in what() and in the stderr line
  std::uint64_t capacity;     // RegionOptions::capacity
  // In the child, after the prefix is written: makes growth fail.
  void (*arm)(Region& region, const Cell& cell);
  std::uint64_t fail_offset;  // a store here fails
  std::uint64_t fail_size;    // ensure() of this fails
  // In the child, after an Error: the documented way forward.
  void (*carry_on)(Region& region);
};

void PrintTo(const Row& row, std::ostream* out) {
  *out << row.cause << "_" << kind_name(row.kind);
}

// What a cell's child needs besides its row.
struct Cell {
  const Row& row;
  Mode mode;
  std::string name;  // the region's name: a memfd name or a path
};

// ---- helpers usable in a child -----------------------------------------------------------

void check_prefix_by_pread(const Region& region) {
  const std::string problem = check_words(region.fd(), 0, kPrefix / 8, kSeed);
  CHILD_CHECK_MSG(problem.empty(), "the bytes written before the failure: " + problem);
}

// ---- the causes --------------------------------------------------------------------------

void arm_sealed(Region& region, const Cell&) {
  CHILD_CHECK(::fcntl(region.fd(), F_ADD_SEALS, F_SEAL_GROW) == 0);
}

void carry_on_sealed(Region& region) {
  region.ensure(region.size());  // nothing to grow: fine
  check_store_works(region, region.size() - 1);
}

void arm_rlimit(Region&, const Cell&) {
  rlimit limit{};
  CHILD_CHECK(::getrlimit(RLIMIT_FSIZE, &limit) == 0);
  limit.rlim_cur = kLimit;
  CHILD_CHECK(::setrlimit(RLIMIT_FSIZE, &limit) == 0);
  // SIGXFSZ keeps its default action: if growth ever exceeded the limit, the child would die
  // by SIGXFSZ instead of reporting EFBIG.
}

void carry_on_rlimit(Region& region) {
  region.ensure(kLimit);  // exactly the limit is allowed
  CHILD_CHECK(region.size() == kLimit);
  check_store_works(region, kLimit - 1);
  sigset_t pending;
  CHILD_CHECK(::sigpending(&pending) == 0);
  CHILD_CHECK(sigismember(&pending, SIGXFSZ) == 0);
}

void arm_nothing(Region&, const Cell&) {}

void carry_on_capacity(Region& region) {
  for (std::uint64_t offset = kPrefix; offset < kCapacity; offset += 4 * kKiB) {
    check_store_works(region, offset);
  }
  check_store_works(region, kCapacity - 1);
  CHILD_CHECK(region.size() == kCapacity);
}

void carry_on_full_disk(Region& region) {
  region.ensure(kLimit);  // the whole filesystem, and no more
  CHILD_CHECK(region.size() == kLimit);
  check_store_works(region, kLimit - 1);
}

void arm_shutdown(Region& region, const Cell&) {
  std::uint32_t flags = 0;  // FS_SHUTDOWN_FLAGS_DEFAULT
  CHILD_CHECK(::ioctl(region.fd(), kFsIocShutdown, &flags) == 0);
  char byte = 0;
  CHILD_CHECK_MSG(::pread(region.fd(), &byte, 1, 0) < 0 && errno == EIO,
                  "the filesystem is not shut down");
}

void carry_on_shutdown(Region& region) {
  // Nothing can be written to a shut-down filesystem; what was written is still readable
  // through the mapping (the parent reads the file after mounting it again).
  for (std::uint64_t i = 0; i < kPrefix / 8; i += 511) {
    const auto* words = reinterpret_cast<const volatile std::uint64_t*>(region.data());
    CHILD_CHECK(words[i] == pattern(i, kSeed));
  }
}

void arm_seccomp(Region&, const Cell&) {
  CHILD_CHECK(deny_syscall(SYS_fallocate, EIO));
  CHILD_CHECK(deny_syscall(SYS_ftruncate, EIO));
}

void carry_on_seccomp(Region& region) {
  region.ensure(region.size());  // nothing to grow: no system call
  for (std::uint64_t offset = kPrefix; offset < region.size(); offset += 4 * kKiB) {
    check_store_works(region, offset);
  }
}

// size() is 1 MiB after the prefix (min_step); growth doubles from there.
const std::vector<Row>& rows() {
  static const std::vector<Row> kRows = [] {
    std::vector<Row> rows;
    const std::uint64_t kDefault = RegionOptions{}.capacity;
    rows.push_back({"SealedGrow", "a memfd sealed against growth", Kind::kMemfd, Where::kDisk,
                    EPERM, "growing region", kDefault, arm_sealed, kMiB + 100, 2 * kMiB,
                    carry_on_sealed});
    for (const Kind kind : {Kind::kMemfd, Kind::kFile, Kind::kStaged}) {
      rows.push_back({"RlimitFsize", "RLIMIT_FSIZE", kind, Where::kDisk, EFBIG, "RLIMIT_FSIZE",
                      kDefault, arm_rlimit, kLimit + 100, kLimit + 1, carry_on_rlimit});
    }
    for (const Kind kind : {Kind::kMemfd, Kind::kFile, Kind::kStaged}) {
      rows.push_back({"Capacity", "the region's capacity", kind, Where::kDisk, ENOMEM,
                      "past the region's capacity", kCapacity, arm_nothing, kCapacity + 100,
                      kCapacity + 1, carry_on_capacity});
    }
    for (const Kind kind : {Kind::kFile, Kind::kStaged}) {
      rows.push_back({"FullDisk", "a full filesystem", kind, Where::kTmpfs, ENOSPC,
                      "growing region", kDefault, arm_nothing, kLimit + 100, 2 * kLimit,
                      carry_on_full_disk});
    }
    rows.push_back({"EioShutdown", "EIO (ext4 shut down with FS_IOC_SHUTDOWN)", Kind::kFile,
                    Where::kShutdownExt4, EIO, "growing region", kDefault, arm_shutdown,
                    kMiB + 100, 2 * kMiB, carry_on_shutdown});
    for (const Kind kind : {Kind::kMemfd, Kind::kFile, Kind::kStaged}) {
      rows.push_back({"EioSeccomp", "EIO (simulated by seccomp)", kind, Where::kDisk, EIO,
                      "growing region", kDefault, arm_seccomp, kMiB + 100, 2 * kMiB,
                      carry_on_seccomp});
    }
    return rows;
  }();
  return kRows;
}

// ---- one cell ------------------------------------------------------------------------------

// The directory a cell's file regions go in, prepared in the parent.
class Place {
 public:
  explicit Place(Where where) {
    switch (where) {
      case Where::kDisk: disk_ = std::make_unique<DiskDir>(); break;
      case Where::kTmpfs: tmpfs_ = std::make_unique<SmallTmpfs>(kLimit); break;
      case Where::kShutdownExt4: ext4_ = std::make_unique<LoopExt4>(32 * kMiB); break;
    }
  }
  // Why the cell cannot run here, or nothing.
  std::optional<std::string> unavailable() const {
    if (disk_ && !disk_->ok()) return "no directory on a disk filesystem";
    if (tmpfs_ && !tmpfs_->ok()) return tmpfs_->reason();
    if (ext4_ && !ext4_->ok()) return "no loop-mounted ext4: " + ext4_->reason();
    return std::nullopt;
  }
  std::filesystem::path directory() const {
    if (disk_) return disk_->path();
    if (tmpfs_) return tmpfs_->path();
    return ext4_->mount_point();
  }
  // After the child: the file can be read again (a shut-down filesystem is mounted again).
  bool readable_again(std::string* why) {
    if (!ext4_) return true;
    if (ext4_->remount()) return true;
    *why = ext4_->reason();
    return false;
  }

 private:
  // unique_ptr, not optional: g++ 12 warns (maybe-uninitialized) about optional::emplace here.
  std::unique_ptr<DiskDir> disk_;
  std::unique_ptr<SmallTmpfs> tmpfs_;
  std::unique_ptr<LoopExt4> ext4_;
};

Region make_region(const Cell& cell) {
  RegionOptions options;
  options.capacity = cell.row.capacity;
  switch (cell.row.kind) {
    case Kind::kMemfd: return Region::memfd(cell.name, options);
    case Kind::kFile: return Region::file(cell.name, options);
    case Kind::kStaged: return Region::staged(cell.name, options);
  }
  throw std::logic_error("unknown kind");
}

// In the child: the Error of a failed growth, as the row and mode say it must read.
void check_error(const Cell& cell, const std::optional<Error>& error) {
  CHILD_CHECK_MSG(error.has_value(), "no Error was thrown");
  const std::string what = error->what();
  CHILD_CHECK_MSG(error->code() == std::error_code(cell.row.error, std::generic_category()),
                  "errno " + std::to_string(error->code().value()) + ", expected " +
                      std::to_string(cell.row.error) + ": " + what);
  CHILD_CHECK_MSG(error->operation() == "growing region", what);
  CHILD_CHECK_MSG(error->subject() == cell.name, what);
  CHILD_CHECK_MSG(what.find("growing region '" + cell.name + "'") == 0, what);
  CHILD_CHECK_MSG(what.find(cell.row.message_part) != std::string::npos, what);
  const std::string at = "(store at offset " + std::to_string(cell.row.fail_offset) + ")";
  if (cell.mode == Mode::kGuarded) {
    CHILD_CHECK_MSG(what.find(at) != std::string::npos, what);
  } else {
    CHILD_CHECK_MSG(what.find("store at offset") == std::string::npos, what);
  }
  const std::string cause = std::string(": ") + std::strerror(cell.row.error);
  CHILD_CHECK_MSG(what.size() >= cause.size() && what.ends_with(cause), what);
}

// The child of a cell. Says "storing" just before a store that must kill it, "carried on" at
// the end of a cell that must survive.
void run_cell(const Cell& cell) {
  no_core_dumps();
  Region region = make_region(cell);
  CHILD_CHECK(region.name() == cell.name);
  fill(region.data(), 0, kPrefix / 8, kSeed);
  CHILD_CHECK(region.size() == kMiB);
  cell.row.arm(region, cell);
  const std::uint64_t size_before = region.size();
  const RegionStats stats_before = region.stats();

  std::optional<Error> error;
  switch (cell.mode) {
    case Mode::kOutside:
      say("storing\n");
      store(region, cell.row.fail_offset, 0xab);
      say("survived the store\n");
      return;
    case Mode::kGuarded: {
      std::atomic<bool> finished{false};
      try {
        guarded([&] {
          store(region, cell.row.fail_offset, 0xab);
          finished = true;
        });
      } catch (const Error& e) {
        error = e;
      }
      CHILD_CHECK_MSG(!finished.load(), "the body went on past the failed store");
      break;
    }
    case Mode::kEnsure:
      try {
        region.ensure(cell.row.fail_size);
      } catch (const Error& e) {
        error = e;
      }
      break;
  }
  check_error(cell, error);
  CHILD_CHECK_MSG(region.size() == size_before, "size() moved: " + std::to_string(region.size()));
  CHILD_CHECK(region.stats().failures == stats_before.failures + 1);
  CHILD_CHECK(region.stats().growths == stats_before.growths);
  if (cell.row.where != Where::kShutdownExt4) check_prefix_by_pread(region);
  cell.row.carry_on(region);
  if (cell.row.where != Where::kShutdownExt4) check_prefix_by_pread(region);
  say("carried on\n");
}

// In the parent, for a cell whose child died: by SIGBUS, in time, after exactly one line
// from mapwright naming the operation, the region, the store and the cause.
void expect_explained_death(const Cell& cell, const ChildResult& result) {
  EXPECT_FALSE(result.timed_out) << "a failed growth must never retry forever";
  EXPECT_EQ(result.signal, SIGBUS) << result.describe();
  EXPECT_NE(result.output.find("storing\n"), std::string::npos) << result.describe();
  EXPECT_EQ(result.output.find("survived"), std::string::npos) << result.describe();
  const auto lines = lines_starting_with(result.output, "mapwright: ");
  ASSERT_EQ(lines.size(), 1u) << result.describe();
  const std::string& line = lines[0];
  EXPECT_EQ(line.find("mapwright: growing region '" + cell.name + "'"), 0u) << line;
  EXPECT_NE(line.find("(store at offset " + std::to_string(cell.row.fail_offset) + ")"),
            std::string::npos)
      << line;
  EXPECT_NE(line.find(cell.row.message_part), std::string::npos) << line;
  EXPECT_TRUE(line.ends_with(std::string(": ") + std::strerror(cell.row.error))) << line;
}

class FaultMatrix : public ::testing::TestWithParam<std::tuple<Row, Mode>> {};

TEST_P(FaultMatrix, FailsAsDocumented) {
  const Row& row = std::get<0>(GetParam());
  const Mode mode = std::get<1>(GetParam());
  SCOPED_TRACE(std::string(row.label) + ", " + kind_name(row.kind) + " region, " +
               mode_name(mode));
  Place place(row.where);
  if (const auto why = place.unavailable()) GTEST_SKIP() << *why;
  const std::string region_file = std::string("matrix-") + row.cause + ".mwr";
  const Cell cell{row, mode,
                  row.kind == Kind::kMemfd ? std::string("matrix-") + row.cause
                                           : (place.directory() / region_file).string()};

  const ChildResult result = run_in_child([&] { run_cell(cell); }, kChildTimeout);
  if (mode == Mode::kOutside) {
    expect_explained_death(cell, result);
  } else {
    // The failure was the caller's to report: no signal, nothing from the handler.
    expect_clean_exit_unreported(result);
    EXPECT_NE(result.output.find("carried on"), std::string::npos) << result.describe();
  }

  if (row.kind == Kind::kFile) {
    // The file outlives the child (even one killed by SIGBUS): what was written before the
    // failure is in it.
    std::string why;
    ASSERT_TRUE(place.readable_again(&why)) << why;
    const int fd = ::open(cell.name.c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0) << cell.name << ": " << std::strerror(errno);
    EXPECT_EQ(check_words(fd, 0, kPrefix / 8, kSeed), "") << cell.name;
    ::close(fd);
  }
}

std::string cell_name(const ::testing::TestParamInfo<std::tuple<Row, Mode>>& info) {
  const Row& row = std::get<0>(info.param);
  return std::string(row.cause) + "_" + kind_name(row.kind) + "_" +
         mode_name(std::get<1>(info.param));
}

INSTANTIATE_TEST_SUITE_P(Causes, FaultMatrix,
                         ::testing::Combine(::testing::ValuesIn(rows()),
                                            ::testing::Values(Mode::kGuarded, Mode::kOutside,
                                                              Mode::kEnsure)),
                         cell_name);

// Beyond growth: on a shut-down filesystem a page below size() that was never touched may
// still take a store (ext4 on this kernel maps it without asking the filesystem: the blocks
// were fallocated), but the store can never reach the disk. Such a loss must not be silent:
// either the store fails (an Error inside guarded(), never a retry loop), or sync() reports
// EIO naming the region.
TEST(FaultMatrixShutdown, StoreBelowSizeFailsOrSyncReportsEio) {
  LoopExt4 ext4(32 * kMiB);
  if (!ext4.ok()) GTEST_SKIP() << ext4.reason();
  const std::string name = (ext4.mount_point() / "untouched.mwr").string();
  const ChildResult result = run_in_child(
      [&] {
        Region region = Region::file(name);
        fill(region.data(), 0, kPrefix / 8, kSeed);
        CHILD_CHECK(region.size() == kMiB);
        std::uint32_t flags = 0;
        CHILD_CHECK(::ioctl(region.fd(), kFsIocShutdown, &flags) == 0);
        constexpr std::uint64_t kUntouched = 768 * kKiB;  // below size(), never stored to
        std::optional<Error> error;
        try {
          guarded([&] { store(region, kUntouched, 1); });
        } catch (const Error& e) {
          error = e;
        }
        if (error) {
          CHILD_CHECK_MSG(error->subject() == name, error->what());
          say((std::string("the store failed: ") + error->what() + "\n").c_str());
          return;
        }
        try {
          region.sync();
        } catch (const Error& e) {
          error = e;
        }
        CHILD_CHECK_MSG(error.has_value(), "a store that cannot reach the disk went unreported");
        CHILD_CHECK_MSG(error->code().value() == EIO, error->what());
        CHILD_CHECK_MSG(error->subject() == name, error->what());
        say((std::string("sync() reported: ") + error->what() + "\n").c_str());
      },
      kChildTimeout);
  expect_clean_exit_unreported(result);
  RecordProperty("outcome", result.output);
}

}  // namespace
}  // namespace mapwright
