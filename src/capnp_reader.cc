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

// The stream format is little-endian whatever the host.
std::uint32_t load_le32(const std::byte* p) noexcept {
  return static_cast<std::uint32_t>(p[0]) | static_cast<std::uint32_t>(p[1]) << 8 |
         static_cast<std::uint32_t>(p[2]) << 16 | static_cast<std::uint32_t>(p[3]) << 24;
}

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
struct FdCloser {
  int fd;
  ~FdCloser() { os::close(fd); }
};

}  // namespace

MappedMessageReader::Parsed MappedMessageReader::parse(std::shared_ptr<const void> keep_alive,
                                                       const std::byte* data,
                                                       std::uint64_t length,
                                                       const std::string& name) {
  if (length == 0) refuse(name, "empty file");
  if (length < 8) {
    refuse(name, "truncated header: " + str(length) +
                     " bytes, but a message needs at least 8 (segment count and size)");
  }
  if (reinterpret_cast<std::uintptr_t>(data) % sizeof(::capnp::word) != 0) {
    refuse(name, "data is not 8-byte aligned");
  }

  // u32[0] is the segment count - 1; compute in 64 bits so that 0xffffffff cannot wrap to 0.
  const std::uint32_t count_field = load_le32(data);
  const std::uint64_t count = std::uint64_t{count_field} + 1;
  if (count > kMaxSegments) {
    refuse(name, "segment count " + str(count) + " (count field " + str(count_field) +
                     ") is more than " + str(kMaxSegments));
  }
  // The table: the count word, one u32 per segment, padded to a multiple of 8 bytes.
  const std::uint64_t header = (4 + 4 * count + 7) / 8 * 8;
  if (header > length) {
    refuse(name, "truncated header: the segment table of " + str(count) + " segments needs " +
                     str(header) + " bytes, but the file has " + str(length));
  }

  Parsed parsed;
  parsed.segments.reserve(static_cast<std::size_t>(count));
  // count <= 512 and each size < 2^32 words: the sum fits in 64 bits with room to spare, but
  // each step is still checked against the file before it is added.
  std::uint64_t offset = header;  // bytes
  for (std::uint64_t i = 0; i < count; ++i) {
    const std::uint64_t words = load_le32(data + 4 + 4 * i);
    if (words > kMaxSegmentWords) {
      refuse(name, "segment " + str(i) + " (" + str(words) +
                       " words) is larger than a Cap'n Proto segment can be (" +
                       str(kMaxSegmentWords) + " words)");
    }
    const std::uint64_t bytes = words * sizeof(::capnp::word);
    if (bytes > length - offset) {
      refuse(name, "segment " + str(i) + " (" + str(words) + " words at byte " + str(offset) +
                       ") runs past the end of the file (" + str(length) + " bytes)");
    }
    parsed.segments.emplace_back(reinterpret_cast<const ::capnp::word*>(data + offset),
                                 static_cast<std::size_t>(words));
    offset += bytes;
  }
  if (offset != length) {
    refuse(name, str(length - offset) + " bytes after the message (which ends at byte " +
                     str(offset) + " of " + str(length) + ")");
  }
  parsed.size = offset;
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
              const FdCloser closer{fd};  // the mapping does not need the fd
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
