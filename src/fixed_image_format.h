// src/fixed_image_format.h — the bytes of a fixed-base image (fixed_image.h): its header,
// its manifest, its digest. Shared by the builder, the mapper and the tests; private to src/.
//
//   base + 0      header (kFixedImageHeaderBytes): the fields below, zeros after them
//   base + 4096   data: what the builder allocated, up to data_end
//   relocations   at a multiple of 8 from data_end: relocation_count u64 offsets from the
//                 base, increasing, each of an 8-aligned word inside the data
//   manifest      text lines, up to the end of the image:
//                   "writer mapwright 0.1.0"
//                   "image NAME"
//                   "type NAME SIZE ALIGNMENT SCHEMA_HASH"   (decimal), one per type
//                   "depends NAME DIGEST BASE DATA_END"      (32 hex digits, then decimal)
// The digest (XXH3-128, canonical) covers the whole image with its own 16 bytes taken as zero.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "mapwright/fixed_image.h"

namespace mapwright::detail {

struct FixedHeader {
  std::uint32_t version = kFixedImageFormatVersion;
  std::uint64_t base = 0;
  std::uint64_t size = 0;
  std::uint64_t root = 0;        // offset from the base; 0: no root
  std::uint64_t data_end = 0;    // offset
  std::uint64_t relocations = 0;  // offset of the table
  std::uint64_t relocation_count = 0;
  std::uint64_t manifest = 0;    // offset
  std::uint64_t manifest_bytes = 0;
  Digest digest;
};

inline constexpr std::uint64_t kFixedDigestAt = 80;  // where the digest's 16 bytes are
// The largest manifest read (into memory, before the digest is checked): 1 MiB, thousands of
// types and dependencies, and a bound on what a hostile manifest costs map().
inline constexpr std::uint64_t kFixedManifestMaxBytes = 1ull << 20;

// Writes the header into the first kFixedImageHeaderBytes of `image` (the rest of them zero).
void encode_fixed_header(const FixedHeader& header, std::byte* image) noexcept;
// Reads and checks the header of `image` (its first bytes; `size` the whole image's): magic,
// version, every offset inside the image and in order. Empty `why` when it is well formed.
FixedHeader decode_fixed_header(std::span<const std::byte> header, std::uint64_t size,
                                std::string* why);

// The digest of the image, its digest field taken as zero.
Digest fixed_image_digest(std::span<const std::byte> image) noexcept;

struct FixedManifest {
  std::string writer;
  std::string name;
  std::vector<FixedImageType> types;
  std::vector<FixedImageDependency> dependencies;
};
std::string encode_fixed_manifest(const FixedManifest& manifest);
// Empty `why` when `text` is a manifest as encode_fixed_manifest() writes one.
FixedManifest decode_fixed_manifest(std::string_view text, std::string* why);
// Reads the header and the manifest of a sealed image from its fd (both decoders above; no
// mapping): what FixedImage::map and FixedImageSet read first. On a header that is not well
// formed (or a read that fails) `*header_ok` is false; `why` says what is wrong with either,
// worded for "(...)" after the image's name, and is empty when both are well formed.
FixedManifest read_fixed_image(const SealedImage& image, FixedHeader* header, bool* header_ok,
                               std::string* why);
// Whether the digest of `image`, whose well-formed `header` read_fixed_image() gave, does not
// match its bytes (false when it cannot tell: no address space to read it through): what makes
// a malformed manifest a damaged image (EBADMSG) rather than not a fixed image (EINVAL), under
// the full check. O(image).
bool fixed_image_damaged(const SealedImage& image, const FixedHeader& header);
// "0x200000000000": addresses in messages.
std::string hex(std::uint64_t value);
// Whether `name` can be a type or dependency name (printable ASCII, no space, not empty, at
// most 256 bytes).
bool fixed_name_ok(std::string_view name) noexcept;

}  // namespace mapwright::detail
