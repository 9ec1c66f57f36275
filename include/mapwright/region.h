// mapwright/region.h — memory-mapped files that grow when you store past their end.
//
// A Region reserves `capacity` bytes of address space over a memfd or a file and maps the
// file there MAP_SHARED. Two numbers describe it, and they are kept apart on purpose:
//
//     data()                      data() + size()               data() + capacity()
//     ├── backed by the file ─────┼── reserved, not backed ───────┤
//
//   * capacity(): the reservation. Fixed at creation; the most the region can ever hold.
//   * size(): the bytes the file has now. It grows by itself when a plain store lands past
//     it (the SIGBUS handler extends the file geometrically: x2, between min_step and
//     max_step), grows on ensure(), and shrinks only on finish().
//
// data() NEVER MOVES for the region's lifetime: growth extends the file under a mapping that
// is already there. A Region is move-only; moving it keeps data() the same.
//
// Hazards, plainly:
//   * Loads and stores past size() raise SIGBUS, which mapwright's handler turns into growth.
//     System calls do not fault: read(2), recv(2) or pread(2) INTO unbacked region memory
//     fail with EFAULT (and write(2) from it likewise). Call ensure() before handing region
//     memory to the kernel.
//   * If growth is impossible (disk full, RLIMIT_FSIZE, capacity, a seal) a store past size()
//     ends the process by SIGBUS after one line on stderr — unless it runs inside
//     guarded(), which turns it into a thrown Error (see fault.h).
//   * A store just past capacity() (within 1 MiB: an unbacked guard zone is reserved there,
//     except at a chosen RegionOptions::base) is a failed growth (ENOMEM), like the cases
//     above; further out it is a wild pointer.
//   * After finish(used) with `used` not a multiple of the page size (or open() of such a
//     file), stores into the rest of that last page DO NOT FAULT and are not yet part of the
//     file. The next growth keeps them, but a write-back of that page before it (which the
//     kernel may start at any time) discards them. Call ensure() before appending there.
//   * Do not shrink the file behind the region's back (ftruncate on fd()). A store into the
//     lost part is reported as a failed fault, never retried forever.
//   * A store past size() while SIGBUS is BLOCKED on the storing thread (a sigwait() server
//     thread, code inside a signal handler whose sa_mask blocks SIGBUS, a SignalBlocker of
//     your own) cannot grow the region: the kernel does not deliver a fault's signal that is
//     blocked, it kills the process by SIGBUS at once — no line on stderr, and guarded()
//     cannot catch it. Nothing in a library can change that. Remedy: call ensure() for
//     everything such code will touch before it runs.
//   * fork(): the child can create and destroy regions of its own (pthread_atfork handlers
//     keep the range table consistent, and locks that the parent's other threads held are
//     taken over). A region inherited from the parent is the same MAP_SHARED mapping of the
//     same file: in the child it still grows on a store past its end and its bytes are the
//     parent's, but growing it from both processes is not supported (each keeps its own
//     size), and destroying it in the child closes only the child's copies. A child made
//     without pthread_atfork handlers (vfork, clone(2) directly) must only exec or _exit.
//   * vm.overcommit_memory=2 (strict accounting): the reservation itself is not charged (a
//     MAP_SHARED mapping of a file is not committed memory, and MAP_NORESERVE is ignored in
//     that mode anyway), but a memfd's pages are charged as they are first touched; when the
//     commit limit is reached, that touch is a failed fault ("the page cannot be backed").
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "mapwright/sealed_image.h"

namespace mapwright {

struct RegionOptions {
  // The virtual reservation: the most the region can hold, rounded up to the page size; at
  // most 2^47 (128 TiB). Costs address space only (MAP_NORESERVE), but address space is
  // what RLIMIT_AS (`ulimit -v`) limits. 0, the default, is automatic: 64 GiB, or a quarter
  // of the address space RLIMIT_AS leaves free when the region is made, whichever is less.
  // When even that cannot be reserved, the Error names RLIMIT_AS and this option.
  std::uint64_t capacity = 0;
  // The smallest growth step; not 0. Rounded up to the page size; a value past the
  // capacity means the capacity (the first growth takes it all).
  std::uint64_t min_step = 1ull << 20;
  // Growth doubles the size each step, but never by more than this; not below min_step. A
  // value past the capacity (UINT64_MAX included) means "no cap".
  std::uint64_t max_step = 1ull << 30;
  // false: only ensure() grows the region, and a store past size() is a failed fault (a
  // crash outside guarded()), for callers who want every growth to be explicit.
  bool grow_on_fault = true;
  // Non-null: the reservation starts exactly here (page-aligned; MAP_FIXED_NOREPLACE), or the
  // region is not made: Error(EEXIST) when any page of the range is taken, never a mapping
  // elsewhere (fixed_image.h builds at a chosen base with it). Exactly [base, base +
  // capacity) is reserved: no guard zone past it.
  void* base = nullptr;
};

struct RegionStats {
  std::uint64_t faults = 0;     // SIGBUS faults resolved for this region
  std::uint64_t growths = 0;    // growth steps (by faults and by ensure())
  std::uint64_t failures = 0;   // growths that could not happen
  std::uint64_t committed = 0;  // == size()
};

namespace detail {
struct RegionState;
}

class Region {
 public:
  // A region over a new memfd named `name` (MFD_CLOEXEC | MFD_ALLOW_SEALING, and
  // MFD_NOEXEC_SEAL on Linux 6.3+). Starts empty. The only kind that can be seal()ed.
  static Region memfd(std::string_view name, RegionOptions options = {});
  // Creates `path`, or truncates it to zero if it exists (O_CREAT | O_TRUNC, mode 0666 less
  // the umask). Starts empty.
  static Region file(const std::filesystem::path& path, RegionOptions options = {});
  // Opens an existing `path` and keeps its contents: size() starts at the file's size, which
  // must not exceed options.capacity. A sparse file stays sparse: a store into a hole that
  // the filesystem cannot back (a full disk) is a failed growth with ENOSPC, like a store
  // past the end (an Error inside guarded(), else the one line and SIGBUS).
  static Region open(const std::filesystem::path& path, RegionOptions options = {});
  // Builds a new version of `target` invisibly: an unnamed O_TMPFILE file in target's
  // directory, linked into place by publish(). Until then, and if the process dies at any
  // point, `target` is untouched (the old file or none). Filesystems without O_TMPFILE get a
  // hidden named file ".<name>.mapwright-XXXXXX" in the same directory instead, removed by
  // the destructor — but left behind if the process is killed; the target is safe either way.
  // `target` must be a regular file or not exist. A directory (also "dir/"), a FIFO, socket
  // or device, a symbolic link to one, or a dangling link is refused here, before anything
  // is created (Error EISDIR, EINVAL "not a regular file", ENOENT): publish() never replaces
  // or writes through them. A symbolic link to a regular file is kept: the file it names is
  // staged beside and replaced.
  static Region staged(const std::filesystem::path& target, RegionOptions options = {});

  Region(Region&&) noexcept;
  Region& operator=(Region&&) noexcept;
  // Unmaps (after any handler still growing the region has finished), closes the file. An
  // unpublished staged region leaves nothing behind.
  ~Region();

  std::byte* data() const noexcept;
  std::uint64_t size() const noexcept;
  std::uint64_t capacity() const noexcept;
  int fd() const noexcept;
  // The name given to memfd(), or the path.
  const std::string& name() const noexcept;

  // Grows the file so that at least `bytes` are backed, with no fault, in the same geometric
  // steps a fault takes (so repeated small ensure() calls stay cheap). Required before
  // handing region memory to a system call. Throws Error when growth is impossible (ENOMEM
  // past capacity, EFBIG past RLIMIT_FSIZE, ENOSPC, EPERM for a sealed memfd).
  void ensure(std::uint64_t bytes);
  // Sets the file to exactly `used` bytes (ftruncate), dropping the growth slack; call it
  // when the content is complete, before sync(), publish() or seal(). The region stays
  // usable, and a later store past `used` grows it again. Throws Error if used > capacity().
  void finish(std::uint64_t used);
  // msync(MS_SYNC) of the backed bytes, then fsync. Throws Error (EIO, ENOSPC...).
  void sync();
  // Staged regions only: fsyncs the file, links it into the target's directory under a
  // temporary name, renames it over the target (atomic), and fsyncs the directory. After
  // publish() the region is an ordinary file region over `target`. Throws Error on failure;
  // the target is then untouched. A file it replaces passes on its permission bits (and its
  // owner and group where the caller may set them, as root; best effort) to the new one; a
  // target that became a FIFO, device, socket or link since staged() is refused (EINVAL).
  //
  // With durable == false the two fsyncs are skipped (much faster for big files: nothing
  // waits for the disk). The replacement is still atomic for every process and survives a
  // crash of this one — the kernel has the bytes — but NOT a power loss or kernel crash
  // before write-back: the target may then be empty or partly written (how likely depends
  // on the filesystem; ext4's auto_da_alloc starts write-back at the rename).
  struct PublishOptions {
    bool durable = true;
    // -1: the new file keeps the replaced file's permission bits (or its own, if none was
    // replaced). Otherwise these permission bits (0 to 07777, e.g. 0755), set before the
    // rename whatever the replaced file had: an executable written this way is never seen
    // without its mode.
    int mode = -1;
  };
  void publish(PublishOptions options);
  void publish() { publish(PublishOptions{}); }
  // memfd regions only: ends the region and returns its file as an immutable image. The
  // writable mapping is replaced in place by a read-only one (F_SEAL_WRITE is refused while
  // any shared writable mapping exists), then F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE |
  // F_SEAL_SEAL are added. The image has the region's current size(): call finish() first.
  // On failure (EBUSY: someone else holds a writable mapping) throws Error and the region is
  // left as it was.
  SealedImage seal() &&;

  RegionStats stats() const noexcept;

 private:
  explicit Region(std::unique_ptr<detail::RegionState> state) noexcept;
  std::unique_ptr<detail::RegionState> state_;
};

}  // namespace mapwright
