// mapwright/flatbuffers.h — FlatBuffers built in place, back to front, inside a memfd or a
// file whose end stays put; and read back zero-copy, verified, from a file, an fd range or a
// SealedImage.
//
// FlatBuffers builds a buffer from its end towards its start. MappedFlatBufferBuilder keeps
// the buffer's end fixed at the top of a reservation, so written bytes never move as the
// buffer grows; finish() then leaves the buffer at offset 0 of its file, byte for byte what
// the stock FlatBufferBuilder gives for the same calls:
//
//     reservation base              top - committed           top (= the file's capacity)
//     ├── PROT_NONE (a stray store  ┼── scratch ─ free ─ data ──┤── guard ──
//     │   is a SIGSEGV)             │  (the builder's own layout: vtable list low, data high)
//
// Requires FlatBuffers 2.0.8 or later (Debian 12), whose buffers are at most 2 GiB (32-bit
// offsets); the builder refuses to grow past that with an Error, where the stock builder
// asserts or, without assertions, silently writes a wrong buffer.
#pragma once

#include <flatbuffers/flatbuffers.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "mapwright/error.h"
#include "mapwright/sealed_image.h"

namespace mapwright {

// The most bytes a FlatBuffers buffer can hold: FLATBUFFERS_MAX_BUFFER_SIZE (2 GiB - 1).
inline constexpr std::uint64_t kMaxFlatBufferBytes = FLATBUFFERS_MAX_BUFFER_SIZE;

// Where a MappedFlatBufferBuilder writes, as for Region (region.h says more of each).
struct FlatBufferTarget {
  enum class Kind { kMemfd, kFile, kStaged };
  Kind kind = Kind::kMemfd;
  std::string name;             // the memfd's name
  std::filesystem::path path;   // the file, or the staged target

  // A new memfd (sealable: seal() after finish() gives a SealedImage).
  static FlatBufferTarget memfd(std::string_view name) {
    return {Kind::kMemfd, std::string(name), {}};
  }
  // Creates `path`, or truncates it (O_CREAT | O_TRUNC).
  static FlatBufferTarget file(const std::filesystem::path& path) {
    return {Kind::kFile, path.string(), path};
  }
  // A file that appears at `path` only at publish(), complete (Region::staged).
  static FlatBufferTarget staged(const std::filesystem::path& path) {
    return {Kind::kStaged, path.string(), path};
  }
};

struct MappedFlatBufferOptions {
  // The most the builder's memory may reach: buffer, its scratch (the vtable list) and
  // growth slack together, rounded up to a page. 0 (the default): 2 GiB - 4 KiB, what
  // FlatBuffers can address, or less where RLIMIT_FSIZE or RLIMIT_AS leave less (the file is
  // this long, sparse, while the buffer is built). Address space only until used.
  std::uint64_t capacity = 0;
  // The builder's first block (FlatBufferBuilder's initial_size); later blocks grow by half
  // as FlatBuffers grows them, except that past half the capacity the builder takes all of it
  // at once (so that the 2 GiB limit is checked exactly, see "Growth").
  std::size_t initial_size = 64 * 1024;
  // Drop pages the builder has written from this process's page tables at each growth (the
  // bytes stay in the file; a later read maps them again), so that the resident set holds
  // about the newest growth step instead of the whole buffer.
  bool drop_written_pages = true;
};

struct MappedFlatBufferStats {
  std::uint64_t growths = 0;              // allocator calls that gave the builder more room
  std::uint64_t failures = 0;             // growths refused (an Error at the builder call)
  std::uint64_t data_bytes_moved = 0;     // buffer bytes growth moved (measured: stays 0)
  std::uint64_t scratch_bytes_moved = 0;  // the vtable list moved down with the block's start
  std::uint64_t committed = 0;            // bytes backed at the top of the file now
};

// What finish() did.
struct FlatBufferFinish {
  enum class Method {
    kNone,      // the buffer already began at offset 0
    kCollapse,  // FALLOC_FL_COLLAPSE_RANGE took the unused front off (ext4, xfs): no copy
    kCopy,      // the buffer was copied down to offset 0 within the file (memfd, tmpfs, or
                // a buffer whose start is not on a filesystem block boundary)
  };
  std::uint64_t size = 0;   // the buffer's bytes: the file's whole content now
  Method method = Method::kNone;
  std::uint64_t bytes_copied = 0;
};

namespace detail {
struct FlatBufferState;
class FlatBufferAllocator;
struct MappedInput;

// Constructed before the FlatBufferBuilder base, so that the allocator exists when the
// builder's vector is made. Private to mapwright.
class FlatBufferHolder {
 protected:
  FlatBufferHolder(const FlatBufferTarget& target, const MappedFlatBufferOptions& options);
  ~FlatBufferHolder();
  ::flatbuffers::Allocator* allocator() noexcept;
  std::unique_ptr<FlatBufferState> state_;
};
}  // namespace detail

// A flatbuffers::FlatBufferBuilder whose memory is the top of a memfd or file: use it as a
// FlatBufferBuilder (generated Create* functions, CreateString, StartTable...), then
// Finish(root) as usual, then finish() to leave the buffer alone in the file.
//
// Growth. The builder asks its allocator for a larger block as it fills up; that is the only
// place memory is added (there is no growth on fault), and the block's end never moves:
// stats().data_bytes_moved stays 0. Each growth backs the new part before the builder uses
// it: on disk with fallocate, so a full disk (ENOSPC) or the file size limit is an Error
// thrown out of the builder call that needed room — CreateString, CreateVector, EndTable,
// Finish... — never a SIGBUS later. A memfd's pages are allocated when first written.
// Refused growths, each an Error from that call:
//   * past 2 GiB - 1 bytes of buffer, or past the capacity: EFBIG / ENOMEM, "FlatBuffers
//     addresses at most 2 GiB" or "past the builder's capacity"; exact, never early: once the
//     builder's block passes half the capacity it is given the whole capacity, so a request
//     is refused only when the bytes it asks for cannot fit;
//   * RLIMIT_FSIZE: the capacity is clamped to it when the builder is made, and a growth past
//     it is EFBIG naming RLIMIT_FSIZE;
//   * after finish(): EINVAL.
// After such an Error the builder is consistent: everything built before the failing call is
// intact, the failed allocation did not happen, and Clear(), Reset() and destruction are
// safe. Outside a table, the object the failing call had started (a string, a vector, the
// root of Finish) is abandoned — it may leave padding, nothing else — so the call can be
// retried once there is room. Inside a table (between StartTable and EndTable, as generated
// Create* functions are while they add fields), FlatBuffers' table state is half-done: start
// the buffer again (Clear()).
//
// Memory. With drop_written_pages (the default) the pages of finished data are dropped from
// the page tables at each growth; the file (page cache, or the memfd) keeps them.
//
// Do not use Release(), ReleaseRaw() or Swap() of the base class: the memory is the file's,
// and goes with the builder. GetBufferPointer() is valid from Finish() until finish(); after
// finish() use data().
//
// Not thread-safe (no FlatBufferBuilder is). Not movable: the builder's allocator points
// into it (hold it in a std::unique_ptr to pass it around). fork(): as for a Region, the
// child must not go on building (both would write one file).
class MappedFlatBufferBuilder : private detail::FlatBufferHolder,
                                public ::flatbuffers::FlatBufferBuilder {
 public:
  // Creates the file (or memfd), sized to the capacity (sparse) and mapped at its end. Throws
  // Error naming the target: creating it (ENOENT, EACCES...), a staged target that is not a
  // regular file, a capacity that cannot be reserved (ENOMEM naming RLIMIT_AS), an
  // RLIMIT_FSIZE too small for one page (EFBIG).
  explicit MappedFlatBufferBuilder(const FlatBufferTarget& target,
                                   MappedFlatBufferOptions options = {});
  ~MappedFlatBufferBuilder();
  MappedFlatBufferBuilder(const MappedFlatBufferBuilder&) = delete;
  MappedFlatBufferBuilder& operator=(const MappedFlatBufferBuilder&) = delete;
  MappedFlatBufferBuilder(MappedFlatBufferBuilder&&) = delete;
  MappedFlatBufferBuilder& operator=(MappedFlatBufferBuilder&&) = delete;

  // A byte vector of `size` bytes whose first byte is `alignment`-aligned (a power of two,
  // at most the page size; default the page size) in the finished buffer — and so in the file,
  // which finish() starts at offset 0 — for content mapped on its own later. Write it through
  // `data` or with fill_from_fd(). Uses FlatBuffers' PreAlign: the finished buffer's size
  // becomes a multiple of `alignment`, as the stock builder's would for the same calls.
  struct AlignedBytes {
    ::flatbuffers::Offset<::flatbuffers::Vector<std::uint8_t>> offset;
    std::uint8_t* data = nullptr;
  };
  AlignedBytes aligned_bytes(std::uint64_t size, std::uint64_t alignment = 0);

  // Copies `length` bytes from `source` into [dest, dest + length), which must lie in the
  // builder's buffer, through the file (pwrite(2) into its pages) rather than through the
  // mapping: no page faults, and the pages do not join the resident set. The way to write a
  // large blob from aligned_bytes() when its content is in memory in pieces. Throws Error
  // (EINVAL for a range outside the buffer; the write's errno, e.g. EIO).
  void fill(std::uint8_t* dest, const void* source, std::size_t length);

  // Copies `length` bytes of `fd` from `offset` into [dest, dest + length), which must lie
  // in the builder's buffer (from aligned_bytes() or CreateUninitializedVector), with pread(2)
  // straight into the file's pages, which are then dropped from the page tables (with
  // drop_written_pages, the default). Throws Error
  // naming `source` on a read error or an early end of file, EINVAL for a range outside the
  // buffer.
  void fill_from_fd(std::uint8_t* dest, int fd, std::uint64_t offset, std::uint64_t length,
                    const std::string& source);

  // Call after Finish(root) (or FinishSizePrefixed): makes the file exactly the buffer, at
  // offset 0 (see FlatBufferFinish::Method), and maps it read-only at data(). The builder
  // holds no buffer afterwards (GetBufferPointer() must not be used; further builder calls
  // throw EINVAL). Throws Error EINVAL if Finish was not called; ENOSPC or EIO from the copy
  // (a file on a full disk whose buffer does not start on a block boundary needs room for the
  // copy; a copy that fails part way may have overwritten the buffer's start, when the buffer
  // was more than half the capacity).
  FlatBufferFinish finish();
  // Finish(root, file_identifier), then finish().
  template <class T>
  FlatBufferFinish finish(::flatbuffers::Offset<T> root, const char* file_identifier = nullptr) {
    Finish(root, file_identifier);
    return finish();
  }

  // After finish(): the buffer, read-only, and its size.
  const std::uint8_t* data() const noexcept;
  std::uint64_t size() const noexcept;
  int fd() const noexcept;
  // The memfd name or the path.
  const std::string& name() const noexcept;

  // After finish(): fsync(2). Throws Error (EIO, ENOSPC...).
  void sync();
  // After finish(), staged targets only: as Region::publish (fsync, link or rename over the
  // target, fsync the directory; durable == false skips the fsyncs).
  void publish(bool durable = true);
  // After finish(), memfd targets only: the buffer as an immutable image (all four seals).
  // The builder is empty afterwards.
  SealedImage seal();

  MappedFlatBufferStats stats() const noexcept;

 private:
  friend class detail::FlatBufferAllocator;
  // EINVAL naming `operation` unless [dest, dest + length) lies in the buffer being built.
  void check_inside(const std::uint8_t* dest, std::uint64_t length, const char* operation) const;
  // Replaces the builder's vector by one whose block is the `reserved` bytes below the top,
  // holding `back` bytes of data at the top and `front` bytes of scratch at the bottom (the
  // bytes already there). What lets the allocator refuse a growth without leaving the vector
  // claiming room it does not have, and give more room than FlatBuffers asked for.
  void replace_vector(std::size_t reserved, std::size_t back, std::size_t front);
  // After a refused growth outside a table: the vector or string FlatBuffers had started is
  // abandoned, so that the next call does not find the builder "nested".
  void abandon_vector() noexcept;
};

struct FlatBufferReaderOptions {
  // FlatBuffers' Verifier limits. max_tables 0 (the default): sized to the buffer, one table
  // per 4 bytes but at least FlatBuffers' own default (1,000,000), so a large well-formed
  // buffer is never refused for its size while a hostile one cannot make verification visit
  // more tables than it has bytes.
  std::uint64_t max_tables = 0;
  std::uint32_t max_depth = 64;
  bool check_alignment = true;
};

// A zero-copy view of a FlatBuffers buffer: a whole file, a range of an fd, or a sealed image,
// mapped read-only. root<T>() runs FlatBuffers' Verifier for the root type T (generated code's
// table type) before handing out anything. A buffer of more than 2 GiB - 1 bytes is refused
// here (FlatBuffers cannot address it; its Verifier would assert).
//
// Every refusal is Error(EINVAL, "reading FlatBuffer", subject, detail), subject being the
// path, "fd N" ("fd N at offset X") or "sealed image fd N": an empty input, one larger than
// FlatBuffers can address, an fd offset that is not a multiple of 8, a range outside the
// file, a missing file identifier, and a buffer the Verifier refuses (corrupt, hostile, or
// written for another schema). System call failures keep their errno.
//
// HAZARD for files and fds: if another process truncates the file while it is mapped, reads
// past the new end raise SIGBUS (a sealed image cannot change; prefer it for untrusted input).
class MappedFlatBuffer {
 public:
  explicit MappedFlatBuffer(const std::filesystem::path& path);
  // [offset, offset + length) of `fd` (length 0: to the end). The fd need not outlive it.
  MappedFlatBuffer(int fd, std::uint64_t offset, std::uint64_t length);
  explicit MappedFlatBuffer(const SealedImage& image);
  ~MappedFlatBuffer();
  MappedFlatBuffer(MappedFlatBuffer&&) noexcept;
  MappedFlatBuffer& operator=(MappedFlatBuffer&&) noexcept;

  const std::uint8_t* data() const noexcept { return data_; }
  std::uint64_t size() const noexcept { return size_; }
  const std::string& name() const noexcept { return name_; }

  // The Verifier limits `options` give for this buffer (max_tables 0 sized to it), and a
  // Verifier over the buffer with them (for size-prefixed buffers, nested roots, or several
  // root types).
  ::flatbuffers::Verifier::Options verifier_options(const FlatBufferReaderOptions& options = {}) const;
  ::flatbuffers::Verifier verifier(const FlatBufferReaderOptions& options = {}) const;

  // The root table, once the Verifier accepts the buffer as a T (and, if given, the 4-byte
  // file identifier is there). Throws Error as above. The pointer lives as long as this view.
  template <class T>
  const T* root(const char* file_identifier = nullptr,
                const FlatBufferReaderOptions& options = {}) const {
    if (file_identifier != nullptr) check_identifier(file_identifier);
    ::flatbuffers::Verifier v = verifier(options);
    if (!v.VerifyBuffer<T>(file_identifier)) refuse_verification();
    return ::flatbuffers::GetRoot<T>(data_);
  }

 private:
  explicit MappedFlatBuffer(detail::MappedInput input);
  void check_identifier(const char* file_identifier) const;
  [[noreturn]] void refuse_verification() const;

  std::shared_ptr<const void> keep_alive_;
  const std::uint8_t* data_ = nullptr;
  std::uint64_t size_ = 0;
  std::string name_;
};

}  // namespace mapwright
