// src/capnp_frame.cc — validation of the Cap'n Proto stream framing (the segment table at the
// start of a message), shared by MappedMessageReader and MappedMessageBuilder's reopen.
#include "capnp_frame.h"

#include <cerrno>
#include <string>
#include <utility>

#include "mapwright/capnp.h"
#include "mapwright/error.h"

namespace mapwright::detail {
namespace {

[[noreturn]] void refuse(const std::string& name, std::string detail) {
  throw Error(EINVAL, "reading Cap'n Proto message", name, std::move(detail));
}

std::string str(std::uint64_t value) { return std::to_string(value); }

// The stream format is little-endian whatever the host.
std::uint32_t load_le32(const std::byte* p) noexcept {
  return static_cast<std::uint32_t>(p[0]) | static_cast<std::uint32_t>(p[1]) << 8 |
         static_cast<std::uint32_t>(p[2]) << 16 | static_cast<std::uint32_t>(p[3]) << 24;
}

}  // namespace

Frame parse_frame_table(const std::byte* data, std::uint64_t length, const std::string& name) {
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

  Frame frame;
  frame.header_bytes = header;
  frame.segments.reserve(static_cast<std::size_t>(count));
  // count <= 511 and each size < 2^29 words: the sum fits in 64 bits with room to spare.
  std::uint64_t offset = header;  // bytes
  for (std::uint64_t i = 0; i < count; ++i) {
    const std::uint64_t words = load_le32(data + 4 + 4 * i);
    if (words > kMaxSegmentWords) {
      refuse(name, "segment " + str(i) + " (" + str(words) +
                       " words) is larger than a Cap'n Proto segment can be (" +
                       str(kMaxSegmentWords) + " words)");
    }
    frame.segments.push_back({offset, words});
    offset += words * sizeof(::capnp::word);
  }
  frame.size = offset;
  return frame;
}

Frame parse_frame(const std::byte* data, std::uint64_t length, const std::string& name) {
  Frame frame = parse_frame_table(data, length, name);
  for (std::size_t i = 0; i < frame.segments.size(); ++i) {
    const FrameSegment& segment = frame.segments[i];
    const std::uint64_t bytes = segment.words * sizeof(::capnp::word);
    if (bytes > length - segment.offset) {
      refuse(name, "segment " + str(i) + " (" + str(segment.words) + " words at byte " +
                       str(segment.offset) + ") runs past the end of the file (" + str(length) +
                       " bytes)");
    }
  }
  if (frame.size != length) {
    refuse(name, str(length - frame.size) + " bytes after the message (which ends at byte " +
                     str(frame.size) + " of " + str(length) + ")");
  }
  return frame;
}

}  // namespace mapwright::detail
