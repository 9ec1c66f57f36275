// src/capnp_reader.cc — MappedMessageReader: a zero-copy capnp::MessageReader over a
// read-only mapping of a stream-framed message, whose segment table is validated here before
// Cap'n Proto sees any of it.
#include <fcntl.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <string>
#include <utility>

#include "mapwright/capnp.h"
#include "capnp_frame.h"
#include "mapwright/error.h"
#include "os/os.h"

namespace mapwright {
namespace {

constexpr const char* kOperation = "reading Cap'n Proto message";

// Eight Mi words: Cap'n Proto's own default traversal limit, the floor of ours.
constexpr std::uint64_t kMinTraversalWords = 8ull << 20;

[[noreturn]] void refuse(const std::string& name, std::string detail) {
  throw Error(EINVAL, kOperation, name, std::move(detail));
}

std::string str(std::uint64_t value) { return std::to_string(value); }

// A read-only mapping of [offset, offset + length) of `fd` (offset page-aligned), unmapped
// when the last owner goes.
std::shared_ptr<const void> map_fd(int fd, std::uint64_t offset, std::uint64_t length,
                                   const std::string& name) {
  const void* address = nullptr;
  if (const int err = os::map_readonly_at(fd, offset, length, &address); err != 0) {
    throw Error(err, kOperation, name, "(mmap of " + str(length) + " bytes)");
  }
  // If the control block cannot be allocated, shared_ptr calls the deleter: no leak.
  return std::shared_ptr<const void>(address,
                                     [length](const void* p) { os::munmap(p, length); });
}

// Closes an fd on every path out of a scope.
}  // namespace

MappedMessageReader::Parsed MappedMessageReader::parse(std::shared_ptr<const void> keep_alive,
                                                       const std::byte* data,
                                                       std::uint64_t length,
                                                       const std::string& name) {
  const detail::Frame frame = detail::parse_frame(data, length, name);
  Parsed parsed;
  parsed.segments.reserve(frame.segments.size());
  for (const detail::FrameSegment& segment : frame.segments) {
    parsed.segments.emplace_back(reinterpret_cast<const ::capnp::word*>(data + segment.offset),
                                 static_cast<std::size_t>(segment.words));
  }
  parsed.size = frame.size;
  parsed.data = data;
  parsed.keep_alive = std::move(keep_alive);
  return parsed;
}

MappedMessageReader::MappedMessageReader(Parsed parsed, MappedReaderOptions options)
    : ::capnp::MessageReader([&] {
        ::capnp::ReaderOptions reader;
        reader.traversalLimitInWords =
            options.traversal_limit_words != 0
                ? options.traversal_limit_words
                : std::max(kMinTraversalWords, parsed.size / sizeof(::capnp::word) * 2);
        reader.nestingLimit = options.nesting_limit;
        return reader;
      }()),
      parsed_(std::move(parsed)) {}

MappedMessageReader::MappedMessageReader(const std::filesystem::path& path,
                                         MappedReaderOptions options)
    : MappedMessageReader(
          [&] {
            const std::string name = path.string();
            int fd = -1;
            if (const int err = os::open(name.c_str(), O_RDONLY, 0, &fd); err != 0) {
              throw Error(err, kOperation, name, "(open)");
            }
            std::uint64_t size = 0;
            std::shared_ptr<const void> mapping;
            {
              const os::OwnedFd closer(fd);  // the mapping does not need the fd
              if (const int err = os::file_size(fd, &size); err != 0) {
                throw Error(err, kOperation, name, "(fstat)");
              }
              if (size == 0) refuse(name, "empty file");  // and mmap of 0 bytes fails
              mapping = map_fd(fd, 0, size, name);
            }
            const auto* data = static_cast<const std::byte*>(mapping.get());
            return parse(std::move(mapping), data, size, name);
          }(),
          options) {}

MappedMessageReader::MappedMessageReader(int fd, std::uint64_t offset, std::uint64_t length,
                                         MappedReaderOptions options)
    : MappedMessageReader(
          [&] {
            const std::string name =
                "fd " + std::to_string(fd) + (offset != 0 ? " at offset " + str(offset) : "");
            if (offset % sizeof(::capnp::word) != 0) {
              refuse(name, "offset " + str(offset) +
                               " is not a multiple of 8 (Cap'n Proto words must be aligned)");
            }
            std::uint64_t size = 0;
            if (const int err = os::file_size(fd, &size); err != 0) {
              throw Error(err, kOperation, name, "(fstat)");
            }
            if (offset > size) {
              refuse(name, "offset " + str(offset) + " is past the end of the file (" +
                               str(size) + " bytes)");
            }
            if (length == 0) {
              length = size - offset;
              if (length == 0) {
                refuse(name, size == 0 ? std::string("empty file")
                                       : "empty file: nothing after offset " + str(offset) +
                                             " (the file has " + str(size) + " bytes)");
              }
            } else if (length > size - offset) {
              refuse(name, "range of " + str(length) + " bytes at offset " + str(offset) +
                               " runs past the end of the file (" + str(size) + " bytes)");
            }
            // mmap needs a page-aligned offset: map from the page boundary below it.
            const std::uint64_t page_offset = offset / os::page_size() * os::page_size();
            const std::uint64_t lead = offset - page_offset;
            std::shared_ptr<const void> mapping = map_fd(fd, page_offset, lead + length, name);
            const auto* data = static_cast<const std::byte*>(mapping.get()) + lead;
            return parse(std::move(mapping), data, length, name);
          }(),
          options) {}

MappedMessageReader::MappedMessageReader(const SealedImage& image, MappedReaderOptions options)
    : MappedMessageReader(
          [&] {
            const std::string name = "sealed image fd " + std::to_string(image.fd());
            if (image.size() == 0) refuse(name, "empty file");
            const std::span<const std::byte> bytes = image.map();
            // The copy shares the image's one mapping and keeps it (and the fd) alive.
            std::shared_ptr<const void> keep_alive = std::make_shared<SealedImage>(image);
            return parse(std::move(keep_alive), bytes.data(), bytes.size(), name);
          }(),
          options) {}

MappedMessageReader::~MappedMessageReader() noexcept(false) = default;

::kj::ArrayPtr<const ::capnp::word> MappedMessageReader::getSegment(::capnp::uint id) {
  if (id >= parsed_.segments.size()) return nullptr;
  return parsed_.segments[id];
}

}  // namespace mapwright
