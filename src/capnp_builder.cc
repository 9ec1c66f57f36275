#include <capnp/any.h>
#include <capnp/orphan.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "capnp_frame.h"
#include "mapwright/capnp.h"
#include "mapwright/error.h"
#include "os/os.h"

namespace mapwright {
namespace {

std::uint64_t header_bytes_for(std::uint32_t slots) {
  return (4 + 4 * static_cast<std::uint64_t>(slots) + 7) / 8 * 8;
}

}  // namespace

// Every segment but the last is recorded at its full span (unused words are zero), so the
// segments sit back to back as the stream format requires, and nothing ever moves.
MappedMessageBuilder::MappedMessageBuilder(Region& region, MappedMessageOptions options)
    : region_(region), segment_words_(options.segment_words) {
  if (region.data() == nullptr || region.size() != 0) {
    throw Error(EINVAL, "building a Cap'n Proto message in region", region.name(),
                "(the region must be empty; it holds " + std::to_string(region.size()) +
                    " bytes)");
  }
  if (segment_words_ == 0 || segment_words_ > kMaxSegmentWords) {
    throw Error(EINVAL, "building a Cap'n Proto message in region", region.name(),
                "(segment_words must be between 1 and " + std::to_string(kMaxSegmentWords) + ")");
  }
  const std::uint64_t segment_bytes = segment_words_ * sizeof(::capnp::word);
  std::uint32_t slots = options.max_segments;
  if (slots == 0) {
    const std::uint64_t capacity = region.capacity();
    const std::uint64_t needed =
        capacity <= header_bytes_for(1) + segment_bytes ? 1 : (capacity + segment_bytes - 1) / segment_bytes;
    slots = needed > kMaxSegments ? kMaxSegments : static_cast<std::uint32_t>(needed);
  }
  if (slots > kMaxSegments) {
    throw Error(EINVAL, "building a Cap'n Proto message in region", region.name(),
                "(max_segments " + std::to_string(slots) + " is more than the " +
                    std::to_string(kMaxSegments) + " stock readers accept)");
  }
  table_slots_ = slots;
  header_bytes_ = header_bytes_for(slots);
  next_offset_ = header_bytes_;
}

MappedMessageBuilder::MappedMessageBuilder(Region& region, Reopen, MappedMessageOptions options)
    : MappedMessageBuilder(region, options, prepare_reopen(region)) {}

MappedMessageBuilder::MappedMessageBuilder(Region& region, MappedMessageOptions options,
                                           ReopenState state)
    : ::capnp::MessageBuilder(::kj::arrayPtr(state.inits.data(), state.inits.size())),
      region_(region),
      table_slots_(state.slots),
      segment_words_(options.segment_words == 0 ? kMaxSegmentWords : options.segment_words),
      header_bytes_(state.header_bytes),
      next_offset_(state.next_offset),
      spans_(std::move(state.spans)),
      segments_(static_cast<std::uint32_t>(state.inits.size())) {}

MappedMessageBuilder::ReopenState MappedMessageBuilder::prepare_reopen(Region& region) {
  if (region.data() == nullptr || region.size() == 0) {
    throw Error(EINVAL, "reopening a Cap'n Proto message in region", region.name(),
                "(the region is empty: there is no message to reopen)");
  }
  const detail::Frame frame = detail::parse_frame(region.data(), region.size(), region.name());
  std::size_t used = frame.segments.size();
  while (used > 0 && frame.segments[used - 1].words == 0) --used;  // free slots
  if (used == 0) {
    throw Error(EINVAL, "reopening a Cap'n Proto message in region", region.name(),
                "(segment 0 is empty: there is no root pointer)");
  }
  ReopenState state;
  state.slots = static_cast<std::uint32_t>(frame.segments.size());
  state.header_bytes = frame.header_bytes;
  for (std::size_t i = 0; i < used; ++i) {
    const detail::FrameSegment& segment = frame.segments[i];
    std::uint64_t space = segment.words;
    if (i + 1 == used) {
      // The last segment may grow in place: up to a full segment, within the capacity. What
      // lies past the end of the file is zero, as allocateSegment() promises.
      std::uint64_t end = segment.offset + kMaxSegmentWords * sizeof(::capnp::word);
      if (end > region.capacity()) end = region.capacity();
      space = (end - segment.offset) / sizeof(::capnp::word);
    }
    auto* first = reinterpret_cast<::capnp::word*>(region.data() + segment.offset);
    state.inits.push_back({{first, static_cast<std::size_t>(space)},
                           static_cast<std::size_t>(segment.words)});
    state.spans.push_back(space);
    state.next_offset = segment.offset + space * sizeof(::capnp::word);
  }
  return state;
}

MappedMessageBuilder::~MappedMessageBuilder() noexcept(false) = default;

::kj::ArrayPtr<::capnp::word> MappedMessageBuilder::allocateSegment(::capnp::uint minimumSize) {
  if (finished_) {
    throw Error(EINVAL, "building a Cap'n Proto message in region", region_.name(),
                "(the message was already finished)");
  }
  if (segments_ == table_slots_) {
    throw Error(ENOSPC, "building a Cap'n Proto message in region", region_.name(),
                "(all " + std::to_string(table_slots_) +
                    " segment table slots are used; raise MappedMessageOptions::max_segments)");
  }
  // Each segment spans segment_words, or more when one object needs more; segment k starts
  // where segment k - 1's span ends.
  const std::uint64_t start = next_offset_;
  const std::uint64_t span_words =
      minimumSize > segment_words_ ? static_cast<std::uint64_t>(minimumSize) : segment_words_;
  // Spans end on a page boundary, so every later segment starts page-aligned in the file
  // (new_aligned_data() relies on it for blobs that open a segment).
  const std::uint64_t page = os::page_size();
  std::uint64_t end = (start + span_words * sizeof(::capnp::word) + page - 1) / page * page;
  if (end > region_.capacity()) end = region_.capacity();
  if ((end - start) / sizeof(::capnp::word) > kMaxSegmentWords) {
    end = start + kMaxSegmentWords * sizeof(::capnp::word);
  }
  const std::uint64_t words = end > start ? (end - start) / sizeof(::capnp::word) : 0;
  if (words < minimumSize) {
    throw Error(ENOMEM, "building a Cap'n Proto message in region", region_.name(),
                "(segment " + std::to_string(segments_) + " needs " +
                    std::to_string(minimumSize) + " words past the region's capacity of " +
                    std::to_string(region_.capacity()) + " bytes)");
  }
  spans_.push_back(words);
  next_offset_ = start + words * sizeof(::capnp::word);
  ++segments_;
  auto* first = reinterpret_cast<::capnp::word*>(region_.data() + start);
  return {first, static_cast<std::size_t>(words)};
}

std::uint64_t MappedMessageBuilder::finish() {
  if (finished_) {
    throw Error(EINVAL, "finishing a Cap'n Proto message in region", region_.name(),
                "(finish() was already called)");
  }
  if (segments_ == 0) getRoot<::capnp::AnyPointer>();  // an empty message still has a root
  const auto segments = getSegmentsForOutput();
  std::uint64_t total = header_bytes_;
  std::uint64_t expected = header_bytes_;
  // The table is written straight into the region's first bytes (backed since segment 0's
  // root pointer was stored right after them).
  auto* table = reinterpret_cast<std::uint32_t*>(region_.data());
  std::memset(table, 0, header_bytes_);
  table[0] = table_slots_ - 1;
  for (std::size_t i = 0; i < segments.size(); ++i) {
    if (reinterpret_cast<const std::byte*>(segments[i].begin()) != region_.data() + expected) {
      throw Error(EINVAL, "finishing a Cap'n Proto message in region", region_.name(),
                  "(segment " + std::to_string(i) + " is not where the builder placed it)");
    }
    const bool last = i + 1 == segments.size();
    const std::uint64_t words = last ? segments[i].size() : spans_[i];
    table[1 + i] = static_cast<std::uint32_t>(words);
    expected += spans_[i] * sizeof(::capnp::word);
    total += words * sizeof(::capnp::word);
  }
  region_.finish(total);
  finished_ = true;
  return total;
}

::capnp::Orphan<::capnp::Data> MappedMessageBuilder::new_aligned_data(std::uint64_t size,
                                                                       std::uint64_t alignment) {
  if (alignment == 0) alignment = os::page_size();
  if (alignment < 8 || (alignment & (alignment - 1)) != 0) {
    throw Error(EINVAL, "placing a Data blob in region", region_.name(),
                "(alignment " + std::to_string(alignment) + " is not a power of two >= 8)");
  }
  if (size > kMaxSegmentWords) {
    throw Error(EFBIG, "placing a Data blob in region", region_.name(),
                "(" + std::to_string(size) + " bytes is more than one Cap'n Proto Data holds)");
  }
  ::capnp::Orphanage orphanage = getOrphanage();
  // The arena allocates by bumping a pointer in its newest segment, whose used part ends
  // where the next object goes: a padding blob moves that to the boundary, and the real blob
  // lands there. If the blob spills into a fresh segment (which starts 8-aligned only), pad
  // again there. Blobs placed back to back with sizes that are multiples of the alignment
  // thus follow each other with no gap.
  for (int attempt = 0; attempt < 3; ++attempt) {
    {
      const auto segments = getSegmentsForOutput();
      const auto& newest = segments[segments.size() - 1];
      // Offsets in the file, not addresses: the reservation is only page-aligned.
      const std::uint64_t next = static_cast<std::uint64_t>(
          reinterpret_cast<const std::byte*>(newest.end()) - region_.data());
      const std::uint64_t pad = (alignment - next % alignment) % alignment;
      if (pad != 0) orphanage.newOrphan<::capnp::Data>(static_cast<::capnp::uint>(pad));
    }  // abandoned orphans become zero words in place; the arena never reuses them
    auto blob = orphanage.newOrphan<::capnp::Data>(static_cast<::capnp::uint>(size));
    const auto offset = static_cast<std::uint64_t>(
        reinterpret_cast<std::byte*>(blob.get().begin()) - region_.data());
    if (size == 0 || offset % alignment == 0) {
      return blob;
    }
  }
  throw Error(EINVAL, "placing a Data blob in region", region_.name(),
              "(could not align it to " + std::to_string(alignment) + " bytes)");
}

void MappedMessageBuilder::fill_from_fd(::capnp::Data::Builder blob, int fd,
                                        std::uint64_t offset, std::uint64_t length,
                                        const std::string& source) {
  if (length > blob.size()) {
    throw Error(EINVAL, "copying into a Data blob in region", region_.name(),
                "(" + std::to_string(length) + " bytes from " + source + " into a blob of " +
                    std::to_string(blob.size()) + ")");
  }
  auto* first = reinterpret_cast<std::byte*>(blob.begin());
  region_.ensure(static_cast<std::uint64_t>(first - region_.data()) + length);
  std::size_t got = 0;
  if (const int err = os::pread_full(fd, first, length, offset, &got); err != 0) {
    throw Error(err, "copying into a Data blob from", source, "(pread)");
  }
  if (got != length) {
    throw Error(EIO, "copying into a Data blob from", source,
                "(the file ended after " + std::to_string(got) + " of " +
                    std::to_string(length) + " bytes)");
  }
}

}  // namespace mapwright
