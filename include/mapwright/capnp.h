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
#include <utility>
#include <vector>

#include "mapwright/region.h"
#include "mapwright/sealed_image.h"

namespace mapwright {

namespace detail {
struct MappedInput;
}

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
  // needs more, rounded so that the next segment starts on a page boundary). The default, the
  // most Cap'n Proto allows, keeps messages up to 4 GiB in one segment; smaller values force
  // multi-segment messages with far pointers (useful for tests, and for readers that want
  // segments of a bounded size).
  std::uint64_t segment_words = kMaxSegmentWords;
  // Where the message starts in the region: a multiple of the page size (0: at the start).
  // The region must hold exactly this many bytes when the builder is made — what precedes
  // the message in the file (an executable the message is appended to, say), which the
  // builder never reads or writes — and nothing past them. Offsets are the file's, so blobs
  // are aligned in the file; finish() returns the message's own size and leaves the region
  // at offset + that. The reopening constructor ignores it (its message starts at 0).
  std::uint64_t offset = 0;
};

// A capnp::MessageBuilder whose segments are the region's own pages: stores made through the
// builders land directly in the file, and finish() leaves a complete stream-framed message in
// the region with nothing copied.
//
// Segment memory comes from pages past the end of the region's file, which the kernel
// zero-fills when the file grows; so allocateSegment()'s contract (return zeroed words) costs
// nothing. That is why the region must be empty when the builder is made (size() == 0).
//
// Growth, and what happens when it fails. The builder backs (Region::ensure) every byte it
// stores itself, or that Cap'n Proto stores as part of opening a segment, BEFORE the store,
// so that a growth failure there (disk full, RLIMIT_FSIZE, capacity) is a thrown
// mapwright::Error — never a SIGBUS:
//   * the constructor backs the segment table and the root pointer (Error here: nothing was
//     built);
//   * a new segment is backed for the object that opens it (Cap'n Proto writes its far
//     pointer's landing pad there at once); the Error comes out of the builder call that
//     needed the segment (init*, new_aligned_data, adopt...) before Cap'n Proto allocated
//     anything;
//   * new_aligned_data() backs the padding and the blob before it allocates them;
//     fill_from_fd() backs its range before pread(2); reserve() backs what it is asked to;
//   * finish() backs the whole message before it writes the table and truncates the region.
// Everything else Cap'n Proto stores inside a segment — your setters and list elements, the
// bytes of a blob from initData(), the pointers and tags of objects allocated where the
// segment already has room, the zeros it writes over an object whose field is initialized
// again — grows the region by fault, as any region store: a failure there is a SIGBUS, which
// guarded() turns into an Error (see fault.h; remember that guarded() abandons its body, so a
// builder that failed there may hold a half-set object — build something else, or call
// reserve() first to have no growth inside the body at all). After an Error from the builder
// itself (not from inside guarded()), the builder stays usable: the failed allocation did not
// happen, and finish() can be retried once there is room.
//
// Orphans. An Orphan<T> that is destroyed without being adopted zeroes its object's words
// (Cap'n Proto's contract). On memory the region has not backed, that store would raise
// SIGBUS (outside guarded(): the process dies); on backed memory it dirties every page of a
// possibly huge blob, and the blocks stay allocated. So never let a blob of this builder die
// as an orphan: adopt it, or give it to discard(), which makes its words zero without
// storing into unbacked memory (see there). The builder itself never lets an orphan die with
// stores: it releases its padding without any store at all.
//
// Segments. Only the newest segment has room: when the builder opens the next one, it fills
// the rest of the previous one with an orphan that is never written, so Cap'n Proto never
// allocates there again (it would otherwise put an object whose pointer lives in an old
// segment into that segment's free space, and a landing pad for an object adopted elsewhere).
// Objects reached from old segments land in the newest one through far pointers (a
// double-far, three words, for an object adopted out of a full segment).
//
// Disk blocks. Nothing that is not content costs blocks (or memory, for a memfd), although
// growth allocates whole geometric steps (fallocate) and the stream format requires every
// segment but the last to span its full size:
//   * the unused tail of a segment's span is punched out of the file (a hole: fallocate
//     PUNCH_HOLE | KEEP_SIZE) when the builder moves on to the next segment;
//   * alignment padding of new_aligned_data() is never written, and punched where it covers
//     whole pages; blobs given to discard() are punched the same way;
//   * finish() punches what growth backed of those ranges after they were given up.
// The file's apparent size still includes the tails (in a message over 4 GiB, up to one
// blob's size per segment boundary), but its st_blocks do not. Filesystems that cannot punch
// holes (EOPNOTSUPP) keep the blocks; the bytes are zero either way. A growth that crosses an
// unused tail allocates it for a moment before it is punched, so a nearly full disk may refuse
// a growth by up to one tail's size even though the space would come back at once.
//
// Memory. Pages the builder copies into (fill_from_fd) are dropped from this process's page
// tables once written (MADV_DONTNEED; the data stays in the file and the page cache), so the
// resident set does not grow with the blob. Pages you store into yourself stay mapped until
// the region goes.
//
// Not thread-safe (no MessageBuilder is); several builders on several regions may run at once.
class MappedMessageBuilder : public ::capnp::MessageBuilder {
 public:
  // The message starts at options.offset of `region` (0 by default), which must hold exactly
  // that many bytes (be empty, by default) and must outlive the builder. Backs the segment
  // table and the root pointer at once (ensure()): throws Error (ENOSPC, EFBIG, ENOMEM...)
  // when the region cannot grow that far, and Error (EINVAL) for a region of another size, an
  // offset that is not page-aligned, or an impossible max_segments.
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
  // that needs a free slot. Growing in place is by fault (wrap it in guarded(), or reserve()
  // first). The region is changed in place: a failure part way leaves the file with the
  // changes made so far (use a copy, or a staged region, to keep the old file intact).
  // Open the region with Region::open(). Throws Error (EINVAL) for an empty region or a
  // malformed table.
  MappedMessageBuilder(Region& region, Reopen, MappedMessageOptions options = {});

  ~MappedMessageBuilder() noexcept(false) override;

  // Writes the segment table and truncates the region to the message's exact end (offset +
  // its size). Call it once, after the last change to the message; the region can then be
  // synced, published or sealed. Returns the message's size in bytes (without the offset).
  // Backs the whole message first (ensure()), so a message that does not fit (ENOSPC, EFBIG
  // past RLIMIT_FSIZE) is an Error before anything is written, and finish() can be called
  // again once there is room. Punches the unused tails of the segments' spans (see "Disk
  // blocks").
  std::uint64_t finish();

  // A Data blob of `size` bytes (at most 2^29 - 1, Cap'n Proto's limit) whose first byte is
  // `alignment`-aligned in the file (default: the page size), for content that is mapped on
  // its own later (an embedded shared library). Adopt it into a field with
  // `builder.adoptBlob(kj::mv(orphan))`, and write its bytes in place through
  // `orphan.get()` — or with fill_from_fd(). To give it up instead, use discard(), never the
  // orphan's destructor.
  //
  // The blob and the padding before it (zero words, at most alignment - 8 bytes, never
  // written; whole pages of it are punched) are BACKED before they are allocated: a region
  // that cannot grow that far gives an Error and nothing is allocated; writing the blob
  // afterwards cannot fail for lack of space. Throws Error for an alignment that is not a
  // power of two multiple of 8, or a size past the limit.
  ::capnp::Orphan<::capnp::Data> new_aligned_data(std::uint64_t size, std::uint64_t alignment = 0);

  // Copies `length` bytes of `fd` from `offset` into `blob` (which must have room), in the
  // kernel with pread(2) straight into the region's pages: ensure() backs them first, since
  // read(2) into unbacked pages fails with EFAULT instead of faulting. The pages are dropped
  // from this process's page tables as they are filled (see "Memory"). Throws Error naming
  // `source` on a read error or an early end of file, and the growth Error (ENOSPC...) when
  // the blob cannot be backed; the blob is then untouched.
  void fill_from_fd(::capnp::Data::Builder blob, int fd, std::uint64_t offset,
                    std::uint64_t length, const std::string& source);

  // Gives up a blob of this message (from new_aligned_data(), or any Data orphan of it)
  // without the Orphan destructor's stores: afterwards the blob's words read as zero and cost
  // no blocks where they cover whole pages. Pages wholly inside it are punched (zeroed with
  // stores where the filesystem cannot punch, backed pages only); the partial pages at its
  // ends are zeroed with stores where the region backs them; what lies past size() is not
  // touched (it is zero, and finish() punches it if it gets backed meanwhile). Never stores
  // into unbacked memory, so it is safe after any growth failure. The words stay part of the
  // message (unreferenced); the arena never reuses them. A null orphan is ignored.
  void discard(::capnp::Orphan<::capnp::Data>&& blob) noexcept;

  // Shrinks a blob of this message to its first `size` bytes, for content whose length was
  // not known when the blob was allocated (a stream read into it until end of file). The
  // blob must be backed (as new_aligned_data() leaves it) and `size` at most its size (else
  // Error(EINVAL), nothing changed). The bytes past `size` are zeroed (Cap'n Proto's
  // truncate, stores into backed pages: what was never written costs only the stores), their
  // whole pages punched (no blocks); when the blob is the newest object of its segment, as
  // it is right after new_aligned_data(), its tail goes back to the arena and the next
  // allocation starts there. Readers and builders of the blob taken before are invalid
  // afterwards (call get() again). Shrinking to 0 leaves an empty blob: adopt it or give it
  // to discard().
  void shrink(::capnp::Orphan<::capnp::Data>& blob, std::uint64_t size);

  // Backs the memory that the next `bytes` bytes of allocations will use, so that building
  // them stores only into backed pages and cannot fail for lack of space: ensure() to there
  // when they fit in the newest segment; otherwise the next segment is started now (the rest
  // of the newest one becomes an unused tail) and backed. Call it before building a part of
  // the message whose size you can bound (WrapperWriter does, for the metadata it writes at
  // publish()). Throws the growth Error (nothing is allocated then), or Error (EINVAL) past
  // kMaxSegmentWords words.
  void reserve(std::uint64_t bytes);

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

  // The file offset where the newest segment's used words end.
  std::uint64_t newest_used_end();
  // Punches the whole pages of [begin, end) that lie below the region's size (failures
  // ignored: the bytes are zero either way); records those past it for finish().
  void punch_unused(std::uint64_t begin, std::uint64_t end) noexcept;

  Region& region_;
  std::uint32_t table_slots_;
  std::uint64_t segment_words_;
  std::uint64_t header_bytes_;
  std::uint64_t base_;                     // where the message starts in the region
  std::uint64_t next_offset_;              // where the next segment starts (the newest's span end)
  std::vector<std::uint64_t> spans_;       // words handed out for each segment
  std::uint32_t segments_ = 0;
  // Whole-page ranges known to hold nothing (discarded blobs) that were not backed when they
  // were given up; finish() punches them if growth backed them since.
  std::vector<std::pair<std::uint64_t, std::uint64_t>> holes_;
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
  // Validates the stream header of the input; throws Error naming it.
  static Parsed parse(detail::MappedInput input);
  MappedMessageReader(Parsed parsed, MappedReaderOptions options);

  Parsed parsed_;
};

}  // namespace mapwright
