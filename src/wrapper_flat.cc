// src/wrapper_flat.cc — the FlatBuffers form's header, trailer, digest and metadata.
#include "wrapper_flat.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <stdexcept>

#include <flatbuffers/flatbuffers.h>

#include "digest.h"
#include "wrapper_generated.h"

namespace mapwright::detail {
namespace {

constexpr char kHeaderMagic[8] = {'M', 'W', 'F', 'B', 'W', 'R', 'A', 'P'};
constexpr char kTrailerMagic[8] = {'M', 'W', 'F', 'B', 'T', 'R', 'L', 'R'};

void store_le32(std::byte* p, std::uint32_t value) noexcept {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<std::byte>(value >> (8 * i));
}
void store_le64(std::byte* p, std::uint64_t value) noexcept {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<std::byte>(value >> (8 * i));
}
std::uint64_t load_le64(const std::byte* p) noexcept {
  std::uint64_t value = 0;
  for (int i = 7; i >= 0; --i) value = value << 8 | static_cast<std::uint64_t>(p[i]);
  return value;
}

}  // namespace

std::array<std::byte, kFlatWrapperHeaderBytes> encode_flat_header() {
  std::array<std::byte, kFlatWrapperHeaderBytes> out{};
  std::memcpy(out.data(), kHeaderMagic, sizeof kHeaderMagic);
  store_le32(out.data() + 8, kFlatWrapperFormatVersion);
  return out;
}

bool has_flat_magic(std::span<const std::byte> bytes) noexcept {
  return bytes.size() >= sizeof kHeaderMagic &&
         std::memcmp(bytes.data(), kHeaderMagic, sizeof kHeaderMagic) == 0;
}

std::array<std::byte, kFlatWrapperTrailerBytes> encode_flat_trailer(const FlatTrailer& trailer) {
  std::array<std::byte, kFlatWrapperTrailerBytes> out{};
  std::memcpy(out.data(), kTrailerMagic, sizeof kTrailerMagic);
  store_le32(out.data() + 8, kFlatWrapperFormatVersion);
  store_le64(out.data() + 16, trailer.wrapper_size);
  store_le64(out.data() + 24, trailer.metadata_offset);
  store_le64(out.data() + 32, trailer.metadata_size);
  std::memcpy(out.data() + 40, trailer.metadata_digest.bytes.data(), 16);
  return out;
}

std::optional<FlatTrailer> decode_flat_trailer(std::span<const std::byte> bytes, std::string* why) {
  const auto fail = [&](const char* reason) -> std::optional<FlatTrailer> {
    if (why != nullptr) *why = reason;
    return std::nullopt;
  };
  if (bytes.size() != kFlatWrapperTrailerBytes) return fail("it has the wrong size");
  if (std::memcmp(bytes.data(), kTrailerMagic, sizeof kTrailerMagic) != 0) {
    return fail("its magic is not \"MWFBTRLR\"");
  }
  FlatTrailer trailer;
  trailer.wrapper_size = load_le64(bytes.data() + 16);
  trailer.metadata_offset = load_le64(bytes.data() + 24);
  trailer.metadata_size = load_le64(bytes.data() + 32);
  std::memcpy(trailer.metadata_digest.bytes.data(), bytes.data() + 40, 16);
  // The version and the zero fields, exactly as encoded.
  if (std::memcmp(encode_flat_trailer(trailer).data(), bytes.data(), bytes.size()) != 0) {
    const auto version = static_cast<std::uint32_t>(load_le64(bytes.data() + 8));
    return fail(version != kFlatWrapperFormatVersion ? "its form version is not 1"
                                                     : "its reserved bytes are not zero");
  }
  return trailer;
}

Digest flat_metadata_digest(std::span<const std::byte> header, std::span<const std::byte> metadata,
                            std::uint64_t wrapper_size, std::uint64_t metadata_offset) noexcept {
  DigestStream digest;
  digest.update(header.data(), header.size());
  digest.update(metadata.data(), metadata.size());
  std::byte fields[24];
  store_le64(fields, wrapper_size);
  store_le64(fields + 8, metadata_offset);
  store_le64(fields + 16, metadata.size());
  digest.update(fields, sizeof fields);
  return digest.finish();
}

std::vector<std::byte> encode_flat_metadata(const std::string& producer,
                                            const std::vector<RawEntry>& entries) {
  ::flatbuffers::FlatBufferBuilder builder(1024);
  std::vector<::flatbuffers::Offset<fb::Entry>> offsets;
  offsets.reserve(entries.size());
  for (const RawEntry& entry : entries) {
    const auto name = builder.CreateString(entry.name);
    const auto digest = builder.CreateVector(
        reinterpret_cast<const std::uint8_t*>(entry.digest.data()), entry.digest.size());
    ::flatbuffers::Offset<::flatbuffers::Vector<::flatbuffers::Offset<::flatbuffers::String>>>
        dependencies;
    if (!entry.dependencies.empty()) dependencies = builder.CreateVectorOfStrings(entry.dependencies);
    std::vector<fb::Chunk> chunks;
    chunks.reserve(entry.chunks.size());
    for (const RawChunk& chunk : entry.chunks) chunks.emplace_back(chunk.offset, chunk.size);
    const auto chunk_vector = chunks.empty() ? ::flatbuffers::Offset<::flatbuffers::Vector<const fb::Chunk*>>()
                                             : builder.CreateVectorOfStructs(chunks);
    ::flatbuffers::Offset<::flatbuffers::Vector<std::uint64_t>> ends;
    if (entry.has_frame_ends) ends = builder.CreateVector(entry.frame_ends);
    offsets.push_back(fb::CreateEntry(builder, name, static_cast<fb::Kind>(entry.kind), entry.size,
                                      static_cast<fb::DigestAlgorithm>(entry.digest_algorithm),
                                      digest, dependencies, chunk_vector,
                                      static_cast<fb::Compression>(entry.compression),
                                      entry.frame_size, ends));
  }
  const auto producer_offset = builder.CreateString(producer);
  const auto list = builder.CreateVector(offsets);
  builder.Finish(fb::CreateWrapperFile(builder, kFlatWrapperFormatVersion, producer_offset, list),
                 fb::WrapperFileIdentifier());
  const auto* first = reinterpret_cast<const std::byte*>(builder.GetBufferPointer());
  return std::vector<std::byte>(first, first + builder.GetSize());
}

std::optional<FlatMetadata> decode_flat_metadata(std::span<const std::byte> metadata,
                                                 std::string* why) {
  const auto fail = [&](const std::string& reason) -> std::optional<FlatMetadata> {
    if (why != nullptr) *why = reason;
    return std::nullopt;
  };
  // The Verifier's own limit (FlatBuffers 2 asserts past it).
  if (metadata.size() >= FLATBUFFERS_MAX_BUFFER_SIZE) return fail("it is 2 GiB or larger");
  if (metadata.size() < 8 || !fb::WrapperFileBufferHasIdentifier(metadata.data())) {
    return fail("it does not have the file identifier \"MWRP\"");
  }
  ::flatbuffers::Verifier::Options limits;
  // Sized to the buffer, as MappedFlatBuffer does: a table takes at least 4 bytes.
  limits.max_tables = static_cast<::flatbuffers::uoffset_t>(
      std::max<std::uint64_t>(1'000'000, metadata.size() / 4));
  ::flatbuffers::Verifier verifier(reinterpret_cast<const std::uint8_t*>(metadata.data()),
                                   metadata.size(), limits);
  if (!fb::VerifyWrapperFileBuffer(verifier)) return fail("the FlatBuffers Verifier refuses it");
  const fb::WrapperFile* root = fb::GetWrapperFile(metadata.data());
  FlatMetadata out;
  out.format_version = root->format_version();
  if (root->producer() != nullptr) out.producer = root->producer()->str();
  if (root->entries() == nullptr) return out;
  out.entries.reserve(root->entries()->size());
  for (const fb::Entry* from : *root->entries()) {
    RawEntry entry;
    entry.name = from->name()->str();  // required: the Verifier checked it is there
    entry.kind = static_cast<std::uint16_t>(from->kind());
    entry.size = from->size();
    entry.digest_algorithm = static_cast<std::uint16_t>(from->digest_algorithm());
    const auto* digest = from->digest();
    entry.digest.assign(reinterpret_cast<const std::byte*>(digest->data()),
                        reinterpret_cast<const std::byte*>(digest->data()) + digest->size());
    if (const auto* dependencies = from->dependencies()) {
      entry.dependencies.reserve(dependencies->size());
      for (const ::flatbuffers::String* dependency : *dependencies) {
        entry.dependencies.push_back(dependency->str());
      }
    }
    if (const auto* chunks = from->chunks()) {
      entry.chunks.reserve(chunks->size());
      for (const fb::Chunk* chunk : *chunks) entry.chunks.push_back({chunk->offset(), chunk->size()});
    }
    entry.compression = static_cast<std::uint16_t>(from->compression());
    entry.frame_size = from->frame_size();
    if (const auto* ends = from->frame_ends()) {
      entry.has_frame_ends = true;
      entry.frame_ends.assign(ends->begin(), ends->end());
    }
    out.entries.push_back(std::move(entry));
  }
  return out;
}

std::vector<std::byte> flat_wrapper_around(std::span<const CraftedChunk> chunks,
                                           std::uint64_t metadata_at,
                                           std::span<const std::byte> metadata) {
  const std::uint64_t m = (std::max(metadata_at, kFlatWrapperHeaderBytes) + 7) / 8 * 8;
  std::vector<std::byte> out(m + metadata.size() + kFlatWrapperTrailerBytes);
  const auto header = encode_flat_header();
  std::memcpy(out.data(), header.data(), header.size());
  for (const CraftedChunk& chunk : chunks) {
    if (chunk.offset < kFlatWrapperHeaderBytes || chunk.offset > m || chunk.bytes.size() > m - chunk.offset) {
      throw std::invalid_argument("flat_wrapper_around: a chunk outside [header, metadata)");
    }
    std::memcpy(out.data() + chunk.offset, chunk.bytes.data(), chunk.bytes.size());
  }
  std::memcpy(out.data() + m, metadata.data(), metadata.size());
  FlatTrailer trailer;
  trailer.wrapper_size = out.size();
  trailer.metadata_offset = m;
  trailer.metadata_size = metadata.size();
  trailer.metadata_digest =
      flat_metadata_digest({out.data(), header.size()}, metadata, out.size(), m);
  const auto bytes = encode_flat_trailer(trailer);
  std::memcpy(out.data() + m + metadata.size(), bytes.data(), bytes.size());
  return out;
}

}  // namespace mapwright::detail
