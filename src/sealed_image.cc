#include "mapwright/sealed_image.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <mutex>
#include <string>
#include <vector>

#include "mapwright/error.h"
#include "os/os.h"
#include "image_transfer.h"
#include "sealed_image_state.h"

namespace mapwright {
namespace {

std::string describe_fd(int fd) { return "fd " + std::to_string(fd); }

std::string missing_seals(int seals) {
  std::string names;
  const auto add = [&](int bit, const char* name) {
    if ((seals & bit) == 0) names += names.empty() ? name : std::string(", ") + name;
  };
  add(F_SEAL_SEAL, "F_SEAL_SEAL");
  add(F_SEAL_SHRINK, "F_SEAL_SHRINK");
  add(F_SEAL_GROW, "F_SEAL_GROW");
  add(F_SEAL_WRITE, "F_SEAL_WRITE");
  return names;
}

}  // namespace

static_assert(kImageSeals == os::kAllSeals);

SealedImage::State::~State() {
  if (mapping != nullptr && mapping_length != 0) os::munmap(mapping, mapping_length);
  if (fd >= 0) os::close(fd);
}

SealedImage::SealedImage(std::shared_ptr<State> state) noexcept : state_(std::move(state)) {}

SealedImage SealedImage::adopt(int fd) {
  int seals = 0;
  if (const int err = os::get_seals(fd, &seals); err != 0) {
    throw Error(err == EINVAL ? EINVAL : err, "adopting image", describe_fd(fd),
                err == EINVAL ? "(the file cannot carry seals: not a memfd)" : "(F_GET_SEALS)");
  }
  if ((seals & kImageSeals) != kImageSeals) {
    throw Error(EPERM, "adopting image", describe_fd(fd),
                "(not immutable: missing " + missing_seals(seals) + ")");
  }
  std::uint64_t size = 0;
  if (const int err = os::file_size(fd, &size); err != 0) {
    throw Error(err, "adopting image", describe_fd(fd), "(fstat)");
  }
  auto state = std::make_shared<State>();
  state->fd = fd;
  state->size = size;
  return SealedImage(std::move(state));
}

int SealedImage::fd() const noexcept { return state_ ? state_->fd : -1; }

std::uint64_t SealedImage::size() const noexcept { return state_ ? state_->size : 0; }

std::span<const std::byte> SealedImage::map() const {
  if (!state_ || state_->size == 0) return {};
  const std::lock_guard lock(state_->mutex);
  if (state_->mapping == nullptr) {
    const void* address = nullptr;
    if (const int err = os::map_readonly(state_->fd, state_->size, &address); err != 0) {
      throw Error(err, "mapping image", describe_fd(state_->fd), "read-only");
    }
    state_->mapping = address;
    state_->mapping_length = state_->size;
  }
  return {static_cast<const std::byte*>(state_->mapping), state_->size};
}

namespace {

// The one message send_image() sends beside the fd.
struct ImageMessage {
  std::uint64_t magic;
  std::uint64_t size;
};
constexpr std::uint64_t kImageMagic = 0x31474d49'574d4150ull;  // "PAMWIMG1"

std::string describe_socket(int fd) { return "socket fd " + std::to_string(fd); }

}  // namespace

namespace detail {

void send_image_fd(int unix_socket, int fd, std::uint64_t size, std::size_t trailing) {
  ImageMessage message{kImageMagic, size};
  const std::vector<char> zeros(trailing);
  const iovec data[2] = {{&message, sizeof message}, {const_cast<char*>(zeros.data()), trailing}};
  std::size_t sent = 0;
  if (const int err = os::send_with_fd(unix_socket, data, trailing != 0 ? 2 : 1, fd, &sent);
      err != 0) {
    throw Error(err, "sending image over", describe_socket(unix_socket), "(sendmsg)");
  }
  if (sent != sizeof message + trailing) {
    throw Error(EIO, "sending image over", describe_socket(unix_socket), "(short sendmsg)");
  }
}

}  // namespace detail

void send_image(int unix_socket, const SealedImage& image) {
  if (image.fd() < 0) throw Error(EBADF, "sending image over", describe_socket(unix_socket), "(empty image)");
  detail::send_image_fd(unix_socket, image.fd(), image.size());
}

SealedImage receive_image(int unix_socket) {
  ImageMessage message{};
  // Room for several fds, so that a sender passing more than one is seen (and refused).
  int received[8];
  std::size_t got = 0;
  std::size_t count = 0;
  int flags = 0;
  const std::string subject = describe_socket(unix_socket);
  if (const int err = os::receive_with_fds(unix_socket, &message, sizeof message, received, 8,
                                           &got, &count, &flags);
      err != 0) {
    throw Error(err, "receiving image over", subject, "(recvmsg)");
  }
  // Every fd that arrived is closed on any refusal.
  const std::vector<int> fds(received, received + count);
  // `detail_is_cause`: `why` ends with the cause already (an Error's what()), not twice.
  const auto refuse = [&](int error, const std::string& why, bool detail_is_cause = false) {
    for (const int fd : fds) os::close(fd);
    if (detail_is_cause) throw Error(error, "receiving image over", subject, why, Error::DetailIsCause{});
    throw Error(error, "receiving image over", subject, why);
  };
  if (got == 0) refuse(ECONNRESET, "(the peer closed the connection)");
  if ((flags & MSG_CTRUNC) != 0) {
    // With room for 8, none arrived: the kernel could not install even one here.
    if (fds.empty()) refuse(EMFILE, "(the fd sent did not arrive: this process is out of fds, RLIMIT_NOFILE)");
    refuse(EPROTO, "(control data truncated: too many fds)");
  }
  // A datagram or seqpacket message longer than ours was cut to our 16 bytes: not ours.
  if ((flags & MSG_TRUNC) != 0) refuse(EPROTO, "(the message is longer than an image message)");
  if (got != sizeof message || message.magic != kImageMagic) {
    refuse(EPROTO, "(not a mapwright image message)");
  }
  if (fds.size() != 1) {
    refuse(EPROTO, "(expected one fd, got " + std::to_string(fds.size()) + ")");
  }
  SealedImage image = [&] {
    try {
      return SealedImage::adopt(fds[0]);  // verifies the seals here, in the receiver
    } catch (const Error& e) {
      refuse(e.error(), "(" + std::string(e.what()) + ")", /*detail_is_cause=*/true);
      throw;  // unreachable: refuse throws
    }
  }();
  if (image.size() != message.size) {
    throw Error(EPROTO, "receiving image over", subject,
                "(announced " + std::to_string(message.size) + " bytes, the fd has " +
                    std::to_string(image.size()) + ")");
  }
  return image;
}

}  // namespace mapwright
