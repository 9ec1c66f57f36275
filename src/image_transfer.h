// src/image_transfer.h — the wire form of send_image(), for the library and its tests.
#pragma once

#include <cstddef>
#include <cstdint>

namespace mapwright::detail {

// Sends `fd` over `unix_socket` as SCM_RIGHTS, with the 16-byte message receive_image()
// expects (magic, `size`). send_image() is this with a SealedImage's fd; tests use it to send
// an fd that is NOT sealed, to check that the receiver refuses it; `trailing` zero bytes after
// the message make one that is too long. Throws Error. Not async-signal-safe.
void send_image_fd(int unix_socket, int fd, std::uint64_t size, std::size_t trailing = 0);

}  // namespace mapwright::detail
