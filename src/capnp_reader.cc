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
#include "mapped_input.h"
#include "mapwright/error.h"
#include "os/os.h"

namespace mapwright {
namespace {

constexpr const char* kOperation = "reading Cap'n Proto message";

// Eight Mi words: Cap'n Proto's own default traversal limit, the floor of ours.
constexpr std::uint64_t kMinTraversalWords = 8ull << 20;

}  // namespace

MappedMessageReader::Parsed MappedMessageReader::parse(detail::MappedInput input) {
  const std::byte* data = input.data;
  const detail::Frame frame = detail::parse_frame(data, input.size, input.name);
  Parsed parsed;
  parsed.segments.reserve(frame.segments.size());
  for (const detail::FrameSegment& segment : frame.segments) {
    parsed.segments.emplace_back(reinterpret_cast<const ::capnp::word*>(data + segment.offset),
                                 static_cast<std::size_t>(segment.words));
  }
  parsed.size = frame.size;
  parsed.data = data;
  parsed.keep_alive = std::move(input.keep_alive);
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
    : MappedMessageReader(parse(detail::map_input(path, kOperation)), options) {}

MappedMessageReader::MappedMessageReader(int fd, std::uint64_t offset, std::uint64_t length,
                                         MappedReaderOptions options)
    : MappedMessageReader(
          // Cap'n Proto words must be aligned.
          parse(detail::map_input(fd, offset, length, sizeof(::capnp::word), kOperation)),
          options) {}

MappedMessageReader::MappedMessageReader(const SealedImage& image, MappedReaderOptions options)
    : MappedMessageReader(parse(detail::map_input(image, kOperation)), options) {}

MappedMessageReader::~MappedMessageReader() noexcept(false) = default;

::kj::ArrayPtr<const ::capnp::word> MappedMessageReader::getSegment(::capnp::uint id) {
  if (id >= parsed_.segments.size()) return nullptr;
  return parsed_.segments[id];
}

}  // namespace mapwright
