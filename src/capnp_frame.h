// src/capnp_frame.h — the Cap'n Proto stream framing, validated. Private to src/.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace mapwright::detail {

struct FrameSegment {
  std::uint64_t offset = 0;  // bytes from the start of the message
  std::uint64_t words = 0;
};

struct Frame {
  std::uint64_t header_bytes = 0;  // the segment table, padded to 8 bytes
  std::vector<FrameSegment> segments;
  std::uint64_t size = 0;          // header and segments: the whole message, in bytes
};

// Validates the stream header of the message in [data, data + length), which must be 8-byte
// aligned, against its length: count <= 511 (no wrap of the count field), the table inside
// the data, each segment within the data and at most kMaxSegmentWords, no bytes after the
// last segment. Throws mapwright::Error (EINVAL, "reading Cap'n Proto message", `name`) that
// says exactly what is wrong; reads nothing past data + length.
Frame parse_frame(const std::byte* data, std::uint64_t length, const std::string& name);

// The segment table alone: the message's layout as the table announces it, whatever follows.
// `data` holds `available` bytes of the message's start (8-byte aligned); the table must lie
// within them, but the segments may run past them or stop before their end (`size` is where
// the table says the message ends). Refuses what parse_frame refuses about the table itself
// (empty, truncated header, count > 511, a segment over kMaxSegmentWords), with its messages.
Frame parse_frame_table(const std::byte* data, std::uint64_t available, const std::string& name);

}  // namespace mapwright::detail
