// Tests of growth that cannot happen (include/mapwright/fault.h, signal/growth.cc) for the
// causes that are not a failed growth step: grow_on_fault=false, a file truncated behind the
// region's back, a hole punched behind its back on a full filesystem (the last two also with
// the pre-5.14 fallback that has no MADV_POPULATE_WRITE, made by a seccomp filter). The
// causes of a failed growth step (a seal, RLIMIT_FSIZE, the capacity, a full disk, EIO) are
// fault_matrix_test's rows, on every kind of region; they are not repeated here.
//
// For each cause, from one table:
//   * inside guarded(): a thrown mapwright::Error with the cause's errno, naming the region;
//     the process carries on (the bytes already written are intact, smaller growth works);
//   * outside guarded(): death by SIGBUS, promptly (never a retry loop), after exactly one
//     "mapwright: " line on stderr naming the region and the cause;
//   (ensure() past a limit is fault_matrix_test's Ensure column.)
// The capacity's store case is StoreJustPastCapacityIsAFailedGrowth: a 1 MiB unbacked guard
// zone is reserved past capacity(), so a store just past it is a failed growth (ENOMEM).
// fault_matrix_test crosses every cause with every region kind and mode.
// Then: growth that can still partly happen must (a full disk with room left, an
// RLIMIT_FSIZE that is not a multiple of the page size), and guarded() itself (nesting,
// exceptions from the body, one recovery chain per thread).
// Every case runs in a forked child (test::run_in_child): rlimits, seals, the handler's
// test hook and death by SIGBUS must not touch the test process. Checks inside a child end it
// with exit code 1 and a message naming the failed condition.
#include <errno.h>
#include <fcntl.h>
#include <sys/syscall.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "child.h"
#include "content.h"
#include "growth.h"
#include "mapwright/error.h"
#include "mapwright/fault.h"
#include "mapwright/region.h"
#include "region_helpers.h"

namespace mapwright {
namespace {

using namespace test;  // the shared helpers in tests/support

constexpr std::chrono::milliseconds kChildTimeout{15'000};
// Written before each failure and checked after it.
constexpr std::uint64_t kPrefix = 256 * kKiB;

// ---- helpers usable in a child ---------------------------------------------------------

void write_prefix(const Region& region) {
  for (std::uint64_t i = 0; i < kPrefix; ++i) store(region, i, byte_pattern(i));
}

void check_prefix(const Region& region) {
  for (std::uint64_t i = 0; i < kPrefix; ++i) {
    if (bytes_of(region)[i] != byte_pattern(i)) {
      child_failed(__FILE__, __LINE__, "prefix intact", "byte " + std::to_string(i) + " changed");
    }
  }
}

// Death by SIGBUS, in time, after exactly one line from mapwright that names `region`, the
// cause (`reason`) and strerror(`error`); nothing after the failing store ran.
void expect_explained_death(const ChildResult& result, const std::string& region, int error,
                            const std::string& reason) {
  EXPECT_FALSE(result.timed_out) << "a failed growth must never retry forever";
  EXPECT_FALSE(result.exited) << result.describe();
  EXPECT_EQ(result.signal, SIGBUS) << result.describe();
  const auto lines = lines_starting_with(result.output, "mapwright: ");
  ASSERT_EQ(lines.size(), 1u) << result.describe();
  EXPECT_NE(lines[0].find("'" + region + "'"), std::string::npos) << lines[0];
  EXPECT_NE(lines[0].find(reason), std::string::npos) << lines[0];
  const std::string cause = std::string(": ") + std::strerror(error);
  EXPECT_EQ(lines[0].substr(lines[0].size() - std::min(lines[0].size(), cause.size())), cause)
      << lines[0];
  EXPECT_NE(result.output.find("storing\n"), std::string::npos) << result.describe();
  EXPECT_EQ(result.output.find("survived"), std::string::npos) << result.describe();
}

// Runs `body` inside guarded() and returns the Error it threw (std::nullopt if none), and
// checks that the body was abandoned at the faulting store.
template <class Body>
std::optional<Error> guarded_error(Body body) {
  std::atomic<bool> finished{false};
  try {
    guarded([&] {
      body();
      finished = true;
    });
  } catch (const Error& e) {
    CHILD_CHECK(!finished.load());
    return e;
  }
  CHILD_CHECK(finished.load());
  return std::nullopt;
}

void check_error(const std::optional<Error>& error, int expected, const std::string& region,
                 const std::string& reason) {
  CHILD_CHECK_MSG(error.has_value(), "no Error was thrown");
  const std::string what = error->what();
  CHILD_CHECK_MSG(error->code().value() == expected,
                  "errno " + std::to_string(error->code().value()) + ", expected " +
                      std::to_string(expected) + ": " + what);
  CHILD_CHECK_MSG(error->code() == std::error_code(expected, std::generic_category()), what);
  CHILD_CHECK_MSG(what.find("'" + region + "'") != std::string::npos, what);
  CHILD_CHECK_MSG(error->subject() == region, what);
  CHILD_CHECK_MSG(what.find(reason) != std::string::npos, what);
  CHILD_CHECK_MSG(what.find(std::strerror(expected)) != std::string::npos, what);
}

// ---- the causes -------------------------------------------------------------------------

// Sizes: min_step is 1 MiB, so writing the prefix makes size() 1 MiB; growth doubles.
constexpr std::uint64_t kLimit = 4 * kMiB;   // RLIMIT_FSIZE, and the small tmpfs

struct Cause {
  const char* name;         // test-name suffix
  const char* region;       // memfd name, or file name in the test's directory
  bool file_backed;
  bool needs_tmpfs;         // a tmpfs of kLimit bytes
  int error;
  const char* reason;       // appears in the message
  // In the child: creates the region, writes the prefix, and arranges for growth to fail.
  Region (*make)(const std::string& name);
  std::uint64_t fail_offset;  // a store here fails (0: a store cannot fail for this cause)
  // In the child, after the failure: what still works (the documented way forward).
  void (*carry_on)(Region& region);
};

Region make_no_grow(const std::string& name) {
  Region region = no_grow_region(name);
  write_prefix(region);
  CHILD_CHECK(region.size() == kMiB);
  return region;
}

void carry_on_no_grow(Region& region) {
  region.ensure(kMiB + 100 + 1);
  CHILD_CHECK(region.size() >= 2 * kMiB);
  check_store_works(region, kMiB + 100);
  check_store_works(region, region.size() - 1);
}

// The file is 1 MiB; the pages in [512 KiB, 1 MiB) were touched; then it is cut to 512 KiB.
void truncate_behind_its_back(const Region& region) {
  write_prefix(region);
  CHILD_CHECK(region.size() == kMiB);
  store(region, 768 * kKiB, 1);
  store(region, kMiB - 1, 1);
  CHILD_CHECK(::ftruncate(region.fd(), 512 * kKiB) == 0);
}

Region make_truncated(const std::string& name) {
  Region region = Region::file(name);
  truncate_behind_its_back(region);
  return region;
}

// A kernel without MADV_POPULATE_WRITE (before 5.14), made by a seccomp filter: madvise with
// that advice fails with EINVAL, so the fstat-based fallback decides.
void without_populate_write() {
  CHILD_CHECK(deny_syscall_when(SYS_madvise, EINVAL, 2, 23 /* MADV_POPULATE_WRITE */));
}

Region make_truncated_memfd_without_populate(const std::string& name) {
  without_populate_write();
  Region region = Region::memfd(name, options_with_capacity(64 * kMiB));
  truncate_behind_its_back(region);
  return region;
}

void carry_on_truncated(Region& region) {
  check_store_works(region, 512 * kKiB - 1);  // what the file still has
  // finish() makes size() the file's size again; then stores grow it as usual.
  region.finish(512 * kKiB);
  CHILD_CHECK(region.size() == 512 * kKiB);
  check_store_works(region, 768 * kKiB);
  check_store_works(region, kMiB + 10);
  CHILD_CHECK(region.size() > kMiB);
  CHILD_CHECK(bytes_of(region)[kMiB - 1] == 0);  // the lost part came back as zeros
}

// Fills the filesystem of `directory` up: a filler file takes whatever space is left.
void fill_up(const std::string& directory, const char* filler) {
  const std::string path = directory + "/" + filler;
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  CHILD_CHECK(fd >= 0);
  std::vector<char> chunk(4 * kKiB, 'f');
  while (::write(fd, chunk.data(), chunk.size()) > 0) {
  }
  CHILD_CHECK(errno == ENOSPC);
  ::close(fd);
}

// A 3 MiB file on the full 4 MiB tmpfs, with a 64 KiB hole punched at 2 MiB behind the
// region's back and the space it freed taken again: a store into the hole, below size(),
// cannot get a page. Not a growth; the page fault fails, and mapwright says why (ENOSPC: it
// asks the filesystem for the page with fallocate, where the fault itself only says EFAULT).
Region make_hole_on_full_disk(const std::string& name) {
  Region region = Region::file(name, options_with_capacity(64 * kMiB));
  write_prefix(region);
  region.finish(3 * kMiB);
  const std::string directory = std::filesystem::path(name).parent_path().string();
  fill_up(directory, "filler-1");
  CHILD_CHECK(::fallocate(region.fd(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                          static_cast<off_t>(2 * kMiB), static_cast<off_t>(64 * kKiB)) == 0);
  fill_up(directory, "filler-2");
  return region;
}

Region make_hole_on_full_disk_without_populate(const std::string& name) {
  // Without MADV_POPULATE_WRITE the handler cannot tell this from a race with another
  // thread's growth by the page fault alone; asking the filesystem for the page tells.
  without_populate_write();
  return make_hole_on_full_disk(name);
}

void carry_on_hole_on_full_disk(Region& region) {
  check_store_works(region, 2 * kMiB - 1);  // pages that have blocks are fine
  check_store_works(region, 2 * kMiB + 64 * kKiB);
  CHILD_CHECK(region.size() == 3 * kMiB);
}

const Cause kCauses[] = {
    {"GrowOnFaultOff", "no-grow-region", false, false, EFAULT, "grow_on_fault is off",
     make_no_grow, kMiB + 100, carry_on_no_grow},
    {"TruncatedBehindOurBack", "truncated-region.mwr", true, false, EFAULT,
     "truncated behind the region's back", make_truncated, 768 * kKiB, carry_on_truncated},
    {"TruncatedWithoutPopulateWrite", "truncated-memfd-region", false, false, EFAULT,
     "truncated behind the region's back", make_truncated_memfd_without_populate, 768 * kKiB,
     carry_on_truncated},
    {"HoleOnFullDisk", "hole-region.mwr", true, true, ENOSPC, "cannot be backed",
     make_hole_on_full_disk, 2 * kMiB + 100, carry_on_hole_on_full_disk},
    {"HoleOnFullDiskWithoutPopulateWrite", "hole-region.mwr", true, true, ENOSPC,
     "cannot be backed", make_hole_on_full_disk_without_populate, 2 * kMiB + 100,
     carry_on_hole_on_full_disk},
};

// Readable parameters in test output.
void PrintTo(const Cause& cause, std::ostream* out) { *out << cause.name; }

std::vector<Cause> causes_where(bool (*keep)(const Cause&)) {
  std::vector<Cause> kept;
  for (const Cause& c : kCauses) {
    if (keep(c)) kept.push_back(c);
  }
  return kept;
}

// The directory a case's files go in: a TempDir, or a small tmpfs for the full-disk case.
class CaseDirectory {
 public:
  explicit CaseDirectory(const Cause& cause) {
    if (cause.needs_tmpfs) tmpfs_.emplace(kLimit);
  }
  // False when the case cannot run here (no tmpfs without root); then why() says why.
  bool usable() const { return !tmpfs_ || tmpfs_->ok(); }
  const std::string& why() const { return tmpfs_->reason(); }
  std::string region_name(const Cause& cause) const {
    if (!cause.file_backed) return cause.region;
    return ((tmpfs_ ? tmpfs_->path() : temp_.path()) / cause.region).string();
  }

 private:
  test::TempDir temp_;
  std::optional<test::SmallTmpfs> tmpfs_;
};

// Runs `body` in a child (without core dumps) on the region `cause` makes, named `name`.
ChildResult run_cause_in_child(const Cause& cause, const std::string& name,
                               const std::function<void(Region& region)>& body) {
  return run_in_child(
      [&] {
        no_core_dumps();
        Region region = cause.make(name);
        body(region);
      },
      kChildTimeout);
}

// In the child, after a failed growth of `region` (named `name`, size_before bytes before
// it): `error` is the cause's Error, nothing grew, the failure was counted, and the region
// carries on as documented with its prefix intact; then says "carried on".
void check_error_then_carry_on(const Cause& cause, Region& region, const std::string& name,
                               std::uint64_t size_before, const std::optional<Error>& error) {
  check_error(error, cause.error, name, cause.reason);
  CHILD_CHECK(region.size() == size_before);  // nothing grew
  CHILD_CHECK(region.stats().failures >= 1);
  check_prefix(region);
  cause.carry_on(region);
  check_prefix(region);
  say("carried on\n");
}

// In the parent: the child above got through cleanly. The failure was the caller's to report
// (inside guarded(), or from ensure()): the handler wrote nothing.
void expect_carried_on(const ChildResult& result) {
  expect_clean_exit(result);
  EXPECT_NE(result.output.find("carried on"), std::string::npos) << result.describe();
  EXPECT_TRUE(lines_starting_with(result.output, "mapwright:").empty()) << result.describe();
}

// ---- a store that cannot grow the region -----------------------------------------------

enum class Mode { kGuarded, kOutside };

void PrintTo(Mode mode, std::ostream* out) {
  *out << (mode == Mode::kGuarded ? "inside guarded()" : "outside guarded()");
}

class StoreFailure : public ::testing::TestWithParam<std::tuple<Cause, Mode>> {};

TEST_P(StoreFailure, IsReportedNeverRetried) {
  const Cause cause = std::get<0>(GetParam());
  const Mode mode = std::get<1>(GetParam());
  const CaseDirectory directory(cause);
  if (!directory.usable()) GTEST_SKIP() << directory.why();
  const std::string name = directory.region_name(cause);

  const ChildResult result = run_cause_in_child(cause, name, [&](Region& region) {
    CHILD_CHECK(region.name() == name);
    const std::uint64_t size_before = region.size();
    if (mode == Mode::kOutside) {
      say("storing\n");
      store(region, cause.fail_offset, 0xab);
      say("survived the store\n");
      return;
    }
    const std::optional<Error> error =
        guarded_error([&] { store(region, cause.fail_offset, 0xab); });
    check_error_then_carry_on(cause, region, name, size_before, error);
  });

  if (mode == Mode::kOutside) {
    expect_explained_death(result, name, cause.error, cause.reason);
  } else {
    expect_carried_on(result);
  }
}

std::string case_name(const ::testing::TestParamInfo<std::tuple<Cause, Mode>>& info) {
  return std::string(std::get<0>(info.param).name) +
         (std::get<1>(info.param) == Mode::kGuarded ? "_InsideGuarded" : "_OutsideGuarded");
}

INSTANTIATE_TEST_SUITE_P(
    Causes, StoreFailure,
    ::testing::Combine(::testing::ValuesIn(causes_where([](const Cause& c) {
                         return c.fail_offset != 0;
                       })),
                       ::testing::Values(Mode::kGuarded, Mode::kOutside)),
    case_name);

// ---- more about growth and failure -----------------------------------------------------

// With grow_on_fault=false nothing but ensure() grows the region: a store past size() fails
// even though the capacity is far away, and after ensure() the same store works.
TEST(Failure, GrowOnFaultOffNeedsEnsureBeforeStores) {
  const ChildResult result = run_in_child(
      [] {
        Region region = Region::memfd("explicit-region", no_grow_options());
        CHILD_CHECK(region.size() == 0);
        check_error(guarded_error([&] { store(region, 0, 1); }), EFAULT, "explicit-region",
                    "grow_on_fault is off");
        region.ensure(1);
        CHILD_CHECK(region.size() >= 1);
        check_store_works(region, 0);
        check_store_works(region, region.size() - 1);
        const std::uint64_t size = region.size();
        check_error(guarded_error([&] { store(region, size, 1); }), EFAULT, "explicit-region",
                    "grow_on_fault is off");
        CHILD_CHECK(region.size() == size);
        CHILD_CHECK(region.stats().faults == 0);
        CHILD_CHECK(region.stats().failures == 2);
      },
      kChildTimeout);
  expect_clean_exit(result);
}

// In a child: `body` on a new Region::file "room-region.mwr" on a fresh 6 MiB tmpfs; the
// child must exit cleanly. Skips the test where no tmpfs can be mounted.
void in_child_on_6_mib_tmpfs(void (*body)(Region& region)) {
  test::SmallTmpfs tmpfs(6 * kMiB);
  if (!tmpfs.ok()) GTEST_SKIP() << tmpfs.reason();
  const std::string name = (tmpfs.path() / "room-region.mwr").string();
  const ChildResult result = run_in_child(
      [&] {
        Region region = Region::file(name);
        body(region);
      },
      kChildTimeout);
  expect_clean_exit(result);
}

// A full filesystem that still has room for the store: growth takes a smaller step (as it
// does below RLIMIT_FSIZE and the capacity) instead of reporting the disk full.
TEST(Failure, FullDiskStillGrowsAsFarAsTheDiskAllows) {
  in_child_on_6_mib_tmpfs([](Region& region) {
    write_prefix(region);
    // size() is 1 MiB; the x2 steps reach 4 MiB, and the next would be 8 MiB > 6 MiB.
    const std::optional<Error> error = guarded_error([&] {
      for (std::uint64_t offset = kPrefix; offset < 5 * kMiB; offset += 4 * kKiB) {
        store(region, offset, byte_pattern(offset));
      }
    });
    CHILD_CHECK_MSG(!error.has_value(), error ? error->what() : "");
    CHILD_CHECK(region.size() >= 5 * kMiB);
    CHILD_CHECK(region.size() <= 6 * kMiB);
    check_prefix(region);
  });
}

// Same through ensure(): 5 MiB fit on a 6 MiB filesystem.
TEST(Failure, FullDiskEnsureOfWhatFitsSucceeds) {
  in_child_on_6_mib_tmpfs([](Region& region) {
    region.ensure(4 * kMiB);
    region.ensure(5 * kMiB);  // must not say "No space left on device"
    CHILD_CHECK(region.size() >= 5 * kMiB);
    check_store_works(region, 5 * kMiB - 1);
  });
}

// RLIMIT_FSIZE that is not a multiple of the page size (`ulimit -f 4097` sets 4 MiB + 1 KiB):
// a store past the limit, in the limit's last page, must either fail (EFBIG) or really be in
// the file. It must not vanish: the mapping's last page is only partly backed by the file, so
// such a store does not fault, but what lies past end of file is not part of the file.
TEST(Failure, RlimitNotPageAlignedNeverLosesAStore) {
  const ChildResult result = run_in_child(
      [] {
        rlimit limit{};
        CHILD_CHECK(::getrlimit(RLIMIT_FSIZE, &limit) == 0);
        limit.rlim_cur = 4 * kMiB + kKiB;
        CHILD_CHECK(::setrlimit(RLIMIT_FSIZE, &limit) == 0);
        Region region = Region::memfd("odd-limit-region", options_with_capacity(64 * kMiB));
        write_prefix(region);
        constexpr std::uint64_t kOffset = 4 * kMiB + 2 * kKiB;  // past the limit
        const std::optional<Error> error = guarded_error([&] {
          for (std::uint64_t offset = kPrefix; offset < 4 * kMiB; offset += 4 * kKiB) {
            store(region, offset, byte_pattern(offset));
          }
          // Below the limit but in its last page: grows the file, or fails with EFBIG.
          check_store_works(region, 4 * kMiB + 512);
          store(region, kOffset, 0x5a);
        });
        if (error.has_value()) {
          check_error(error, EFBIG, "odd-limit-region", "RLIMIT_FSIZE");
        } else {
          // Accepted without a fault: then the byte must be in the file.
          unsigned char byte = 0;
          const ssize_t got = ::pread(region.fd(), &byte, 1, static_cast<off_t>(kOffset));
          CHILD_CHECK_MSG(got == 1 && byte == 0x5a,
                          "the store at offset " + std::to_string(kOffset) +
                              " succeeded but is not in the file (its size is " +
                              std::to_string(region.size()) + ")");
          CHILD_CHECK(region.size() > kOffset);
        }
        check_prefix(region);
      },
      kChildTimeout);
  expect_clean_exit(result);
}

// ---- guarded() itself ------------------------------------------------------------------

// The innermost guarded() catches; the outer one carries on and then catches a failure of
// its own; after both, a failure outside any guarded() is fatal again.
// The 1 MiB guard zone reserved past the capacity turns a store off the end of a full region
// into a failed growth (ENOMEM) instead of a store into whatever is mapped next.
TEST(Failure, StoreJustPastCapacityIsAFailedGrowth) {
  RegionOptions options;
  options.capacity = 2ull << 20;
  Region region = Region::memfd("capacity-guard", options);
  auto* bytes = reinterpret_cast<volatile unsigned char*>(region.data());
  guarded([&] {
    for (std::uint64_t i = 0; i < region.capacity(); i += 4096) bytes[i] = 1;
  });
  EXPECT_EQ(region.size(), region.capacity());
  try {
    guarded([&] { bytes[region.capacity() + 100] = 7; });
    FAIL() << "a store past the capacity did not fail";
  } catch (const Error& e) {
    EXPECT_EQ(e.error(), ENOMEM);
    EXPECT_NE(std::string(e.what()).find("capacity"), std::string::npos) << e.what();
    EXPECT_EQ(e.subject(), "capacity-guard");
  }
  EXPECT_EQ(bytes[4096], 1);  // the region is intact and usable

  const ChildResult child = run_in_child([&] { bytes[region.capacity() + 100] = 7; });
  EXPECT_EQ(child.signal, SIGBUS) << child.describe();
  EXPECT_NE(child.output.find("mapwright: growing region 'capacity-guard'"), std::string::npos)
      << child.output;
}

TEST(Guarded, NestedInnermostCatchesAndTheChainUnwinds) {
  const ChildResult result = run_in_child(
      [] {
        no_core_dumps();
        Region region = no_grow_region("nested-region");
        int inner_errors = 0;
        int outer_steps = 0;
        const std::optional<Error> outer = guarded_error([&] {
          try {
            guarded([&] { store(region, kMiB + 1, 1); });
          } catch (const Error& e) {
            if (e.error() == EFAULT) ++inner_errors;
          }
          ++outer_steps;
          check_store_works(region, 100);
          // The inner frame is gone: this failure belongs to the outer guarded().
          store(region, kMiB + 2, 2);
          ++outer_steps;
        });
        CHILD_CHECK(inner_errors == 1);
        CHILD_CHECK(outer_steps == 1);
        check_error(outer, EFAULT, "nested-region", "grow_on_fault is off");

        // An inner failure not caught in the outer body leaves through both, as an Error.
        std::optional<Error> through;
        try {
          guarded([&] { guarded([&] { store(region, kMiB + 3, 3); }); });
        } catch (const Error& e) {
          through = e;
        }
        check_error(through, EFAULT, "nested-region", "grow_on_fault is off");

        say("storing\n");
        store(region, kMiB + 4, 4);  // no guarded() left on this thread
        say("survived the store\n");
      },
      kChildTimeout);
  expect_explained_death(result, "nested-region", EFAULT, "grow_on_fault is off");
}

// An exception thrown by the body propagates normally, destructors in the body run, and
// guarded() is unwound: a later failure outside guarded() is fatal, one inside is caught.
TEST(Guarded, ExceptionFromTheBodyPropagatesNormally) {
  const ChildResult result = run_in_child(
      [] {
        no_core_dumps();
        Region region = no_grow_region("throwing-region");
        struct Witness {
          int* destroyed;
          ~Witness() { ++*destroyed; }
        };
        int destroyed = 0;
        std::string caught;
        try {
          guarded([&] {
            const Witness witness{&destroyed};
            check_store_works(region, 10);
            throw std::runtime_error("thrown by the body");
          });
        } catch (const Error&) {
          caught = "mapwright::Error";
        } catch (const std::runtime_error& e) {
          caught = e.what();
        }
        CHILD_CHECK(caught == "thrown by the body");
        CHILD_CHECK(destroyed == 1);

        // Values and references come back from the body unchanged.
        CHILD_CHECK(guarded([] { return 42; }) == 42);
        int target = 0;
        int& same = guarded([&]() -> int& { return target; });
        CHILD_CHECK(&same == &target);

        check_error(guarded_error([&] { store(region, kMiB, 1); }), EFAULT, "throwing-region",
                    "grow_on_fault is off");
        say("storing\n");
        store(region, kMiB, 1);
        say("survived the store\n");
      },
      kChildTimeout);
  expect_explained_death(result, "throwing-region", EFAULT, "grow_on_fault is off");
}

// guarded() is per thread: a guarded() frame on one thread does not catch another thread's
// failure, which is fatal; a thread's own guarded() catches its own.
TEST(Guarded, IsPerThread) {
  const ChildResult own = run_in_child(
      [] {
        Region region = no_grow_region("thread-region");
        std::optional<Error> error;
        std::thread worker([&] { error = guarded_error([&] { store(region, kMiB, 1); }); });
        worker.join();
        check_error(error, EFAULT, "thread-region", "grow_on_fault is off");
      },
      kChildTimeout);
  expect_clean_exit(own);

  const ChildResult other = run_in_child(
      [] {
        no_core_dumps();
        Region region = no_grow_region("thread-region");
        guarded([&] {
          std::thread worker([&] {
            say("storing\n");
            store(region, kMiB, 1);  // this thread has no guarded()
            say("survived the store\n");
          });
          worker.join();
        });
        say("survived the guarded\n");
      },
      kChildTimeout);
  expect_explained_death(other, "thread-region", EFAULT, "grow_on_fault is off");
}

}  // namespace
}  // namespace mapwright
