// mapwright/capnp.h — Cap'n Proto messages built in place inside a Region, and read back
// zero-copy from a file, an fd or a SealedImage.
//
// The bytes are the standard stream framing (what capnp::writeMessage writes and `capnp
// decode`, StreamFdMessageReader and FlatArrayMessageReader read):
//
//     offset 0   u32 segment count - 1
//                u32 size of segment 0 in words, ... one per table slot
//                (u32 padding to a multiple of 8 bytes)
//     header     segment 0 │ segment 1 │ ...      back to back, each 8-byte aligned
//
// Requires Cap'n Proto 0.9.2 or later (Debian 12).
#pragma once

#include <capnp/message.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "mapwright/region.h"
#include "mapwright/sealed_image.h"

namespace mapwright {

// The most words one Cap'n Proto segment can hold: 2^29 - 1 (4 GiB - 8 bytes).
inline constexpr std::uint64_t kMaxSegmentWords = (1ull << 29) - 1;
// The most segments a stream header may announce and still be read by every stock reader:
// capnp::readMessage / StreamFdMessageReader require a segment count below 512.
inline constexpr std::uint32_t kMaxSegments = 511;

struct MappedMessageOptions {
  // How many segments the table at offset 0 has room for; it cannot grow later, because
  // segment 0 follows it directly and nothing is ever moved. 1 gives the 8-byte header of a
  // single-segment message (up to 4 GiB - 8 bytes). 0 (the default): 1 if the region's
  // capacity fits one segment, else as many as the capacity needs (a 64 GiB region: 17, a
  // 72-byte table); unused slots are written as zero-length segments, which stock readers
  // accept.
  std::uint32_t max_segments = 0;
  // Words per segment (every segment but the last spans this many, or more when one object
  // needs more, rounded up so that the next segment starts on a page boundary; unused words
  // stay zero, sparse in the file). The default, the most Cap'n Proto allows, keeps messages up to
  // 4 GiB in one segment; smaller values force multi-segment messages with far pointers
  // (useful for tests, and for readers that want segments of a bounded size).
  std::uint64_t segment_words = kMaxSegmentWords;
};

// A capnp::MessageBuilder whose segments are the region's own pages: stores made through the
// builders land directly in the file, and finish() leaves a complete stream-framed message in
// the region with nothing copied.
//
// Segment memory comes from pages past the end of the region's file, which the kernel
// zero-fills when the file grows; so allocateSegment()'s contract (return zeroed words) costs
// nothing. That is why the region must be empty when the builder is made (size() == 0).
//
// A growth that fails while building (disk full, capacity, RLIMIT_FSIZE) is a SIGBUS like any
// other region store: wrap the building code in guarded() to get a mapwright::Error instead.
// Not thread-safe (no MessageBuilder is); several builders on several regions may run at once.
class MappedMessageBuilder : public ::capnp::MessageBuilder {
 public:
  // The message starts at offset 0 of `region`, which must be empty and must outlive the
  // builder. Throws Error (EINVAL) for a non-empty region or an impossible max_segments.
  explicit MappedMessageBuilder(Region& region, MappedMessageOptions options = {});
  // Tag that selects the reopening constructor.
  struct Reopen {};
  static constexpr Reopen kReopen{};

  // REOPENS THE MESSAGE ALREADY IN `region` TO CHANGE OR EXTEND IT. THIS IS INSECURE: like
  // Cap'n Proto's own MessageBuilder(ArrayPtr<SegmentInit>), which it uses, it trusts the
  // message's pointers completely — a corrupt or hostile message can make later builder
  // calls read or write anywhere in the region, or crash. Use it only on files this program
  // (or one you trust as much) wrote, never on input from elsewhere.
  //
  // The segment table is checked against the file's size (as MappedMessageReader does), and
  // its slot count cannot change: trailing zero-length segments are the free slots. The last
  // segment can grow in place (up to a full segment, within the capacity); growing beyond
  // that needs a free slot. Open the region with Region::open(). Throws Error (EINVAL) for an
  // empty region or a malformed table.
  MappedMessageBuilder(Region& region, Reopen, MappedMessageOptions options = {});

  ~MappedMessageBuilder() noexcept(false) override;

  // Writes the segment table and truncates the region to the message's exact size. Call it
  // once, after the last change to the message; the region can then be synced, published or
  // sealed. Returns the message's size in bytes.
  std::uint64_t finish();

  // A Data blob of `size` bytes (at most 2^29 - 1, Cap'n Proto's limit) whose first byte is
  // `alignment`-aligned in the file (default: the page size), for content that is mapped on
  // its own later (an embedded shared library). Adopt it into a field with
  // `builder.adoptBlob(kj::mv(orphan))`, and write its bytes in place through
  // `orphan.get()` — or with fill_from_fd(). The alignment padding before it is zero words
  // (at most alignment - 8 bytes). Throws Error for an alignment that is not a power of two
  // multiple of 8, or a size past the limit.
  ::capnp::Orphan<::capnp::Data> new_aligned_data(std::uint64_t size, std::uint64_t alignment = 0);

  // Copies `length` bytes of `fd` from `offset` into `blob` (which must have room), in the
  // kernel with pread(2) straight into the region's pages: ensure() backs them first, since
  // read(2) into unbacked pages fails with EFAULT instead of faulting. Throws Error naming
  // `source` on a read error or an early end of file.
  void fill_from_fd(::capnp::Data::Builder blob, int fd, std::uint64_t offset,
                    std::uint64_t length, const std::string& source);

  // Segments handed out so far. Not async-signal-safe.
  std::uint32_t segment_count() const noexcept { return segments_; }

  ::kj::ArrayPtr<::capnp::word> allocateSegment(::capnp::uint minimumSize) override;

 private:
  // What the reopening constructor learns from the existing message, before the base class
  // is constructed from `inits`.
  struct ReopenState {
    std::vector<SegmentInit> inits;
    std::vector<std::uint64_t> spans;
    std::uint32_t slots = 0;
    std::uint64_t header_bytes = 0;
    std::uint64_t next_offset = 0;
  };
  static ReopenState prepare_reopen(Region& region);
  MappedMessageBuilder(Region& region, MappedMessageOptions options, ReopenState state);

  Region& region_;
  std::uint32_t table_slots_;
  std::uint64_t segment_words_;
  std::uint64_t header_bytes_;
  std::uint64_t next_offset_;              // where the next segment starts
  std::vector<std::uint64_t> spans_;       // words handed out for each segment
  std::uint32_t segments_ = 0;
  bool finished_ = false;
};

struct MappedReaderOptions {
  // Cap'n Proto's traversal limit (words a reader may visit, an amplification guard).
  // 0 (the default): twice the message's size in words, at least 8 Mi words — enough to read
  // every word of a large file once, no more. Set it explicitly for untrusted input that
  // should be read only partly.
  std::uint64_t traversal_limit_words = 0;
  int nesting_limit = 64;
};

// A zero-copy capnp::MessageReader over a stream-framed message: the segments are views into
// a read-only mapping. The segment table is validated against the file's size before any
// segment is handed to Cap'n Proto (count <= 511, every size within the file, no overflow,
// the header complete); a bad file gets a mapwright::Error that says what is wrong.
//
// Every refusal of the bytes themselves is Error(EINVAL, "reading Cap'n Proto message",
// subject, detail), subject being the path, "fd N" ("fd N at offset X") or "sealed image
// fd N": an empty file or range; fewer than 8 bytes, or a segment table longer than the file
// ("truncated header"); more than 511 segments (a count field of 0xffffffff included); a
// segment over kMaxSegmentWords or running past the end; and any bytes after the last
// segment — the message must fill the file, or the (fd, offset, length) range, exactly.
// An fd offset that is not a multiple of 8, or a range outside the file, is EINVAL too.
// System call failures keep their errno (ENOENT from open, EBADF from fstat, ...).
// Zero-length segments are valid. Cap'n Proto's own checks (pointers, traversal and nesting
// limits) still throw kj::Exception while the message is read.
//
// HAZARD for files and fds: if another process truncates the file while it is mapped, reads
// past the new end raise SIGBUS (a sealed image cannot change; prefer it for untrusted
// producers).
class MappedMessageReader : public ::capnp::MessageReader {
 public:
  explicit MappedMessageReader(const std::filesystem::path& path, MappedReaderOptions = {});
  // Reads the message at [offset, offset + length) of `fd` (length 0: to the end of the
  // file). The fd is not closed and need not outlive the reader.
  MappedMessageReader(int fd, std::uint64_t offset, std::uint64_t length,
                      MappedReaderOptions = {});
  explicit MappedMessageReader(const SealedImage& image, MappedReaderOptions = {});
  ~MappedMessageReader() noexcept(false) override;

  ::kj::ArrayPtr<const ::capnp::word> getSegment(::capnp::uint id) override;

  // The message's size in bytes (header included) and its segments.
  std::uint64_t size() const noexcept { return parsed_.size; }
  // The message's first byte (its segment table) in the read-only mapping; valid while the
  // reader lives. Offsets from here are offsets in the message (in the file, for a path).
  const std::byte* data() const noexcept { return parsed_.data; }
  std::uint32_t segment_count() const noexcept {
    return static_cast<std::uint32_t>(parsed_.segments.size());
  }

 private:
  // The validated message: segment views, and whatever keeps the mapping alive.
  struct Parsed {
    std::shared_ptr<const void> keep_alive;
    std::vector<::kj::ArrayPtr<const ::capnp::word>> segments;
    std::uint64_t size = 0;
    const std::byte* data = nullptr;
  };
  // Validates the stream header of [data, data + length); throws Error naming `name`.
  static Parsed parse(std::shared_ptr<const void> keep_alive, const std::byte* data,
                      std::uint64_t length, const std::string& name);
  MappedMessageReader(Parsed parsed, MappedReaderOptions options);

  Parsed parsed_;
};

}  // namespace mapwright
