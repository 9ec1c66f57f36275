#include "mapwright/region.h"

#include <string.h>

#include <string>
#include <utility>

#include "backing.h"
#include "growth.h"
#include "mapwright/error.h"
#include "mapwright/fault.h"
#include "os/os.h"
#include "recovery.h"
#include "registration.h"
#include "reservation.h"
#include "sealed_image_state.h"

namespace mapwright {
namespace detail {

// A Region is the composition of four parts, each with one concern:
//
//   backing       the file (backing.h): memfd, file or staged; seal, publish
//   reservation   the address space over it (reservation.h), capacity + guard, MAP_SHARED
//   owner         the upward growth owner (signal/growth.h): what a fault past EOF does
//   registration  the owner in the fault table for the reservation's range (registration.h)
//
// Lives on the heap so that the owner registered in the range table keeps its address when
// the Region is moved. Members are destroyed in reverse order: the registration first
// (waiting for handlers that still use the owner, invariant 4), then the owner, then the
// mapping, then the file.
struct RegionState {
  Backing backing;
  Reservation reservation;
  std::unique_ptr<UpwardGrowth> owner;
  Registration registration;

  explicit RegionState(Backing b) : backing(std::move(b)) {}
};

}  // namespace detail

namespace {

using detail::Backing;
using detail::RegionState;

// Reserved and registered past the capacity, but never backed (the file cannot grow past
// the capacity): a store that runs off the end of a full region faults there and is
// reported as "past the region's capacity" instead of landing in a neighbouring mapping.
constexpr std::uint64_t kGuardBytes = 1ull << 20;

std::uint64_t round_up(std::uint64_t value, std::uint64_t alignment) {
  return (value + alignment - 1) / alignment * alignment;
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
  policy.capacity = options.capacity == 0
                        ? detail::Reservation::automatic_length(64ull << 30, kGuardBytes, name)
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

// Reserves, creates the owner and registers, over `backing`, whose file is `size` bytes.
std::unique_ptr<RegionState> compose(Backing backing, const detail::GrowthPolicy& policy,
                                     std::uint64_t size, detail::FileKind kind, void* at) {
  auto state = std::make_unique<RegionState>(std::move(backing));
  const std::string& name = state->backing.name();
  if (size > policy.capacity) {
    throw Error(EFBIG, "opening region", name,
                "(the file is " + std::to_string(size) + " bytes, more than the capacity of " +
                    std::to_string(policy.capacity) + ")");
  }
  install_fault_handler();
  // At a chosen base the range is exactly what was asked for: a guard zone past it could be
  // taken where the caller made sure only [at, at + capacity) is free.
  state->reservation = detail::Reservation::over_file(state->backing.fd(), policy.capacity,
                                                      at != nullptr ? 0 : kGuardBytes, name, at);
  std::byte* base = state->reservation.base();
  state->owner = std::make_unique<detail::UpwardGrowth>(name, state->backing.fd(), base, policy,
                                                        kind, size);
  if (kind == detail::FileKind::kDisk && size % os::page_size() != 0) {
    state->owner->reserve_tail_buffer();
  }
  const auto begin = reinterpret_cast<std::uintptr_t>(base);
  state->registration = detail::Registration(begin, begin + state->reservation.mapped(),
                                             state->owner.get(), name.c_str());
  return state;
}

}  // namespace

Region::Region(std::unique_ptr<RegionState> state) noexcept : state_(std::move(state)) {}
Region::Region(Region&&) noexcept = default;
Region& Region::operator=(Region&&) noexcept = default;
Region::~Region() = default;

Region Region::memfd(std::string_view name, RegionOptions options) {
  const std::string text(name);
  const detail::GrowthPolicy policy = checked_policy(options, text);  // before any file
  return Region(compose(Backing::memfd(text), policy, 0, detail::FileKind::kMemory, options.base));
}

Region Region::file(const std::filesystem::path& path, RegionOptions options) {
  const detail::GrowthPolicy policy = checked_policy(options, path.string());
  return Region(compose(Backing::create_file(path), policy, 0, detail::FileKind::kDisk, options.base));
}

Region Region::open(const std::filesystem::path& path, RegionOptions options) {
  const detail::GrowthPolicy policy = checked_policy(options, path.string());
  Backing backing = Backing::open_file(path);
  const std::uint64_t size = backing.size();
  // A sparse file stays sparse (a Cap'n Proto message reopened with kReopen keeps its
  // unused segment tails as holes): a store into a hole that the filesystem cannot back is
  // a failed fault, reported with the filesystem's reason (ENOSPC), see signal/growth.h.
  return Region(compose(std::move(backing), policy, size, detail::FileKind::kDisk, options.base));
}

Region Region::staged(const std::filesystem::path& target, RegionOptions options) {
  const detail::GrowthPolicy policy = checked_policy(options, target.string());
  return Region(compose(Backing::staged(target), policy, 0, detail::FileKind::kDisk, options.base));
}

std::byte* Region::data() const noexcept { return state_ ? state_->reservation.base() : nullptr; }
std::uint64_t Region::size() const noexcept { return state_ ? state_->owner->committed() : 0; }
std::uint64_t Region::capacity() const noexcept {
  return state_ ? state_->reservation.length() : 0;
}
int Region::fd() const noexcept { return state_ ? state_->backing.fd() : -1; }

const std::string& Region::name() const noexcept {
  static const std::string kNone;
  return state_ ? state_->backing.name() : kNone;
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
  if (used > capacity()) {
    throw Error(EINVAL, "finishing region", name(),
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
    if (const int err = os::msync(state_->reservation.base(), size); err != 0) {
      throw Error(err, "syncing region", name(), "(msync)");
    }
  }
  state_->backing.fsync();
}

void Region::publish(PublishOptions options) {
  if (!state_ || !state_->backing.staged()) {
    throw Error(EINVAL, "publishing region", state_ ? name() : "",
                "(only a staged region that is not yet published can be published)");
  }
  if (options.durable) sync();  // invariant 8: durable bytes before the name appears
  state_->backing.publish(options.durable, options.mode);
}

SealedImage Region::seal() && {
  if (!state_ || state_->backing.kind() != detail::BackingKind::kMemfd) {
    throw Error(EINVAL, "sealing region", state_ ? name() : "",
                "(only memfd regions can be sealed)");
  }
  RegionState& s = *state_;
  const int fd = s.backing.fd();
  // No growth may slip in from here on (a load past the end by another thread would grow
  // the file under the image); the region stays registered, so such a fault is reported,
  // and on failure it is put back as it was.
  s.owner->set_frozen(true);
  const std::uint64_t size = s.owner->committed();
  // No shared writable mapping may remain: replace it in place by a read-only view.
  if (const int err = s.reservation.remap_private_readonly(fd); err != 0) {
    s.owner->set_frozen(false);
    throw Error(err, "sealing region", name(), "(replacing the writable mapping)");
  }
  if (const int err = s.backing.add_seals(kImageSeals); err != 0) {
    const int back = s.reservation.remap_shared_writable(fd);
    s.owner->set_frozen(false);
    std::string why = err == EBUSY ? "(another writable shared mapping of the memfd exists)"
                                   : "(F_ADD_SEALS)";
    if (back != 0) {
      why += "; restoring the writable mapping failed too (" +
             std::string(::strerrordesc_np(back)) + "): the region is now read-only";
    }
    throw Error(err, "sealing region", name(), why);
  }
  // The read-only view of [0, size) becomes the image's cached mapping; the rest goes.
  s.registration.reset();
  auto image = std::make_shared<SealedImage::State>();
  image->size = size;
  image->mapping = s.reservation.release_keeping(size);
  image->mapping_length = image->mapping != nullptr ? round_up(size, os::page_size()) : 0;
  image->fd = s.backing.release_fd();
  state_.reset();
  return SealedImage(std::move(image));
}

RegionStats Region::stats() const noexcept {
  if (!state_) return {};
  const detail::GrowthCounters c = state_->owner->counters();
  return {c.faults, c.growths, c.failures, state_->owner->committed()};
}

}  // namespace mapwright
