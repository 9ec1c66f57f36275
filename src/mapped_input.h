// src/mapped_input.h — the bytes a zero-copy reader reads: a whole file, a range of an fd, or
// a sealed image, as one read-only view, with the name its errors give. Shared by the Cap'n
// Proto and FlatBuffers readers, so that both refuse the same inputs with the same words.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "mapwright/sealed_image.h"

namespace mapwright::detail {

struct MappedInput {
  std::shared_ptr<const void> keep_alive;  // the mapping (or the image) the view lives in
  const std::byte* data = nullptr;
  std::uint64_t size = 0;
  std::string name;  // the path, "fd N", "fd N at offset X" or "sealed image fd N"
};

// Each maps its input read-only and keeps it mapped while keep_alive lives. An empty input
// is refused: Error(EINVAL, operation, name, "empty file"); so is anything but a regular
// file (a FIFO — never waited on —, a socket, a device, a directory) and a /proc or /sys
// file, whose size says nothing of its content: EINVAL saying which. System call failures keep their
// errno (ENOENT from open, EBADF from fstat...). Not async-signal-safe.
MappedInput map_input(const std::filesystem::path& path, const char* operation);
// [offset, offset + length) of `fd`; length 0: to the end of the file. `alignment` (a power
// of two) is what the format needs of `offset` (EINVAL otherwise, saying so); a range past
// the end of the file is EINVAL. The fd is not kept.
MappedInput map_input(int fd, std::uint64_t offset, std::uint64_t length,
                      std::uint64_t alignment, const char* operation);
// The image's one cached mapping, shared (the view keeps a copy of the image).
MappedInput map_input(const SealedImage& image, const char* operation);

}  // namespace mapwright::detail
