#include <capnp/any.h>
#include <capnp/list.h>
#include <capnp/orphan.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>
#include <string>

#include "capnp_frame.h"
#include "mapwright/capnp.h"
#include "mapwright/error.h"
#include "os/extent.h"
#include "os/os.h"

namespace mapwright {
namespace {

// Copied or hashed at a time by fill_from_fd; its pages are dropped from the page tables after.
constexpr std::uint64_t kFillPiece = 8ull << 20;

std::uint64_t header_bytes_for(std::uint32_t slots) {
  return (4 + 4 * static_cast<std::uint64_t>(slots) + 7) / 8 * 8;
}

std::uint64_t round_up(std::uint64_t value, std::uint64_t alignment) {
  return (value + alignment - 1) / alignment * alignment;
}

std::uint64_t round_down(std::uint64_t value, std::uint64_t alignment) {
  return value / alignment * alignment;
}

// Ends `orphan` WITHOUT its destructor, which would zero the object's words (Cap'n Proto's
// OrphanBuilder::euthanize): a store that faults on memory the region does not back, and
// that dirties every page of a blob. The orphan is moved into storage whose lifetime simply
// ends (no destructor runs, which C++ allows); the moved-from orphan is null, so its own
// destructor does nothing. An Orphan owns no resource but its words in the message, so
// nothing leaks: the words stay where they are, unreferenced, and the arena never reuses them.
template <class T>
void forget(::capnp::Orphan<T>&& orphan) noexcept {
  alignas(::capnp::Orphan<T>) unsigned char storage[sizeof(::capnp::Orphan<T>)];
  ::new (static_cast<void*>(storage)) ::capnp::Orphan<T>(::kj::mv(orphan));
}

}  // namespace

// Every segment but the last is recorded at its full span (unused words are zero), so the
// segments sit back to back as the stream format requires, and nothing ever moves.
// Offsets kept here (next_offset_, spans, holes) are offsets in the region, i.e. in the file;
// the message itself starts at base_ (options.offset), behind bytes it never touches.
MappedMessageBuilder::MappedMessageBuilder(Region& region, MappedMessageOptions options)
    : region_(region), segment_words_(options.segment_words), base_(options.offset) {
  if (base_ % os::page_size() != 0 || base_ >= region.capacity()) {
    throw Error(EINVAL, "building a Cap'n Proto message in region", region.name(),
                "(offset " + std::to_string(base_) +
                    " is not a multiple of the page size below the region's capacity)");
  }
  if (region.data() == nullptr || region.size() != base_) {
    throw Error(EINVAL, "building a Cap'n Proto message in region", region.name(),
                base_ == 0
                    ? "(the region must be empty; it holds " + std::to_string(region.size()) +
                          " bytes)"
                    : "(the region must hold exactly the " + std::to_string(base_) +
                          " bytes before the message; it holds " + std::to_string(region.size()) +
                          ")");
  }
  if (segment_words_ == 0 || segment_words_ > kMaxSegmentWords) {
    throw Error(EINVAL, "building a Cap'n Proto message in region", region.name(),
                "(segment_words must be between 1 and " + std::to_string(kMaxSegmentWords) + ")");
  }
  const std::uint64_t segment_bytes = segment_words_ * sizeof(::capnp::word);
  std::uint32_t slots = options.max_segments;
  if (slots == 0) {
    const std::uint64_t capacity = region.capacity() - base_;
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
  next_offset_ = base_ + header_bytes_;
  // The segment table (written by finish()) and the root pointer (the first word Cap'n Proto
  // stores, from inside any call that touches the root) are backed now: a region that cannot
  // grow at all fails here, with an Error, instead of at a store.
  region.ensure(base_ + header_bytes_ + sizeof(::capnp::word));
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
      base_(0),
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
  // (new_aligned_data() relies on it for blobs that open a segment) — also when the span is
  // clamped to the most a segment can hold, unless the object needs all of it.
  const std::uint64_t page = os::page_size();
  const std::uint64_t word = sizeof(::capnp::word);
  const std::uint64_t needed_end = start + static_cast<std::uint64_t>(minimumSize) * word;
  std::uint64_t end = round_up(start + span_words * word, page);
  if (end > region_.capacity()) end = region_.capacity();
  if ((end - start) / word > kMaxSegmentWords) {
    end = round_down(start + kMaxSegmentWords * word, page);
    if (end < needed_end) end = start + kMaxSegmentWords * word;
  }
  const std::uint64_t words = end > start ? (end - start) / word : 0;
  if (words < minimumSize) {
    throw Error(ENOMEM, "building a Cap'n Proto message in region", region_.name(),
                "(segment " + std::to_string(segments_) + " needs " +
                    std::to_string(minimumSize) + " words past the region's capacity of " +
                    std::to_string(region_.capacity()) + " bytes)");
  }
  // Cap'n Proto stores into the first words at once (a far pointer's landing pad, an object's
  // tag): back the object that opens the segment first. On failure nothing has changed, here
  // or in Cap'n Proto's arena, and the Error comes out of the builder call that needed room.
  region_.ensure(std::max(needed_end, start + word));
  if (segments_ > 0) {
    // The newest segment is done. Cap'n Proto would still allocate in the rest of its span
    // (an object whose pointer lives there goes there if it fits, and so does a far pointer's
    // landing pad for an object of that segment adopted elsewhere), so fill the rest with an
    // orphan that is never written nor destroyed: the arena can then never store there, and
    // the blocks that growth gave that range (the ensure() above may have) go back at once.
    // This runs inside Cap'n Proto's allocation of the new segment; the filler fits the old
    // segment exactly, so it does not come back here.
    const std::uint64_t used_end = newest_used_end();
    if (used_end < start) {
      forget(getOrphanage().newOrphan<::capnp::List<std::uint64_t>>(
          static_cast<::capnp::uint>((start - used_end) / word)));
      punch_unused(used_end, start);
    }
  }
  spans_.push_back(words);
  next_offset_ = start + words * word;
  ++segments_;
  auto* first = reinterpret_cast<::capnp::word*>(region_.data() + start);
  return {first, static_cast<std::size_t>(words)};
}

std::uint64_t MappedMessageBuilder::newest_used_end() {
  const auto segments = getSegmentsForOutput();
  if (segments.size() == 0) return next_offset_;
  return static_cast<std::uint64_t>(
      reinterpret_cast<const std::byte*>(segments[segments.size() - 1].end()) - region_.data());
}

void MappedMessageBuilder::punch_unused(std::uint64_t begin, std::uint64_t end) noexcept {
  const std::uint64_t page = os::page_size();
  begin = round_up(begin, page);
  end = round_down(end, page);
  if (begin >= end) return;
  const std::uint64_t backed = round_down(region_.size(), page);
  if (begin < backed) (void)os::punch_hole(region_.fd(), begin, std::min(end, backed) - begin);
  if (end > backed) {
    try {
      holes_.emplace_back(std::max(begin, backed), end);
    } catch (...) {
      // Out of memory for the note: the range keeps whatever blocks growth gives it.
    }
  }
}

std::uint64_t MappedMessageBuilder::finish() {
  if (finished_) {
    throw Error(EINVAL, "finishing a Cap'n Proto message in region", region_.name(),
                "(finish() was already called)");
  }
  if (segments_ == 0) getRoot<::capnp::AnyPointer>();  // an empty message still has a root
  const auto segments = getSegmentsForOutput();
  std::uint64_t total = header_bytes_;             // the message's size
  std::uint64_t expected = base_ + header_bytes_;  // where segment i starts in the region
  for (std::size_t i = 0; i < segments.size(); ++i) {
    if (reinterpret_cast<const std::byte*>(segments[i].begin()) != region_.data() + expected) {
      throw Error(EINVAL, "finishing a Cap'n Proto message in region", region_.name(),
                  "(segment " + std::to_string(i) + " is not where the builder placed it)");
    }
    const bool last = i + 1 == segments.size();
    expected += spans_[i] * sizeof(::capnp::word);
    total += (last ? segments[i].size() : spans_[i]) * sizeof(::capnp::word);
  }
  // Back the whole message before writing anything: the table's stores cannot fault, and
  // Region::finish() only ever shrinks the file (a growth there would bypass the checks of
  // ensure(): RLIMIT_FSIZE, a full disk). A message that does not fit is an Error here, and
  // finish() can be called again.
  region_.ensure(base_ + total);
  auto* table = reinterpret_cast<std::uint32_t*>(region_.data() + base_);
  std::memset(table, 0, header_bytes_);
  table[0] = table_slots_ - 1;
  for (std::size_t i = 0; i < segments.size(); ++i) {
    const bool last = i + 1 == segments.size();
    table[1 + i] = static_cast<std::uint32_t>(last ? segments[i].size() : spans_[i]);
  }
  region_.finish(base_ + total);
  // Unused ranges that growth backed after they were given up (the segments' tails were
  // punched when the builder moved on, below the size then).
  auto holes = std::move(holes_);
  holes_.clear();
  for (const auto& [begin, end] : holes) punch_unused(begin, std::min(end, base_ + total));
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
  if (size == 0) return orphanage.newOrphan<::capnp::Data>(0);
  const std::uint64_t blob_bytes = round_up(size, sizeof(::capnp::word));
  // The arena allocates by bumping a pointer in its newest segment, whose used part ends
  // where the next object goes. If padding and blob fit there, back both first (nothing is
  // allocated if that fails), then allocate a padding blob that moves the pointer to the
  // boundary, and the real blob. Otherwise let the blob open a new segment, which
  // allocateSegment() backs first and which starts page-aligned; if that is not aligned
  // enough, give it up and pad again there. Blobs placed back to back with sizes that are
  // multiples of the alignment thus follow each other with no gap. Nothing is ever stored:
  // padding is released with forget(), not destroyed (which would zero it).
  for (int attempt = 0; attempt < 3; ++attempt) {
    const std::uint64_t next = newest_used_end();
    const std::uint64_t pad = (alignment - next % alignment) % alignment;
    const std::uint64_t room = next_offset_ - next;  // left in the newest segment
    if (pad + blob_bytes <= room) {
      region_.ensure(next + pad + blob_bytes);
      if (pad != 0) {
        forget(orphanage.newOrphan<::capnp::List<std::uint64_t>>(
            static_cast<::capnp::uint>(pad / sizeof(::capnp::word))));
        punch_unused(next, next + pad);  // whole pages of padding: no blocks
      }
    } else if (blob_bytes <= room) {
      // The blob would fit unaligned: fill the segment so that it opens the next one. The
      // filler is never written; its pages are punched once the next segment is backed.
      forget(orphanage.newOrphan<::capnp::List<std::uint64_t>>(
          static_cast<::capnp::uint>(room / sizeof(::capnp::word))));
    }
    auto blob = orphanage.newOrphan<::capnp::Data>(static_cast<::capnp::uint>(size));
    const auto offset = static_cast<std::uint64_t>(
        reinterpret_cast<std::byte*>(blob.get().begin()) - region_.data());
    if (pad + blob_bytes > room && blob_bytes <= room) punch_unused(next, offset);
    if (offset % alignment == 0) return blob;
    discard(::kj::mv(blob));  // opened a segment that is not aligned enough: pad there
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
  // In pieces, each dropped from the page tables once filled: the resident set stays at one
  // piece however large the blob (the bytes stay in the file and the page cache).
  const std::uint64_t page = os::page_size();
  for (std::uint64_t done = 0; done < length;) {
    const std::uint64_t piece = std::min(kFillPiece, length - done);
    std::size_t got = 0;
    if (const int err = os::pread_full(fd, first + done, piece, offset + done, &got); err != 0) {
      throw Error(err, "copying into a Data blob from", source, "(pread)");
    }
    if (got != piece) {
      throw Error(EIO, "copying into a Data blob from", source,
                  "(the file ended after " + std::to_string(done + got) + " of " +
                      std::to_string(length) + " bytes)");
    }
    const auto begin = reinterpret_cast<std::uintptr_t>(first + done);
    const std::uintptr_t aligned = round_down(begin, page);
    (void)os::drop_mapped_pages(reinterpret_cast<void*>(aligned), begin + piece - aligned);
    done += piece;
  }
}

void MappedMessageBuilder::discard(::capnp::Orphan<::capnp::Data>&& blob) noexcept {
  if (blob == nullptr) return;
  const ::capnp::Data::Reader bytes = blob.getReader();  // the orphan's own tag: no load
  forget(::kj::mv(blob));
  if (bytes.size() == 0) return;
  const std::uint64_t page = os::page_size();
  const auto begin = static_cast<std::uint64_t>(
      reinterpret_cast<const std::byte*>(bytes.begin()) - region_.data());
  const std::uint64_t end = begin + round_up(bytes.size(), sizeof(::capnp::word));
  const std::uint64_t backed = std::min(end, region_.size());
  // Whole pages: punched (or, where the filesystem cannot, zeroed — they are backed).
  const std::uint64_t inner_begin = round_up(begin, page);
  const std::uint64_t inner_end = round_down(end, page);
  if (inner_begin < inner_end) {
    const std::uint64_t inner_backed = std::min(inner_end, round_down(region_.size(), page));
    if (inner_begin < inner_backed &&
        os::punch_hole(region_.fd(), inner_begin, inner_backed - inner_begin) != 0) {
      std::memset(region_.data() + inner_begin, 0, inner_backed - inner_begin);
    }
    punch_unused(std::max(inner_begin, inner_backed), inner_end);  // notes what is not backed
  }
  // The partial pages at the ends, where backed: stores into pages the file covers.
  const auto zero = [&](std::uint64_t from, std::uint64_t to) {
    to = std::min(to, backed);
    if (from < to) std::memset(region_.data() + from, 0, to - from);
  };
  if (inner_begin >= inner_end) {
    zero(begin, end);
  } else {
    zero(begin, inner_begin);
    zero(inner_end, end);
  }
}

void MappedMessageBuilder::shrink(::capnp::Orphan<::capnp::Data>& blob, std::uint64_t size) {
  const ::capnp::Data::Reader bytes = blob.getReader();
  const auto begin = static_cast<std::uint64_t>(
      reinterpret_cast<const std::byte*>(bytes.begin()) - region_.data());
  const std::uint64_t end = begin + round_up(bytes.size(), sizeof(::capnp::word));
  if (size > bytes.size() || (bytes.size() != 0 && end > region_.size())) {
    throw Error(EINVAL, "shrinking a Data blob in region", region_.name(),
                "(to " + std::to_string(size) + " bytes: the blob holds " +
                    std::to_string(bytes.size()) + (end > region_.size() ? ", not all backed" : "") +
                    ")");
  }
  if (size == bytes.size()) return;
  blob.truncate(static_cast<::capnp::uint>(size));  // zeroes [begin + size, end): backed
  punch_unused(begin + round_up(size, sizeof(::capnp::word)), end);
}

void MappedMessageBuilder::reserve(std::uint64_t bytes) {
  if (finished_) {
    throw Error(EINVAL, "building a Cap'n Proto message in region", region_.name(),
                "(the message was already finished)");
  }
  const std::uint64_t words = round_up(bytes, sizeof(::capnp::word)) / sizeof(::capnp::word);
  if (words > kMaxSegmentWords) {
    throw Error(EINVAL, "reserving room in Cap'n Proto message in region", region_.name(),
                "(" + std::to_string(bytes) + " bytes is more than a segment holds)");
  }
  ::capnp::Orphanage orphanage = getOrphanage();
  const std::uint64_t next = newest_used_end();
  if (next + words * sizeof(::capnp::word) <= next_offset_) {
    region_.ensure(next + words * sizeof(::capnp::word));
    return;
  }
  // Start the next segment now, with room for `words` (allocateSegment() backs it), then hand
  // the words back: truncating the segment's only object returns them to the arena (storing
  // zeros over them, in memory just backed), so the next allocations land there.
  auto probe = orphanage.newOrphan<::capnp::List<std::uint64_t>>(static_cast<::capnp::uint>(words));
  probe.truncate(0);
  forget(::kj::mv(probe));
}

}  // namespace mapwright
