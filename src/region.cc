#include "mapwright/region.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <utility>

#include "growth.h"
#include "line.h"
#include "mapwright/error.h"
#include "mapwright/fault.h"
#include "os/os.h"
#include "recovery.h"
#include "registration.h"
#include "sealed_image_state.h"

namespace mapwright {
namespace detail {

enum class RegionKind {
  kMemfd,
  kFile,
  kStagedUnnamed,  // O_TMPFILE, not yet published
  kStagedNamed,    // fallback: hidden named temporary file, not yet published
};

// Everything a Region owns. Lives on the heap so that the owner registered in the range
// table keeps its address when the Region is moved. Members are destroyed in reverse
// order: the registration first (invariant 4), then the owner; release() unmaps and closes.
struct RegionState {
  RegionKind kind = RegionKind::kMemfd;
  std::string name;                // memfd name or path, for messages
  std::filesystem::path target;    // staged: where publish() puts the file
  std::filesystem::path temp_path; // kStagedNamed: the hidden file's name
  int fd = -1;
  std::byte* base = nullptr;
  std::uint64_t capacity = 0;  // what the file may grow to
  std::uint64_t mapped = 0;    // capacity + kGuardBytes: what is reserved and registered
  std::unique_ptr<UpwardGrowth> owner;
  Registration registration;

  RegionState() = default;
  RegionState(const RegionState&) = delete;
  RegionState& operator=(const RegionState&) = delete;
  ~RegionState() { release(); }

  void release() noexcept {
    registration.reset();  // waits until no handler still uses `owner`
    if (base != nullptr) os::munmap(base, mapped);
    base = nullptr;
    if (fd >= 0) os::close(fd);
    fd = -1;
    if (kind == RegionKind::kStagedNamed && !temp_path.empty()) os::unlink(temp_path.c_str());
    temp_path.clear();
  }
};

[[noreturn]] void throw_report(const FaultReport& report) {
  FailureRecord record;
  record_failure(report, &record);
  throw Error(record.error, record.operation, record.subject, record.detail);
}

}  // namespace detail

namespace {

using detail::RegionKind;

// Reserved and registered past the capacity, but never backed (the file cannot grow past
// the capacity): a store that runs off the end of a full region faults there and is
// reported as "past the region's capacity" instead of landing in a neighbouring mapping.
constexpr std::uint64_t kGuardBytes = 1ull << 20;
using detail::RegionState;

std::uint64_t round_up(std::uint64_t value, std::uint64_t alignment) {
  return (value + alignment - 1) / alignment * alignment;
}

std::string describe_bytes(std::uint64_t bytes) {
  char text[64];
  detail::LineWriter(text, sizeof text).bytes(bytes);
  return text;
}

// The automatic capacity (RegionOptions::capacity == 0): 64 GiB, or a quarter of what
// RLIMIT_AS leaves, so that a process under `ulimit -v` can still make several regions.
std::uint64_t automatic_capacity(const std::string& name) {
  constexpr std::uint64_t kDefault = 64ull << 30;
  std::uint64_t limit = UINT64_MAX;
  if (os::address_space_limit(&limit) != 0 || limit == UINT64_MAX) return kDefault;
  std::uint64_t used = 0;
  (void)os::address_space_used(&used);
  const std::uint64_t room = limit > used + kGuardBytes ? limit - used - kGuardBytes : 0;
  const std::uint64_t page = os::page_size();
  const std::uint64_t quarter = room / 4 / page * page;
  if (quarter < page) {
    throw Error(ENOMEM, "creating region", name,
                "(RLIMIT_AS is " + describe_bytes(limit) + " and " + describe_bytes(used) +
                    " of it is in use: no address space is left to reserve; raise `ulimit -v`)");
  }
  return quarter < kDefault ? quarter : kDefault;
}

// Every option value either works or is refused here, by name.
detail::GrowthPolicy checked_policy(const RegionOptions& options, const std::string& name) {
  const std::uint64_t page = os::page_size();
  const auto refuse = [&](const std::string& why) {
    throw Error(EINVAL, "creating region", name, "(RegionOptions: " + why + ")");
  };
  constexpr std::uint64_t kMaxCapacity = 1ull << 47;
  if (options.capacity > kMaxCapacity) {
    refuse("capacity " + std::to_string(options.capacity) +
           " is larger than the 128 TiB address space");
  }
  if (options.min_step == 0) refuse("min_step must not be 0");
  if (options.max_step < options.min_step) {
    refuse("max_step (" + std::to_string(options.max_step) + ") is smaller than min_step (" +
           std::to_string(options.min_step) + ")");
  }
  detail::GrowthPolicy policy;
  policy.capacity = options.capacity == 0 ? automatic_capacity(name)
                                          : round_up(options.capacity, page);
  // Steps larger than the capacity mean "all of it at once": clamp before rounding, so that
  // UINT64_MAX (a natural "no cap") cannot wrap.
  const auto step = [&](std::uint64_t value) {
    return value >= policy.capacity ? policy.capacity : round_up(value, page);
  };
  policy.min_step = step(options.min_step);
  policy.max_step = step(options.max_step);
  policy.grow_on_fault = options.grow_on_fault;
  return policy;
}

// Maps and registers `state`, whose kind, name and fd are set. `size` is the file's size.
void map_and_register(RegionState& state, const detail::GrowthPolicy& policy, std::uint64_t size,
                      detail::FileKind kind) {
  if (size > policy.capacity) {
    throw Error(EFBIG, "opening region", state.name,
                "(the file is " + std::to_string(size) + " bytes, more than the capacity of " +
                    std::to_string(policy.capacity) + ")");
  }
  install_fault_handler();
  void* base = nullptr;
  const std::uint64_t mapped = policy.capacity + kGuardBytes;
  if (const int err = os::map_shared(state.fd, mapped, &base); err != 0) {
    std::string detail = "(" + describe_bytes(policy.capacity) + ")";
    std::uint64_t limit = UINT64_MAX;
    if (err == ENOMEM && os::address_space_limit(&limit) == 0 && limit != UINT64_MAX) {
      std::uint64_t used = 0;
      (void)os::address_space_used(&used);
      detail = "(" + describe_bytes(policy.capacity) + ", but RLIMIT_AS is " +
               describe_bytes(limit) + " with " + describe_bytes(used) +
               " in use: lower RegionOptions::capacity or raise `ulimit -v`)";
    }
    throw Error(err, "reserving address space for region", state.name, detail);
  }
  state.base = static_cast<std::byte*>(base);
  state.capacity = policy.capacity;
  state.mapped = mapped;
  state.owner = std::make_unique<detail::UpwardGrowth>(state.name, state.fd, state.base, policy,
                                                       kind, size);
  if (kind == detail::FileKind::kDisk && size % os::page_size() != 0) {
    state.owner->reserve_tail_buffer();
  }
  const auto begin = reinterpret_cast<std::uintptr_t>(state.base);
  state.registration = detail::Registration(begin, begin + mapped, state.owner.get(),
                                            state.name.c_str());
}

int open_or_throw(const std::filesystem::path& path, int flags, const char* operation) {
  int fd = -1;
  if (const int err = os::open(path.c_str(), flags, 0666, &fd); err != 0) {
    throw Error(err, operation, path.string());
  }
  return fd;
}

void fsync_directory(const std::filesystem::path& directory, const std::string& name) {
  int dir = -1;
  if (const int err = os::open(directory.c_str(), O_RDONLY | O_DIRECTORY, 0, &dir); err != 0) {
    throw Error(err, "publishing region", name, "(opening its directory to fsync it)");
  }
  const int err = os::fsync(dir);
  os::close(dir);
  if (err != 0 && err != EINVAL) {  // some filesystems cannot fsync a directory
    throw Error(err, "publishing region", name, "(fsync of its directory)");
  }
}

std::filesystem::path directory_of(const std::filesystem::path& target) {
  std::filesystem::path dir = target.parent_path();
  return dir.empty() ? std::filesystem::path(".") : dir;
}

}  // namespace

Region::Region(std::unique_ptr<RegionState> state) noexcept : state_(std::move(state)) {}
Region::Region(Region&&) noexcept = default;
Region& Region::operator=(Region&&) noexcept = default;
Region::~Region() = default;

Region Region::memfd(std::string_view name, RegionOptions options) {
  auto state = std::make_unique<RegionState>();
  state->kind = RegionKind::kMemfd;
  state->name = std::string(name);
  const detail::GrowthPolicy policy = checked_policy(options, state->name);
  if (const int err = os::memfd_create(state->name.c_str(), &state->fd); err != 0) {
    throw Error(err, "creating memfd for region", state->name);
  }
  map_and_register(*state, policy, 0, detail::FileKind::kMemory);
  return Region(std::move(state));
}

Region Region::file(const std::filesystem::path& path, RegionOptions options) {
  auto state = std::make_unique<RegionState>();
  state->kind = RegionKind::kFile;
  state->name = path.string();
  const detail::GrowthPolicy policy = checked_policy(options, state->name);
  state->fd = open_or_throw(path, O_RDWR | O_CREAT | O_TRUNC, "creating region file");
  map_and_register(*state, policy, 0, detail::FileKind::kDisk);
  return Region(std::move(state));
}

Region Region::open(const std::filesystem::path& path, RegionOptions options) {
  auto state = std::make_unique<RegionState>();
  state->kind = RegionKind::kFile;
  state->name = path.string();
  const detail::GrowthPolicy policy = checked_policy(options, state->name);
  state->fd = open_or_throw(path, O_RDWR, "opening region file");
  std::uint64_t size = 0;
  if (const int err = os::file_size(state->fd, &size); err != 0) {
    throw Error(err, "opening region file", state->name, "(fstat)");
  }
  map_and_register(*state, policy, size, detail::FileKind::kDisk);
  // A sparse file's holes would be allocated at the first store into each, where a full
  // disk can only fail the page fault (EFAULT): allocate them now, so ENOSPC is said here.
  detail::FaultReport report;
  if (state->owner->allocate_holes(&report) != detail::FaultOutcome::kResolved) {
    detail::throw_report(report);
  }
  return Region(std::move(state));
}

Region Region::staged(const std::filesystem::path& target, RegionOptions options) {
  auto state = std::make_unique<RegionState>();
  state->name = target.string();
  state->target = target;
  const detail::GrowthPolicy policy = checked_policy(options, state->name);
  const std::filesystem::path dir = directory_of(target);
  int err = os::open_tmpfile(dir.c_str(), 0666, &state->fd);
  if (err == 0) {
    state->kind = RegionKind::kStagedUnnamed;
  } else if (err == EOPNOTSUPP || err == EISDIR) {
    // No O_TMPFILE on this filesystem: a hidden named file beside the target.
    // O_EXCL with mode 0666 (less the umask), as O_TMPFILE and Region::file create files.
    static std::atomic<unsigned> counter{0};
    std::string temp;
    int fd = -1;
    err = EEXIST;
    for (int attempt = 0; err == EEXIST && attempt < 100; ++attempt) {
      temp = (dir / ("." + target.filename().string() + ".mapwright-" + std::to_string(::getpid()) +
                     "-" + std::to_string(counter++))).string();
      err = os::open(temp.c_str(), O_RDWR | O_CREAT | O_EXCL, 0666, &fd);
    }
    if (err != 0) throw Error(err, "creating staging file for region", state->name, "in " + dir.string());
    state->kind = RegionKind::kStagedNamed;
    state->fd = fd;
    state->temp_path = temp;
  } else {
    throw Error(err, "creating staging file for region", state->name, "(O_TMPFILE in " + dir.string() + ")");
  }
  map_and_register(*state, policy, 0, detail::FileKind::kDisk);
  return Region(std::move(state));
}

std::byte* Region::data() const noexcept { return state_ ? state_->base : nullptr; }
std::uint64_t Region::size() const noexcept { return state_ ? state_->owner->committed() : 0; }
std::uint64_t Region::capacity() const noexcept { return state_ ? state_->capacity : 0; }
int Region::fd() const noexcept { return state_ ? state_->fd : -1; }

const std::string& Region::name() const noexcept {
  static const std::string kNone;
  return state_ ? state_->name : kNone;
}

void Region::ensure(std::uint64_t bytes) {
  if (!state_) throw Error(EINVAL, "growing region", "", "(the region was moved or sealed)");
  detail::FaultReport report;
  if (state_->owner->grow(bytes, &report) != detail::FaultOutcome::kResolved) {
    detail::throw_report(report);
  }
}

void Region::finish(std::uint64_t used) {
  if (!state_) throw Error(EINVAL, "finishing region", "", "(the region was moved or sealed)");
  if (used > state_->capacity) {
    throw Error(EINVAL, "finishing region", state_->name,
                "at " + std::to_string(used) + " bytes (more than its capacity)");
  }
  // An unaligned end of a disk file needs the tail buffer at the next growth: get it here,
  // in ordinary code, never in the handler.
  if (used % os::page_size() != 0) state_->owner->reserve_tail_buffer();
  detail::FaultReport report;
  if (state_->owner->truncate(used, &report) != detail::FaultOutcome::kResolved) {
    detail::throw_report(report);
  }
}

void Region::sync() {
  if (!state_) throw Error(EINVAL, "syncing region", "", "(the region was moved or sealed)");
  const std::uint64_t size = state_->owner->committed();
  if (size != 0) {
    if (const int err = os::msync(state_->base, size); err != 0) {
      throw Error(err, "syncing region", state_->name, "(msync)");
    }
  }
  if (const int err = os::fsync(state_->fd); err != 0) {
    throw Error(err, "syncing region", state_->name, "(fsync)");
  }
}

void Region::publish(PublishOptions options) {
  if (!state_ || (state_->kind != RegionKind::kStagedUnnamed &&
                  state_->kind != RegionKind::kStagedNamed)) {
    throw Error(EINVAL, "publishing region", state_ ? state_->name : "",
                "(only a staged region that is not yet published can be published)");
  }
  if (options.durable) sync();  // invariant 8: durable bytes before the name appears
  RegionState& s = *state_;
  const std::filesystem::path dir = directory_of(s.target);
  if (s.kind == RegionKind::kStagedUnnamed) {
    // linkat cannot replace an existing name: link under a fresh hidden name, then rename.
    static std::atomic<unsigned> counter{0};
    std::filesystem::path temp;
    int err = EEXIST;
    for (int attempt = 0; err == EEXIST && attempt < 100; ++attempt) {
      temp = dir / ("." + s.target.filename().string() + ".mapwright-" +
                    std::to_string(::getpid()) + "-" + std::to_string(counter++));
      err = os::link_fd(s.fd, temp.c_str());
    }
    if (err != 0) throw Error(err, "publishing region", s.name, "(linking the staged file)");
    if (const int rerr = os::rename(temp.c_str(), s.target.c_str()); rerr != 0) {
      // The O_TMPFILE inode cannot be linked a second time once this name goes (it lost
      // I_LINKABLE): keep the name as a named staging file, for a retry or the destructor.
      s.kind = RegionKind::kStagedNamed;
      s.temp_path = temp;
      throw Error(rerr, "publishing region", s.name, "(renaming over the target)");
    }
  } else {
    if (const int err = os::rename(s.temp_path.c_str(), s.target.c_str()); err != 0) {
      throw Error(err, "publishing region", s.name, "(renaming over the target)");
    }
    s.temp_path.clear();
  }
  s.kind = RegionKind::kFile;
  if (options.durable) fsync_directory(dir, s.name);
}

SealedImage Region::seal() && {
  if (!state_ || state_->kind != RegionKind::kMemfd) {
    throw Error(EINVAL, "sealing region", state_ ? state_->name : "",
                "(only memfd regions can be sealed)");
  }
  RegionState& s = *state_;
  // No growth may slip in from here on (a load past the end by another thread would grow
  // the file under the image); the region stays registered, so such a fault is reported,
  // and on failure it is put back as it was.
  s.owner->set_frozen(true);
  const std::uint64_t size = s.owner->committed();
  // No shared writable mapping may remain: replace it in place by a read-only view.
  if (const int err = os::remap_private_readonly(s.base, s.mapped, s.fd); err != 0) {
    s.owner->set_frozen(false);
    throw Error(err, "sealing region", s.name, "(replacing the writable mapping)");
  }
  if (const int err = os::add_seals(s.fd, kImageSeals); err != 0) {
    const int back = os::remap_shared_writable(s.base, s.mapped, s.fd);
    s.owner->set_frozen(false);
    std::string why = err == EBUSY ? "(another writable shared mapping of the memfd exists)"
                                   : "(F_ADD_SEALS)";
    if (back != 0) {
      why += "; restoring the writable mapping failed too (" +
             std::string(::strerrordesc_np(back)) + "): the region is now read-only";
    }
    throw Error(err, "sealing region", s.name, why);
  }
  // The read-only view of [0, size) becomes the image's cached mapping; the rest goes.
  s.registration.reset();
  auto image = std::make_shared<SealedImage::State>();
  image->fd = s.fd;
  image->size = size;
  const std::uint64_t kept = round_up(size, os::page_size());
  if (kept < s.mapped) os::munmap(s.base + kept, s.mapped - kept);
  if (kept != 0) {
    image->mapping = s.base;
    image->mapping_length = kept;
  }
  s.fd = -1;
  s.base = nullptr;
  state_.reset();
  return SealedImage(std::move(image));
}

RegionStats Region::stats() const noexcept {
  if (!state_) return {};
  const detail::GrowthCounters c = state_->owner->counters();
  return {c.faults, c.growths, c.failures, state_->owner->committed()};
}

}  // namespace mapwright
