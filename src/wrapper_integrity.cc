// src/wrapper_integrity.cc — format version 2's trailer and metadata digest.
#include "wrapper_integrity.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/exception.h>
#include <kj/io.h>

#include <cstring>

#include "digest.h"
#include "wrapper.capnp.h"

namespace mapwright::detail {
namespace {

std::uint32_t load_le32(const std::byte* p) noexcept {
  return static_cast<std::uint32_t>(p[0]) | static_cast<std::uint32_t>(p[1]) << 8 |
         static_cast<std::uint32_t>(p[2]) << 16 | static_cast<std::uint32_t>(p[3]) << 24;
}

void store_le64(std::byte* p, std::uint64_t value) noexcept {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<std::byte>(value >> (8 * i));
}

}  // namespace

std::array<std::byte, kWrapperTrailerBytes> encode_trailer(const Trailer& trailer) {
  ::capnp::MallocMessageBuilder message;
  auto root = message.initRoot<schema::WrapperFile>();
  root.setMagic(kWrapperMagic);
  root.setFormatVersion(kWrapperFormatVersion);
  root.setWrapperSize(trailer.wrapper_size);
  root.setMetadataOffset(trailer.metadata_offset);
  root.setMetadataDigest(::capnp::Data::Reader(
      reinterpret_cast<const ::kj::byte*>(trailer.metadata_digest.bytes.data()),
      trailer.metadata_digest.bytes.size()));
  const auto words = ::capnp::messageToFlatArray(message);
  const auto bytes = words.asBytes();
  std::array<std::byte, kWrapperTrailerBytes> out{};
  // The encoding's size is fixed by the schema (a test checks it); never write past `out`.
  std::memcpy(out.data(), bytes.begin(), std::min<std::size_t>(bytes.size(), out.size()));
  return out;
}

std::optional<Trailer> decode_trailer(std::span<const std::byte> bytes, std::string* why) {
  const auto fail = [&](const char* reason) -> std::optional<Trailer> {
    if (why != nullptr) *why = reason;
    return std::nullopt;
  };
  if (bytes.size() != kWrapperTrailerBytes) return fail("it has the wrong size");
  // One segment of exactly the rest: checked before Cap'n Proto sees it.
  if (load_le32(bytes.data()) != 0 ||
      load_le32(bytes.data() + 4) != (kWrapperTrailerBytes - 8) / sizeof(::capnp::word)) {
    return fail("its segment table is wrong");
  }
  std::array<::capnp::word, kWrapperTrailerBytes / sizeof(::capnp::word)> aligned;
  std::memcpy(aligned.data(), bytes.data(), bytes.size());
  Trailer trailer;
  try {
    ::capnp::FlatArrayMessageReader message(::kj::arrayPtr(aligned.data(), aligned.size()));
    const auto root = message.getRoot<schema::WrapperFile>();
    if (root.getMagic() != kWrapperMagic) return fail("its magic number is wrong");
    if (root.getFormatVersion() != kWrapperFormatVersion) return fail("its format version is wrong");
    const auto digest = root.getMetadataDigest();
    if (digest.size() != trailer.metadata_digest.bytes.size()) return fail("its digest has the wrong size");
    trailer.wrapper_size = root.getWrapperSize();
    trailer.metadata_offset = root.getMetadataOffset();
    std::memcpy(trailer.metadata_digest.bytes.data(), digest.begin(), digest.size());
  } catch (const ::kj::Exception&) {
    return fail("it is not a Cap'n Proto message");
  }
  // Every other bit (pointers, padding, producer and entries null) as the encoding has it.
  if (std::memcmp(encode_trailer(trailer).data(), bytes.data(), kWrapperTrailerBytes) != 0) {
    return fail("it is not encoded as a trailer is");
  }
  return trailer;
}

std::uint64_t hashed_prefix_end(const std::byte* message) noexcept {
  const std::uint64_t count = std::uint64_t{load_le32(message)} + 1;
  return (4 + 4 * count + 7) / 8 * 8 + sizeof(::capnp::word);
}

Digest metadata_digest(const std::byte* message, std::uint64_t prefix_end,
                       std::uint64_t metadata_offset, std::uint64_t message_size,
                       std::uint64_t wrapper_size) noexcept {
  DigestStream digest;
  digest.update(message, prefix_end);
  digest.update(message + metadata_offset, message_size - metadata_offset);
  std::byte fields[16];
  store_le64(fields, wrapper_size);
  store_le64(fields + 8, metadata_offset);
  digest.update(fields, sizeof fields);
  return digest.finish();
}

std::array<std::byte, kWrapperTrailerBytes> trailer_for_metadata_only(
    std::span<const std::byte> message) {
  Trailer trailer;
  const std::uint64_t prefix_end = hashed_prefix_end(message.data());
  trailer.wrapper_size = message.size() + kWrapperTrailerBytes;
  trailer.metadata_offset = prefix_end;
  trailer.metadata_digest = metadata_digest(message.data(), prefix_end, prefix_end,
                                            message.size(), trailer.wrapper_size);
  return encode_trailer(trailer);
}

}  // namespace mapwright::detail
