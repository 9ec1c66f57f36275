// mapwright/sealed_image.h — an immutable memfd: an fd, a size, and a read-only view.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

namespace mapwright {

// The four seals that make a memfd immutable; adopt() requires all of them.
inline constexpr int kImageSeals = 0x0001 /*F_SEAL_SEAL*/ | 0x0002 /*F_SEAL_SHRINK*/ |
                                   0x0004 /*F_SEAL_GROW*/ | 0x0008 /*F_SEAL_WRITE*/;

// A sealed memfd. Nobody — this process, the kernel on anyone's behalf, or any process the fd
// is given to — can change its bytes or its size (invariant 9). Copies share one fd and one
// mapping; the fd is closed when the last copy goes.
class SealedImage {
 public:
  // Takes ownership of `fd` after checking that it carries F_SEAL_SEAL | F_SEAL_SHRINK |
  // F_SEAL_GROW | F_SEAL_WRITE. Throws Error (EPERM: seals missing; EINVAL: the fd cannot be
  // sealed at all, e.g. not a memfd) and leaves `fd` open and the caller's when it refuses.
  static SealedImage adopt(int fd);

  int fd() const noexcept;
  std::uint64_t size() const noexcept;
  // A read-only mapping of the whole image, made on first use and kept until the last copy
  // goes. Thread-safe. Throws Error if mmap fails. An empty image gives an empty span.
  std::span<const std::byte> map() const;

  struct State;

 private:
  explicit SealedImage(std::shared_ptr<State> state) noexcept;
  friend class Region;
  friend class MappedFlatBufferBuilder;
  std::shared_ptr<State> state_;
};

// Sends `image` over the connected Unix-domain socket `unix_socket`: its fd as SCM_RIGHTS
// ancillary data, with one 16-byte message (a magic number and the image's size). The image
// stays valid here. Throws Error (EPIPE, ECONNRESET, ...). Not async-signal-safe.
void send_image(int unix_socket, const SealedImage& image);

// Receives one image sent by send_image(). Trusts nothing: the fd arrives close-on-exec, and
// before it is returned the receiver itself checks that it carries all four seals
// (SealedImage::adopt) and that its size is the one announced. Anything else — no fd, more
// than one, a truncated control message, an unsealed or resizable fd, a size mismatch, end
// of stream — closes every fd that arrived and throws Error saying which (EMFILE when the fd
// could not be received because this process is out of fds). Not async-signal-safe.
SealedImage receive_image(int unix_socket);

}  // namespace mapwright
