// src/flatbuffers_reader.cc — MappedFlatBuffer: a read-only view of a FlatBuffers buffer,
// checked for what FlatBuffers itself would assert on (size) before its Verifier runs.
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <string>
#include <utility>

#include "mapped_input.h"
#include "mapwright/flatbuffers.h"

namespace mapwright {
namespace {

constexpr const char* kOperation = "reading FlatBuffer";
// FlatBuffers' own default table limit, the floor of ours.
constexpr std::uint64_t kMinTables = 1'000'000;
// FlatBuffers' largest scalar: where a buffer inside a file may start.
constexpr std::uint64_t kBufferAlignment = 8;

}  // namespace

MappedFlatBuffer::MappedFlatBuffer(detail::MappedInput input)
    : keep_alive_(std::move(input.keep_alive)),
      data_(reinterpret_cast<const std::uint8_t*>(input.data)),
      size_(input.size),
      name_(std::move(input.name)) {
  if (size_ >= kMaxFlatBufferBytes) {
    throw Error(EINVAL, kOperation, name_,
                "(" + std::to_string(size_) +
                    " bytes: FlatBuffers addresses at most 2 GiB - 1 bytes)");
  }
}

MappedFlatBuffer::MappedFlatBuffer(const std::filesystem::path& path)
    : MappedFlatBuffer(detail::map_input(path, kOperation)) {}

MappedFlatBuffer::MappedFlatBuffer(int fd, std::uint64_t offset, std::uint64_t length)
    : MappedFlatBuffer(detail::map_input(fd, offset, length, kBufferAlignment, kOperation)) {}

MappedFlatBuffer::MappedFlatBuffer(const SealedImage& image)
    : MappedFlatBuffer(detail::map_input(image, kOperation)) {}

MappedFlatBuffer::~MappedFlatBuffer() = default;
MappedFlatBuffer::MappedFlatBuffer(MappedFlatBuffer&&) noexcept = default;
MappedFlatBuffer& MappedFlatBuffer::operator=(MappedFlatBuffer&&) noexcept = default;

::flatbuffers::Verifier::Options MappedFlatBuffer::verifier_options(
    const FlatBufferReaderOptions& options) const {
  ::flatbuffers::Verifier::Options limits;
  const std::uint64_t tables =
      options.max_tables != 0 ? options.max_tables : std::max(kMinTables, size_ / 4);
  limits.max_tables = static_cast<::flatbuffers::uoffset_t>(
      std::min<std::uint64_t>(tables, std::numeric_limits<::flatbuffers::uoffset_t>::max()));
  limits.max_depth = options.max_depth;
  limits.check_alignment = options.check_alignment;
  return limits;
}

::flatbuffers::Verifier MappedFlatBuffer::verifier(const FlatBufferReaderOptions& options) const {
  return ::flatbuffers::Verifier(data_, static_cast<std::size_t>(size_), verifier_options(options));
}

void MappedFlatBuffer::check_identifier(const char* file_identifier) const {
  if (std::strlen(file_identifier) != ::flatbuffers::kFileIdentifierLength) {
    throw Error(EINVAL, kOperation, name_,
                "(the expected file identifier \"" + std::string(file_identifier) +
                    "\" is not 4 characters)");
  }
  if (size_ < 2 * sizeof(::flatbuffers::uoffset_t) ||
      !::flatbuffers::BufferHasIdentifier(data_, file_identifier)) {
    std::string found = "none: the buffer is shorter than 8 bytes";
    if (size_ >= 8) {
      found.clear();
      for (std::size_t i = 4; i < 8; ++i) {
        const auto c = static_cast<unsigned char>(data_[i]);
        found += c >= 0x20 && c < 0x7f ? std::string(1, static_cast<char>(c))
                                       : "\\x" + std::string(1, "0123456789abcdef"[c >> 4]) +
                                             "0123456789abcdef"[c & 15];
      }
      found = "\"" + found + "\"";
    }
    throw Error(EINVAL, kOperation, name_,
                "(not a \"" + std::string(file_identifier) + "\" buffer: its file identifier is " +
                    found + ")");
  }
}

void MappedFlatBuffer::refuse_verification() const {
  throw Error(EINVAL, kOperation, name_,
              "(FlatBuffers' Verifier refused it: corrupt, hostile, written for another "
              "schema, or past the depth or table limits; " +
                  std::to_string(size_) + " bytes)");
}

}  // namespace mapwright
