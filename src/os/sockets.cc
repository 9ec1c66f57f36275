// src/os/sockets.cc — passing fds over Unix sockets; see os.h for the contract.
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "os/os.h"
#include "os/retry.h"

namespace mapwright::os {

int send_with_fds(int socket, const struct iovec* data, int count, const int* fds,
                  std::size_t fd_count, std::size_t* sent) noexcept {
  if (fd_count > kMaxFdsPerMessage) return EINVAL;
  alignas(cmsghdr) char control[CMSG_SPACE(kMaxFdsPerMessage * sizeof(int))] = {};
  msghdr header{};
  header.msg_iov = const_cast<struct iovec*>(data);
  header.msg_iovlen = static_cast<std::size_t>(count);
  if (fd_count != 0) {
    header.msg_control = control;
    header.msg_controllen = CMSG_SPACE(fd_count * sizeof(int));
    cmsghdr* rights = CMSG_FIRSTHDR(&header);
    rights->cmsg_level = SOL_SOCKET;
    rights->cmsg_type = SCM_RIGHTS;
    rights->cmsg_len = CMSG_LEN(fd_count * sizeof(int));
    std::memcpy(CMSG_DATA(rights), fds, fd_count * sizeof(int));
  }
  ssize_t n = -1;
  const int err = detail::retry([&] { return n = ::sendmsg(socket, &header, MSG_NOSIGNAL); });
  if (err == 0) *sent = static_cast<std::size_t>(n);
  return err;
}

int send_with_fd(int socket, const struct iovec* data, int count, int fd,
                 std::size_t* sent) noexcept {
  return send_with_fds(socket, data, count, &fd, fd >= 0 ? 1 : 0, sent);
}

int socket_type(int socket, int* type) noexcept {
  int value = 0;
  socklen_t length = sizeof value;
  const int err = detail::retry([&] { return ::getsockopt(socket, SOL_SOCKET, SO_TYPE, &value, &length); });
  if (err == 0) *type = value;
  return err;
}

int receive_with_fds(int socket, void* buffer, std::size_t length, int* fds,
                     std::size_t max_fds, std::size_t* got, std::size_t* fd_count,
                     int* flags) noexcept {
  constexpr std::size_t kMaxFds = kMaxFdsPerMessage;
  if (max_fds > kMaxFds) max_fds = kMaxFds;
  iovec data{buffer, length};
  alignas(cmsghdr) char control[CMSG_SPACE(kMaxFds * sizeof(int))] = {};
  msghdr header{};
  header.msg_iov = &data;
  header.msg_iovlen = 1;
  header.msg_control = control;
  header.msg_controllen = CMSG_SPACE(max_fds * sizeof(int));
  ssize_t n = -1;
  const int err = detail::retry([&] { return n = ::recvmsg(socket, &header, MSG_CMSG_CLOEXEC); });
  if (err != 0) return err;
  std::size_t stored = 0;
  for (cmsghdr* c = CMSG_FIRSTHDR(&header); c != nullptr; c = CMSG_NXTHDR(&header, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (std::size_t i = 0; i < count; ++i) {
      int fd = -1;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      if (stored < max_fds) {
        fds[stored++] = fd;
      } else {
        ::close(fd);  // cannot happen: the control buffer holds max_fds at most
      }
    }
  }
  *got = static_cast<std::size_t>(n);
  *fd_count = stored;
  *flags = header.msg_flags;
  return 0;
}

namespace {

int unix_address(const char* path, sockaddr_un* address) noexcept {
  std::memset(address, 0, sizeof *address);
  address->sun_family = AF_UNIX;
  const std::size_t length = std::strlen(path);
  if (length == 0) return EINVAL;
  if (length >= sizeof address->sun_path) return ENAMETOOLONG;
  std::memcpy(address->sun_path, path, length);
  return 0;
}

}  // namespace

int listen_unix(const char* path, int* out) noexcept {
  sockaddr_un address;
  if (const int err = unix_address(path, &address); err != 0) return err;
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return errno;
  int err = detail::retry([&] { return ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address); });
  if (err == 0) err = detail::retry([&] { return ::listen(fd, 64); });
  if (err != 0) {
    ::close(fd);
    return err;
  }
  *out = fd;
  return 0;
}

int connect_unix(const char* path, int timeout_ms, int* out) noexcept {
  sockaddr_un address;
  if (const int err = unix_address(path, &address); err != 0) return err;
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno;
  // A Unix socket's connect() waits for room in a full backlog as long as the send timeout.
  if (const int err = set_socket_timeouts(fd, timeout_ms); err != 0) {
    ::close(fd);
    return err;
  }
  if (const int err = detail::retry(
          [&] { return ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address); });
      err != 0) {
    ::close(fd);
    return err;
  }
  *out = fd;
  return 0;
}

int accept_connection(int listener, int* out) noexcept {
  int fd = -1;
  const int err = detail::retry([&] { return fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC); });
  if (err == 0) *out = fd;
  return err;
}

int set_socket_timeouts(int socket, int milliseconds) noexcept {
  if (milliseconds < 0) milliseconds = 0;
  timeval tv{milliseconds / 1000, (milliseconds % 1000) * 1000};
  if (::setsockopt(socket, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0) return errno;
  if (::setsockopt(socket, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) != 0) return errno;
  return 0;
}

int send_all(int socket, const void* data, std::size_t length) noexcept {
  const char* at = static_cast<const char*>(data);
  while (length != 0) {
    ssize_t n = -1;
    if (const int err = detail::retry([&] { return n = ::send(socket, at, length, MSG_NOSIGNAL); });
        err != 0) {
      return err;
    }
    at += n;
    length -= static_cast<std::size_t>(n);
  }
  return 0;
}

int open_wakeup(int* fd) noexcept {
  const int made = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (made < 0) return errno;
  *fd = made;
  return 0;
}

int wake(int fd) noexcept {
  const std::uint64_t one = 1;
  // EAGAIN: the counter is full, which is as awake as it gets.
  const int err = detail::retry([&] { return static_cast<int>(::write(fd, &one, sizeof one)); });
  return err == EAGAIN ? 0 : err;
}

int wait_readable(const int* fds, std::size_t count, int timeout_ms, std::size_t* ready) noexcept {
  constexpr std::size_t kMax = 8;
  if (count == 0 || count > kMax) return EINVAL;
  pollfd waits[kMax] = {};
  for (std::size_t i = 0; i < count; ++i) waits[i] = {fds[i], POLLIN, 0};
  int n = 0;
  // An interrupted wait starts over with the whole timeout: callers use short ones.
  if (const int err = detail::retry([&] { return n = ::poll(waits, count, timeout_ms); }); err != 0) {
    return err;
  }
  for (std::size_t i = 0; i < count && n > 0; ++i) {
    if (waits[i].revents != 0) {
      *ready = i;
      return 0;
    }
  }
  return ETIMEDOUT;
}

}  // namespace mapwright::os
