// src/os/os.h — the thin syscall layer shared by src/ and signal/.
//
// Contract, stated once for every function here:
//   * Nothing throws and nothing allocates. Each function returns 0 on success or the errno
//     value of the failing call; outputs go through pointer parameters and are written only
//     on success.
//   * EINTR is retried inside the wrapper, so callers never see it.
//   * Each declaration says whether the function is async-signal-safe. Those that are may be
//     called from the SIGBUS handler in signal/; they are thin wrappers over single system
//     calls that POSIX or Linux documents as async-signal-safe, and they preserve the
//     caller's errno (the handler saves and restores errno anyway).
//
// The layer knows nothing about regions, owners or error messages: turning an errno into a
// message that names the operation and the path is the caller's job (see mapwright::Error).
#pragma once

#include <signal.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <utility>

namespace mapwright::os {

// ---- files -----------------------------------------------------------------------------

// memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_NOEXEC_SEAL). Kernels before 6.3
// reject MFD_NOEXEC_SEAL with EINVAL; the call is then retried without it, and
// `*noexec_sealed` (if given) says which happened. Not async-signal-safe (not needed there).
int memfd_create(const char* name, int* fd, bool* noexec_sealed = nullptr) noexcept;

// open(2) with O_CLOEXEC added. Not async-signal-safe by contract (it is in practice).
int open(const char* path, int flags, mode_t mode, int* fd) noexcept;

// open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, mode): an unnamed file in `dir`'s filesystem.
// Fails with EOPNOTSUPP or EISDIR where the filesystem (or kernel) lacks O_TMPFILE.
// Not async-signal-safe.
int open_tmpfile(const char* dir, mode_t mode, int* fd) noexcept;

// Gives the unnamed (O_TMPFILE) file `fd` the name `path`, which must not exist: linkat of
// /proc/self/fd/N with AT_SYMLINK_FOLLOW, which needs no capability, falling back to
// linkat(fd, "", AT_EMPTY_PATH) when /proc is not mounted. Not async-signal-safe.
int link_fd(int fd, const char* path) noexcept;

int rename(const char* from, const char* to) noexcept;  // Not async-signal-safe.
int unlink(const char* path) noexcept;                  // Not async-signal-safe.
int close(int fd) noexcept;  // Async-signal-safe. EINTR is NOT retried (the fd is gone).

// ftruncate(2): sets the file size, up or down. Async-signal-safe.
int ftruncate(int fd, std::uint64_t size) noexcept;
// fallocate(2) with `mode` (0: allocate and extend the size if needed). Returns EOPNOTSUPP
// where the filesystem cannot preallocate. Async-signal-safe.
int fallocate(int fd, int mode, std::uint64_t offset, std::uint64_t length) noexcept;
// fstat(2), reporting st_size only. Async-signal-safe.
int file_size(int fd, std::uint64_t* size) noexcept;
int fsync(int fd) noexcept;  // Async-signal-safe.
// sync_file_range(SYNC_FILE_RANGE_WRITE): starts write-back of the range and returns without
// waiting, so that a later fsync has less left to do. Not async-signal-safe by contract.
int start_writeback(int fd, std::uint64_t offset, std::uint64_t length) noexcept;
// pread(2) until `length` bytes or end of file; `*got` is how many were read.
// Not async-signal-safe by contract (it is in practice).
int pread_full(int fd, void* buf, std::size_t length, std::uint64_t offset,
               std::size_t* got) noexcept;
// write(2) until every byte is written. Async-signal-safe: used for the handler's one line.
int write_all(int fd, const void* buf, std::size_t length) noexcept;

// ---- kinds of files, modes, streams (src/os/files.cc) -------------------------------------

// What stat(2) says about a file, as far as the writers and readers of wrappers need it.
enum class FileType { kRegular, kDirectory, kFifo, kSocket, kCharDevice, kBlockDevice, kSymlink,
                      kOther };
struct FileStatus {
  FileType type = FileType::kOther;
  std::uint64_t size = 0;
  mode_t mode = 0;  // the permission bits (st_mode & 07777)
  uid_t uid = 0;
  gid_t gid = 0;
  dev_t device = 0;
  ino_t inode = 0;
  // The file lives on procfs or sysfs (fstat only; false for path_status): its st_size says
  // nothing about its content, and it cannot be mapped as a whole.
  bool pseudo = false;
};
// "regular file", "directory", "FIFO", "socket", "character device", "block device",
// "symbolic link", "special file". Async-signal-safe.
const char* to_string(FileType type) noexcept;
// fstat(2) and fstatfs(2) of `fd`. Not async-signal-safe by contract.
int fd_status(int fd, FileStatus* status) noexcept;
// stat(2) (`follow`) or lstat(2) of `path`. Not async-signal-safe by contract.
int path_status(const char* path, bool follow, FileStatus* status) noexcept;
// realpath(3): `path` with every symbolic link and "."/".." resolved, written into `out`
// (PATH_MAX bytes). Not async-signal-safe.
int real_path(const char* path, char* out) noexcept;
// fchmod(2) and fchown(2). Not async-signal-safe by contract.
int change_mode(int fd, mode_t mode) noexcept;
int change_owner(int fd, uid_t uid, gid_t gid) noexcept;
// Clears O_NONBLOCK on `fd` (fcntl F_GETFL/F_SETFL), once a file opened with it turned out
// to be one that is read as a file. Not async-signal-safe by contract.
int clear_nonblocking(int fd) noexcept;
// One read(2) of at most `length` bytes from `fd` at its file position; `*got` is how many
// (0: end of file). Waits (poll, no timeout) until the fd is readable first, so that a
// non-blocking fd waits as a blocking one would, and a FIFO opened O_NONBLOCK before any
// writer came waits for one (read(2) alone would say end of file there at once).
// Not async-signal-safe.
int read_waiting(int fd, void* buf, std::size_t length, std::size_t* got) noexcept;

// ---- copying between files (the loader) --------------------------------------------------

// copy_file_range(2) of `length` bytes from `in_fd` at `in_offset` to `out_fd` at
// `out_offset`, repeated until done or the source ends; `*copied` is how many were copied
// (written only on success). Neither fd's file position moves. Returns the errno of the
// first failing call: EXDEV, ENOSYS, EOPNOTSUPP, EINVAL or EPERM mean "not here", and the
// caller falls back to another way of copying (the bytes already copied stay written).
// Not async-signal-safe.
int copy_file_range(int in_fd, std::uint64_t in_offset, int out_fd, std::uint64_t out_offset,
                    std::uint64_t length, std::uint64_t* copied) noexcept;
// sendfile(2) of `length` bytes from `in_fd` at `in_offset` (its file position does not move)
// to `out_fd` at ITS file position (which advances), repeated until done or the source ends;
// `*copied` as above. Not async-signal-safe.
int sendfile(int out_fd, int in_fd, std::uint64_t in_offset, std::uint64_t length,
             std::uint64_t* copied) noexcept;
// pwrite(2) until every byte is written at `offset`. Not async-signal-safe by contract.
int pwrite_all(int fd, const void* buf, std::size_t length, std::uint64_t offset) noexcept;
// lseek(fd, offset, SEEK_SET). Async-signal-safe.
int seek(int fd, std::uint64_t offset) noexcept;
// fcntl(F_DUPFD_CLOEXEC, min_fd): a new fd, numbered at least `min_fd`, for the same open file.
// Async-signal-safe.
int dup_cloexec(int fd, int min_fd, int* out) noexcept;
// access(path, F_OK): 0 if the path resolves, else the errno (ENOENT...). Used to tell
// whether /proc is mounted. Async-signal-safe.
int path_exists(const char* path) noexcept;
// statvfs(2) of `dir`: `*noexec` says whether it is on a filesystem mounted noexec
// (ST_NOEXEC), where mapping a file PROT_EXEC fails. Not async-signal-safe.
int dir_is_noexec(const char* dir, bool* noexec) noexcept;
// mkostemp(template, O_CLOEXEC): creates a new file from `path_template` (ending "XXXXXX",
// rewritten in place with the name chosen), mode 0600. Not async-signal-safe.
int make_temp_file(char* path_template, int* fd) noexcept;

// The errno values with which copy_file_range(2), sendfile(2) and friends say "not between
// these two files, not on this kernel, not under this filter": the caller falls back to
// another way of copying. Async-signal-safe.
constexpr bool is_copy_refusal(int err) noexcept {
  return err == EXDEV || err == ENOSYS || err == EPERM || err == EOPNOTSUPP || err == EINVAL;
}

// ---- seals -----------------------------------------------------------------------------

// F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE: the content can no longer change.
inline constexpr int kContentSeals = 0x0002 | 0x0004 | 0x0008;
// kContentSeals | F_SEAL_SEAL: nor can the seals (what SealedImage requires; sealed_image.h's
// kImageSeals is the same set, checked against <fcntl.h> in os.cc).
inline constexpr int kAllSeals = kContentSeals | 0x0001;

int add_seals(int fd, int seals) noexcept;   // fcntl(F_ADD_SEALS). Async-signal-safe.
int get_seals(int fd, int* seals) noexcept;  // fcntl(F_GET_SEALS). Async-signal-safe.

// ---- memory ----------------------------------------------------------------------------

// Reserves `length` bytes of address space mapped MAP_SHARED | MAP_NORESERVE over `fd` from
// offset 0, read-write. Pages past the end of the file raise SIGBUS (BUS_ADRERR) when
// touched. With `at`, only there (MAP_FIXED_NOREPLACE: EEXIST if any page is taken; a
// kernel that ignores the flag and places it elsewhere is answered EEXIST too, after
// unmapping). Not async-signal-safe.
int map_shared(int fd, std::uint64_t length, void** address, void* at = nullptr) noexcept;
// Replaces [address, address + length) in place (MAP_FIXED) by a read-only MAP_PRIVATE view
// of `fd`: the address range stays reserved, but no shared writable mapping of `fd` remains
// there. Not async-signal-safe.
int remap_private_readonly(void* address, std::uint64_t length, int fd) noexcept;
// The inverse: puts a MAP_SHARED read-write view of `fd` back at `address` (MAP_FIXED).
int remap_shared_writable(void* address, std::uint64_t length, int fd) noexcept;
// Maps [offset, offset + length) of `fd` MAP_SHARED read-write at `address` (MAP_FIXED, over
// a reservation this process owns). Not async-signal-safe.
int map_shared_fixed(void* address, std::uint64_t length, int fd, std::uint64_t offset) noexcept;
// Reserves `length` bytes of address space with no access (PROT_NONE, MAP_PRIVATE |
// MAP_ANONYMOUS | MAP_NORESERVE): nothing is committed, a touch is a SIGSEGV.
// Not async-signal-safe.
int reserve(std::uint64_t length, void** address, void* at = nullptr) noexcept;
// mmap(nullptr, length, PROT_READ, MAP_SHARED, fd, 0). Not async-signal-safe.
int map_readonly(int fd, std::uint64_t length, const void** address) noexcept;
// mmap(nullptr, length, PROT_READ, MAP_SHARED, fd, offset); `offset` must be a multiple of the
// page size (EINVAL otherwise). Not async-signal-safe.
int map_readonly_at(int fd, std::uint64_t offset, std::uint64_t length,
                    const void** address) noexcept;
int munmap(const void* address, std::uint64_t length) noexcept;  // Async-signal-safe.
int msync(void* address, std::uint64_t length) noexcept;         // MS_SYNC. Async-signal-safe.
// madvise(2). MADV_POPULATE_WRITE returns EFAULT instead of raising SIGBUS when a page
// cannot be faulted in, and EINVAL on kernels older than 5.14. Async-signal-safe.
int madvise(void* address, std::uint64_t length, int advice) noexcept;
// The advice values of Linux 5.14 that glibc 2.36's headers lack.
inline constexpr int kMadvPopulateRead = 22;   // MADV_POPULATE_READ
inline constexpr int kMadvPopulateWrite = 23;  // MADV_POPULATE_WRITE

// ---- copy-on-write slots (src/os/pagemap.cc) --------------------------------------------

inline constexpr int kMadvDontneed = 4;  // MADV_DONTNEED
inline constexpr int kMadvDontfork = 10;  // MADV_DONTFORK: a child of fork() has no such mapping
// Maps [0, length) of `fd` MAP_PRIVATE read-write at `address` (MAP_FIXED, over a
// reservation this process owns): writes are copied on write, never reach the file.
// Not async-signal-safe.
int map_private_fixed(void* address, std::uint64_t length, int fd) noexcept;
// Puts inaccessible address space back at [address, address + length) (MAP_FIXED,
// PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE). Not async-signal-safe.
int reserve_fixed(void* address, std::uint64_t length) noexcept;
// mprotect(2): read-write, or no access. Not async-signal-safe.
int protect(void* address, std::uint64_t length, bool accessible) noexcept;

// A range of pages, [begin, end).
struct PageRange {
  std::uint64_t begin = 0;
  std::uint64_t end = 0;
};
// The PAGEMAP_SCAN ioctl (Linux 6.7+) on `pagemap_fd` (/proc/self/pagemap) over [begin, end):
// up to `capacity` ranges of pages that are present or swapped and are not file pages
// (anonymous: in a MAP_PRIVATE file mapping, the pages copied on write). `*count` gets how
// many, `*walked_to` where the walk stopped (end when it saw everything). ENOTTY or EINVAL on
// kernels without the ioctl. Not async-signal-safe.
int scan_private_pages(int pagemap_fd, std::uint64_t begin, std::uint64_t end, PageRange* out,
                       std::size_t capacity, std::size_t* count, std::uint64_t* walked_to) noexcept;
// PAGEMAP_SCAN as above, for the pages of [begin, end) written since they were last
// write-protected, in a range registered by track_writes(); each page found is write-protected
// again in the same walk (PM_SCAN_WP_MATCHING). EPERM where the range is not so registered.
// Not async-signal-safe.
int scan_written_pages(int pagemap_fd, std::uint64_t begin, std::uint64_t end, PageRange* out,
                       std::size_t capacity, std::size_t* count, std::uint64_t* walked_to) noexcept;
// A userfaultfd for write tracking only (UFFD_USER_MODE_ONLY, so no privilege is needed;
// close-on-exec): asynchronous write-protection (UFFD_FEATURE_WP_ASYNC, Linux 6.7+: the kernel
// resolves a write to a protected page itself, nothing is ever read from the fd) that also
// covers pages not mapped yet (UFFD_FEATURE_WP_UNPOPULATED). ENOSYS, EPERM (a seccomp filter,
// vm.unprivileged_userfaultfd), or ENOTSUP when the kernel lacks a feature. Not
// async-signal-safe.
int open_write_tracking(int* fd) noexcept;  // this and track_writes: src/os/userfaultfd.cc
// Registers [address, address + length) with `uffd` for write-protection and protects all of
// it: from then on a page written there shows as written to scan_written_pages(). A new
// mapping over the range ends the registration. Not async-signal-safe.
int track_writes(int uffd, void* address, std::uint64_t length) noexcept;
// pread(2) of /proc/self/pagemap: the 64-bit entries of `pages` pages from `begin`.
int read_pagemap(int pagemap_fd, std::uint64_t begin, std::uint64_t* entries,
                 std::size_t pages) noexcept;
// Drops the pages of `count` ranges (MADV_DONTNEED), all of them in as few system calls as it
// can: process_madvise(2) on the calling process (PIDFD_SELF) for up to 256 ranges at a
// time, where the kernel flushes the TLB once per batch (Linux 6.16+) instead of once per
// range, which every other running thread of the process pays for with an interrupt. Where
// process_madvise refuses (kernels before 6.15 allow no MADV_DONTNEED through it, before 6.14
// have no PIDFD_SELF; a seccomp filter), one madvise(2) per range, and the refusal is
// remembered. Not async-signal-safe.
int drop_ranges(const PageRange* ranges, std::size_t count) noexcept;
// Whether drop_ranges() batches (process_madvise) or falls back to one madvise per range;
// known after its first call. Async-signal-safe.
bool drop_ranges_batched() noexcept;
// The bits of a pagemap entry (Documentation/admin-guide/mm/pagemap.rst).
inline constexpr std::uint64_t kPagemapPresent = 1ull << 63;
inline constexpr std::uint64_t kPagemapSwapped = 1ull << 62;
inline constexpr std::uint64_t kPagemapFileOrShared = 1ull << 61;

// ---- lazily filled ranges (src/os/userfaultfd.cc) ---------------------------------------

// A userfaultfd whose missing-page faults raise SIGBUS (BUS_ADRERR) in the faulting thread
// (UFFD_FEATURE_SIGBUS) instead of waiting for a reader of the fd; close-on-exec,
// non-blocking. UFFD_USER_MODE_ONLY where the kernel has it (5.11+; `*user_mode_only` says),
// which is all an unprivileged process may open by default. A kernel access (a system call)
// to a missing page fails with EFAULT. ENOSYS (no userfaultfd), EPERM (a seccomp filter,
// vm.unprivileged_userfaultfd, no privilege), ENOTSUP (SIGBUS mode missing, before 4.14).
// Not async-signal-safe.
int open_lazy_fill(int* fd, bool* user_mode_only) noexcept;
// Registers [address, address + length) (page-aligned, private anonymous memory) with `uffd`
// for missing-page faults. ENOTSUP if the kernel offers no UFFDIO_COPY there.
// Not async-signal-safe.
int register_missing(int uffd, void* address, std::uint64_t length) noexcept;
// UFFDIO_COPY: fills the missing pages [address, address + length) (page-aligned) with the
// bytes at `source` and maps them, atomically per page. `*filled` gets the bytes filled, also
// when it stops early: EEXIST at a page that is already there (another thread filled it),
// EFAULT when `source` cannot be read (a file that shrank), ENOMEM, EAGAIN when the address
// space is changing. Async-signal-safe (one ioctl).
int fill_missing(int uffd, void* address, const void* source, std::uint64_t length,
                 std::uint64_t* filled) noexcept;

// ---- sockets (src/os/sockets.cc) --------------------------------------------------------

// sendmsg(2) of `data` with `fd` attached as SCM_RIGHTS (fd < 0: none), MSG_NOSIGNAL (a
// closed peer is EPIPE, not SIGPIPE). `*sent` is the byte count sendmsg returned.
// Not async-signal-safe.
int send_with_fd(int socket, const struct iovec* data, int count, int fd,
                 std::size_t* sent) noexcept;
// recvmsg(2) of at most `length` bytes into `buffer`, with MSG_CMSG_CLOEXEC; every fd that
// arrived as SCM_RIGHTS (up to `max_fds`; more set MSG_CTRUNC) goes to `fds`. On success
// `*got` is the byte count, `*fd_count` the fds stored, `*flags` the message's msg_flags
// (MSG_TRUNC, MSG_CTRUNC). The caller owns (and must close) the fds. Not async-signal-safe.
int receive_with_fds(int socket, void* buffer, std::size_t length, int* fds,
                     std::size_t max_fds, std::size_t* got, std::size_t* fd_count,
                     int* flags) noexcept;
// The most fds one SCM_RIGHTS message carries (the kernel's SCM_MAX_FD); receive_with_fds()
// stores at most this many whatever `max_fds` says. Async-signal-safe.
inline constexpr std::size_t kMaxFdsPerMessage = 253;
// sendmsg(2) as send_with_fd(), with `fd_count` fds (at most kMaxFdsPerMessage, else EINVAL)
// attached as one SCM_RIGHTS message. Not async-signal-safe.
int send_with_fds(int socket, const struct iovec* data, int count, const int* fds,
                  std::size_t fd_count, std::size_t* sent) noexcept;
// getsockopt(SO_TYPE): SOCK_STREAM, SOCK_SEQPACKET, SOCK_DGRAM... ENOTSOCK for what is not a
// socket. Async-signal-safe.
int socket_type(int socket, int* type) noexcept;
// A Unix stream socket (SOCK_CLOEXEC | SOCK_NONBLOCK: accept_connection() says EAGAIN when no
// one is waiting) bound to `path` and listening (backlog 64): EADDRINUSE when something exists
// at the path, ENAMETOOLONG past sun_path. Not async-signal-safe.
int listen_unix(const char* path, int* out) noexcept;
// A Unix stream socket (SOCK_CLOEXEC) connected to `path`, waiting at most `timeout_ms` (0:
// no limit) for room in a listener's full backlog: EAGAIN when that runs out. Its send and
// receive timeouts are left at `timeout_ms`. Not async-signal-safe.
int connect_unix(const char* path, int timeout_ms, int* out) noexcept;
// accept4(2) with SOCK_CLOEXEC (the accepted socket blocks, whatever the listener does).
// Not async-signal-safe.
int accept_connection(int listener, int* out) noexcept;
// SO_RCVTIMEO and SO_SNDTIMEO: a read or write that waits longer fails with EAGAIN (0: no
// limit). Async-signal-safe.
int set_socket_timeouts(int socket, int milliseconds) noexcept;
// send(2) with MSG_NOSIGNAL until every byte is sent: a closed peer is EPIPE, never SIGPIPE.
// Async-signal-safe.
int send_all(int socket, const void* data, std::size_t length) noexcept;

// ---- waking a waiting thread (src/os/sockets.cc) -------------------------------------------

// An eventfd (EFD_CLOEXEC | EFD_NONBLOCK). Not async-signal-safe.
int open_wakeup(int* fd) noexcept;
// Makes `fd` (open_wakeup) readable, for good: write(2) of 1. Async-signal-safe.
int wake(int fd) noexcept;
// poll(2) for the first of `count` fds (at most 8) to be readable, or hung up, waiting at most
// `timeout_ms` (-1: forever): `*ready` is its index. ETIMEDOUT when none is by then.
// Not async-signal-safe.
int wait_readable(const int* fds, std::size_t count, int timeout_ms, std::size_t* ready) noexcept;

// ---- signals (src/os/signals.cc) -------------------------------------------------------
//
// The handler path needs masks that cost nothing to copy: a SignalSet is the kernel's own
// 64-bit mask (bit sig - 1), passed to rt_sigprocmask and friends directly, where glibc's
// sigset_t is 128 bytes a copy, on stacks that may be a 4 KiB sigaltstack. glibc's two
// internal signals (32 and 33: thread cancellation and setxid) are never blocked by these
// calls, as pthread_sigmask never blocks them.
using SignalSet = std::uint64_t;
constexpr SignalSet signal_bit(int sig) noexcept { return SignalSet{1} << (sig - 1); }
// Every signal but glibc's internal ones (and SIGKILL/SIGSTOP, which cannot be blocked).
inline constexpr SignalSet kAllSignals = ~(signal_bit(32) | signal_bit(33));
// The 64 bits of a sigset_t that the kernel uses (a ucontext's uc_sigmask, an sa_mask).
// Async-signal-safe.
SignalSet signal_set_of(const sigset_t& set) noexcept;

// rt_sigprocmask(how, set, old) on the calling thread. Async-signal-safe.
int set_signal_mask(int how, SignalSet set, SignalSet* old) noexcept;
// rt_sigpending: the signals pending for this thread or the process. Async-signal-safe.
int pending_signals(SignalSet* set) noexcept;
// Takes a pending, blocked `sig` away without running anything (rt_sigtimedwait with a zero
// timeout). Returns 0 if one was taken, EAGAIN if none was pending. Async-signal-safe.
int discard_pending(int sig) noexcept;
// sigaction(2). Async-signal-safe.
int get_action(int sig, struct sigaction* action) noexcept;
int set_action(int sig, const struct sigaction& action, struct sigaction* old) noexcept;
// Sends `sig` to the calling thread only (tgkill). Async-signal-safe.
int send_to_this_thread(int sig) noexcept;
// pthread_atfork(3). Not async-signal-safe.
int at_fork(void (*prepare)(), void (*parent)(), void (*child)()) noexcept;

// writev(2) until every byte is written; the iovecs are advanced in place past what was
// written. One call when the kernel takes it all, as it does for a line shorter than
// PIPE_BUF into a pipe. Async-signal-safe.
int write_iov(int fd, struct iovec* io, int count) noexcept;

// ---- process ---------------------------------------------------------------------------

// The soft RLIMIT_FSIZE in bytes; UINT64_MAX when unlimited. Reads it afresh with the
// prlimit64 system call each time. Async-signal-safe.
int file_size_limit(std::uint64_t* bytes) noexcept;
// The soft RLIMIT_AS in bytes (UINT64_MAX when unlimited), and the address space the process
// uses now (the first field of /proc/self/statm, in bytes; EACCES/ENOENT without /proc).
// Not async-signal-safe.
int address_space_limit(std::uint64_t* bytes) noexcept;
int address_space_used(std::uint64_t* bytes) noexcept;
// getpid(2). Async-signal-safe.
int process_id() noexcept;
// The page size (sysconf(_SC_PAGESIZE)), cached by the first call. Async-signal-safe once
// cached; the handler is installed only after a call from ordinary code has cached it.
std::uint64_t page_size() noexcept;

// Closes an fd on destruction unless released: the one fd owner of src/. Its destructor and
// reset() only call close() (async-signal-safe); the class itself is for ordinary code.
class OwnedFd {
 public:
  OwnedFd() noexcept = default;
  explicit OwnedFd(int fd) noexcept : fd_(fd) {}
  OwnedFd(OwnedFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  OwnedFd& operator=(OwnedFd&& other) noexcept {
    if (this != &other) reset(std::exchange(other.fd_, -1));
    return *this;
  }
  OwnedFd(const OwnedFd&) = delete;
  OwnedFd& operator=(const OwnedFd&) = delete;
  ~OwnedFd() { reset(-1); }
  int get() const noexcept { return fd_; }
  int release() noexcept { return std::exchange(fd_, -1); }
  void reset(int fd) noexcept {
    if (fd_ >= 0) close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

}  // namespace mapwright::os
