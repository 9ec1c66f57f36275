// src/mapped_input.cc — read-only views of files, fd ranges and sealed images for readers.
#include "mapped_input.h"

#include <fcntl.h>

#include <utility>

#include "mapwright/error.h"
#include "os/os.h"

namespace mapwright::detail {
namespace {

std::string str(std::uint64_t value) { return std::to_string(value); }

// A read-only mapping of [offset, offset + length) of `fd` (offset page-aligned), unmapped
// when the last owner goes.
std::shared_ptr<const void> map_fd(int fd, std::uint64_t offset, std::uint64_t length,
                                   const char* operation, const std::string& name) {
  const void* address = nullptr;
  if (const int err = os::map_readonly_at(fd, offset, length, &address); err != 0) {
    throw Error(err, operation, name, "(mmap of " + str(length) + " bytes)");
  }
  // If the control block cannot be allocated, shared_ptr calls the deleter: no leak.
  return std::shared_ptr<const void>(address,
                                     [length](const void* p) { os::munmap(p, length); });
}

// Only a regular file (a memfd is one) can be mapped as the whole of an input: a FIFO, a
// socket or a device has no size to map, and /proc or /sys files are generated on read.
void require_regular(int fd, const char* operation, const std::string& name) {
  os::FileStatus status;
  if (const int err = os::fd_status(fd, &status); err != 0) {
    throw Error(err, operation, name, "(fstat)");
  }
  if (status.type != os::FileType::kRegular) {
    throw Error(EINVAL, operation, name,
                std::string("(not a regular file: a ") + os::to_string(status.type) + ")");
  }
  if (status.pseudo) {
    throw Error(EINVAL, operation, name,
                "(a /proc or /sys file, whose size says nothing of its content: copy it to a "
                "regular file first)");
  }
}

}  // namespace

MappedInput map_input(const std::filesystem::path& path, const char* operation) {
  MappedInput input;
  input.name = path.string();
  int fd = -1;
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
  if (const int err = os::open(input.name.c_str(), O_RDONLY | O_NONBLOCK, 0, &fd); err != 0) {
    throw Error(err, operation, input.name, "(open)");
  }
  const os::OwnedFd closer(fd);  // the mapping does not need the fd
  require_regular(fd, operation, input.name);
  if (const int err = os::file_size(fd, &input.size); err != 0) {
    throw Error(err, operation, input.name, "(fstat)");
  }
  if (input.size == 0) throw Error(EINVAL, operation, input.name, "empty file");
  input.keep_alive = map_fd(fd, 0, input.size, operation, input.name);
  input.data = static_cast<const std::byte*>(input.keep_alive.get());
  return input;
}

MappedInput map_input(int fd, std::uint64_t offset, std::uint64_t length,
                      std::uint64_t alignment, const char* operation) {
  MappedInput input;
  input.name = "fd " + str(fd) + (offset != 0 ? " at offset " + str(offset) : "");
  const auto refuse = [&](std::string detail) {
    throw Error(EINVAL, operation, input.name, std::move(detail));
  };
  if (offset % alignment != 0) {
    refuse("offset " + str(offset) + " is not a multiple of " + str(alignment) +
           " (the format's alignment)");
  }
  require_regular(fd, operation, input.name);
  std::uint64_t size = 0;
  if (const int err = os::file_size(fd, &size); err != 0) {
    throw Error(err, operation, input.name, "(fstat)");
  }
  if (offset > size) {
    refuse("offset " + str(offset) + " is past the end of the file (" + str(size) + " bytes)");
  }
  if (length == 0) {
    length = size - offset;
    if (length == 0) {
      refuse(size == 0 ? std::string("empty file")
                       : "empty file: nothing after offset " + str(offset) + " (the file has " +
                             str(size) + " bytes)");
    }
  } else if (length > size - offset) {
    refuse("range of " + str(length) + " bytes at offset " + str(offset) +
           " runs past the end of the file (" + str(size) + " bytes)");
  }
  // mmap needs a page-aligned offset: map from the page boundary below it.
  const std::uint64_t page_offset = offset / os::page_size() * os::page_size();
  const std::uint64_t lead = offset - page_offset;
  input.keep_alive = map_fd(fd, page_offset, lead + length, operation, input.name);
  input.data = static_cast<const std::byte*>(input.keep_alive.get()) + lead;
  input.size = length;
  return input;
}

MappedInput map_input(const SealedImage& image, const char* operation) {
  MappedInput input;
  input.name = "sealed image fd " + str(image.fd());
  if (image.size() == 0) throw Error(EINVAL, operation, input.name, "empty file");
  const std::span<const std::byte> bytes = image.map();
  // The copy shares the image's one mapping and keeps it (and the fd) alive.
  input.keep_alive = std::make_shared<SealedImage>(image);
  input.data = bytes.data();
  input.size = bytes.size();
  return input;
}

}  // namespace mapwright::detail
