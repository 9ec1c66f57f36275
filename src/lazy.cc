// Lazily filled images (lazy.h): a LazyFill owner (signal/lazy_fill.h) over private memory
// registered with a userfaultfd in SIGBUS mode, or an eager copy where that cannot be had.
#include "mapwright/lazy.h"

#include <fcntl.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>

#include "fork_holes.h"
#include "frame_decoders.h"
#include "lazy_fill.h"
#include "mapwright/error.h"
#include "mapwright/fault.h"
#include "os/os.h"
#include "registration.h"
#include "reservation.h"
#include "zstd_frames.h"

namespace mapwright {

// What a LazyImage reads: whole pages at `bytes`, the last partial page from `tail`.
struct LazySource::State {
  std::string description;
  std::uint64_t size = 0;
  const std::byte* bytes = nullptr;
  std::unique_ptr<std::byte[]> tail;  // one page, zero past the end; null if none
  std::optional<SealedImage> image;   // kept alive: `bytes` is its mapping
  // A file source: the descriptor (the eager path reads with pread, which reports a file
  // that shrank instead of faulting) and the mapping `bytes` points into.
  os::OwnedFd fd;
  std::uint64_t offset = 0;
  const void* mapping = nullptr;
  std::uint64_t mapping_length = 0;
  // A compressed source: `bytes` is its stored frames, `frames` their table (pointing into
  // frame_ends), `decoders` the handler's slots.
  std::vector<std::uint64_t> frame_ends;
  detail::CompressedFrames frames;
  // Made by the first LazyImage of the source (a source is shared, const, between images).
  mutable std::mutex decoders_mutex;
  mutable std::unique_ptr<detail::FrameDecoders> decoders;

  State() = default;
  State(const State&) = delete;
  State& operator=(const State&) = delete;
  ~State() {
    if (mapping != nullptr) (void)os::munmap(mapping, mapping_length);
  }

  // Copies [from, to) of the source into `out` (which holds at least to - from bytes):
  // memcpy from memory, pread from a file. Returns 0 or the errno (EFAULT: the file is
  // shorter now than the range).
  int copy(std::uint64_t from, std::uint64_t to, std::byte* out) const noexcept {
    if (fd.get() < 0) {
      std::memcpy(out, bytes + from, to - from);
      return 0;
    }
    std::size_t got = 0;
    if (const int err = os::pread_full(fd.get(), out, to - from, offset + from, &got); err != 0) {
      return err;
    }
    return got == to - from ? 0 : EFAULT;
  }
};

namespace {

constexpr const char* kSource = "opening lazy source";
constexpr const char* kCreate = "creating lazy image";
constexpr std::uint64_t kMaxWindow = 65536;

std::uint64_t page_size() { return os::page_size(); }

// The last partial page of `state`'s source, zero-padded, if its size is not a whole number of
// pages. Throws Error when the file cannot be read.
void make_tail(LazySource::State& state) {
  const std::uint64_t page = page_size();
  const std::uint64_t whole = state.size / page * page;
  if (whole == state.size) return;
  state.tail.reset(new std::byte[page]());
  if (const int err = state.copy(whole, state.size, state.tail.get()); err != 0) {
    throw Error(err, kSource, state.description,
                "(reading its last " + std::to_string(state.size - whole) + " bytes)");
  }
}

// Keeps a duplicate of `fd` in `state` and maps `mapped` bytes of it from `offset` (from the
// page below it; nothing when 0): state->bytes points at `offset`. Throws Error naming the
// source.
void map_file_range(LazySource::State& state, int fd, std::uint64_t offset, std::uint64_t size,
                    std::uint64_t mapped, const char* what) {
  int copy = -1;
  if (const int err = os::dup_cloexec(fd, 0, &copy); err != 0) {
    throw Error(err, kSource, state.description, "(dup)");
  }
  state.fd.reset(copy);
  state.offset = offset;
  state.size = size;
  if (mapped == 0) return;
  const std::uint64_t page = page_size();
  const std::uint64_t start = offset / page * page;
  const std::uint64_t length = offset - start + mapped;
  const void* mapping = nullptr;
  if (const int err = os::map_readonly_at(copy, start, length, &mapping); err != 0) {
    throw Error(err, kSource, state.description, what);
  }
  state.mapping = mapping;
  state.mapping_length = length;
  state.bytes = static_cast<const std::byte*>(mapping) + (offset - start);
}

}  // namespace

LazySource LazySource::image(const SealedImage& image) {
  auto state = std::make_shared<State>();
  state->description = "sealed image";
  state->size = image.size();
  state->bytes = image.map().data();
  state->image = image;
  make_tail(*state);
  return LazySource(std::move(state));
}

LazySource LazySource::memory(std::span<const std::byte> bytes) {
  auto state = std::make_shared<State>();
  state->description = "memory";
  state->size = bytes.size();
  state->bytes = bytes.data();
  make_tail(*state);
  return LazySource(std::move(state));
}

LazySource LazySource::file(int fd, std::uint64_t offset, std::uint64_t size) {
  return from_file(fd, offset, size, "fd " + std::to_string(fd));
}

LazySource LazySource::from_file(int fd, std::uint64_t offset, std::uint64_t size,
                                 std::string description) {
  auto state = std::make_shared<State>();
  state->description = std::move(description);
  os::FileStatus status;
  if (const int err = os::fd_status(fd, &status); err != 0) {
    throw Error(err, kSource, state->description, "(fstat)");
  }
  if (status.type != os::FileType::kRegular) {
    throw Error(ENODEV, kSource, state->description, "(not a regular file)");
  }
  if (size == UINT64_MAX) size = offset <= status.size ? status.size - offset : 0;
  if (offset > status.size || size > status.size - offset) {
    throw Error(EINVAL, kSource, state->description,
                "(bytes " + std::to_string(offset) + " to " + std::to_string(offset + size) +
                    " of a " + std::to_string(status.size) + "-byte file)");
  }
  const std::uint64_t page = page_size();
  map_file_range(*state, fd, offset, size, size / page * page, "(mmap of the range)");
  make_tail(*state);
  return LazySource(std::move(state));
}

LazySource LazySource::compressed(int fd, std::uint64_t offset, std::uint64_t stored,
                                  std::uint64_t size, std::uint64_t frame_bytes,
                                  std::vector<std::uint64_t> frame_ends, std::string description) {
  auto state = std::make_shared<State>();
  state->description = std::move(description);
  map_file_range(*state, fd, offset, size, stored, "(mmap of its compressed bytes)");
  state->frame_ends = std::move(frame_ends);
  state->frames.stored = state->bytes;
  state->frames.ends = state->frame_ends.data();
  state->frames.count = state->frame_ends.size();
  state->frames.frame_bytes = frame_bytes;
  state->frames.size = size;
  return LazySource(std::move(state));
}

LazySource LazySource::file(const std::filesystem::path& path, std::uint64_t offset,
                            std::uint64_t size) {
  int fd = -1;
  if (const int err = os::open(path.c_str(), O_RDONLY | O_NONBLOCK, 0, &fd); err != 0) {
    throw Error(err, kSource, path.string());
  }
  const os::OwnedFd owned(fd);
  return from_file(fd, offset, size, path.string());
}

std::uint64_t LazySource::size() const noexcept { return state_->size; }
const std::string& LazySource::description() const noexcept { return state_->description; }

const char* to_string(LazyMode mode) noexcept {
  switch (mode) {
    case LazyMode::kUserfaultfd: return "userfaultfd (SIGBUS mode)";
    case LazyMode::kEager: return "eager copy";
  }
  return "unknown";
}

// Destroyed bottom-up: the registration first (waiting for handlers still filling,
// invariant 4), then the owner, the userfaultfd, the mapping, the source.
struct LazyImage::State {
  LazySource source;
  LazyOptions options;
  LazyMode mode = LazyMode::kUserfaultfd;
  std::uint64_t length = 0;  // the source's size rounded up to a page
  detail::Reservation reservation;
  os::OwnedFd uffd;
  std::unique_ptr<detail::LazyFill> owner;
  std::atomic<std::uint64_t> eager_pages{0};  // pages the eager path copied
  std::atomic<std::uint64_t> resets{0};
  int unavailable = 0;  // why userfaultfd could not be used (kEager)
  // The range's MADV_DONTFORK, forgotten once the registration is gone (fork_holes.h).
  detail::ForgetDontForkOnExit forget_hole;
  detail::Registration registration;

  explicit State(LazySource s, LazyOptions o) : source(std::move(s)), options(std::move(o)) {}
  State(const State&) = delete;
  State& operator=(const State&) = delete;
  // Before the members go: a thread still touching the image (the caller's race) must meet
  // a SIGSEGV, never bytes of a range that is no longer filled (after the userfaultfd is
  // closed, a missing page would read as zeros): the range becomes inaccessible first, and a
  // handler filling meanwhile is told to let its access retry, which then faults on the
  // protection. Then the registration is erased (waiting for handlers), and so on.
  ~State() {
    if (!owner) return;
    owner->close();
    (void)os::protect(reservation.base(), length, false);
  }

  // The eager path: the whole source into the mapping. Throws Error.
  void copy_all(const char* operation) {
    const LazySource::State& from = *source.state_;
    const std::uint64_t page = page_size();
    if (from.frames.frame_bytes != 0) {
      // Every frame decoded in place, and the rest of the last page zeroed (a reset comes
      // here too, after the caller's writes).
      if (std::string why = detail::decode_frames(from.frames, reservation.base(), {});
          !why.empty()) {
        throw Error(EBADMSG, operation, options.name, "(decoding " + from.description + ": " + why + ")",
                    Error::DetailIsCause{});
      }
      std::memset(reservation.base() + from.size, 0, length - from.size);
      eager_pages.fetch_add(length / page, std::memory_order_relaxed);
      return;
    }
    const std::uint64_t whole = from.size / page * page;
    if (const int err = from.copy(0, whole, reservation.base()); err != 0) {
      throw Error(err, operation, options.name, "(copying " + from.description + ")");
    }
    if (from.tail) std::memcpy(reservation.base() + whole, from.tail.get(), page);
    eager_pages.fetch_add(length / page, std::memory_order_relaxed);
  }
};

LazyImage::LazyImage(LazySource source, LazyOptions options)
    : state_(std::make_unique<State>(std::move(source), std::move(options))) {
  State& s = *state_;
  if (s.options.window_pages == 0 || s.options.window_pages > kMaxWindow) {
    throw Error(EINVAL, kCreate, s.options.name,
                "(window_pages is " + std::to_string(s.options.window_pages) +
                    "; it must be 1 to " + std::to_string(kMaxWindow) + ")");
  }
  const LazySource::State& from = *s.source.state_;
  const std::uint64_t page = page_size();
  s.length = (from.size + page - 1) / page * page;
  if (s.length == 0) return;

  // Before anything is mapped: whether userfaultfd can be had, and why not.
  int uffd = -1;
  const int unavailable = os::open_lazy_fill(&uffd, nullptr);
  if (unavailable != 0 && s.options.fallback == LazyFallback::kError) {
    const char* why = unavailable == ENOSYS  ? "(userfaultfd: this kernel has none)"
                      : unavailable == EPERM ? "(userfaultfd refused: a seccomp filter, or "
                                               "vm.unprivileged_userfaultfd; "
                                               "LazyFallback::kEager copies instead)"
                      : unavailable == ENOTSUP ? "(userfaultfd without SIGBUS mode: Linux 4.14+ "
                                                 "needed; LazyFallback::kEager copies instead)"
                                               : "(userfaultfd)";
    throw Error(unavailable, kCreate, s.options.name, why);
  }
  s.uffd.reset(uffd);

  s.reservation = detail::Reservation::anonymous(s.length, page, s.options.name);
  std::byte* base = s.reservation.base();
  if (const int err = os::protect(base, s.length, true); err != 0) {
    throw Error(err, kCreate, s.options.name, "(mprotect)");
  }
  if (const int err = detail::dont_fork(base, s.length); err != 0) {
    throw Error(err, kCreate, s.options.name, "(madvise MADV_DONTFORK)");
  }
  s.forget_hole.cover(base, s.length);
  if (s.uffd.get() < 0) {
    s.mode = LazyMode::kEager;
    s.unavailable = unavailable;
    s.copy_all(kCreate);
    return;
  }
  if (const int err = os::register_missing(s.uffd.get(), base, s.length); err != 0) {
    throw Error(err, kCreate, s.options.name, "(UFFDIO_REGISTER of the range)");
  }
  install_fault_handler();
  if (from.frames.frame_bytes != 0) {
    // A compressed source: its decoder slots are made with the first image that needs them.
    {
      const std::lock_guard lock(from.decoders_mutex);
      if (!from.decoders) {
        const unsigned cpus = std::thread::hardware_concurrency();
        from.decoders = std::make_unique<detail::FrameDecoders>(
            std::clamp(cpus, 2u, 16u), from.frames.frame_bytes);
      }
    }
    s.owner = std::make_unique<detail::LazyFill>(s.options.name, s.uffd.get(), base,
                                                 &from.frames, from.decoders.get());
  } else {
    detail::LazySourceBytes bytes;
    bytes.bytes = from.bytes;
    bytes.size = from.size;
    bytes.tail = from.tail.get();
    s.owner = std::make_unique<detail::LazyFill>(s.options.name, s.uffd.get(), base, bytes,
                                                 s.options.window_pages);
  }
  s.registration = detail::Registration(reinterpret_cast<std::uintptr_t>(base),
                                        reinterpret_cast<std::uintptr_t>(base) + s.length,
                                        s.owner.get(), s.options.name.c_str());
}

LazyImage::LazyImage(LazyImage&&) noexcept = default;
LazyImage& LazyImage::operator=(LazyImage&&) noexcept = default;
LazyImage::~LazyImage() = default;

std::byte* LazyImage::data() const noexcept {
  return state_ && state_->length != 0 ? state_->reservation.base() : nullptr;
}
std::uint64_t LazyImage::size() const noexcept { return state_ ? state_->source.size() : 0; }
LazyMode LazyImage::mode() const noexcept { return state_ ? state_->mode : LazyMode::kEager; }

void LazyImage::prefetch(std::uint64_t offset, std::uint64_t length) {
  if (!state_ || !state_->owner) return;  // empty, or eager: every page is there
  detail::commit_range(*state_->owner, state_->reservation.base(), state_->length, offset, length);
}

void LazyImage::reset() {
  if (!state_ || state_->length == 0) return;
  State& s = *state_;
  s.resets.fetch_add(1, std::memory_order_relaxed);
  if (s.mode == LazyMode::kEager) {
    s.copy_all("resetting lazy image");
    return;
  }
  // Every page missing again: the next touch fills it afresh. MADV_DONTNEED cannot fail on
  // a private anonymous range this image owns.
  (void)os::madvise(s.reservation.base(), s.length, os::kMadvDontneed);
}

LazyStats LazyImage::stats() const noexcept {
  LazyStats stats;
  if (!state_) return stats;
  stats.mode = state_->mode;
  stats.resets = state_->resets.load(std::memory_order_relaxed);
  stats.unavailable = state_->unavailable;
  stats.pages_filled = state_->eager_pages.load(std::memory_order_relaxed);
  if (state_->owner) {
    const detail::LazyCounters counters = state_->owner->counters();
    stats.faults = counters.faults;
    stats.pages_filled += counters.pages_filled;
    stats.failures = counters.failures;
  }
  return stats;
}

}  // namespace mapwright
