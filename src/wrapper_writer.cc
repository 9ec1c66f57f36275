// WrapperWriter: entries' bytes go straight into the staged file's mapping, chunk by chunk,
// each chunk a page-aligned Data blob; the metadata is written at publish(), after them, and
// then the trailer (format version 2, wrapper.capnp "Integrity").
//
//   file: [segment table][root ptr][blob][pad][blob]...[pad][blob][root struct, entries][trailer]
//          └─── hashed ──────────┘ └── entry 1 ──┘       └ entry n ┘ └─ hashed (metadata) ─┘
//                                   pads, gaps, segment tails: zero
//
// With options.prefix the file starts with a copy of that file and zeros up to a multiple of
// 4096 (`base`); the message starts there (MappedMessageOptions::offset), so everything above
// is shifted by base. Offsets in the region are file offsets; the trailer's are the wrapper's.

#include "mapwright/wrapper.h"

#include <fcntl.h>

#include <algorithm>
#include <bit>
#include <memory>
#include <optional>
#include <cerrno>
#include <cstring>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "backing.h"
#include "digest.h"
#include "elf_info.h"
#include "mapwright/capnp.h"
#include "mapwright/error.h"
#include "os/extent.h"
#include "os/os.h"
#include "wrapper.capnp.h"
#include "wrapper_graph.h"
#include "wrapper_flat.h"
#include "wrapper_integrity.h"
#include "zstd_frames.h"

namespace mapwright {
namespace {

// For errors whose detail is the whole cause (bad input): no strerror() text after it.
constexpr Error::DetailIsCause kCause{};

constexpr std::uint64_t kPiece = 8ull << 20;  // copied and hashed at a time; progress step
constexpr std::uint64_t kParallelDigestBytes = 32ull << 20;
// Hashed bytes are released (write-back started, pages dropped) in batches of this much.
constexpr std::uint64_t kReleaseBytes = 8ull << 20;
// The kernel's fault-around maps up to this much (fault_around_bytes is at most 2 MiB) of
// cached pages around a read fault: the digest's next read maps back pages just dropped.
constexpr std::uint64_t kFaultAroundBytes = 2ull << 20;
// A stream's first chunk; each next one is twice as large, up to chunk_bytes.
constexpr std::uint64_t kFirstStreamChunk = 64ull << 10;
// ... up to this (or chunk_bytes, if smaller). Giving back the unused tail of a stream's last
// chunk zeroes it (Cap'n Proto's truncate) before the hole is punched, so the tail's pages are
// resident for a moment: with 256 MiB chunks, streaming 1 GiB from a pipe peaked at 263 MiB.
constexpr std::uint64_t kLargestStreamChunk = 16ull << 20;

std::string str(std::uint64_t value) { return std::to_string(value); }

// Where the chunks of an entry of `size` bytes, cut in chunks of `chunk_bytes`, start in the
// file: at multiples of the largest power of two that is at most the first chunk's length / 16,
// between kWrapperAlignment and 2 MiB, and that divides chunk_bytes (so that the chunks
// still follow each other with no gap: the entry stays contiguous). The page cache holds a
// file in folios of up to 2 MiB, each aligned to its size in the file: a chunk copied to a
// 4096-aligned offset is cached in 4 KiB folios, one to allocate, charge, put on the LRU and
// map per page, while one aligned to 64 KiB or more gets large folios. Measured (1 GiB,
// copy_file_range in 8 MiB pieces, hashed through the mapping, ext4, Linux 6.18): the copy
// took 500-610 ms at 4 KiB past 8 MiB, 445 ms at 8 KiB past, 385 ms at 32 KiB past and
// 320-380 ms at 64 KiB, 1 MiB or 2 MiB past, and mapping the pieces for the digest 160-225 ms
// against 90-115 ms. The padding before the first chunk is at most 1/16 of it, and a hole.
// Streams keep kWrapperAlignment: their chunk sizes are not known ahead.
std::uint64_t chunk_alignment(std::uint64_t size, std::uint64_t chunk_bytes) noexcept {
  constexpr std::uint64_t kLargestAlignment = 2ull << 20;
  const std::uint64_t first = std::min(size, chunk_bytes);
  const std::uint64_t fit = std::bit_floor(std::max<std::uint64_t>(first / 16, 1));
  const std::uint64_t divides = chunk_bytes & (~chunk_bytes + 1);  // its lowest set bit
  return std::clamp(std::min(fit, divides), kWrapperAlignment, kLargestAlignment);
}

// What the writer does with bytes once they are hashed, in batches of kReleaseBytes and at
// the end of each entry: starts their write-back (durable writers: the final fsync then has
// less to wait for) and drops their pages from this process's page tables, so that the
// resident set does not grow with the file (the bytes stay in the page cache and the file).
// Each drop reaches back kFaultAroundBytes, over pages that the digest's reads mapped again
// by fault-around. Pieces arrive in file order, on the digest thread; finish() runs on the
// writer's thread after the digest thread is joined.
class Release {
 public:
  Release(int fd, std::byte* base, bool durable) noexcept
      : fd_(fd), base_(base), durable_(durable) {}

  void piece(std::span<const std::byte> piece) noexcept {
    const auto offset = static_cast<std::uint64_t>(piece.data() - base_);
    if (begin_ == end_) begin_ = offset;
    end_ = offset + piece.size();
    if (end_ - begin_ >= kReleaseBytes) finish();
  }

  void finish() noexcept {
    if (begin_ == end_) return;
    if (durable_) (void)os::start_writeback(fd_, begin_, end_ - begin_);
    const std::uint64_t page = os::page_size();
    const std::uint64_t from =
        (begin_ > kFaultAroundBytes ? begin_ - kFaultAroundBytes : 0) / page * page;
    (void)os::drop_mapped_pages(base_ + from, end_ - from);
    begin_ = end_;
  }

 private:
  const int fd_;
  std::byte* const base_;
  const bool durable_;
  std::uint64_t begin_ = 0;  // [begin_, end_): hashed, not yet released
  std::uint64_t end_ = 0;
};

}  // namespace

// One chunk of an entry's bytes in the staged file: where it is mapped, and in the Cap'n Proto
// form the Data blob that holds it (adopted into the message at publish()).
struct Blob {
  std::byte* data = nullptr;
  std::uint64_t size = 0;
  ::capnp::Orphan<::capnp::Data> orphan;  // null in the FlatBuffers form
};

// Where chunks are allocated: in the message (Cap'n Proto form) or one after another in the
// file (FlatBuffers form). allocate() backs the chunk before returning it, so a file that
// cannot grow is an Error from there (the region's growth, naming it), never a fault.
class BlobStore {
 public:
  virtual ~BlobStore() = default;
  virtual Blob allocate(std::uint64_t length, std::uint64_t alignment) = 0;
  // Gives a blob up: its bytes zero, whole pages without blocks where the file system can.
  virtual void discard(Blob&& blob) noexcept = 0;
  // Keeps the first `size` bytes (no more than it has); the rest as discard() leaves it.
  virtual void shrink(Blob& blob, std::uint64_t size) = 0;
};

namespace {

// Blobs are given up with MappedMessageBuilder::discard() — never by the Orphan destructor,
// which stores zeros over the blob: a SIGBUS on pages the region does not back (after a
// failed growth), and a write of every page of a blob that is being thrown away.
class MessageBlobs final : public BlobStore {
 public:
  explicit MessageBlobs(MappedMessageBuilder& builder) noexcept : builder_(builder) {}
  Blob allocate(std::uint64_t length, std::uint64_t alignment) override {
    Blob blob;
    blob.orphan = builder_.new_aligned_data(length, alignment);
    blob.data = reinterpret_cast<std::byte*>(blob.orphan.get().begin());
    blob.size = length;
    return blob;
  }
  void discard(Blob&& blob) noexcept override { builder_.discard(::kj::mv(blob.orphan)); }
  void shrink(Blob& blob, std::uint64_t size) override {
    builder_.shrink(blob.orphan, size);
    blob.size = size;
  }

 private:
  MappedMessageBuilder& builder_;
};

// The FlatBuffers form: chunks one after another from `next` (a file offset), each backed by
// Region::ensure() first. Giving up the newest blob (a failed add, a stream's unused tail)
// takes its room back, so the next entry starts where it started.
class FileBlobs final : public BlobStore {
 public:
  FileBlobs(Region& region, std::uint64_t next) noexcept : region_(region), next_(next) {}
  Blob allocate(std::uint64_t length, std::uint64_t alignment) override {
    const std::uint64_t start = (next_ + alignment - 1) / alignment * alignment;
    if (start < next_ || length > region_.capacity() || start > region_.capacity() - length) {
      throw Error(ENOMEM, "growing region", region_.name(),
                  "(to " + str(start) + " + " + str(length) + " bytes: past its capacity of " +
                      str(region_.capacity()) + ")", Error::DetailIsCause{});
    }
    region_.ensure(start + length);  // throws: nothing allocated
    next_ = start + length;
    return Blob{region_.data() + start, length, {}};
  }
  void discard(Blob&& blob) noexcept override {
    const auto begin = static_cast<std::uint64_t>(blob.data - region_.data());
    zero(begin, begin + blob.size);
    if (begin + blob.size == next_) next_ = begin;
    blob.size = 0;
  }
  void shrink(Blob& blob, std::uint64_t size) override {
    if (size > blob.size) {
      throw Error(EINVAL, "shrinking a chunk in region", region_.name(),
                  "(to " + str(size) + " bytes: it holds " + str(blob.size) + ")", Error::DetailIsCause{});
    }
    const auto begin = static_cast<std::uint64_t>(blob.data - region_.data());
    zero(begin + size, begin + blob.size);
    if (begin + blob.size == next_) next_ = begin + size;
    blob.size = size;
  }
  // Where the next byte goes: the metadata, at publish().
  std::uint64_t next() const noexcept { return next_; }

 private:
  // [begin, end) zero: whole pages punched (zeroed where the file system cannot), the rest
  // stored. All of it is backed (allocate() ensured it).
  void zero(std::uint64_t begin, std::uint64_t end) noexcept {
    const std::uint64_t page = os::page_size();
    const std::uint64_t inner_begin = (begin + page - 1) / page * page;
    const std::uint64_t inner_end = end / page * page;
    if (inner_begin < inner_end) {
      if (os::punch_hole(region_.fd(), inner_begin, inner_end - inner_begin) != 0) {
        std::memset(region_.data() + inner_begin, 0, inner_end - inner_begin);
      }
      std::memset(region_.data() + begin, 0, inner_begin - begin);
      std::memset(region_.data() + inner_end, 0, end - inner_end);
    } else if (begin < end) {
      std::memset(region_.data() + begin, 0, end - begin);
    }
  }

  Region& region_;
  std::uint64_t next_;
};

}  // namespace

// An entry's blobs that are not (or not yet) part of the wrapper: given up with the store's
// discard() unless publish() takes them.
class PendingBlobs {
 public:
  explicit PendingBlobs(BlobStore& store) noexcept : store_(&store) {}
  PendingBlobs(PendingBlobs&& other) noexcept
      : store_(other.store_), blobs_(std::move(other.blobs_)) {
    other.blobs_.clear();
  }
  PendingBlobs& operator=(PendingBlobs&&) = delete;
  ~PendingBlobs() {
    // Newest first: a store that allocates one after another takes all the room back.
    while (!blobs_.empty()) discard_last();
  }

  void add(Blob&& blob) { blobs_.push_back(std::move(blob)); }
  std::size_t size() const noexcept { return blobs_.size(); }
  Blob& operator[](std::size_t i) noexcept { return blobs_[i]; }
  const Blob& operator[](std::size_t i) const noexcept { return blobs_[i]; }
  Blob& back() noexcept { return blobs_.back(); }
  // Discards the newest blob (an empty last chunk of a stream).
  void discard_last() noexcept {
    store_->discard(std::move(blobs_.back()));
    blobs_.pop_back();
  }
  const Blob& front() const noexcept { return blobs_.front(); }
  // Forgets the newest blob without giving it up: it belongs to the published file.
  void release_last() noexcept { blobs_.pop_back(); }
  void shrink_last(std::uint64_t size) { store_->shrink(blobs_.back(), size); }

 private:
  BlobStore* store_;
  std::vector<Blob> blobs_;
};

struct WrapperWriter::State {
  struct Pending {
    std::string name;
    EntryKind kind;
    std::uint64_t size;
    Digest digest;
    std::vector<std::string> dependencies;
    PendingBlobs chunks;
    std::string source;    // the file it was copied from, for messages; empty from memory
    detail::ElfInfo elf;   // a library's SONAME and DT_NEEDED (check_elf)
    // Compressed (options.compression): the chunks hold zstd frames ending at frame_ends.
    EntryCompression compression = EntryCompression::kNone;
    std::uint64_t frame_bytes = 0;
    std::vector<std::uint64_t> frame_ends;
  };

  std::filesystem::path target;
  std::string subject;  // the target, for messages
  WrapperWriterOptions options;
  Region region;
  int prefix_mode = -1;    // options.prefix's permission bits, for publish(); -1 without one
  std::uint64_t base = 0;  // where the message starts: after the prefix, 4096-aligned
  // The Cap'n Proto form's message (none in the FlatBuffers form), and where chunks go.
  std::optional<MappedMessageBuilder> builder;
  std::unique_ptr<BlobStore> store;
  FileBlobs* file_blobs = nullptr;  // the store, in the FlatBuffers form
  // Declared after the store: the pending blobs are discarded while it still exists.
  std::vector<Pending> entries;
  std::unordered_set<std::string> names;
  std::uint64_t total_done = 0;
  bool spent = false;  // publish() began writing the metadata (or finished)

  State(const std::filesystem::path& path, WrapperWriterOptions opts)
      : target(path),
        subject(path.string()),
        options(std::move(opts)),
        region(Region::staged(path, options.region)),
        base(copy_prefix()) {
    if (options.format == WrapperFormat::kCapnProto) {
      builder.emplace(region, message_options());
      store = std::make_unique<MessageBlobs>(*builder);
      return;
    }
    // The FlatBuffers form: its header, then chunks from there (wrapper.fbs).
    try {
      region.ensure(base + kFlatWrapperHeaderBytes);
    } catch (const Error& e) {
      throw Error(e.error(), "writing wrapper", subject,
                  "(header: " + e.operation() + (e.detail().empty() ? "" : " " + e.detail()) + ")");
    }
    const auto header = detail::encode_flat_header();
    std::memcpy(region.data() + base, header.data(), header.size());
    auto blobs = std::make_unique<FileBlobs>(region, base + kFlatWrapperHeaderBytes);
    file_blobs = blobs.get();
    store = std::move(blobs);
  }

  MappedMessageOptions message_options() const {
    MappedMessageOptions message = options.message;
    message.offset = base;
    return message;
  }

  // Copies options.prefix to the start of the staged file, in the kernel, and pads it with
  // zeros (a hole) to a multiple of 4096; returns that size. Before any entry, so that the
  // wrapper is written once, in place, after it.
  std::uint64_t copy_prefix() {
    if (options.prefix.empty()) return 0;
    const std::string source = options.prefix.string();
    const std::string what = "the file to append the wrapper to, '" + source + "'";
    const auto fail_prefix = [&](int error, const std::string& detail) {
      throw Error(error, "writing wrapper", subject, "(" + what + ": " + detail + ")");
    };
    const auto refuse_prefix = [&](int error, const std::string& detail) {
      throw Error(error, "writing wrapper", subject, "(" + what + ", " + detail + ")", kCause);
    };
    int raw = -1;
    // O_NONBLOCK: a FIFO must not make open() wait for a writer; it is refused just below.
    if (const int err = os::open(source.c_str(), O_RDONLY | O_NONBLOCK, 0, &raw); err != 0) {
      fail_prefix(err, "open");
    }
    const os::OwnedFd fd(raw);
    os::FileStatus status;
    if (const int err = os::fd_status(raw, &status); err != 0) fail_prefix(err, "fstat");
    if (status.type != os::FileType::kRegular || status.pseudo) {
      refuse_prefix(EINVAL, std::string("is not a regular file: ") +
                         (status.pseudo ? std::string("a file of procfs or sysfs")
                                        : std::string("a ") + os::to_string(status.type)));
    }
    // Publishing the staged copy over its own source would work, but a wrapper appended to a
    // file that has one already is seldom what was meant: refuse, and say how.
    os::FileStatus out;
    if (os::path_status(target.c_str(), true, &out) == 0 && out.device == status.device &&
        out.inode == status.inode) {
      refuse_prefix(EINVAL, "is the target itself: write the result to another path");
    }
    if (const int err = os::clear_nonblocking(raw); err != 0) fail_prefix(err, "fcntl");
    const std::uint64_t size = status.size;
    const std::uint64_t padded =
        (size + kWrapperAlignment - 1) / kWrapperAlignment * kWrapperAlignment;
    if (padded != 0) {
      try {
        region.ensure(padded);  // backed first: the copy never extends the file
      } catch (const Error& e) {
        fail_prefix(e.error(), e.operation() + (e.detail().empty() ? "" : " " + e.detail()));
      }
      std::uint64_t copied = 0;
      int err = os::copy_file_range(raw, 0, region.fd(), 0, size, &copied);
      if (err != 0 && os::is_copy_refusal(err)) {
        std::size_t got = 0;  // not between these files: read it into the mapping
        err = os::pread_full(raw, region.data(), size, 0, &got);
        copied = got;
      }
      if (err != 0) fail_prefix(err, "copying it");
      os::FileStatus after;
      if (copied != size || os::fd_status(raw, &after) != 0 || after.size != size) {
        refuse_prefix(EIO, "changed size while it was copied (" + str(size) + " bytes before)");
      }
      region.finish(padded);  // exactly the prefix and its padding: the message starts there
    }
    prefix_mode = static_cast<int>(status.mode & 0777);
    return padded;
  }

  // At least the bytes publish() allocates for the metadata: the root, the entry structs,
  // their texts, digests and pointer lists, with room for a far pointer (a landing pad, or a
  // double-far pad when a chunk is adopted out of a full segment) per object.
  std::uint64_t metadata_bound_bytes() const {
    using File = schema::WrapperFile::_capnpPrivate;
    using Entry = schema::Entry::_capnpPrivate;
    const auto text_words = [](std::size_t bytes) -> std::uint64_t { return (bytes + 1 + 7) / 8; };
    constexpr std::uint64_t kFar = 3;  // words a far pointer may add to an object
    std::uint64_t words = File::dataWordSize + File::pointerCount + kFar +
                          text_words(options.producer.size()) + kFar + 1 + kFar;
    for (const Pending& entry : entries) {
      words += Entry::dataWordSize + Entry::pointerCount;
      words += text_words(entry.name.size()) + kFar;
      words += 2 + kFar;  // the digest
      words += entry.dependencies.size() + kFar;
      for (const std::string& dependency : entry.dependencies) {
        words += text_words(dependency.size()) + kFar;
      }
      words += entry.chunks.size() * (1 + kFar) + kFar;
      words += entry.frame_ends.size() + kFar;
    }
    return words * sizeof(::capnp::word);
  }

  // Where the next object allocated in the message goes: the used end of its newest segment.
  std::uint64_t metadata_offset() {
    const auto segments = builder->getSegmentsForOutput();
    return static_cast<std::uint64_t>(
        reinterpret_cast<const std::byte*>(segments[segments.size() - 1].end()) - region.data() -
        base);
  }

  [[noreturn]] void refuse(int error, std::string_view name, const std::string& what) const {
    throw Error(error, "writing wrapper", subject,
                "entry '" + detail::printable(name) + "': " + what);
  }
  // The same when `what` is the whole cause (bad input, not a failed system call): no
  // strerror() text after it.
  [[noreturn]] void refuse_input(int error, std::string_view name, const std::string& what) const {
    throw Error(error, "writing wrapper", subject,
                "entry '" + detail::printable(name) + "': " + what, kCause);
  }

  // A new chunk of `length` bytes on a file-page boundary, added to `entry`: its first byte.
  // A failure to grow the file is refused naming the entry.
  std::byte* add_chunk(Pending& entry, std::string_view name, std::uint64_t length) {
    try {
      entry.chunks.add(store->allocate(length, kWrapperAlignment));
    } catch (const Error& e) {
      refuse(e.error(), name, e.operation() + (e.detail().empty() ? "" : " " + e.detail()));
    }
    return entry.chunks.back().data;
  }

  void check_usable() const {
    if (spent) {
      throw Error(EINVAL, "writing wrapper", subject, "(publish() has already run)", kCause);
    }
  }

  void check_name(std::string_view name) const {
    check_usable();
    if (name.empty()) refuse_input(EINVAL, name, "the name is empty");
    if (name.size() > kMaxEntryNameBytes) {
      refuse_input(EINVAL, name, "the name is longer than " + str(kMaxEntryNameBytes) + " bytes");
    }
    if (name.find('\0') != std::string_view::npos) refuse_input(EINVAL, name, "the name contains NUL");
    if (names.count(std::string(name)) != 0) refuse_input(EEXIST, name, "the name is already used");
  }

  void report(std::string_view name, std::uint64_t entry_done, std::uint64_t entry_size) {
    if (options.progress) {
      options.progress(WriteProgress{name, entry_done, entry_size, total_done});
    }
  }

  // Allocates the entry's chunks one after another and hands each to `write(bytes, offset)`,
  // which must fill all of it; hashes what was written. Adds the entry only if all went well;
  // otherwise its blobs are discarded (zero, no blocks) and the exception propagates.
  //
  // Each chunk is backed by new_aligned_data() before anything is written into it, so a full
  // disk or RLIMIT_FSIZE is an Error from there, never a fault or a SIGXFSZ. After a piece is
  // hashed its pages are dropped from this process's page tables (and, durable, its
  // write-back is started): the resident set stays at a few pieces, whatever the entry's size.
  template <class Write>
  void add(std::string_view name, EntryKind kind, std::uint64_t size,
           std::vector<std::string> depends, std::string source, Write&& write) {
    Pending entry{std::string(name), kind,          size, {}, std::move(depends),
                  PendingBlobs(*store), std::move(source), {}, EntryCompression::kNone, 0, {}};
    Release release(region.fd(), region.data(), options.durable);
    // Declared after `entry`: the digest thread is joined before the blobs are discarded.
    detail::DigestPipeline digest(
        options.parallel_digest && size >= kParallelDigestBytes &&
            std::thread::hardware_concurrency() > 1,
        [&release](std::span<const std::byte> piece) { release.piece(piece); });
    const std::uint64_t total_before = total_done;
    const std::uint64_t alignment = chunk_alignment(size, options.chunk_bytes);
    try {
      for (std::uint64_t offset = 0; offset < size;) {
        const std::uint64_t length = std::min(options.chunk_bytes, size - offset);
        try {
          entry.chunks.add(store->allocate(length, alignment));
        } catch (const Error& e) {
          // The region could not grow (ENOSPC, EFBIG, ENOMEM): say which entry needed it.
          refuse(e.error(), name,
                 e.operation() + (e.detail().empty() ? "" : " " + e.detail()));
        }
        std::byte* first = entry.chunks.back().data;
        for (std::uint64_t done = 0; done < length;) {
          const std::uint64_t piece = std::min(kPiece, length - done);
          write(std::span<std::byte>(first + done, piece), offset + done);
          digest.submit(first + done, piece);
          done += piece;
          total_done += piece;
          report(name, offset + done, size);
        }
        offset += length;
      }
    } catch (...) {
      total_done = total_before;
      throw;
    }
    entry.digest = digest.finish();
    release.finish();
    if (kind == EntryKind::kSharedLibrary) check_elf(entry);
    if (size == 0) report(name, 0, 0);
    names.insert(entry.name);
    entries.push_back(std::move(entry));
  }

  // "entry 'x'", or "entry 'x' from 'path'" for an entry copied from a file.
  static std::string label(const Pending& entry) {
    return "entry '" + detail::printable(entry.name) + "'" +
           (entry.source.empty() ? std::string() : " from '" + entry.source + "'");
  }

  // A library entry must be what dlopen() can load (elf_info.h): an ELF shared object of this
  // process's class, byte order and machine, whose headers and loadable segments lie inside
  // it. Reads the ELF header, the program headers and the dynamic section through the mapping
  // (a few pages), and keeps the SONAME and DT_NEEDED for publish(). The blobs of a refused
  // entry are discarded, as after any failed add: zero, and no blocks where they cover pages.
  void check_elf(Pending& entry) const {
    if (entry.compression != EntryCompression::kNone) {
      check_compressed_elf(entry);
      return;
    }
    // Where each chunk starts in the entry (a stream's chunks grow: sizes differ).
    std::vector<std::uint64_t> starts;
    std::uint64_t at = 0;
    for (std::size_t c = 0; c < entry.chunks.size(); ++c) {
      starts.push_back(at);
      at += entry.chunks[c].size;
    }
    entry.elf = detail::read_elf(entry.size, [&](std::uint64_t offset, void* buffer,
                                                 std::size_t length) {
      std::size_t done = 0;
      while (done < length && offset + done < entry.size) {
        const std::uint64_t position = offset + done;
        const auto chunk = static_cast<std::size_t>(
            std::upper_bound(starts.begin(), starts.end(), position) - starts.begin() - 1);
        const Blob& bytes = entry.chunks[chunk];
        const std::uint64_t within = position - starts[chunk];
        if (within >= bytes.size) break;  // past the chunks: reads as truncated
        const std::size_t piece = static_cast<std::size_t>(
            std::min<std::uint64_t>(length - done, bytes.size - within));
        std::memcpy(static_cast<std::byte*>(buffer) + done, bytes.data + within, piece);
        done += piece;
      }
      return done;
    });
    refuse_bad_elf(entry);
  }

  void refuse_bad_elf(const Pending& entry) const {
    if (entry.elf.problem != detail::ElfProblem::kNone) {
      throw Error(EINVAL, "writing wrapper", subject, label(entry) + ": " + entry.elf.reason,
                  kCause);
    }
  }

  // The same for a compressed library: its headers are read through its frames, decoded
  // as needed (one kept: the headers and the dynamic section are near each other).
  void check_compressed_elf(Pending& entry) const {
    detail::CompressedFrames frames;
    frames.stored = entry.chunks.front().data;
    frames.ends = entry.frame_ends.data();
    frames.count = entry.frame_ends.size();
    frames.frame_bytes = entry.frame_bytes;
    frames.size = entry.size;
    detail::FrameDecoder decoder;
    std::vector<std::byte> frame(static_cast<std::size_t>(entry.frame_bytes));
    std::uint64_t decoded = UINT64_MAX;  // the frame held in `frame`
    entry.elf = detail::read_elf(entry.size, [&](std::uint64_t offset, void* buffer,
                                                 std::size_t length) {
      std::size_t done = 0;
      while (done < length && offset + done < entry.size) {
        const std::uint64_t position = offset + done;
        const std::uint64_t index = position / entry.frame_bytes;
        const detail::FramePlace place = detail::frame_place(frames, index);
        const std::uint64_t first = place.first;
        const std::uint64_t frame_length = place.length;
        if (index != decoded) {
          const std::string why = decoder.decode(
              {frames.stored + place.stored_begin,
               static_cast<std::size_t>(place.stored_end - place.stored_begin)},
              {frame.data(), static_cast<std::size_t>(frame_length)});
          if (!why.empty()) refuse_input(EIO, entry.name, "its frame " + str(index) + ": " + why);
          decoded = index;
        }
        const std::size_t piece = static_cast<std::size_t>(
            std::min<std::uint64_t>(length - done, first + frame_length - position));
        std::memcpy(static_cast<std::byte*>(buffer) + done, frame.data() + (position - first), piece);
        done += piece;
      }
      return done;
    });
    refuse_bad_elf(entry);
  }

  // A compressed entry (options.compression): the bytes that next(buffer, want) gives — a
  // span of at most `want` bytes, in `buffer` or elsewhere; empty at the end — are cut in
  // frames of frame_bytes, each hashed (the digest is over these bytes), compressed alone
  // and appended to chunks allocated as the compressed bytes come (as a stream's are: 64 KiB,
  // doubling to 16 MiB or chunk_bytes), each page-aligned and adjacent to the one before, so
  // the frames are one contiguous run in the file. `size`: the bytes expected, for progress
  // (UINT64_MAX: unknown). Like add(): the entry is added only if all went well.
  template <class Next>
  void add_compressed(std::string_view name, EntryKind kind, std::uint64_t size,
                      std::vector<std::string> depends, std::string source, Next&& next) {
    const WrapperCompression& how = options.compression;
    Pending entry{std::string(name), kind,   0, {}, std::move(depends), PendingBlobs(*store),
                  std::move(source),  {}, how.method, how.frame_bytes, {}};
    Release release(region.fd(), region.data(), options.durable);
    detail::DigestStream digest;
    detail::FrameEncoder encoder(how.level, how.frame_bytes);
    std::vector<std::byte> buffer(static_cast<std::size_t>(how.frame_bytes));
    const std::uint64_t total_before = total_done;
    const std::uint64_t largest = std::min(kLargestStreamChunk, options.chunk_bytes);
    std::uint64_t next_length = std::min(kFirstStreamChunk, largest);
    std::byte* chunk = nullptr;       // the newest chunk
    std::uint64_t chunk_length = 0;
    std::uint64_t chunk_filled = 0;
    std::uint64_t stored = 0;
    const auto append = [&](std::span<const std::byte> bytes) {
      while (!bytes.empty()) {
        if (chunk_filled == chunk_length) {
          if (chunk != nullptr) release.piece({chunk, static_cast<std::size_t>(chunk_length)});
          std::byte* first = add_chunk(entry, name, next_length);
          if (chunk != nullptr && first != chunk + chunk_length) {
            refuse_input(EFBIG, name,
                         "a compressed entry must be one run of bytes, and this one reached the "
                         "end of a 4 GiB Cap'n Proto segment: add it uncompressed");
          }
          chunk = first;
          chunk_length = next_length;
          chunk_filled = 0;
          next_length = std::min(next_length * 2, largest);
        }
        const std::size_t piece =
            static_cast<std::size_t>(std::min<std::uint64_t>(bytes.size(), chunk_length - chunk_filled));
        std::memcpy(chunk + chunk_filled, bytes.data(), piece);
        chunk_filled += piece;
        stored += piece;
        bytes = bytes.subspan(piece);
      }
    };
    try {
      std::uint64_t next_report = kPiece;
      for (;;) {
        // A whole frame, unless the source ends first.
        std::size_t have = 0;
        std::span<const std::byte> plain;
        while (have < buffer.size()) {
          const auto got = next(buffer.data() + have, buffer.size() - have);
          if (got.empty()) break;
          if (have == 0 && got.size() == buffer.size()) {
            plain = got;  // a whole frame in place (from memory): no copy
            have = got.size();
            break;
          }
          if (got.data() != buffer.data() + have) std::memcpy(buffer.data() + have, got.data(), got.size());
          have += got.size();
        }
        if (have == 0) break;
        if (plain.empty()) plain = {buffer.data(), have};
        digest.update(plain.data(), plain.size());
        append(encoder.encode(plain));
        entry.frame_ends.push_back(stored);
        entry.size += have;
        total_done += have;
        if (entry.size >= next_report || have < buffer.size()) {
          report(name, entry.size, size == UINT64_MAX ? entry.size : size);
          next_report = (entry.size / kPiece + 1) * kPiece;
        }
        if (have < buffer.size()) break;
      }
      if (chunk != nullptr) {
        entry.chunks.shrink_last(chunk_filled);
        release.piece({chunk, static_cast<std::size_t>(chunk_filled)});
      }
    } catch (...) {
      total_done = total_before;
      throw;
    }
    entry.digest = digest.finish();
    release.finish();
    if (kind == EntryKind::kSharedLibrary) check_elf(entry);
    if (entry.size == 0) report(name, 0, 0);
    names.insert(entry.name);
    entries.push_back(std::move(entry));
  }

  bool compressing() const noexcept {
    return options.compression.method != EntryCompression::kNone;
  }

  // A compressed entry from `fd`: read(2) until end of file (streams), or pread(2) of `size`
  // bytes (regular files; one that shrinks meanwhile is an Error).
  void add_compressed_fd(std::string_view name, EntryKind kind, int fd, const std::string& source,
                         std::vector<std::string> depends, std::uint64_t size, bool stream) {
    std::uint64_t at = 0;
    add_compressed(name, kind, stream ? UINT64_MAX : size, std::move(depends), source,
                   [&](std::byte* into, std::size_t want) -> std::span<const std::byte> {
      std::size_t got = 0;
      if (stream) {
        if (const int err = os::read_waiting(fd, into, want, &got); err != 0) {
          refuse(err, name, "reading " + source);
        }
        return {into, got};
      }
      want = static_cast<std::size_t>(std::min<std::uint64_t>(want, size - at));
      if (want == 0) return {};
      if (const int err = os::pread_full(fd, into, want, at, &got); err != 0) {
        refuse(err, name, "reading " + source);
      }
      if (got != want) {
        refuse_input(EIO, name, source + " ended after " + str(at + got) + " of " + str(size) +
                                    " bytes (it shrank while it was copied)");
      }
      at += got;
      return {into, got};
    });
  }

  // What the dynamic linker needs to use a library entry as another's dependency: it matches
  // the dependent's DT_NEEDED names against the SONAMEs of loaded objects, so a dependency
  // without a SONAME can never be the object a DT_NEEDED entry names (it is loaded under
  // "/proc/self/fd/N"), and being loaded first with RTLD_LOCAL (the loader's default, and
  // the only choice in a namespace of its own) lends the dependent none of its symbols: the
  // dependency can do nothing, and the dependent would be linked against a file on disk, or
  // not load. Refused. Accepted: a dependency whose SONAME the dependent does not list
  // (useless, but it may be meant for a library loaded later). Entries whose dynamic section
  // could not be read are not judged.
  void check_sonames() const {
    std::unordered_map<std::string_view, const Pending*> by_name;
    for (const Pending& entry : entries) by_name.emplace(entry.name, &entry);
    for (const Pending& entry : entries) {
      if (entry.kind != EntryKind::kSharedLibrary || !entry.elf.dynamic_read) continue;
      for (const std::string& name : entry.dependencies) {
        const Pending& dependency = *by_name.at(name);  // check_dependencies() passed
        if (!dependency.elf.dynamic_read || dependency.elf.has_soname) continue;
        // The dependent's DT_NEEDED names that no SONAME among its dependencies matches.
        std::vector<std::string> unmatched;
        for (const std::string& needed : entry.elf.needed) {
          const bool matched = std::any_of(
              entry.dependencies.begin(), entry.dependencies.end(), [&](const std::string& d) {
                const Pending& other = *by_name.at(d);
                return other.elf.has_soname && other.elf.soname == needed;
              });
          if (!matched) unmatched.push_back("'" + detail::printable(needed) + "'");
        }
        std::string names;
        for (const std::string& one : unmatched) names += (names.empty() ? "" : ", ") + one;
        const std::string dependent = "'" + detail::printable(entry.name) + "'";
        throw Error(EINVAL, "writing wrapper", subject,
                    "entry " + dependent + " depends on '" + detail::printable(name) + "', but " +
                        label(dependency) + " has no SONAME, so the dynamic loader cannot match " +
                        (unmatched.size() == 1 ? "the DT_NEEDED " + names + " of " + dependent
                         : unmatched.empty()   ? "any DT_NEEDED of " + dependent
                                               : "any DT_NEEDED of " + dependent + " (" + names + ")") +
                        " to it (link the dependency with -Wl,-soname,NAME)", kCause);
      }
    }
  }

  // Reads `fd` until end of file into chunks allocated as the bytes come (see
  // add_data_stream() in wrapper.h). Like add(): the entry is added only if all went well,
  // otherwise its blobs are discarded and the exception propagates.
  void add_stream(std::string_view name, EntryKind kind, int fd, const std::string& source,
                  std::vector<std::string> depends) {
    if (compressing()) {
      add_compressed_fd(name, kind, fd, source, std::move(depends), 0, true);
      return;
    }
    Pending entry{std::string(name), kind,   0, {}, std::move(depends), PendingBlobs(*store),
                  source,            {}, EntryCompression::kNone, 0, {}};
    Release release(region.fd(), region.data(), options.durable);
    // On this thread: a stream's size is not known, and pieces come as the reads do.
    detail::DigestPipeline digest(
        false, [&release](std::span<const std::byte> piece) { release.piece(piece); });
    const std::uint64_t total_before = total_done;
    const auto progress = [&] {
      if (options.progress) {
        options.progress(WriteProgress{name, entry.size, entry.size, total_done, false});
      }
    };
    try {
      std::uint64_t next_report = kPiece;
      const std::uint64_t largest = std::min(kLargestStreamChunk, options.chunk_bytes);
      for (std::uint64_t length = std::min(kFirstStreamChunk, largest);;
           length = std::min(length * 2, largest)) {
        std::byte* first = add_chunk(entry, name, length);
        std::uint64_t filled = 0;
        std::uint64_t hashed = 0;
        bool end = false;
        while (filled < length && !end) {
          std::size_t got = 0;
          const auto want = static_cast<std::size_t>(std::min(kPiece, length - filled));
          if (const int err = os::read_waiting(fd, first + filled, want, &got); err != 0) {
            refuse(err, name, "reading " + source);
          }
          end = got == 0;
          filled += got;
          entry.size += got;
          total_done += got;
          if (filled - hashed >= kPiece || (end && filled > hashed) || filled == length) {
            digest.submit(first + hashed, filled - hashed);
            hashed = filled;
          }
          if (entry.size >= next_report) {
            progress();
            next_report = (entry.size / kPiece + 1) * kPiece;
          }
        }
        if (filled < length) {
          // The end of the stream: give back the chunk's unused tail (all of it if empty).
          entry.chunks.shrink_last(filled);
          if (filled == 0) entry.chunks.discard_last();
          break;
        }
      }
    } catch (...) {
      total_done = total_before;
      throw;
    }
    entry.digest = digest.finish();
    release.finish();
    if (kind == EntryKind::kSharedLibrary) check_elf(entry);
    progress();
    names.insert(entry.name);
    entries.push_back(std::move(entry));
  }

  void add_file(std::string_view name, EntryKind kind, const std::filesystem::path& path,
                std::vector<std::string> depends) {
    check_name(name);
    const std::string source = path.string();
    int fd = -1;
    // O_NONBLOCK: opening a FIFO must not wait for a writer (nor a device for its carrier).
    if (const int err = os::open(source.c_str(), O_RDONLY | O_NONBLOCK, 0, &fd); err != 0) {
      refuse(err, name, "opening " + source);
    }
    const os::OwnedFd closer(fd);
    os::FileStatus status;
    if (const int err = os::fd_status(fd, &status); err != 0) {
      refuse(err, name, "fstat of " + source);
    }
    const bool regular = status.type == os::FileType::kRegular;
    if (status.type == os::FileType::kFifo || status.type == os::FileType::kSocket ||
        (regular && (status.pseudo || status.size == 0))) {
      add_stream(name, kind, fd, source, std::move(depends));
      return;
    }
    if (!regular) {
      refuse_input(EINVAL, name,
                   source + " is not a regular file or a stream (a " + os::to_string(status.type) +
                 ")");
    }
    if (const int err = os::clear_nonblocking(fd); err != 0) {
      refuse(err, name, "fcntl of " + source);
    }
    const std::uint64_t size = status.size;
    if (compressing()) {
      add_compressed_fd(name, kind, fd, source, std::move(depends), size, false);
      return;
    }
    bool in_kernel = true;  // copy_file_range until the kernel says it cannot here
    add(name, kind, size, std::move(depends), source,
        [&](std::span<std::byte> into, std::uint64_t at) {
      const auto out_offset = static_cast<std::uint64_t>(into.data() - region.data());
      std::uint64_t copied = 0;
      // The destination is backed (new_aligned_data), so copy_file_range never extends the
      // file. But the kernel refuses ANY write at or past RLIMIT_FSIZE, with SIGXFSZ, even
      // inside the file (a limit lowered after the region grew): stores through the mapping
      // are not subject to it, so read into the mapping there instead.
      std::uint64_t limit = UINT64_MAX;
      if (in_kernel && os::file_size_limit(&limit) == 0 && out_offset + into.size() > limit) {
        in_kernel = false;
      }
      if (in_kernel) {
        const int err = os::copy_file_range(fd, at, region.fd(), out_offset, into.size(), &copied);
        if (err == 0 && copied == into.size()) return;
        if (err == 0) {
          refuse_input(EIO, name, source + " ended after " + str(at + copied) + " of " + str(size) +
                                " bytes (it shrank while it was copied)");
        }
        if (err != EXDEV && err != ENOSYS && err != EOPNOTSUPP && err != EINVAL && err != EPERM) {
          refuse(err, name, "copying from " + source + " (copy_file_range)");
        }
        in_kernel = false;
      }
      std::size_t got = 0;
      if (const int err = os::pread_full(fd, into.data(), into.size(), at, &got); err != 0) {
        refuse(err, name, "reading " + source);
      }
      if (got != into.size()) {
        refuse_input(EIO, name, source + " ended after " + str(at + got) + " of " + str(size) +
                              " bytes (it shrank while it was copied)");
      }
    });
  }

  void add_span(std::string_view name, EntryKind kind, std::span<const std::byte> bytes,
                std::vector<std::string> depends) {
    check_name(name);
    if (compressing()) {
      std::uint64_t at = 0;
      add_compressed(name, kind, bytes.size(), std::move(depends), {},
                     [&](std::byte*, std::size_t want) -> std::span<const std::byte> {
                       const auto piece = bytes.subspan(
                           static_cast<std::size_t>(at),
                           static_cast<std::size_t>(std::min<std::uint64_t>(want, bytes.size() - at)));
                       at += piece.size();
                       return piece;
                     });
      return;
    }
    add(name, kind, bytes.size(), std::move(depends), {},
        [&](std::span<std::byte> into, std::uint64_t at) {
          std::memcpy(into.data(), bytes.data() + at, into.size());
        });
  }

  // publish() in the FlatBuffers form (wrapper.fbs): the metadata, built on the heap (its size
  // follows the number of entries, not their bytes), goes after the last chunk, at a multiple
  // of 8, then the trailer. Room for both is backed before anything is written.
  std::uint64_t publish_flat() {
    std::vector<detail::RawEntry> raw;
    raw.reserve(entries.size());
    for (const Pending& from : entries) {
      detail::RawEntry to;
      to.name = from.name;
      to.kind = from.kind == EntryKind::kSharedLibrary ? 0 : 1;
      to.size = from.size;
      to.digest.assign(from.digest.bytes.begin(), from.digest.bytes.end());
      to.dependencies = from.dependencies;
      // Chunks that follow each other are one run: offsets and sizes are 64-bit here.
      for (std::size_t c = 0; c < from.chunks.size(); ++c) {
        const Blob& blob = from.chunks[c];
        const auto offset = static_cast<std::uint64_t>(blob.data - region.data()) - base;
        if (!to.chunks.empty() && to.chunks.back().offset + to.chunks.back().size == offset) {
          to.chunks.back().size += blob.size;
        } else {
          to.chunks.push_back({offset, blob.size});
        }
      }
      if (from.compression == EntryCompression::kZstd) {
        to.compression = 1;
        to.frame_size = from.frame_bytes;
        to.has_frame_ends = true;
        to.frame_ends = from.frame_ends;
      }
      raw.push_back(std::move(to));
    }
    const std::vector<std::byte> metadata = detail::encode_flat_metadata(options.producer, raw);
    const std::uint64_t metadata_offset = (file_blobs->next() - base + 7) / 8 * 8;
    const std::uint64_t size = metadata_offset + metadata.size() + kFlatWrapperTrailerBytes;
    try {
      region.ensure(base + size);
    } catch (const Error& e) {
      throw Error(e.error(), "writing wrapper", subject,
                  "(metadata: " + e.operation() + (e.detail().empty() ? "" : " " + e.detail()) + ")");
    }
    spent = true;
    std::byte* wrapper = region.data() + base;
    std::memcpy(wrapper + metadata_offset, metadata.data(), metadata.size());
    detail::FlatTrailer trailer;
    trailer.wrapper_size = size;
    trailer.metadata_offset = metadata_offset;
    trailer.metadata_size = metadata.size();
    trailer.metadata_digest = detail::flat_metadata_digest(
        {wrapper, kFlatWrapperHeaderBytes}, {wrapper + metadata_offset, metadata.size()}, size,
        metadata_offset);
    const auto bytes = detail::encode_flat_trailer(trailer);
    std::memcpy(wrapper + metadata_offset + metadata.size(), bytes.data(), bytes.size());
    // Every chunk now belongs to the file: nothing is given up when the entries go.
    for (Pending& entry : entries) {
      while (entry.chunks.size() != 0) entry.chunks.release_last();
    }
    region.finish(base + size);
    region.publish(Region::PublishOptions{.durable = options.durable, .mode = prefix_mode});
    return base + size;
  }
};

WrapperWriter::WrapperWriter(const std::filesystem::path& target, WrapperWriterOptions options) {
  const std::uint64_t chunk = options.chunk_bytes;
  if (chunk == 0 || chunk % 4096 != 0 || chunk > (512ull << 20) - 4096) {
    throw Error(EINVAL, "writing wrapper", target.string(),
                "(chunk size " + str(chunk) +
                    " is not a multiple of 4096 between 4096 and 512 MiB - 4096)", kCause);
  }
  const WrapperCompression& how = options.compression;
  if (how.method != EntryCompression::kNone) {
    if (std::string why = detail::frame_size_problem(how.frame_bytes); !why.empty()) {
      throw Error(EINVAL, "writing wrapper", target.string(), "(" + why + ")", kCause);
    }
    (void)detail::FrameEncoder(how.level, how.frame_bytes);  // refuses a level it does not take
  }
  // Before anything is created: a target that is not a regular file is refused by name.
  (void)detail::check_publish_target(target, "writing wrapper");
  state_ = std::make_unique<State>(target, std::move(options));
}

WrapperWriter::WrapperWriter(WrapperWriter&&) noexcept = default;
WrapperWriter& WrapperWriter::operator=(WrapperWriter&&) noexcept = default;
WrapperWriter::~WrapperWriter() = default;

void WrapperWriter::add_library(std::string_view name, const std::filesystem::path& path,
                                std::vector<std::string> depends) {
  state_->add_file(name, EntryKind::kSharedLibrary, path, std::move(depends));
}

void WrapperWriter::add_library(std::string_view name, std::span<const std::byte> bytes,
                                std::vector<std::string> depends) {
  state_->add_span(name, EntryKind::kSharedLibrary, bytes, std::move(depends));
}

void WrapperWriter::add_data(std::string_view name, const std::filesystem::path& path) {
  state_->add_file(name, EntryKind::kData, path, {});
}

void WrapperWriter::add_library_stream(std::string_view name, int fd, const std::string& source,
                                       std::vector<std::string> depends) {
  state_->check_name(name);
  state_->add_stream(name, EntryKind::kSharedLibrary, fd, source, std::move(depends));
}

void WrapperWriter::add_data_stream(std::string_view name, int fd, const std::string& source) {
  state_->check_name(name);
  state_->add_stream(name, EntryKind::kData, fd, source, {});
}

void WrapperWriter::add_data(std::string_view name, std::span<const std::byte> bytes) {
  state_->add_span(name, EntryKind::kData, bytes, {});
}

void WrapperWriter::add_data(std::string_view name, std::uint64_t size, const FillChunk& fill) {
  State& s = *state_;
  s.check_name(name);
  if (!fill) s.refuse_input(EINVAL, name, "no fill function");
  if (s.compressing()) {
    // fill() writes into a buffer of whole frames (about 8 MiB), compressed from there.
    const std::uint64_t frames = std::max<std::uint64_t>(1, kPiece / s.options.compression.frame_bytes);
    const std::uint64_t piece = std::min(frames * s.options.compression.frame_bytes, size);
    std::vector<std::byte> buffer(static_cast<std::size_t>(piece));
    std::uint64_t at = 0;
    std::uint64_t filled_end = 0;  // [filled_end - buffer's filled length, filled_end) is in it
    std::uint64_t filled_length = 0;
    s.add_compressed(name, EntryKind::kData, size, {}, {},
                     [&](std::byte*, std::size_t want) -> std::span<const std::byte> {
                       if (at == size) return {};
                       if (at == filled_end) {
                         filled_length = std::min(piece, size - at);
                         std::memset(buffer.data(), 0, static_cast<std::size_t>(filled_length));
                         fill(std::span<std::byte>(buffer.data(), static_cast<std::size_t>(filled_length)), at);
                         filled_end = at + filled_length;
                       }
                       const std::uint64_t in = at - (filled_end - filled_length);
                       const auto length = static_cast<std::size_t>(
                           std::min<std::uint64_t>(want, filled_end - at));
                       at += length;
                       return {buffer.data() + in, length};
                     });
    return;
  }
  // fill() sees whole chunks; add() walks them in pieces, so call fill at a chunk's start.
  s.add(name, EntryKind::kData, size, {}, {}, [&](std::span<std::byte> piece, std::uint64_t at) {
    const std::uint64_t chunk_start = at / s.options.chunk_bytes * s.options.chunk_bytes;
    if (at != chunk_start) return;  // filled with its chunk
    const std::uint64_t length = std::min(s.options.chunk_bytes, size - chunk_start);
    fill(std::span<std::byte>(piece.data(), length), chunk_start);
  });
}

std::uint64_t WrapperWriter::publish() {
  State& s = *state_;
  s.check_usable();
  std::vector<detail::GraphEntry> graph;
  graph.reserve(s.entries.size());
  for (const State::Pending& entry : s.entries) {
    graph.push_back({entry.name, entry.kind, &entry.dependencies});
    // A dependency named twice would be stored twice (readers accept that in files already
    // written, so the check is the writer's).
    std::vector<std::string_view> seen(entry.dependencies.begin(), entry.dependencies.end());
    std::sort(seen.begin(), seen.end());
    if (const auto twice = std::adjacent_find(seen.begin(), seen.end()); twice != seen.end()) {
      throw Error(EINVAL, "writing wrapper", s.subject,
                  "entry '" + detail::printable(entry.name) + "': depends on '" +
                      detail::printable(*twice) + "' twice", kCause);
    }
  }
  detail::check_dependencies(graph, "writing wrapper", s.subject);
  s.check_sonames();
  if (s.options.format == WrapperFormat::kFlatBuffers) return s.publish_flat();
  // The metadata is written by Cap'n Proto's stores: back room for all of it first, so that a
  // full disk or RLIMIT_FSIZE is an Error here, before anything is written (and publish() can
  // be tried again), never a fault in the middle of it.
  try {
    // With the trailer's bytes: it goes right after the message's end, which the metadata
    // moves to at most that far, so nothing after this point needs the file to grow.
    s.builder->reserve(s.metadata_bound_bytes() + kWrapperTrailerBytes);
  } catch (const Error& e) {
    throw Error(e.error(), "writing wrapper", s.subject,
                "(metadata: " + e.operation() + (e.detail().empty() ? "" : " " + e.detail()) + ")");
  }
  s.spent = true;  // from here on a failure leaves a half-written root: no second try

  // Everything allocated from here on (the root and its landing pad, the entries, their
  // texts and lists, the far pointers to chunks in older segments) lands in the newest
  // segment from its used end: reserve() made room there, and older segments are full.
  // That is the hashed metadata; below it, [hashed prefix, metadata_offset) holds only the
  // chunks and zeros.
  const std::uint64_t metadata_offset = s.metadata_offset();
  auto root = s.builder->initRoot<schema::WrapperFile>();
  root.setMagic(kWrapperMagic);
  const bool compressed = std::any_of(s.entries.begin(), s.entries.end(), [](const State::Pending& e) {
    return e.compression != EntryCompression::kNone;
  });
  root.setFormatVersion(compressed ? kWrapperCompressedFormatVersion : kWrapperFormatVersion);
  root.setProducer(s.options.producer);
  auto list = root.initEntries(static_cast<::capnp::uint>(s.entries.size()));
  for (std::size_t i = 0; i < s.entries.size(); ++i) {
    State::Pending& from = s.entries[i];
    auto to = list[static_cast<::capnp::uint>(i)];
    to.setName(from.name);
    to.setKind(from.kind == EntryKind::kSharedLibrary ? schema::Kind::SHARED_LIBRARY
                                                      : schema::Kind::DATA);
    to.setSize(from.size);
    to.setDigestAlgorithm(schema::DigestAlgorithm::XXH3X128);
    to.setDigest(::capnp::Data::Reader(reinterpret_cast<const ::kj::byte*>(from.digest.bytes.data()),
                                       from.digest.bytes.size()));
    if (!from.dependencies.empty()) {
      auto deps = to.initDependencies(static_cast<::capnp::uint>(from.dependencies.size()));
      for (std::size_t d = 0; d < from.dependencies.size(); ++d) {
        deps.set(static_cast<::capnp::uint>(d), from.dependencies[d]);
      }
    }
    if (from.compression == EntryCompression::kZstd) {
      to.setCompression(schema::Compression::ZSTD);
      to.setFrameSize(from.frame_bytes);
      auto ends = to.initFrameEnds(static_cast<::capnp::uint>(from.frame_ends.size()));
      for (std::size_t f = 0; f < from.frame_ends.size(); ++f) {
        ends.set(static_cast<::capnp::uint>(f), from.frame_ends[f]);
      }
    }
    auto chunks = to.initChunks(static_cast<::capnp::uint>(from.chunks.size()));
    for (std::size_t c = 0; c < from.chunks.size(); ++c) {
      chunks.adopt(static_cast<::capnp::uint>(c), std::move(from.chunks[c].orphan));
    }
  }
  const std::uint64_t message_size = s.builder->finish();
  const std::uint64_t size = message_size + kWrapperTrailerBytes;
  const std::byte* message = s.region.data() + s.base;
  const std::uint64_t prefix_end = detail::hashed_prefix_end(message);
  if (metadata_offset < prefix_end || metadata_offset > message_size) {
    throw Error(EINVAL, "writing wrapper", s.subject,
                "(the metadata is not where the writer placed it: " +
                    std::to_string(metadata_offset) + " of " + std::to_string(message_size) + ")");
  }
  detail::Trailer trailer;
  trailer.wrapper_size = size;
  trailer.metadata_offset = metadata_offset;
  trailer.metadata_digest = detail::metadata_digest(message, prefix_end, metadata_offset,
                                                    message_size, size);
  const auto bytes = detail::encode_trailer(trailer);
  // Backed by the reserve() above: no growth, so no failure for room.
  s.region.ensure(s.base + size);
  std::memcpy(s.region.data() + s.base + message_size, bytes.data(), bytes.size());
  s.region.finish(s.base + size);
  s.region.publish(Region::PublishOptions{.durable = s.options.durable, .mode = s.prefix_mode});
  return s.base + size;
}

std::uint64_t WrapperWriter::entry_count() const noexcept { return state_->entries.size(); }

const std::filesystem::path& WrapperWriter::target() const noexcept { return state_->target; }

std::uint64_t WrapperWriter::wrapper_offset() const noexcept { return state_->base; }

}  // namespace mapwright
