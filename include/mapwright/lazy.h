// mapwright/lazy.h — memory filled on first touch, in the thread that touches it.
//
// A LazyImage is a private, writable copy of a source (a sealed image, bytes in memory, a
// range of a file) whose pages are copied in only when first touched. Its range is
// registered with a userfaultfd in SIGBUS mode: touching a missing page raises SIGBUS in the
// touching thread; mapwright's handler (fault.h) finds the image in its range table and
// copies the page — or a window of pages around it — into place with UFFDIO_COPY, and the
// access retries and succeeds. No handler thread: each faulting thread fills its own pages,
// so two threads fault in parallel (Lucet's userfaultfd backend, which wasmtime dropped, had
// one thread serve every fault).
//
//     LazyImage image(LazySource::image(sealed), {.window_pages = 16});
//     std::byte first = image.data()[0];        // one fault: pages 0–15 copied in
//     image.prefetch(0, 1 << 20);               // the first MiB now, e.g. before a write(2)
//     image.reset();                            // every page missing again
//
// Rules.
//   * System calls never fault: read(2)/write(2) on a missing page fail with EFAULT and fill
//     nothing. prefetch() the range first (the same verb Region::ensure() is for growth).
//   * A failed fill (a file source that shrank, no memory) inside guarded() (fault.h) on the
//     faulting thread becomes a thrown Error naming the image; elsewhere one line on stderr
//     and death by SIGBUS. Never a retry loop.
//   * fork(): the child has no mapping of a lazy image (MADV_DONTFORK; a touch there is a
//     SIGSEGV). Without it, the kernel would drop the registration in the child, whose
//     missing pages would then read as zeros: silently wrong bytes.
//   * Availability: userfaultfd may be absent (kernels before 4.14, CONFIG_USERFAULTFD=n),
//     refused (a seccomp filter: Docker's default profile; vm.unprivileged_userfaultfd, which
//     still allows the user-mode-only flavour used here on 5.11+), or lack SIGBUS mode. Then
//     the constructor throws Error (ENOSYS, EPERM, ENOTSUP) saying so, or, with
//     `fallback = LazyFallback::kEager`, copies the whole source up front; mode() reports
//     which one runs. Never a hang: nothing waits for a thread that is not there.
//   * A thread touching the image while another destroys or resets it is the caller's race:
//     the handler never uses a destroyed image (the range table waits for handlers to
//     finish), but the touch itself then fails (SIGSEGV, or a page read as missing again).
//
// Costs (development VM, kernel 6.18, PVM guest; lazy_bench): a fault that fills one page
// costs about as much as the fault itself plus a 4 KiB copy; windows amortize the fault.
// See the README's lazy table.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "mapwright/sealed_image.h"

namespace mapwright {

// Where a lazy image's bytes come from. Cheap to copy; holds what it reads alive.
class LazySource {
 public:
  // A sealed image (its read-only mapping, kept alive with the image).
  static LazySource image(const SealedImage& image);
  // Bytes in memory, which the caller keeps alive and unchanged for as long as any LazyImage
  // made from this source exists.
  static LazySource memory(std::span<const std::byte> bytes);
  // [offset, offset + size) of the file `fd` (a regular file; `fd` is duplicated, so the
  // caller may close its own). The file is mapped read-only and read on first touch: a file
  // that shrinks below the range makes the fills past its end fail (EFAULT, reported).
  // Throws Error: EINVAL for a range outside the file, ENODEV for a file that is not regular.
  static LazySource file(int fd, std::uint64_t offset, std::uint64_t size);
  // The same, of `path` (the whole file when size is UINT64_MAX).
  static LazySource file(const std::filesystem::path& path, std::uint64_t offset = 0,
                         std::uint64_t size = UINT64_MAX);

  std::uint64_t size() const noexcept;
  const std::string& description() const noexcept;  // "sealed image", "memory", the path

  struct State;

 private:
  explicit LazySource(std::shared_ptr<const State> state) noexcept : state_(std::move(state)) {}
  static LazySource from_file(int fd, std::uint64_t offset, std::uint64_t size,
                              std::string description);
  // A compressed wrapper entry (Wrapper::lazy): `stored` bytes at `offset` of `fd`, zstd
  // frames ending at `frame_ends`, decoding to `size` bytes in frames of `frame_bytes`. The
  // caller checked the table (the wrapper reader).
  static LazySource compressed(int fd, std::uint64_t offset, std::uint64_t stored,
                               std::uint64_t size, std::uint64_t frame_bytes,
                               std::vector<std::uint64_t> frame_ends, std::string description);
  friend class LazyImage;
  friend class Wrapper;
  std::shared_ptr<const State> state_;
};

// What the constructor does where userfaultfd cannot be used.
enum class LazyFallback {
  kError,  // throw Error saying why (the default: laziness was asked for)
  kEager,  // copy the whole source now; mode() says kEager
};

enum class LazyMode {
  kUserfaultfd,  // pages filled on first touch (userfaultfd, SIGBUS mode)
  kEager,        // everything copied at construction (the fallback)
};
// "userfaultfd (SIGBUS mode)", "eager copy".
const char* to_string(LazyMode mode) noexcept;

struct LazyOptions {
  // Pages filled per fault: the aligned block of this many pages that holds the faulting one
  // (clipped to the image). At least 1; at most 65536. A compressed source (Wrapper::lazy)
  // fills one frame per fault instead, whatever this says.
  std::uint64_t window_pages = 1;
  LazyFallback fallback = LazyFallback::kError;
  // Names the image in errors and in the fault report.
  std::string name = "lazy image";
};

struct LazyStats {
  LazyMode mode = LazyMode::kUserfaultfd;
  std::uint64_t faults = 0;        // faults resolved by filling
  std::uint64_t pages_filled = 0;  // pages copied in (by faults, prefetch() and the fallback)
  std::uint64_t failures = 0;      // fills that failed
  std::uint64_t resets = 0;
  // kEager only: the errno that ruled userfaultfd out (ENOSYS, EPERM, ENOTSUP).
  int unavailable = 0;
};

class LazyImage {
 public:
  // Maps size() bytes (rounded up to a page) of private memory and registers them. Throws
  // Error: see "Availability" above; EINVAL for a bad option; ENOMEM when the mapping is
  // refused. An empty source gives an empty image (data() is null). Not async-signal-safe,
  // nor is anything here.
  explicit LazyImage(LazySource source, LazyOptions options = {});
  LazyImage(LazyImage&&) noexcept;
  LazyImage& operator=(LazyImage&&) noexcept;
  LazyImage(const LazyImage&) = delete;
  LazyImage& operator=(const LazyImage&) = delete;
  // Unregisters (waiting for handlers still filling), then unmaps.
  ~LazyImage();

  std::byte* data() const noexcept;
  std::uint64_t size() const noexcept;
  std::span<std::byte> bytes() const noexcept { return {data(), static_cast<std::size_t>(size())}; }
  LazyMode mode() const noexcept;

  // Fills every missing page of [offset, offset + length) (clipped to the image) now, so that
  // a system call may read or write it. Pages already there, written or not, are kept.
  // Throws Error (EFAULT: the source could not be read; ENOMEM).
  void prefetch(std::uint64_t offset, std::uint64_t length);
  // Makes every page missing again (MADV_DONTNEED): the next touch of each fills it from the
  // source afresh, so whatever was written is gone. No thread may touch the image meanwhile.
  // In kEager mode the whole source is copied again. Throws Error only in kEager mode (a file
  // source that cannot be read).
  void reset();

  LazyStats stats() const noexcept;

  struct State;

 private:
  std::unique_ptr<State> state_;
};

}  // namespace mapwright
