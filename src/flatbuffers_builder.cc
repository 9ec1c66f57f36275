// src/flatbuffers_builder.cc — MappedFlatBufferBuilder: a FlatBufferBuilder whose block is
// the top of a file that grows downward (DownwardGrowth), so that written data never moves.
//
// How the allocator and FlatBuffers' vector_downward meet. The vector keeps one block:
// scratch (the vtable list, field locations) at its start, data at its end. When it needs
// room it first raises its own `reserved_`, then asks the allocator for the larger block
// (allocate, or reallocate_downward with what is in use at each end), then sets its pointers
// from the block and `reserved_`. Our blocks always end at the top, so the data is already
// where the larger block wants it; only the scratch moves down with the block's start.
//
// Two things need more than an allocator can say, and MappedFlatBufferBuilder::
// replace_vector() does them (the builder's vector is a protected member): a refused growth
// must leave the vector as it was (it has already raised `reserved_`), and past half the
// capacity the vector is given the whole capacity instead of the half-again it asked for.
// The second is what makes the 2 GiB check exact: FlatBuffers asks for old + max(len, old/2),
// so a request above the cap from a block of at most half the cap must have len > cap - old,
// which cannot fit; and from a block that is the cap, nothing more can fit. A block between
// the two would leave len unknown (any len up to old/2 asks for the same size).
#include <fcntl.h>
#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

#include "backing.h"
#include "growth.h"
#include "mapwright/fault.h"
#include "mapwright/flatbuffers.h"
#include "os/os.h"
#include "registration.h"
#include "reservation.h"
#include "sealed_image_state.h"

namespace mapwright {
namespace detail {
namespace {

constexpr const char* kGrowing = "growing FlatBuffer";
constexpr const char* kFinishing = "finishing FlatBuffer";
// FlatBufferBuilder's default buffer_minalign (AlignOf<largest_scalar_t>()); blocks are
// multiples of it.
constexpr std::size_t kMinAlign = 8;
// The largest block: scratch and data together stay below FLATBUFFERS_MAX_BUFFER_SIZE, so the
// data alone always does. A multiple of the page size and of kMinAlign.
constexpr std::uint64_t kMaxBlock = (1ull << 31) - 4096;
// Past the top: reserved, never backed, so a store that runs off the end faults in the
// builder's range instead of landing in a neighbouring mapping.
constexpr std::uint64_t kGuardBytes = 1ull << 20;
// The newest data bytes that stay mapped when written pages are dropped (FlatBuffers patches
// the table it has just written, and reads recent vtables).
constexpr std::uint64_t kKeepMapped = 1ull << 20;
// The most bytes one copy step of finish() moves.
constexpr std::uint64_t kCopyChunk = 64ull << 20;

std::string str(std::uint64_t value) { return std::to_string(value); }

std::uint64_t round_down(std::uint64_t value, std::uint64_t alignment) {
  return value / alignment * alignment;
}
std::uint64_t round_up(std::uint64_t value, std::uint64_t alignment) {
  return (value + alignment - 1) / alignment * alignment;
}

}  // namespace

class FlatBufferAllocator final : public ::flatbuffers::Allocator {
 public:
  explicit FlatBufferAllocator(FlatBufferState& state) noexcept : state_(state) {}
  std::uint8_t* allocate(std::size_t size) override;
  // Blocks are parts of the builder's reservation; nothing to give back.
  void deallocate(std::uint8_t*, std::size_t) override {}
  std::uint8_t* reallocate_downward(std::uint8_t* old_p, std::size_t old_size,
                                    std::size_t new_size, std::size_t in_use_back,
                                    std::size_t in_use_front) override;

  MappedFlatBufferBuilder* builder = nullptr;
  // While replace_vector() builds a vector: allocate() names the block below the top that is
  // already backed, and backs nothing.
  bool replacing = false;

 private:
  std::uint8_t* grow(std::uint8_t* old_p, std::size_t old_size, std::size_t new_size,
                     std::size_t back, std::size_t front);
  // Restores the builder's vector to the block it had, then throws.
  [[noreturn]] void refuse(std::size_t old_size, std::size_t back, std::size_t front, int error,
                           std::string detail);
  void drop_written(std::size_t back) noexcept;

  FlatBufferState& state_;
};

// Members are destroyed in reverse order: the registration first (invariant 4), then the
// owner, the reservation, the file.
struct FlatBufferState {
  Backing backing;
  Reservation reservation;
  std::unique_ptr<DownwardGrowth> owner;
  Registration registration;
  FlatBufferAllocator allocator{*this};

  MappedFlatBufferOptions options;
  std::uint64_t capacity = 0;   // the reservation's length, and the file's while building
  std::uint64_t block_cap = 0;  // the largest block the builder gets
  std::uint64_t fsize_limit = 0;  // RLIMIT_FSIZE when it clamped the capacity, else 0
  bool as_limited = false;        // the automatic capacity was cut by RLIMIT_AS
  MappedFlatBufferStats stats;
  std::uint64_t dropped = 0;  // bytes below the top already dropped from the page tables

  // After finish(): the file is the buffer, mapped read-only here.
  bool finished = false;
  const void* view = nullptr;
  std::uint64_t view_length = 0;
  std::uint64_t size = 0;

  explicit FlatBufferState(Backing b) : backing(std::move(b)) {}
  ~FlatBufferState() {
    if (view != nullptr) os::munmap(view, view_length);
  }
  std::uint8_t* top() const noexcept {
    return reinterpret_cast<std::uint8_t*>(reservation.base()) + capacity;
  }
  const std::string& name() const noexcept { return backing.name(); }
};

std::uint8_t* FlatBufferAllocator::allocate(std::size_t size) {
  if (replacing) return state_.top() - size;
  return grow(nullptr, 0, size, 0, 0);
}

std::uint8_t* FlatBufferAllocator::reallocate_downward(std::uint8_t* old_p, std::size_t old_size,
                                                       std::size_t new_size,
                                                       std::size_t in_use_back,
                                                       std::size_t in_use_front) {
  return grow(old_p, old_size, new_size, in_use_back, in_use_front);
}

void FlatBufferAllocator::refuse(std::size_t old_size, std::size_t back, std::size_t front,
                                 int error, std::string detail) {
  ++state_.stats.failures;
  builder->replace_vector(old_size, back, front);
  builder->abandon_vector();
  throw Error(error, kGrowing, state_.name(), std::move(detail));
}

std::uint8_t* FlatBufferAllocator::grow(std::uint8_t* old_p, std::size_t old_size,
                                        std::size_t new_size, std::size_t back,
                                        std::size_t front) {
  FlatBufferState& s = state_;
  if (s.finished) {
    refuse(old_size, back, front, EINVAL, "(the builder is finished: make a new one)");
  }
  const auto asked = [&] {
    return "(to a block of " + str(new_size) + " bytes, holding " + str(back) +
           " bytes of buffer: ";
  };
  if (new_size > s.block_cap) {
    if (s.block_cap == kMaxBlock) {
      refuse(old_size, back, front, EFBIG,
             asked() + "FlatBuffers addresses at most 2 GiB - 1 bytes)");
    }
    if (s.fsize_limit != 0) {
      refuse(old_size, back, front, EFBIG,
             asked() + "the file would pass RLIMIT_FSIZE, " + str(s.fsize_limit) + " bytes)");
    }
    refuse(old_size, back, front, ENOMEM,
           asked() + "past the builder's capacity of " + str(s.capacity) + " bytes" +
               (s.as_limited ? ", a quarter of the address space RLIMIT_AS (ulimit -v) left "
                               "free: raise it, or set MappedFlatBufferOptions::capacity)"
                             : ")"));
  }
  // Past half the cap: all of it (see the top of this file).
  const std::size_t grant = new_size > s.block_cap / 2 ? s.block_cap : new_size;
  FaultReport report;
  if (s.owner->commit_down(grant, &report) != FaultOutcome::kResolved) {
    refuse(old_size, back, front, report.error,
           asked() + (report.error == ENOSPC   ? std::string("the filesystem is full")
                    : report.reason != nullptr ? std::string(report.reason)
                                               : std::string(::strerrordesc_np(report.error))) +
               ")");
  }
  std::uint8_t* const block = s.top() - grant;
  if (old_p != nullptr) {
    // Data stays where it is: both blocks end at the top. Measured, not assumed.
    if (old_p + old_size != block + grant) s.stats.data_bytes_moved += back;
    if (front != 0) {
      std::memmove(block, old_p, front);
      s.stats.scratch_bytes_moved += front;
    }
  }
  ++s.stats.growths;
  if (s.options.drop_written_pages) drop_written(back);
  if (grant != new_size) builder->replace_vector(grant, back, front);
  return block;
}

void FlatBufferAllocator::drop_written(std::size_t back) noexcept {
  FlatBufferState& s = state_;
  if (back < s.dropped) s.dropped = 0;  // the builder was cleared and writes from the top again
  if (back <= kKeepMapped) return;
  const std::uint64_t page = os::page_size();
  // Whole pages of [top - (back - kKeepMapped), top - dropped).
  const std::uint64_t upto = round_down(back - kKeepMapped, page);
  if (upto <= s.dropped) return;
  (void)os::madvise(s.top() - upto, upto - s.dropped, MADV_DONTNEED);
  s.dropped = upto;
}

FlatBufferHolder::FlatBufferHolder(const FlatBufferTarget& target,
                                   const MappedFlatBufferOptions& options) {
  const std::uint64_t page = os::page_size();
  const std::string& name = target.name;
  const auto refuse = [&](int error, const std::string& why) {
    throw Error(error, "creating FlatBuffer builder", name, why);
  };
  if (options.capacity > (1ull << 47)) {
    refuse(EINVAL, "(capacity " + str(options.capacity) + " is larger than the address space)");
  }
  if (options.initial_size == 0) refuse(EINVAL, "(initial_size must not be 0)");
  std::uint64_t capacity =
      options.capacity != 0
          ? round_up(options.capacity, page)
          : Reservation::automatic_length(kMaxBlock, kGuardBytes, name);
  // Less than FlatBuffers could address only because of `ulimit -v`: say so when it refuses.
  const bool as_limited = options.capacity == 0 && capacity < kMaxBlock;
  // The file is `capacity` bytes while the buffer is built: RLIMIT_FSIZE bounds it.
  std::uint64_t fsize_limit = 0;
  std::uint64_t limit = UINT64_MAX;
  if (os::file_size_limit(&limit) == 0 && limit < capacity) {
    capacity = round_down(limit, page);
    fsize_limit = limit;
    if (capacity == 0) {
      refuse(EFBIG, "(RLIMIT_FSIZE is " + str(limit) + " bytes, less than one page)");
    }
  }
  Backing backing = [&] {
    switch (target.kind) {
      case FlatBufferTarget::Kind::kMemfd:
        return Backing::memfd(name);
      case FlatBufferTarget::Kind::kFile:
        return Backing::create_file(target.path);
      case FlatBufferTarget::Kind::kStaged:
        break;
    }
    return Backing::staged(target.path);
  }();
  // A FIFO or a device opens, but cannot be sized and mapped: say so before trying.
  os::FileStatus status;
  if (const int err = os::fd_status(backing.fd(), &status); err != 0) refuse(err, "(fstat)");
  if (status.type != os::FileType::kRegular) {
    refuse(EINVAL, std::string("(not a regular file: a ") + os::to_string(status.type) + ")");
  }
  if (status.pseudo) refuse(EINVAL, "(a /proc or /sys file cannot hold a buffer)");
  const FileKind kind =
      backing.kind() == BackingKind::kMemfd ? FileKind::kMemory : FileKind::kDisk;
  install_fault_handler();
  state_ = std::make_unique<FlatBufferState>(std::move(backing));
  FlatBufferState& s = *state_;
  s.options = options;
  s.capacity = capacity;
  s.block_cap = round_down(std::min(capacity, kMaxBlock), kMinAlign);
  s.fsize_limit = fsize_limit;
  s.as_limited = as_limited;
  s.reservation = Reservation::anonymous(capacity, kGuardBytes, name);
  s.owner = std::make_unique<DownwardGrowth>(name, s.backing.fd(), s.reservation.base(),
                                             capacity, kind);
  if (const int err = s.owner->start(); err != 0) {
    refuse(err, "(sizing the file to the capacity, " + str(capacity) + " bytes)");
  }
  const auto begin = reinterpret_cast<std::uintptr_t>(s.reservation.base());
  s.registration = Registration(begin, begin + s.reservation.mapped(), s.owner.get(),
                                s.name().c_str());
}

FlatBufferHolder::~FlatBufferHolder() = default;

::flatbuffers::Allocator* FlatBufferHolder::allocator() noexcept { return &state_->allocator; }

}  // namespace detail

MappedFlatBufferBuilder::MappedFlatBufferBuilder(const FlatBufferTarget& target,
                                                 MappedFlatBufferOptions options)
    : detail::FlatBufferHolder(target, options),
      ::flatbuffers::FlatBufferBuilder(options.initial_size, allocator(), false,
                                       detail::kMinAlign) {
  state_->allocator.builder = this;
}

MappedFlatBufferBuilder::~MappedFlatBufferBuilder() = default;

void MappedFlatBufferBuilder::replace_vector(std::size_t reserved, std::size_t back,
                                             std::size_t front) {
  // A vector made the only way one can be: by its own calls. ensure_space(reserved) makes its
  // block exactly `reserved` bytes (allocate() names it: the same bytes below the top),
  // make_space(back) claims the data, and pushing each scratch byte onto itself claims the
  // scratch. None of it allocates memory or can fail.
  detail::FlatBufferAllocator& allocator = state_->allocator;
  ::flatbuffers::vector_downward fresh(state_->options.initial_size, &allocator, false,
                                       detail::kMinAlign);
  if (reserved != 0) {
    allocator.replacing = true;
    fresh.ensure_space(reserved);
    fresh.make_space(back);
    const std::uint8_t* scratch = fresh.scratch_data();
    for (std::size_t i = 0; i < front; ++i) fresh.scratch_push_small(scratch[i]);
    allocator.replacing = false;
  }
  buf_.swap(fresh);
}

void MappedFlatBufferBuilder::abandon_vector() noexcept {
  // Outside a table (no field recorded), a refused growth came from a vector, string or
  // Finish that FlatBuffers had started (StartVector sets `nested` before it asks for room)
  // and will never end: without this, the next Create* call would assert NotNested().
  if (num_field_loc == 0) nested = false;
}

MappedFlatBufferBuilder::AlignedBytes MappedFlatBufferBuilder::aligned_bytes(
    std::uint64_t size, std::uint64_t alignment) {
  const std::uint64_t page = os::page_size();
  if (alignment == 0) alignment = page;
  if (alignment > page || (alignment & (alignment - 1)) != 0) {
    throw Error(EINVAL, "adding bytes to FlatBuffer", state_->name(),
                "(alignment " + std::to_string(alignment) +
                    " is not a power of two up to the page size)");
  }
  if (size >= kMaxFlatBufferBytes) {
    throw Error(EFBIG, "adding bytes to FlatBuffer", state_->name(),
                "(" + std::to_string(size) + " bytes: FlatBuffers addresses at most 2 GiB - 1)");
  }
  PreAlign(static_cast<std::size_t>(size), static_cast<std::size_t>(alignment));
  AlignedBytes bytes;
  bytes.offset = CreateUninitializedVector(static_cast<std::size_t>(size), &bytes.data);
  return bytes;
}

void MappedFlatBufferBuilder::check_inside(const std::uint8_t* dest, std::uint64_t length,
                                           const char* operation) const {
  const detail::FlatBufferState& s = *state_;
  const std::uint8_t* const top = s.top();
  if (s.finished || length > GetSize() || dest < top - GetSize() || dest > top - length) {
    throw Error(EINVAL, operation, s.name(),
                "(the " + std::to_string(length) +
                    " bytes are not inside the buffer being built)");
  }
}

void MappedFlatBufferBuilder::fill(std::uint8_t* dest, const void* source, std::size_t length) {
  check_inside(dest, length, "filling FlatBuffer");
  const detail::FlatBufferState& s = *state_;
  // The reservation maps the file from offset 0.
  const auto offset = static_cast<std::uint64_t>(
      dest - reinterpret_cast<const std::uint8_t*>(s.reservation.base()));
  if (const int err = os::pwrite_all(s.backing.fd(), source, length, offset); err != 0) {
    throw Error(err, "filling FlatBuffer", s.name(), "(pwrite of " + std::to_string(length) +
                                                         " bytes at offset " +
                                                         std::to_string(offset) + ")");
  }
}

void MappedFlatBufferBuilder::fill_from_fd(std::uint8_t* dest, int fd, std::uint64_t offset,
                                           std::uint64_t length, const std::string& source) {
  check_inside(dest, length, "filling FlatBuffer");
  const detail::FlatBufferState& s = *state_;
  std::size_t got = 0;
  if (const int err = os::pread_full(fd, dest, static_cast<std::size_t>(length), offset, &got);
      err != 0) {
    throw Error(err, "reading", source, "(into FlatBuffer " + s.name() + ")");
  }
  if (got != length) {
    throw Error(EIO, "reading", source,
                "(ended after " + std::to_string(got) + " of " + std::to_string(length) +
                    " bytes, filling FlatBuffer " + s.name() + ")");
  }
  if (s.options.drop_written_pages) {
    const std::uint64_t page = os::page_size();
    const auto begin = detail::round_up(reinterpret_cast<std::uintptr_t>(dest), page);
    const auto end = detail::round_down(reinterpret_cast<std::uintptr_t>(dest) + length, page);
    if (end > begin) (void)os::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
  }
}

FlatBufferFinish MappedFlatBufferBuilder::finish() {
  detail::FlatBufferState& s = *state_;
  if (s.finished) {
    throw Error(EINVAL, detail::kFinishing, s.name(), "(finish() was already called)");
  }
  if (!finished) {
    throw Error(EINVAL, detail::kFinishing, s.name(),
                "(call Finish(root) or FinishSizePrefixed(root) first)");
  }
  const std::uint64_t size = GetSize();
  const std::uint64_t start = s.capacity - size;  // the buffer's first byte in the file
  const int fd = s.backing.fd();
  FlatBufferFinish result;
  result.size = size;
  if (start != 0 && s.backing.kind() != detail::BackingKind::kMemfd &&
      start % os::page_size() == 0) {
    // Takes [0, start) out of the file; EINVAL where the start is not on a filesystem block
    // boundary, EOPNOTSUPP where the filesystem cannot (tmpfs, btrfs): copy instead.
    const int err = os::fallocate(fd, FALLOC_FL_COLLAPSE_RANGE, 0, start);
    if (err == 0) {
      result.method = FlatBufferFinish::Method::kCollapse;
    } else if (err != EOPNOTSUPP && err != EINVAL) {
      throw Error(err, detail::kFinishing, s.name(),
                  "(taking the " + detail::str(start) + " unused bytes before the buffer out "
                  "of the file; the buffer is as it was)");
    }
  }
  if (start != 0 && result.method == FlatBufferFinish::Method::kNone) {
    // Down to offset 0 in steps no longer than the distance, so that a step never reads what
    // an earlier one wrote.
    const std::uint64_t step = std::min(start, detail::kCopyChunk);
    for (std::uint64_t done = 0; done < size;) {
      const std::uint64_t n = std::min(step, size - done);
      std::uint64_t copied = 0;
      int err = os::copy_file_range(fd, start + done, fd, done, n, &copied);
      if (err != 0 && os::is_copy_refusal(err)) {
        err = os::pwrite_all(fd, s.top() - size + done, static_cast<std::size_t>(n), done);
        copied = n;
      }
      if (err == 0 && copied != n) err = EIO;
      if (err != 0) {
        throw Error(err, detail::kFinishing, s.name(),
                    "(copying the buffer to the start of the file, at byte " +
                        detail::str(done) + " of " + detail::str(size) + ")");
      }
      done += n;
    }
    if (const int err = os::ftruncate(fd, size); err != 0) {
      throw Error(err, detail::kFinishing, s.name(), "(truncating the file to the buffer)");
    }
    result.method = FlatBufferFinish::Method::kCopy;
    result.bytes_copied = size;
  }
  // The building mapping goes; the file, now the buffer alone, is mapped read-only.
  s.registration.reset();
  s.owner.reset();
  s.reservation = detail::Reservation();
  s.finished = true;
  s.size = size;
  Reset();  // the vector's block was in the reservation; the allocator frees nothing
  if (size != 0) {
    if (const int err = os::map_readonly_at(fd, 0, size, &s.view); err != 0) {
      throw Error(err, detail::kFinishing, s.name(), "(mapping the finished buffer)");
    }
    s.view_length = size;
  }
  return result;
}

const std::uint8_t* MappedFlatBufferBuilder::data() const noexcept {
  return static_cast<const std::uint8_t*>(state_->view);
}
std::uint64_t MappedFlatBufferBuilder::size() const noexcept { return state_->size; }
int MappedFlatBufferBuilder::fd() const noexcept { return state_->backing.fd(); }
const std::string& MappedFlatBufferBuilder::name() const noexcept { return state_->name(); }

void MappedFlatBufferBuilder::sync() {
  if (!state_->finished) {
    throw Error(EINVAL, "syncing FlatBuffer", name(), "(call finish() first)");
  }
  state_->backing.fsync();
}

void MappedFlatBufferBuilder::publish(bool durable) {
  detail::FlatBufferState& s = *state_;
  if (!s.finished || !s.backing.staged()) {
    throw Error(EINVAL, "publishing FlatBuffer", name(),
                !s.finished ? "(call finish() first)"
                            : "(only a staged builder that is not yet published can publish)");
  }
  if (durable) s.backing.fsync();  // invariant 8: durable bytes before the name appears
  s.backing.publish(durable);
}

SealedImage MappedFlatBufferBuilder::seal() {
  detail::FlatBufferState& s = *state_;
  if (!s.finished || s.backing.kind() != detail::BackingKind::kMemfd || s.backing.fd() < 0) {
    throw Error(EINVAL, "sealing FlatBuffer", name(),
                !s.finished ? "(call finish() first)"
                            : "(only a memfd builder can be sealed, once)");
  }
  // A shared mapping of an fd opened for writing counts as writable to F_SEAL_WRITE even
  // when it is read-only (it could be made writable): the view goes first, and the image
  // maps itself when asked.
  if (s.view != nullptr) {
    os::munmap(s.view, s.view_length);
    s.view = nullptr;
    s.view_length = 0;
  }
  if (const int err = s.backing.add_seals(kImageSeals); err != 0) {
    if (s.size != 0) (void)os::map_readonly_at(s.backing.fd(), 0, s.size, &s.view);
    if (s.view != nullptr) s.view_length = s.size;
    throw Error(err, "sealing FlatBuffer", name(),
                err == EBUSY ? "(another writable shared mapping of the memfd exists)"
                             : "(F_ADD_SEALS)");
  }
  auto image = std::make_shared<SealedImage::State>();
  image->size = s.size;
  image->fd = s.backing.release_fd();
  return SealedImage(std::move(image));
}

MappedFlatBufferStats MappedFlatBufferBuilder::stats() const noexcept {
  MappedFlatBufferStats stats = state_->stats;
  stats.committed = state_->owner ? state_->owner->committed() : 0;
  return stats;
}

}  // namespace mapwright
