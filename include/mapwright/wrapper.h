// mapwright/wrapper.h — wrapper files: shared libraries and data blobs embedded in one file,
// written in place and published atomically, opened, verified and loaded at startup.
//
// The format (version 2) is one Cap'n Proto message and a fixed-size trailer (schema and
// layout: mapwright/wrapper.capnp, installed beside this header). Each entry holds a name, a kind (shared library or data), its bytes — in
// page-aligned chunks written straight into the mapped file — their size, a digest, and for
// a library the names of the library entries it needs loaded first. Stock readers (capnp
// decode) read it; a stock writer (MallocMessageBuilder) cannot make one that open()
// accepts, since every chunk must start 4096-aligned in the file.
//
// The FlatBuffers form (WrapperWriterOptions::format = WrapperFormat::kFlatBuffers;
// mapwright/wrapper.fbs) holds the same entries: a 16-byte header, the chunks (page-aligned,
// each entry one run addressed by a 64-bit offset and size, so the wrapper may pass
// FlatBuffers' 2 GiB), the metadata as one FlatBuffer that `flatc --json --raw-binary`
// decodes, and a 64-byte trailer with the metadata digest. Wrapper reads both forms into the
// same WrapperEntry values, with the same checks, digests and whole-file integrity; everything
// below holds for both unless it names Cap'n Proto. The writer builds the FlatBuffers form's
// metadata on the heap at publish() (its size follows the number of entries, not their bytes).
//
// Writing (WrapperWriter): the file is a staged Region (region.h) beside the target, built
// front to back by a MappedMessageBuilder (capnp.h): each add_*() puts one entry's bytes in
// the file at once — from a file with copy_file_range(2) into the file's pages (in the
// kernel, no buffer), from a span with memcpy into the mapping, or by your callback writing
// into the mapped span — and hashes them through the mapping; publish() writes the metadata
// after the last blob, then (durable, the default) fsyncs, links and renames the file over
// the target. Until publish() returns, the target is untouched: a crash or a
// thrown Error leaves the previous file or no file, never a half-written one.
//
// When the file cannot grow (a full disk: ENOSPC; RLIMIT_FSIZE, `ulimit -f`: EFBIG; the
// region's capacity: ENOMEM), the writer says so with an Error and the process goes on:
//   * every byte the writer stores is backed (Region::ensure) before it is stored: the
//     constructor backs the header, each add_*() backs a chunk before writing into it, and
//     publish() backs room for all the metadata before it writes any. So the failure is an
//     Error from the call that needed room — never a SIGBUS — naming the wrapper, the entry
//     and the growth: "writing wrapper 'app.mwr' entry 'blob': growing region to 32 MiB: No
//     space left on device";
//   * no write extends the file: copy_file_range(2) writes only into backed bytes below
//     RLIMIT_FSIZE (the kernel raises SIGXFSZ for any write at or past the limit, inside the
//     file or not; there the bytes are read into the mapping instead). So `ulimit -f` gives
//     EFBIG, never SIGXFSZ;
//   * a failed add_*() adds nothing, and the blobs it had written are discarded (zero, no
//     blocks: MappedMessageBuilder::discard) — never left to an Orphan's destructor, which
//     would store zeros into pages that are not backed. The writer stays usable: add less,
//     or publish() what it has once there is room. A publish() that could not back its
//     metadata wrote nothing and can be called again;
//   * a writer destroyed unpublished (after a failure or not) leaves nothing: the staged file
//     has no name (or its hidden name is removed), and the target is untouched.
//
// Disk and memory. A wrapper costs disk blocks for its bytes and metadata only: the unused
// tails of Cap'n Proto segments (files over 4 GiB; up to one chunk per 4 GiB) and discarded
// blobs are holes, so `du` can show less than `ls -l` (capnp.h, "Disk blocks"). The writer's
// resident set does not grow with the file: what it copied or you filled is dropped from its
// page tables once hashed, 8 MiB at a time (the bytes stay in the file and the page cache;
// durable writers start their write-back then too), and at most 16 MiB wait for the digest
// thread — some 25 MiB mapped at the peak, whatever the size. add_data() with a fill
// function keeps up to one chunk (chunk_bytes) mapped while the callback writes it.
//
// Reading (Wrapper): open() maps the file read-only and checks everything a reader relies on
// before handing out any byte (the list is in wrapper.capnp; the metadata digest included); the entries are then plain
// C++ values and each entry's bytes a zero-copy span of the mapping. verify() hashes the
// bytes and compares each digest, and checks every other byte of the file (below). load_library() copies a library entry in the kernel from
// the wrapper's fd into a sealed memfd and dlopen()s it (loader.h): nothing is written to
// disk.
//
// Wrappers inside larger files (format version 2). A wrapper can sit at any multiple of 4096
// inside a larger file — appended to an executable padded with zeros to a page, say
// (`mapwright pack --append-to`, or WrapperWriterOptions::prefix) — since every chunk
// offset is a multiple of 4096 within the wrapper and so stays page-aligned in the file.
// open(fd, offset, size) opens one where you know it is; open_embedded() finds one from the
// end of the file: the trailer, always the wrapper's last 88 bytes, says how long it is.
// Everything open() checks, it checks within the wrapper's range, and nothing outside the
// range is read or trusted. Positions in error messages ("byte N") count from the wrapper's
// first byte; WrapperEntry::offset is a FILE offset (what pread(2), mmap(2) and the loader
// take), and offset() says where the wrapper starts.
//
// Whole-file integrity (format version 2): every byte of the file is covered by an entry's
// digest (its chunks), by the metadata digest (segment table, root, names, kinds,
// dependencies, digests, chunk pointers: checked by open(), which reads no blob), or must be
// zero (padding, gaps, unused segment tails: checked by verify()); the trailer is checked
// byte for byte. So open() or verify() refuses any single flipped bit anywhere. Version 1
// files (written before) are still read, but their metadata is covered by no digest:
// metadata_checked() is false, and a flip there can go unnoticed — repack them.
//
// What the digest is, and is not: XXH3-128 (xxHash, Debian's libxxhash-dev) of each entry's
// bytes, and of the metadata. It detects accidental damage — a flipped bit or byte, a truncated or torn copy, a
// block from another file — with overwhelming probability (a random change goes unnoticed
// with probability 2^-128). It is NOT a signature and not a cryptographic hash: anyone who
// can change the file can change the digest beside the bytes, or craft other bytes with the
// same digest. To trust a wrapper from someone else, check a signature over the whole file
// (or deliver it as a sealed image, sealed_image.h) before opening it.
//
// Hazards, plainly:
//   * A Wrapper maps a file that someone else may still change (an ordinary file is not
//     sealed). open() checks the structure once; verify() checks the bytes at the time it
//     runs; spans from entry() show the file as it is when they are read. A file rewritten
//     in place after verify() changes data entries unchecked — and if it is truncated,
//     touching a mapped entry past the new end raises SIGBUS. Publish wrappers by rename (as WrapperWriter
//     does), never rewrite them in place; or open a SealedImage, which cannot change.
//   * Spans from entry() are valid while their Wrapper lives (moving a Wrapper keeps them).
//   * load_library() checks the digest of the bytes it loads (the sealed copy, just before
//     dlopen()), so a library that does not match its entry is never loaded, even if the
//     file changed after open(). verify() checks every entry, data included, in one go.
//   * A Library from load_library() holds its own sealed copy: it may outlive the Wrapper.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "mapwright/capnp.h"
#include "mapwright/lazy.h"
#include "mapwright/loader.h"
#include "mapwright/region.h"
#include "mapwright/sealed_image.h"

namespace mapwright {

// "MWRAPPER" read as a little-endian integer; the root's first field.
inline constexpr std::uint64_t kWrapperMagic = 0x524550504152574dull;
// The format version this build writes (it reads this one, version 1, and version 3).
inline constexpr std::uint32_t kWrapperFormatVersion = 2;
// The version of a file with a compressed entry: version 2's layout and checks, plus
// compressed entries (older readers refuse it by its version instead of misreading it).
inline constexpr std::uint32_t kWrapperCompressedFormatVersion = 3;
// The size of the trailer, the last bytes of a version 2 wrapper (wrapper.capnp).
inline constexpr std::uint64_t kWrapperTrailerBytes = 88;
// The default size of an entry's chunks (a Cap'n Proto Data blob is < 512 MiB).
inline constexpr std::uint64_t kDefaultChunkBytes = 256ull << 20;
// Every chunk starts at a file offset that is a multiple of this, whatever the page size.
inline constexpr std::uint64_t kWrapperAlignment = 4096;
// The longest entry name, in bytes.
inline constexpr std::size_t kMaxEntryNameBytes = 4096;

// The two forms of a wrapper file. Both hold the same entries under the same rules, checks
// and digests; mapwright writes either and reads both.
enum class WrapperFormat {
  // One Cap'n Proto message holding the chunks, and a trailer (wrapper.capnp; format versions
  // 1 to 3). `capnp decode` reads it whole. The default.
  kCapnProto,
  // A header, the chunks, then the metadata as one FlatBuffer (64-bit chunk offsets and
  // sizes: the wrapper may exceed the 2 GiB of a FlatBuffer) and a trailer (wrapper.fbs,
  // form version 1). `flatc --json --raw-binary` decodes the metadata.
  kFlatBuffers,
};
// "capnp", "flatbuffers".
const char* to_string(WrapperFormat format) noexcept;
// The FlatBuffers form (wrapper.fbs): its version, header and trailer sizes.
inline constexpr std::uint32_t kFlatWrapperFormatVersion = 1;
inline constexpr std::uint64_t kFlatWrapperHeaderBytes = 16;
inline constexpr std::uint64_t kFlatWrapperTrailerBytes = 64;

enum class EntryKind { kSharedLibrary, kData };
// "library", "data".
const char* to_string(EntryKind kind) noexcept;

// An XXH3-128 digest in canonical (big-endian) byte order.
struct Digest {
  std::array<std::byte, 16> bytes{};
  // 32 lowercase hex digits, as xxh128sum prints them.
  std::string hex() const;
  friend bool operator==(const Digest&, const Digest&) = default;
};
// The digest of `bytes`.
Digest digest_of(std::span<const std::byte> bytes) noexcept;

// ---- writing --------------------------------------------------------------------------

// How far a WrapperWriter has got, for progress displays.
struct WriteProgress {
  std::string_view entry;         // the entry being written (valid during the call only)
  std::uint64_t entry_done = 0;   // its bytes written so far
  std::uint64_t entry_size = 0;   // while streaming (!entry_size_known): entry_done
  std::uint64_t total_done = 0;   // bytes of all entries written so far
  // false while an entry of unknown size is streamed (a pipe, a FIFO, a /proc file): its
  // size is known once the end of the stream is reached.
  bool entry_size_known = true;
};

// How an entry's bytes are stored.
enum class EntryCompression {
  kNone,  // as they are: the chunks are the bytes
  kZstd,  // in independent zstd frames (wrapper.capnp, "frameEnds"; format version 3)
};
// "none", "zstd".
const char* to_string(EntryCompression compression) noexcept;

// Compression for the entries a writer adds (WrapperWriterOptions::compression).
struct WrapperCompression {
  EntryCompression method = EntryCompression::kNone;
  // Uncompressed bytes per frame: a multiple of 4096 from 4 KiB to 64 MiB. A lazily mapped
  // entry (Wrapper::lazy) decodes one frame per first touch: smaller frames give a faster
  // first byte. The ratio depends little on it (zstd picks its parameters by input size: 16
  // MiB of numbered text at level 3 kept 23.4% in 64 KiB frames, 26.4% in 256 KiB, 25.3% in
  // 1 MiB). 256 KiB by default.
  std::uint64_t frame_bytes = 256ull << 10;
  // zstd's level, 1 (fastest) to zstd's maximum (22 in zstd 1.5; the tool takes 1 to 19); 0
  // is zstd's default (3). Anything else is refused (EINVAL) by the constructor.
  int level = 3;
};

struct WrapperWriterOptions {
  // Which form to write (WrapperFormat). In the FlatBuffers form an entry's chunks follow
  // each other and are recorded as one run (offset and size, 64-bit); chunk_bytes still
  // decides how fill callbacks see the entry; `message` is not used.
  WrapperFormat format = WrapperFormat::kCapnProto;
  // Recorded in the file; `mapwright inspect` shows it.
  std::string producer = "mapwright";
  // Entries larger than this are split into chunks of this size (the last one shorter).
  // A multiple of 4096, at most 512 MiB - 4096. An entry of a known size starts at a
  // multiple of the largest power of two that is at most its first chunk's length / 16,
  // between 4096 and 2 MiB, and that divides chunk_bytes (so its chunks still follow each
  // other): the page cache then holds it in large folios, which copying and hashing it
  // need far less work for (a 1 GiB entry packs some 30% faster than at 4096). The padding
  // is a hole, at most 1/16 of the first chunk. Streams start at multiples of 4096.
  std::uint64_t chunk_bytes = kDefaultChunkBytes;
  // The staged region's options (capacity: the largest file it can write, 64 GiB). Growth
  // steps are capped at 16 MiB: entries are backed with ensure() as they are written, so
  // bigger steps only allocate disk space that publish() gives back.
  RegionOptions region{.max_step = 16ull << 20};
  // The message's options (capnp.h). Smaller segments make chunks of one entry land in
  // different segments, with gaps between them, as in files over 4 GiB; tests use that.
  MappedMessageOptions message;
  // true: publish() waits until the file is on disk (fsync) before it renames it into place,
  // and write-back starts as each entry is written. false: no waiting for the disk — still
  // atomic against a crash of the process, not against a power loss (Region::publish).
  bool durable = true;
  // Hash each entry on a second thread while it is copied (entries of 32 MiB or more, on a
  // machine with more than one CPU). The digest is the same either way.
  bool parallel_digest = true;
  // Called from the writing thread after every few MiB copied (for add_data with a fill
  // function: as each chunk's bytes are hashed, after fill returned), and at the end of each
  // entry.
  // May throw to abandon the write (the exception propagates out of add_*()).
  std::function<void(const WriteProgress&)> progress;
  // Non-empty: the file written is a copy of this one (an executable, say), zeros up to the
  // next multiple of 4096, then the wrapper (Wrapper::open_embedded finds it there; the
  // kernel runs an ELF executable with bytes appended as it ran the original). The file is
  // copied by the constructor, in the kernel (copy_file_range; else read into the mapping),
  // into the staged file, before any entry: no second copy of the wrapper is made. publish()
  // gives the target this file's permission bits (& 0777: an executable stays executable;
  // set-user-ID and set-group-ID are not copied, as cp(1) does not), whatever the file it
  // replaces had. It must be a regular file (EINVAL, "not a regular file", for a directory,
  // FIFO, device or procfs/sysfs file; /proc/self/exe opens the executable and is fine) and
  // not the target itself (EINVAL: the staged copy would be published over its own source;
  // write elsewhere and rename). An empty file gives a plain wrapper at offset 0. One that
  // changes size while it is copied is an Error (EIO); nothing is published either way.
  // Hazard: a writer holds its file open for writing until it is destroyed, and execve(2)
  // refuses such a file (ETXTBSY): destroy the writer before running what it wrote.
  std::filesystem::path prefix;
  // Compressed entries (format version 3): each entry added is stored as independent zstd
  // frames of compression.frame_bytes (Debian's libzstd), compressed and hashed as it is read,
  // never held whole in memory (one frame and its compressed form at a time). The digest is
  // over the uncompressed bytes, so `xxh128sum` of what `mapwright extract` writes matches
  // it. An entry that a 4 GiB Cap'n Proto segment boundary would split (only in files over
  // 4 GiB) is refused with Error(EFBIG): write it uncompressed. A library entry is checked
  // as ELF (above) through its decoded frames. kNone (the default): bytes as they are.
  WrapperCompression compression;
};

class WrapperWriter {
 public:
  // Starts a wrapper that publish() will place at `target` (its directory must exist; the
  // file is staged there, so it needs room for the whole wrapper). Backs the file's first
  // growth step at once: a full disk or RLIMIT_FSIZE is an Error here. Throws Error.
  // The target must be a regular file or not exist: a directory (also "dir/"), a FIFO,
  // socket or device, a symbolic link to one, or a dangling link is refused here, before
  // anything is written (Error EISDIR, EINVAL "not a regular file", ENOENT). A symbolic
  // link to a regular file is kept: the file it names is staged beside and replaced.
  // publish() gives the new file the mode of the file it replaces (and its owner and group
  // where allowed, as for root), and never writes through or removes anything else.
  explicit WrapperWriter(const std::filesystem::path& target, WrapperWriterOptions options = {});
  WrapperWriter(WrapperWriter&&) noexcept;
  WrapperWriter& operator=(WrapperWriter&&) noexcept;
  // Without publish(), the staged file disappears with the writer; the target is untouched.
  ~WrapperWriter();

  // Each add_*() writes the entry's bytes into the file before it returns. `name` must be
  // non-empty, free of NUL bytes, at most 4096 bytes, and not used by an earlier entry;
  // otherwise Error(EINVAL or EEXIST) and nothing is added. A file that cannot grow is an
  // Error (ENOSPC, EFBIG, ENOMEM) naming the entry; nothing is added (see the top of this
  // file). A library's `depends` name other
  // library entries, added before or after it; they are checked at publish().
  //
  // A library's bytes must be what dlopen() can load: an ELF shared object (ET_DYN, not a
  // relocatable .o, an executable or a position-independent executable) of this process's
  // class, byte order and machine, whose program headers, loadable segments and dynamic
  // section lie inside it. Else Error(EINVAL) naming the entry, the file and the reason
  // ("entry 'x' from 'foo.o': not a shared library (ELF type ET_REL)", "...: built for
  // machine EM_AARCH64, this system runs EM_X86_64", "...: truncated ELF: ..."), and nothing
  // is added. Its SONAME and DT_NEEDED names are kept for publish().
  //
  // From a file: a regular file is copied in the kernel (copy_file_range, else pread into
  // the mapping); one that shrinks while it is copied is an Error. A FIFO, a socket, a file
  // on procfs or sysfs, and any regular file whose size reads 0 (/proc/self/status reads 0
  // but has content) are streamed until end of file, as add_*_stream() does. The path is
  // opened O_NONBLOCK, so open() never waits; but a FIFO with no writer is then waited for
  // (as `cat` would), until one opens it and closes it again. A character or block device
  // (/dev/zero would never end) and a directory are refused: Error(EINVAL), "not a regular
  // file or a stream", nothing added.
  void add_library(std::string_view name, const std::filesystem::path& path,
                   std::vector<std::string> depends = {});
  void add_library(std::string_view name, std::span<const std::byte> bytes,
                   std::vector<std::string> depends = {});
  void add_data(std::string_view name, const std::filesystem::path& path);
  void add_data(std::string_view name, std::span<const std::byte> bytes);
  // `size` bytes written by `fill`, in place: fill(chunk, offset) is called for each chunk
  // in order, `chunk` being the mapped bytes of the file from `offset` within the entry
  // (zero-filled; whatever fill leaves there is the entry). Exceptions from fill propagate
  // and nothing is added.
  using FillChunk = std::function<void(std::span<std::byte> chunk, std::uint64_t offset)>;
  void add_data(std::string_view name, std::uint64_t size, const FillChunk& fill);
  // From `fd` (the caller keeps it), read from its position until end of file: standard
  // input, a pipe, a socket. The size need not be known: chunks are allocated as the bytes
  // come (64 KiB, then twice as much each time, up to 16 MiB or chunk_bytes if smaller; each
  // a multiple of 4096, so one entry's chunks follow each other), read(2) straight into the
  // mapped file, and the unused tail of the last one is given back
  // (MappedMessageBuilder::shrink, which zeroes it first: so the resident set stays within
  // some 30 MiB, as for a file). A
  // non-blocking fd is waited on (poll), never spun on. Progress reports have
  // entry_size_known == false until the end. A read error is an Error naming `source` (a
  // name for messages, e.g. "standard input") and the entry; a file that cannot grow is the
  // same Error as for the other add_*(); either way nothing is added (bytes already read
  // from the fd are gone from it).
  void add_library_stream(std::string_view name, int fd, const std::string& source,
                          std::vector<std::string> depends = {});
  void add_data_stream(std::string_view name, int fd, const std::string& source);

  // Writes the metadata and then the trailer with the metadata digest (wrapper.capnp,
  // "Integrity"), checks the dependencies (each names a library entry, none itself, no
  // cycle, none twice, none without a SONAME — the dynamic linker matches DT_NEEDED names
  // against SONAMEs, so it could never use such an entry for the dependent; else
  // Error(EINVAL) naming the entry and nothing is published; a dependency whose SONAME the
  // dependent does not list is accepted), then fsyncs and
  // atomically replaces the target. Returns the file's size. The writer is spent afterwards.
  // Room for the metadata and the trailer is backed before any of it is written: if the
  // file cannot grow that far, Error (ENOSPC, EFBIG) with nothing written, and publish() can
  // be called again once there is room. A failure after that point (fsync, rename) spends
  // the writer too. With options.prefix, the size returned is the whole file's (the prefix,
  // the padding and the wrapper).
  std::uint64_t publish();

  std::uint64_t entry_count() const noexcept;
  const std::filesystem::path& target() const noexcept;
  // Where the wrapper starts in the file: 0, or with options.prefix its size rounded up to
  // a multiple of 4096.
  std::uint64_t wrapper_offset() const noexcept;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// ---- reading --------------------------------------------------------------------------

// One entry of an open Wrapper. Plain values, checked by open(); the spans point into the
// Wrapper's read-only mapping and are valid while the Wrapper lives.
struct WrapperEntry {
  std::string name;
  EntryKind kind = EntryKind::kData;
  std::uint64_t size = 0;  // the entry's bytes (uncompressed)
  // kZstd: `chunks` hold stored_size bytes of zstd frames, frame i decoding to frame_bytes
  // bytes (the last to the rest of size) and ending at frame_ends[i] of the stored bytes;
  // read the entry with Wrapper::lazy(), image(), load_library() or extract, not through
  // `chunks`. kNone: stored_size == size, frame_bytes 0, no frame_ends.
  EntryCompression compression = EntryCompression::kNone;
  std::uint64_t stored_size = 0;
  std::uint64_t frame_bytes = 0;
  std::vector<std::uint64_t> frame_ends;
  // The offset of its first byte (of its first chunk) in the FILE, not in the wrapper: for a
  // wrapper at Wrapper::offset() X, X plus the offset within the wrapper. 0 if empty.
  std::uint64_t offset = 0;
  Digest digest;
  std::vector<std::string> dependencies;
  // The stored bytes, chunk by chunk, in order (none for an empty entry).
  std::vector<std::span<const std::byte>> chunks;

  // True when the chunks follow each other without a gap (always, in files under 4 GiB, and
  // for a compressed entry).
  bool contiguous() const noexcept;
  // The whole entry as one span. Throws Error(EINVAL) if !contiguous() (use chunks()) or if
  // the entry is compressed (use Wrapper::lazy() or image()).
  std::span<const std::byte> bytes() const;
};

struct WrapperOpenOptions {
  // Used in error messages; empty: the path, or "wrapper fd N".
  std::string name;
};

// Libraries loaded together, unloaded in reverse order of loading.
class LoadedLibraries {
 public:
  LoadedLibraries() = default;
  LoadedLibraries(LoadedLibraries&&) noexcept = default;
  LoadedLibraries& operator=(LoadedLibraries&& other) noexcept;
  ~LoadedLibraries();

  std::size_t size() const noexcept { return libraries_.size(); }
  // In load order (dependencies first).
  const Library& operator[](std::size_t i) const { return libraries_[i]; }
  // The library loaded for entry `name`. Throws Error(ENOENT).
  const Library& at(std::string_view name) const;
  auto begin() const noexcept { return libraries_.begin(); }
  auto end() const noexcept { return libraries_.end(); }

 private:
  friend class Wrapper;
  friend class LibraryBundle;  // share.h: LibraryBundle::load()
  void clear() noexcept;
  std::vector<Library> libraries_;
  std::vector<std::string> names_;
};

class Wrapper {
 public:
  // Opens and maps `path` read-only and checks its structure (see wrapper.capnp, or
  // wrapper.fbs for the FlatBuffers form, told apart by its header) and, but in Cap'n Proto
  // version 1, the metadata digest; it reads no entry's bytes. Throws Error: ENOENT and
  // friends from open(2); EINVAL for anything malformed, naming the entry and what is wrong
  // ("wrapper 'app.mwr': entry 'libfoo.so': chunk 2 starts at ... which is not
  // page-aligned"), or for what is not a wrapper at all; EBADMSG for a damaged file: "the
  // metadata digest does not match: the file is damaged", a damaged trailer, a segment table
  // that disagrees with the trailer, "truncated at byte N of M expected", "N bytes after the
  // wrapper"; ENODEV for what is not a regular file (a FIFO, a device, a procfs or sysfs
  // file: "not a regular file: a FIFO"), refused without waiting (opened O_NONBLOCK).
  // Nothing is read past a bound that was not checked first.
  static Wrapper open(const std::filesystem::path& path, WrapperOpenOptions options = {});
  // The same over an fd (dup()ed; the caller keeps its own), read from offset 0 to its end.
  static Wrapper open(int fd, WrapperOpenOptions options = {});
  // The same over a sealed image: nobody can change it after the checks.
  static Wrapper open(const SealedImage& image, WrapperOpenOptions options = {});
  // The wrapper that occupies [offset, offset + size) of the file open on `fd` (dup()ed);
  // size 0: up to the end of the file. Every check of open() applies within that range (the
  // trailer must be its last 88 bytes, 64 in the FlatBuffers form; a byte after the
  // wrapper's end but inside the range is "N bytes after the wrapper"), and nothing outside
  // it is read. Throws Error(EINVAL,
  // kCause) for an offset that is not a multiple of 4096 ("offset 100 is not a multiple of
  // 4096: ..."; the chunks would not be page-aligned in the file, which the loader and
  // mmap(2) need), an offset past the end of the file, or a range that runs past it; then
  // whatever open() throws for the bytes. The fd is not checked to be a regular file.
  static Wrapper open(int fd, std::uint64_t offset, std::uint64_t size,
                      WrapperOpenOptions options = {});
  // Finds a version 2 or FlatBuffers-form wrapper at the END of `path` — appended to an
  // executable, say; the whole file if it is one — from its trailer (the last 88 bytes, or 64
  // in the FlatBuffers form, say the wrapper's size),
  // and opens it as open(fd, file size - wrapper size, wrapper size) does. /proc/self/exe
  // works: a program finds a wrapper appended to itself. The file must be a regular file
  // (else ENODEV, as open(path)). Nothing found is Error(ENOMSG), kept apart from damage
  // inside a wrapper that was found (EBADMSG, EINVAL as for open()): "no wrapper at the end
  // of the file: its last 88 bytes are not a wrapper's trailer (...)" (also for a file
  // shorter than a trailer), "...: its trailer says the wrapper has N bytes, more than the
  // file's M", "...: its trailer puts the wrapper's first byte at N, which is not a multiple
  // of 4096". A file that BEGINS with a wrapper but has no usable trailer at its end is a
  // whole wrapper with its end damaged (truncated, bytes appended): the Error is what open()
  // says of it (EBADMSG, "truncated at byte N of M expected", "N bytes after the wrapper"),
  // so the tool reports whole files exactly as before. A version 1 wrapper has no trailer:
  // refused with Error(ENOTSUP) saying so ("a format version 1 wrapper: ... open it as a
  // whole file, or repack it"); open() still reads it.
  static Wrapper open_embedded(const std::filesystem::path& path, WrapperOpenOptions options = {});
  // The same over an fd (dup()ed; the caller keeps its own).
  static Wrapper open_embedded(int fd, WrapperOpenOptions options = {});

  Wrapper(Wrapper&&) noexcept;
  Wrapper& operator=(Wrapper&&) noexcept;
  ~Wrapper();

  const std::string& name() const noexcept;
  // Which form the file has (WrapperFormat).
  WrapperFormat format() const noexcept;
  // Cap'n Proto form: 2, 3 with a compressed entry, or 1 for a file written before
  // whole-file integrity. FlatBuffers form: its own version, kFlatWrapperFormatVersion (1).
  std::uint32_t format_version() const noexcept;
  // FlatBuffers form: the metadata FlatBuffer (root WrapperFile of wrapper.fbs), a span of
  // the mapping, for `flatc` or your own reader. Cap'n Proto form: empty (`capnp decode`
  // reads the file itself).
  std::span<const std::byte> metadata() const noexcept;
  // True when the metadata is covered by a digest that open() checked (version 2); false for
  // version 1 files, whose names, kinds, dependencies and layout no digest covers.
  bool metadata_checked() const noexcept;
  const std::string& producer() const noexcept;
  // Where the wrapper starts in its file (a multiple of 4096; 0 unless it was opened at an
  // offset or found at the end of a larger file) and its size in bytes, trailer included.
  std::uint64_t offset() const noexcept;
  std::uint64_t size() const noexcept;
  // The same as size(): the wrapper's bytes, which are the whole file's when offset() is 0
  // and nothing follows (the name is older than wrappers inside larger files).
  std::uint64_t file_size() const noexcept;
  // The fd of the whole file that holds the wrapper (a dup of the caller's, or the sealed
  // image's); entries' offsets are offsets in it.
  int fd() const noexcept;

  // In file order.
  const std::vector<WrapperEntry>& entries() const noexcept;
  // The entry called `name`: find() gives nullptr, entry() throws Error(ENOENT).
  const WrapperEntry* find(std::string_view name) const noexcept;
  const WrapperEntry& entry(std::string_view name) const;

  // Hands the entry's bytes to take(piece, offset in the entry), in order: its chunks (spans
  // of the mapping), or for a compressed entry each frame as it is decoded (a buffer reused
  // for the next: copy what you keep). Nothing is checked against the digest (verify_entry()
  // does). Throws Error(EBADMSG, "decoding wrapper entry") for a frame that does not
  // decode, naming the frame, and whatever `take` throws.
  using ReadPiece = std::function<void(std::span<const std::byte> piece, std::uint64_t offset)>;
  void read_entry(const WrapperEntry& entry, const ReadPiece& take) const;

  // Hashes the entry's bytes (decoded, if compressed) and compares them with its digest.
  bool verify_entry(const WrapperEntry& entry) const noexcept;
  // Version 2: hashes the metadata again and compares it with the trailer's digest, and checks
  // that every byte outside the chunks and the metadata is zero; throws Error(EBADMSG) naming
  // the first damaged range ("byte N, before entry #0 'x' chunk 0, is not zero"). It reads the
  // whole file but the chunks. Version 1: nothing to check (metadata_checked() is false).
  void verify_metadata() const;
  // verify_metadata(), then every entry; throws Error(EBADMSG) naming what does not match.
  void verify() const;

  // Entry `name` (of either kind) as a sealed image: its bytes copied into a new memfd,
  // sealed, and hashed against the entry's digest (Error(EBADMSG) if they differ). Made once
  // per Wrapper: later calls return the same image (thread-safe), so that an InstancePool
  // (pool.h) finds its slots already holding it. Throws Error(ENOENT) for no such entry, or
  // what making the memfd throws. The copy reads the file through its mapping (see the
  // hazards at the top).
  SealedImage image(std::string_view name) const;

  // Entry `name` (of either kind) as a LazyImage (lazy.h): a private, writable copy whose
  // pages are filled on first touch, in the touching thread. A compressed entry decodes the
  // one frame that holds the touched page (the frame is the window; options.window_pages is
  // not used for it): touching one page of a 1 GiB entry decodes 256 KiB, not 1 GiB. An
  // uncompressed one is copied from the file (LazySource::file, options.window_pages pages
  // per fault). The image maps the file itself and may outlive this Wrapper; the images of one
  // compressed entry share that mapping and its decoder slots (lazy.h), made by the first
  // call (thread-safe) and kept until this Wrapper and those images are gone. Its bytes are
  // not checked against the digest (verify() or image() do that): a frame that does not
  // decode is a failed fill (EBADMSG, "filling lazy image '<wrapper>:<entry>' ... (touch at
  // offset N): Bad message (Data corruption detected)"), an Error inside guarded() and one
  // line and death outside it (lazy.h, "Rules"). options.name defaults to
  // "<wrapper>:<entry>". Throws what LazyImage's constructor throws (userfaultfd unavailable:
  // Error, or with options.fallback = kEager every frame decoded now, EBADMSG if one does
  // not decode), Error(ENOENT) for no such entry, EINVAL for an uncompressed entry whose
  // chunks have gaps (files over 4 GiB: use image()).
  LazyImage lazy(std::string_view name, LazyOptions options = {}) const;

  // Loads one library entry (kind kSharedLibrary; else Error(EINVAL)): copied in the kernel
  // from fd() into a sealed memfd (loader.h, step 2; on ext4 copy_file_range refuses a
  // memfd, so it is sendfile: ~1-2 ms per 8 MB here), hashed, and dlopen()ed; a copy that
  // does not match the entry's digest is refused with Error(EBADMSG). Its dependencies must
  // already be loaded and alive (else the dynamic linker looks for them on disk): use
  // load_with_dependencies() or load_all() to have that done. options.name defaults to
  // "<wrapper>:<entry>"; options.check, if set, runs after the digest check.
  Library load_library(std::string_view name, LoadOptions options = {}) const;
  // `name`'s dependencies (depth first, each once), then `name`. Here options.name, if set,
  // replaces "<wrapper>" in each library's "<wrapper>:<entry>" name. With
  // options.link_namespace == kNew, all of them go into ONE new namespace (the first makes
  // it, the rest are loaded beside it), so that each finds its dependencies there before
  // anything else, never the program's own libraries (loader.h, "Namespaces"); in the default
  // namespace, a library whose SONAME the program already has loaded is refused (EEXIST). A
  // DT_NEEDED name that is neither loaded nor on disk is ENOEXEC with dlerror()'s text and
  // "add it to the wrapper as a library entry and name it as a dependency of '<entry>'".
  LoadedLibraries load_with_dependencies(std::string_view name, LoadOptions options = {}) const;
  // Every library entry, each after its dependencies (in one new namespace, as above).
  LoadedLibraries load_all(LoadOptions options = {}) const;

 private:
  struct State;
  explicit Wrapper(std::unique_ptr<State> state) noexcept;
  LoadedLibraries load_in_order(const std::vector<std::size_t>& order,
                                const LoadOptions& options) const;
  std::unique_ptr<State> state_;
};

}  // namespace mapwright
