// src/os/files.cc — kinds of files, modes and owners, and reading streams (os.h).
#include <fcntl.h>
#include <limits.h>
#include <linux/magic.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cerrno>

#include "os/os.h"
#include "os/retry.h"

namespace mapwright::os {
namespace {

using detail::retry;

FileType type_of(mode_t mode) noexcept {
  if (S_ISREG(mode)) return FileType::kRegular;
  if (S_ISDIR(mode)) return FileType::kDirectory;
  if (S_ISFIFO(mode)) return FileType::kFifo;
  if (S_ISSOCK(mode)) return FileType::kSocket;
  if (S_ISCHR(mode)) return FileType::kCharDevice;
  if (S_ISBLK(mode)) return FileType::kBlockDevice;
  if (S_ISLNK(mode)) return FileType::kSymlink;
  return FileType::kOther;
}

void fill(const struct stat& st, FileStatus* status) noexcept {
  status->type = type_of(st.st_mode);
  status->size = static_cast<std::uint64_t>(st.st_size);
  status->mode = st.st_mode & 07777;
  status->uid = st.st_uid;
  status->gid = st.st_gid;
  status->device = st.st_dev;
  status->inode = st.st_ino;
  status->pseudo = false;
}

}  // namespace

const char* to_string(FileType type) noexcept {
  switch (type) {
    case FileType::kRegular:
      return "regular file";
    case FileType::kDirectory:
      return "directory";
    case FileType::kFifo:
      return "FIFO";
    case FileType::kSocket:
      return "socket";
    case FileType::kCharDevice:
      return "character device";
    case FileType::kBlockDevice:
      return "block device";
    case FileType::kSymlink:
      return "symbolic link";
    case FileType::kOther:
      break;
  }
  return "special file";
}

int fd_status(int fd, FileStatus* status) noexcept {
  struct stat st;
  if (const int err = retry([&] { return ::fstat(fd, &st); }); err != 0) return err;
  struct statfs fs;
  bool pseudo = false;
  if (retry([&] { return ::fstatfs(fd, &fs); }) == 0) {
    pseudo = fs.f_type == PROC_SUPER_MAGIC || fs.f_type == SYSFS_MAGIC;
  }
  fill(st, status);
  status->pseudo = pseudo;
  return 0;
}

int path_status(const char* path, bool follow, FileStatus* status) noexcept {
  struct stat st;
  const int err = retry([&] { return follow ? ::stat(path, &st) : ::lstat(path, &st); });
  if (err == 0) fill(st, status);
  return err;
}

int real_path(const char* path, char* out) noexcept {
  const int saved = errno;
  const int err = ::realpath(path, out) == nullptr ? errno : 0;
  errno = saved;
  return err;
}

int change_mode(int fd, mode_t mode) noexcept {
  return retry([&] { return ::fchmod(fd, mode); });
}

int change_owner(int fd, uid_t uid, gid_t gid) noexcept {
  return retry([&] { return ::fchown(fd, uid, gid); });
}

int clear_nonblocking(int fd) noexcept {
  int flags = 0;
  if (const int err = retry([&] { return flags = ::fcntl(fd, F_GETFL); }); err != 0) return err;
  if ((flags & O_NONBLOCK) == 0) return 0;
  return retry([&] { return ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK); });
}

int read_waiting(int fd, void* buf, std::size_t length, std::size_t* got) noexcept {
  for (;;) {
    pollfd wait{fd, POLLIN, 0};
    if (const int err = retry([&] { return ::poll(&wait, 1, -1); }); err != 0) return err;
    ssize_t n = 0;
    const int err = retry([&] { return static_cast<int>(n = ::read(fd, buf, length)); });
    if (err == EAGAIN || err == EWOULDBLOCK) continue;  // woken without data: wait again
    if (err != 0) return err;
    *got = static_cast<std::size_t>(n);
    return 0;
  }
}

}  // namespace mapwright::os
