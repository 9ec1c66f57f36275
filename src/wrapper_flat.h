// src/wrapper_flat.h — the FlatBuffers form of wrapper files (include/mapwright/wrapper.fbs):
// its header and trailer, its metadata digest, and its metadata written from and read into
// plain values. Shared by the writer and the reader; private to src/ (and tests).
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

// The header: "MWFBWRAP", the form version (LE u32), 4 zero bytes.
std::array<std::byte, kFlatWrapperHeaderBytes> encode_flat_header();
// True when `bytes` (at least 8) start with the header's magic, whatever follows.
bool has_flat_magic(std::span<const std::byte> bytes) noexcept;

struct FlatTrailer {
  std::uint64_t wrapper_size = 0;     // the whole wrapper, trailer included
  std::uint64_t metadata_offset = 0;  // where the metadata FlatBuffer starts
  std::uint64_t metadata_size = 0;    // its bytes; it ends where the trailer begins
  Digest metadata_digest;
};

std::array<std::byte, kFlatWrapperTrailerBytes> encode_flat_trailer(const FlatTrailer& trailer);
// nullopt, with `why` set to the reason in a few words, unless `bytes` (kFlatWrapperTrailerBytes
// of them) are exactly encode_flat_trailer() of what they hold. Never throws (but bad_alloc).
std::optional<FlatTrailer> decode_flat_trailer(std::span<const std::byte> bytes, std::string* why);

// XXH3-128 of the header, the metadata, then wrapper_size, metadata_offset and metadata_size
// as little-endian u64s (wrapper.fbs, "Integrity").
Digest flat_metadata_digest(std::span<const std::byte> header, std::span<const std::byte> metadata,
                            std::uint64_t wrapper_size, std::uint64_t metadata_offset) noexcept;

// One entry's metadata as the writer has it and the reader decodes it, before the reader's
// checks: codes as the schemas number them (both forms number kinds, digest algorithms and
// compressions alike), chunks as offsets from the wrapper's first byte.
struct RawChunk {
  std::uint64_t offset = 0;
  std::uint64_t size = 0;
};
struct RawEntry {
  std::string name;
  std::uint16_t kind = 0;               // 0 shared library, 1 data
  std::uint64_t size = 0;
  std::uint16_t digest_algorithm = 0;   // 0 XXH3-128
  std::vector<std::byte> digest;
  std::vector<std::string> dependencies;
  std::vector<RawChunk> chunks;
  std::uint16_t compression = 0;        // 0 none, 1 zstd
  std::uint64_t frame_size = 0;
  bool has_frame_ends = false;
  std::vector<std::uint64_t> frame_ends;
};

// The metadata FlatBuffer (root WrapperFile, identifier "MWRP") for these entries, as a stock
// FlatBufferBuilder finishes it (its size is a multiple of 8).
std::vector<std::byte> encode_flat_metadata(const std::string& producer,
                                            const std::vector<RawEntry>& entries);

struct FlatMetadata {
  std::uint32_t format_version = 0;
  std::string producer;
  std::vector<RawEntry> entries;
};
// Runs the FlatBuffers Verifier over `metadata` (tables limited by its size, so any buffer
// under 2 GiB can pass) and decodes it. nullopt with `why` set if it is not a valid buffer
// with the identifier. Never throws (but bad_alloc).
std::optional<FlatMetadata> decode_flat_metadata(std::span<const std::byte> metadata,
                                                 std::string* why);

// A whole FlatBuffers-form wrapper around `metadata`: the header, each chunk's bytes at its
// offset (zeros elsewhere), the metadata at the first multiple of 8 from `metadata_at`, then
// the trailer with the metadata digest. For tests and the fuzz driver, which craft wrappers
// the writer would not make (metadata that lies). Throws std::invalid_argument for a chunk
// that would not end before the metadata.
struct CraftedChunk {
  std::uint64_t offset = 0;
  std::span<const std::byte> bytes;
};
std::vector<std::byte> flat_wrapper_around(std::span<const CraftedChunk> chunks,
                                           std::uint64_t metadata_at,
                                           std::span<const std::byte> metadata);

}  // namespace mapwright::detail
