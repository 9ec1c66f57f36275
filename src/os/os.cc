// src/os/os.cc — see os.h for the contract. Every call goes through `retry`, which retries
// EINTR and turns the -1/errno convention into a returned errno, leaving errno untouched.
#include "os/os.h"
#include "os/retry.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/statvfs.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>

#ifndef MFD_NOEXEC_SEAL
#define MFD_NOEXEC_SEAL 0x0008U
#endif

namespace mapwright::os {

using detail::retry;

static_assert(kContentSeals == (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE));
static_assert(kAllSeals == (kContentSeals | F_SEAL_SEAL));

int memfd_create(const char* name, int* fd, bool* noexec_sealed) noexcept {
  int out = -1;
  constexpr unsigned kBase = MFD_CLOEXEC | MFD_ALLOW_SEALING;
  int err = retry([&] { return out = ::memfd_create(name, kBase | MFD_NOEXEC_SEAL); });
  bool noexec = err == 0;
  if (err == EINVAL) {  // Linux < 6.3 does not know MFD_NOEXEC_SEAL.
    err = retry([&] { return out = ::memfd_create(name, kBase); });
  }
  if (err != 0) return err;
  *fd = out;
  if (noexec_sealed != nullptr) *noexec_sealed = noexec;
  return 0;
}

int open(const char* path, int flags, mode_t mode, int* fd) noexcept {
  int out = -1;
  const int err = retry([&] { return out = ::open(path, flags | O_CLOEXEC, mode); });
  if (err == 0) *fd = out;
  return err;
}

int open_tmpfile(const char* dir, mode_t mode, int* fd) noexcept {
  return open(dir, O_TMPFILE | O_RDWR, mode, fd);
}

int link_fd(int fd, const char* path) noexcept {
  char proc[64];
  std::snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
  int err = retry([&] { return ::linkat(AT_FDCWD, proc, AT_FDCWD, path, AT_SYMLINK_FOLLOW); });
  if (err == ENOENT) {
    // No /proc: AT_EMPTY_PATH works without it but needs CAP_DAC_READ_SEARCH.
    err = retry([&] { return ::linkat(fd, "", AT_FDCWD, path, AT_EMPTY_PATH); });
  }
  return err;
}

int rename(const char* from, const char* to) noexcept {
  return retry([&] { return ::rename(from, to); });
}

int unlink(const char* path) noexcept {
  return retry([&] { return ::unlink(path); });
}

int close(int fd) noexcept {
  const int saved = errno;
  const int err = ::close(fd) == 0 ? 0 : errno;
  errno = saved;
  return err == EINTR ? 0 : err;  // Linux always releases the fd, even on EINTR.
}

int ftruncate(int fd, std::uint64_t size) noexcept {
  if (size > static_cast<std::uint64_t>(LLONG_MAX)) return EFBIG;
  return retry([&] { return ::ftruncate(fd, static_cast<off_t>(size)); });
}

int fallocate(int fd, int mode, std::uint64_t offset, std::uint64_t length) noexcept {
  if (offset > static_cast<std::uint64_t>(LLONG_MAX) ||
      length > static_cast<std::uint64_t>(LLONG_MAX) - offset) {
    return EFBIG;
  }
  return retry([&] {
    return ::fallocate(fd, mode, static_cast<off_t>(offset), static_cast<off_t>(length));
  });
}

int file_size(int fd, std::uint64_t* size) noexcept {
  struct stat st;
  const int err = retry([&] { return ::fstat(fd, &st); });
  if (err == 0) *size = static_cast<std::uint64_t>(st.st_size);
  return err;
}

int fsync(int fd) noexcept {
  return retry([&] { return ::fsync(fd); });
}

int start_writeback(int fd, std::uint64_t offset, std::uint64_t length) noexcept {
  return retry([&] {
    return ::sync_file_range(fd, static_cast<off64_t>(offset), static_cast<off64_t>(length),
                             SYNC_FILE_RANGE_WRITE);
  });
}

int pread_full(int fd, void* buf, std::size_t length, std::uint64_t offset,
               std::size_t* got) noexcept {
  auto* p = static_cast<char*>(buf);
  std::size_t done = 0;
  while (done < length) {
    ssize_t n = 0;
    const int err = retry([&] {
      return n = ::pread(fd, p + done, length - done, static_cast<off_t>(offset + done));
    });
    if (err != 0) return err;
    if (n == 0) break;
    done += static_cast<std::size_t>(n);
  }
  *got = done;
  return 0;
}

int write_all(int fd, const void* buf, std::size_t length) noexcept {
  const auto* p = static_cast<const char*>(buf);
  while (length > 0) {
    ssize_t n = 0;
    const int err = retry([&] { return n = ::write(fd, p, length); });
    if (err != 0) return err;
    p += n;
    length -= static_cast<std::size_t>(n);
  }
  return 0;
}

int copy_file_range(int in_fd, std::uint64_t in_offset, int out_fd, std::uint64_t out_offset,
                    std::uint64_t length, std::uint64_t* copied) noexcept {
  if (in_offset > static_cast<std::uint64_t>(LLONG_MAX) ||
      out_offset > static_cast<std::uint64_t>(LLONG_MAX)) {
    return EFBIG;
  }
  auto in = static_cast<loff_t>(in_offset);
  auto out = static_cast<loff_t>(out_offset);
  std::uint64_t done = 0;
  while (done < length) {
    ssize_t n = 0;
    const std::uint64_t chunk = length - done < (1ull << 30) ? length - done : (1ull << 30);
    const int err = retry([&] {
      return static_cast<int>(n = ::copy_file_range(in_fd, &in, out_fd, &out, chunk, 0));
    });
    if (err != 0) return err;
    if (n == 0) break;
    done += static_cast<std::uint64_t>(n);
  }
  *copied = done;
  return 0;
}

int sendfile(int out_fd, int in_fd, std::uint64_t in_offset, std::uint64_t length,
             std::uint64_t* copied) noexcept {
  if (in_offset > static_cast<std::uint64_t>(LLONG_MAX)) return EFBIG;
  auto in = static_cast<off_t>(in_offset);
  std::uint64_t done = 0;
  while (done < length) {
    ssize_t n = 0;
    const std::uint64_t chunk = length - done < (1ull << 30) ? length - done : (1ull << 30);
    const int err =
        retry([&] { return static_cast<int>(n = ::sendfile(out_fd, in_fd, &in, chunk)); });
    if (err != 0) return err;
    if (n == 0) break;
    done += static_cast<std::uint64_t>(n);
  }
  *copied = done;
  return 0;
}

int pwrite_all(int fd, const void* buf, std::size_t length, std::uint64_t offset) noexcept {
  const auto* p = static_cast<const char*>(buf);
  while (length > 0) {
    ssize_t n = 0;
    const int err = retry([&] {
      return static_cast<int>(n = ::pwrite(fd, p, length, static_cast<off_t>(offset)));
    });
    if (err != 0) return err;
    p += n;
    offset += static_cast<std::uint64_t>(n);
    length -= static_cast<std::size_t>(n);
  }
  return 0;
}

int seek(int fd, std::uint64_t offset) noexcept {
  if (offset > static_cast<std::uint64_t>(LLONG_MAX)) return EINVAL;
  return retry([&] { return ::lseek(fd, static_cast<off_t>(offset), SEEK_SET) < 0 ? -1 : 0; });
}

int dup_cloexec(int fd, int min_fd, int* out) noexcept {
  int result = -1;
  const int err = retry([&] { return result = ::fcntl(fd, F_DUPFD_CLOEXEC, min_fd); });
  if (err == 0) *out = result;
  return err;
}

int path_exists(const char* path) noexcept {
  return retry([&] { return ::access(path, F_OK); });
}

int dir_is_noexec(const char* dir, bool* noexec) noexcept {
  struct statvfs st;
  const int err = retry([&] { return ::statvfs(dir, &st); });
  if (err == 0) *noexec = (st.f_flag & ST_NOEXEC) != 0;
  return err;
}

int make_temp_file(char* path_template, int* fd) noexcept {
  int out = -1;
  const int err = retry([&] { return out = ::mkostemp(path_template, O_CLOEXEC); });
  if (err == 0) *fd = out;
  return err;
}

int add_seals(int fd, int seals) noexcept {
  return retry([&] { return ::fcntl(fd, F_ADD_SEALS, seals); });
}

int get_seals(int fd, int* seals) noexcept {
  int out = 0;
  const int err = retry([&] { return out = ::fcntl(fd, F_GET_SEALS); });
  if (err == 0) *seals = out;
  return err;
}

namespace {

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

// mmap at `at` (MAP_FIXED_NOREPLACE) or anywhere. Kernels before 4.17 ignore the flag and
// treat `at` as a hint: a mapping placed elsewhere is undone and reported as EEXIST.
// ThreadSanitizer's mmap interceptor turns a request for an address outside its application
// ranges into a request for address 0 with the flags kept: MAP_FIXED_NOREPLACE at 0, which
// root may get, and which TSan then reports as "mmap at bad address" and dies. So under TSan
// on x86-64, a preferred address outside those ranges is answered as taken. The ranges are
// those of Debian 12's libtsan (GCC 12; compiler-rt's Mapping48AddressSpace): low, PIE,
// heap, high.
#if defined(__SANITIZE_THREAD__)
#define MAPWRIGHT_OS_UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define MAPWRIGHT_OS_UNDER_TSAN 1
#endif
#endif
#if defined(MAPWRIGHT_OS_UNDER_TSAN) && defined(__x86_64__)
bool tsan_maps_there(const void* at, std::uint64_t length) noexcept {
  constexpr std::uintptr_t kRanges[][2] = {{0x000000001000, 0x008000000000},
                                           {0x550000000000, 0x568000000000},
                                           {0x7b0000000000, 0x7c0000000000},
                                           {0x7e8000000000, 0x800000000000}};
  const auto begin = reinterpret_cast<std::uintptr_t>(at);
  for (const auto& range : kRanges) {
    if (begin >= range[0] && begin < range[1] && length <= range[1] - begin) return true;
  }
  return false;
}
#else
bool tsan_maps_there(const void*, std::uint64_t) noexcept { return true; }
#endif

int map_at(void* at, std::uint64_t length, int prot, int flags, int fd, void** address) noexcept {
  if (at != nullptr && !tsan_maps_there(at, length)) return EEXIST;
  if (at != nullptr) flags |= MAP_FIXED_NOREPLACE;
  void* p = MAP_FAILED;
  const int err = retry([&] {
    p = ::mmap(at, length, prot, flags, fd, 0);
    return p == MAP_FAILED ? -1 : 0;
  });
  if (err != 0) return err;
  if (at != nullptr && p != at) {
    ::munmap(p, length);
    return EEXIST;
  }
  *address = p;
  return 0;
}

}  // namespace

int map_shared(int fd, std::uint64_t length, void** address, void* at) noexcept {
  return map_at(at, length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, address);
}

int remap_private_readonly(void* address, std::uint64_t length, int fd) noexcept {
  return retry([&] {
    void* p = ::mmap(address, length, PROT_READ, MAP_PRIVATE | MAP_NORESERVE | MAP_FIXED, fd, 0);
    return p == MAP_FAILED ? -1 : 0;
  });
}

int remap_shared_writable(void* address, std::uint64_t length, int fd) noexcept {
  return retry([&] {
    void* p = ::mmap(address, length, PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_NORESERVE | MAP_FIXED, fd, 0);
    return p == MAP_FAILED ? -1 : 0;
  });
}

int map_shared_fixed(void* address, std::uint64_t length, int fd, std::uint64_t offset) noexcept {
  if (offset > static_cast<std::uint64_t>(LLONG_MAX)) return EINVAL;
  return retry([&] {
    void* p = ::mmap(address, length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd,
                     static_cast<off_t>(offset));
    return p == MAP_FAILED ? -1 : 0;
  });
}

int reserve(std::uint64_t length, void** address, void* at) noexcept {
  return map_at(at, length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, address);
}

int map_readonly(int fd, std::uint64_t length, const void** address) noexcept {
  void* p = MAP_FAILED;
  const int err = retry([&] {
    p = ::mmap(nullptr, length, PROT_READ, MAP_SHARED, fd, 0);
    return p == MAP_FAILED ? -1 : 0;
  });
  if (err == 0) *address = p;
  return err;
}

int map_readonly_at(int fd, std::uint64_t offset, std::uint64_t length,
                    const void** address) noexcept {
  if (offset % page_size() != 0 || offset > static_cast<std::uint64_t>(LLONG_MAX)) return EINVAL;
  void* p = MAP_FAILED;
  const int err = retry([&] {
    p = ::mmap(nullptr, length, PROT_READ, MAP_SHARED, fd, static_cast<off_t>(offset));
    return p == MAP_FAILED ? -1 : 0;
  });
  if (err == 0) *address = p;
  return err;
}

int munmap(const void* address, std::uint64_t length) noexcept {
  return retry([&] { return ::munmap(const_cast<void*>(address), length); });
}

int msync(void* address, std::uint64_t length) noexcept {
  return retry([&] { return ::msync(address, length, MS_SYNC); });
}

int madvise(void* address, std::uint64_t length, int advice) noexcept {
  return retry([&] { return ::madvise(address, length, advice); });
}

int file_size_limit(std::uint64_t* bytes) noexcept {
  struct rlimit64 limit;
  // The raw system call: glibc's getrlimit is not on the async-signal-safe list.
  const int err = retry([&] {
    return static_cast<int>(::syscall(SYS_prlimit64, 0, RLIMIT_FSIZE, nullptr, &limit));
  });
  if (err == 0) {
    *bytes = limit.rlim_cur == RLIM64_INFINITY ? UINT64_MAX
                                               : static_cast<std::uint64_t>(limit.rlim_cur);
  }
  return err;
}

int address_space_limit(std::uint64_t* bytes) noexcept {
  struct rlimit64 limit;
  const int err = retry([&] { return ::getrlimit64(RLIMIT_AS, &limit); });
  if (err == 0) {
    *bytes = limit.rlim_cur == RLIM64_INFINITY ? UINT64_MAX
                                               : static_cast<std::uint64_t>(limit.rlim_cur);
  }
  return err;
}

int address_space_used(std::uint64_t* bytes) noexcept {
  int fd = -1;
  if (const int err = open("/proc/self/statm", O_RDONLY, 0, &fd); err != 0) return err;
  char text[128];
  std::size_t got = 0;
  const int err = pread_full(fd, text, sizeof text - 1, 0, &got);
  close(fd);
  if (err != 0) return err;
  text[got] = '\0';
  std::uint64_t pages = 0;
  std::size_t i = 0;
  for (; i < got && text[i] >= '0' && text[i] <= '9'; ++i) pages = pages * 10 + (text[i] - '0');
  if (i == 0) return EINVAL;
  *bytes = pages * page_size();
  return 0;
}

int process_id() noexcept { return static_cast<int>(::getpid()); }

std::uint64_t page_size() noexcept {
  static constinit std::atomic<std::uint64_t> cached{0};
  std::uint64_t size = cached.load(std::memory_order_relaxed);
  if (size == 0) {
    size = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
    cached.store(size, std::memory_order_relaxed);
  }
  return size;
}

}  // namespace mapwright::os
