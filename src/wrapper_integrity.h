// src/wrapper_integrity.h — the parts of format version 2's whole-file integrity that the
// writer and the reader share: the trailer's encoding and the metadata digest (the layout is
// described in include/mapwright/wrapper.capnp, "Integrity"). Private to src/ (and tests).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "mapwright/wrapper.h"

namespace mapwright::detail {

// The trailer's fields (magic and formatVersion are constants).
struct Trailer {
  std::uint64_t wrapper_size = 0;     // the whole wrapper, trailer included
  std::uint64_t metadata_offset = 0;  // start of the hashed metadata in the first message
  Digest metadata_digest;
};

// The trailer's bytes: a single-segment Cap'n Proto message as MallocMessageBuilder and
// writeMessage encode it, exactly kWrapperTrailerBytes long.
std::array<std::byte, kWrapperTrailerBytes> encode_trailer(const Trailer& trailer);

// Reads a trailer from `bytes` (kWrapperTrailerBytes of them, any alignment). nullopt, with
// `why` set to the reason in a few words, unless the bytes are exactly encode_trailer() of
// what they hold, with the magic, format version 2 and a 16-byte digest. Never throws on
// any input (except std::bad_alloc).
std::optional<Trailer> decode_trailer(std::span<const std::byte> bytes, std::string* why);

// The end of the segment table and root pointer of the message at `message` (whose table
// must have been checked): the hashed prefix [0, H).
std::uint64_t hashed_prefix_end(const std::byte* message) noexcept;

// The metadata digest: bytes [0, prefix_end) and [metadata_offset, message_size) of the
// message, then wrapper_size and metadata_offset as little-endian u64s. The caller has
// checked prefix_end <= metadata_offset <= message_size.
Digest metadata_digest(const std::byte* message, std::uint64_t prefix_end,
                       std::uint64_t metadata_offset, std::uint64_t message_size,
                       std::uint64_t wrapper_size) noexcept;

// For a message with no chunks (all of it after the root pointer is metadata, as
// MallocMessageBuilder writes one), the bytes to append to make it a version 2 wrapper. For
// tests and the fuzz seed generator, which craft wrappers the writer would not make.
std::array<std::byte, kWrapperTrailerBytes> trailer_for_metadata_only(
    std::span<const std::byte> message);

}  // namespace mapwright::detail
