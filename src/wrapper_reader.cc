// Wrapper: open() checks the whole structure once and turns it into plain values; after that
// nothing reads Cap'n Proto again (no traversal limit to run out of, no pointer to chase).
//
// Format version 2 (wrapper.capnp, "Integrity"): open() finds the trailer at the end of the
// wrapper, checks that the segment table agrees with it, hashes the metadata (never a chunk)
// and compares the digest before it reads any field; then the chunks must lie between the
// hashed prefix and the metadata. verify_metadata() hashes the metadata again and checks
// that the rest of that range, outside the chunks, is zero.
//
// A wrapper occupies [base, base + size) of its file (base 0 and the file's size unless it
// was opened at an offset or found from the end of a larger file). Every position below is
// relative to base, except WrapperEntry::offset, which is a file offset for the loader and
// the reader of the file; nothing outside the range is read.

#include "mapwright/wrapper.h"

#include <fcntl.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <exception>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>

#include <kj/exception.h>

#include "capnp_frame.h"
#include "digest.h"
#include "mapwright/capnp.h"
#include "mapwright/error.h"
#include "os/os.h"
#include "wrapper.capnp.h"
#include "wrapper_graph.h"
#include "entry_image.h"
#include "wrapper_flat.h"
#include "wrapper_integrity.h"
#include "zstd_frames.h"
#include "mapped_input.h"

namespace mapwright {
namespace {

// For errors whose detail is the whole cause (bad input): no strerror() text after it.
constexpr Error::DetailIsCause kCause{};

constexpr const char* kOpen = "opening wrapper";

std::string str(std::uint64_t value) { return std::to_string(value); }

std::string entry_label(std::size_t index, std::string_view name) {
  return "entry #" + str(index) + (name.empty() ? std::string() : " '" + detail::printable(name) + "'");
}

}  // namespace

const char* to_string(WrapperFormat format) noexcept {
  switch (format) {
    case WrapperFormat::kCapnProto: return "capnp";
    case WrapperFormat::kFlatBuffers: return "flatbuffers";
  }
  return "unknown";
}

const char* to_string(EntryCompression compression) noexcept {
  switch (compression) {
    case EntryCompression::kNone: return "none";
    case EntryCompression::kZstd: return "zstd";
  }
  return "unknown";
}

// ---- WrapperEntry, LoadedLibraries --------------------------------------------------------

bool WrapperEntry::contiguous() const noexcept {
  for (std::size_t i = 1; i < chunks.size(); ++i) {
    if (chunks[i].data() != chunks[i - 1].data() + chunks[i - 1].size()) return false;
  }
  return true;
}

std::span<const std::byte> WrapperEntry::bytes() const {
  if (compression != EntryCompression::kNone) {
    throw Error(EINVAL, "reading wrapper entry", name,
                std::string("(it is stored compressed (") + to_string(compression) +
                    "): read it with Wrapper::lazy(), image() or `mapwright extract`)",
                kCause);
  }
  if (chunks.empty()) return {};
  if (!contiguous()) {
    throw Error(EINVAL, "reading wrapper entry", name,
                "(its " + str(chunks.size()) + " chunks are not contiguous in the file: use chunks)",
                kCause);
  }
  return {chunks.front().data(), size};
}

LoadedLibraries& LoadedLibraries::operator=(LoadedLibraries&& other) noexcept {
  if (this != &other) {
    clear();
    libraries_ = std::move(other.libraries_);
    names_ = std::move(other.names_);
  }
  return *this;
}

LoadedLibraries::~LoadedLibraries() { clear(); }

void LoadedLibraries::clear() noexcept {
  while (!libraries_.empty()) libraries_.pop_back();  // dependents first
  names_.clear();
}

const Library& LoadedLibraries::at(std::string_view name) const {
  for (std::size_t i = 0; i < names_.size(); ++i) {
    if (names_[i] == name) return libraries_[i];
  }
  throw Error(ENOENT, "finding loaded library", std::string(name), "(not in this set)");
}

// ---- Wrapper::State: the checks -------------------------------------------------------------

// The smallest wrapper of either form: a Cap'n Proto trailer (88 bytes), or a FlatBuffers
// header, an 8-byte metadata buffer and a trailer (also 88).
constexpr std::uint64_t kSmallestWrapper =
    std::min(kWrapperTrailerBytes, kFlatWrapperHeaderBytes + 8 + kFlatWrapperTrailerBytes);

// Where the trailer at the end of a file of `file` bytes, saying the wrapper has
// `wrapper_size` bytes, puts its wrapper's first byte, or nothing, with why in *why: a size
// past the file, smaller than any wrapper, or a start that is not a multiple of
// kWrapperAlignment.
static std::optional<std::uint64_t> wrapper_start(std::uint64_t wrapper_size, std::uint64_t file,
                                                  std::string* why) {
  if (wrapper_size > file) {
    *why = "its trailer says the wrapper has " + str(wrapper_size) +
           " bytes, more than the file's " + str(file);
    return std::nullopt;
  }
  if (wrapper_size < kSmallestWrapper) {
    *why = "its trailer says the wrapper has " + str(wrapper_size) +
           " bytes, fewer than the trailer itself";
    return std::nullopt;
  }
  if ((file - wrapper_size) % kWrapperAlignment != 0) {
    *why = "its trailer puts the wrapper's first byte at " + str(file - wrapper_size) +
           ", which is not a multiple of " + str(kWrapperAlignment);
    return std::nullopt;
  }
  return file - wrapper_size;
}

// The wrapper size that the trailer in the last bytes of the first `file` bytes of `fd` says,
// for either form (the FlatBuffers form's 64 bytes are tried first, then the Cap'n Proto
// form's 88), or nothing, with why in *why. Throws Error for a failed read.
static std::optional<std::uint64_t> size_from_trailer(int fd, std::uint64_t file,
                                                      const std::string& name, std::string* why) {
  if (file < kSmallestWrapper) {
    *why = "the file has " + str(file) + " bytes, fewer than a trailer's " + str(kWrapperTrailerBytes);
    return std::nullopt;
  }
  std::array<std::byte, kWrapperTrailerBytes> bytes;
  static_assert(kFlatWrapperTrailerBytes <= kWrapperTrailerBytes);
  std::size_t got = 0;
  if (const int err = os::pread_full(fd, bytes.data(), bytes.size(), file - bytes.size(), &got);
      err != 0) {
    throw Error(err, "opening wrapper", name, "(pread of its last " + str(bytes.size()) + " bytes)");
  }
  if (got != bytes.size()) {
    *why = "its last " + str(kWrapperTrailerBytes) +
           " bytes are not a wrapper's trailer (the file shrank while it was read)";
    return std::nullopt;
  }
  const auto flat = std::span<const std::byte>(bytes).last(kFlatWrapperTrailerBytes);
  if (const auto found = detail::decode_flat_trailer(flat, nullptr)) return found->wrapper_size;
  if (const auto found = detail::decode_trailer(bytes, why)) return found->wrapper_size;
  *why = "its last " + str(kWrapperTrailerBytes) + " bytes are not a wrapper's trailer (" + *why + ")";
  return std::nullopt;
}

struct Wrapper::State {
  std::string name;
  os::OwnedFd fd;                                 // when opened from a path or an fd
  std::optional<SealedImage> image;               // when opened from one
  WrapperFormat format = WrapperFormat::kCapnProto;
  // The mapping the spans point into: the first message (Cap'n Proto form; the reader owns
  // it) or the whole wrapper (FlatBuffers form), `mapped` bytes from the wrapper's first.
  std::unique_ptr<MappedMessageReader> reader;
  std::shared_ptr<const void> flat_mapping;
  const std::byte* bytes = nullptr;
  std::uint64_t mapped = 0;
  std::uint32_t version = 0;
  std::string producer;
  std::uint64_t base = 0;  // where the wrapper starts in its file: a multiple of 4096
  std::uint64_t size = 0;  // the wrapper's bytes, from base
  // Set when open() refused the bytes as not a wrapper at all (no segment table, wrong
  // magic), rather than as a damaged one: open_embedded() tells the two apart.
  bool not_a_wrapper = false;
  std::string not_a_wrapper_why;  // why, when it is set
  // Version 2 only: the trailer, and the hashed ranges of the first message (its size).
  std::optional<detail::Trailer> trailer;
  std::uint64_t message_size = 0;
  // FlatBuffers form: its trailer, and the metadata FlatBuffer (a span of the mapping).
  std::optional<detail::FlatTrailer> flat_trailer;
  std::span<const std::byte> flat_metadata;
  // Whole-file integrity (Cap'n Proto version 2 and 3, and the FlatBuffers form): the chunks
  // lie in [prefix_end, zero_end), whose other bytes must be zero; [0, prefix_end) is hashed
  // (the segment table and root pointer, or the FlatBuffers header), and so is the metadata.
  bool integrity = false;
  std::uint64_t prefix_end = 0;
  std::uint64_t zero_end = 0;
  // Every chunk, in file order: [offset, offset + size) of entry `entry`'s chunk `chunk`.
  struct ChunkRange {
    std::uint64_t offset;
    std::uint64_t size;
    std::size_t entry;
    std::size_t chunk;
  };
  std::vector<ChunkRange> chunk_ranges;
  std::vector<WrapperEntry> entries;
  std::unordered_map<std::string_view, std::size_t> index;  // views into entries' names
  std::vector<std::vector<std::size_t>> edges;              // direct dependencies
  // Entries made into sealed images by image(), by index.
  mutable std::mutex images_mutex;
  mutable std::unordered_map<std::size_t, SealedImage> images;
  // Compressed entries' lazy sources, by index: made by the first lazy(), so that later images
  // of the entry share its file mapping and its decoder slots.
  mutable std::mutex lazy_mutex;
  mutable std::unordered_map<std::size_t, LazySource> lazy_sources;

  [[noreturn]] void refuse(const std::string& what) const {
    throw Error(EINVAL, kOpen, name, what, kCause);
  }

  [[noreturn]] void refuse_not_a_wrapper(const std::string& why) {
    not_a_wrapper = true;
    not_a_wrapper_why = why;
    refuse("(not a wrapper: " + why + ")" + embedded_hint());
  }

  // When the bytes from the file's start are not a wrapper but the file ends with the trailer
  // of one that starts further in (appended to an executable): where it starts, and how to
  // open it. Empty otherwise, and when the trailer cannot be read.
  std::string embedded_hint() const {
    if (base != 0) return {};
    try {
      std::string why;
      const auto found = size_from_trailer(source_fd(), size, name, &why);
      const auto start = found ? wrapper_start(*found, size, &why) : std::nullopt;
      if (!start || *start == 0) return {};
      return "; the file ends with a wrapper that starts at byte " + str(*start) +
             ": open it with Wrapper::open_embedded()";
    } catch (const Error&) {
      return {};
    }
  }

  [[noreturn]] void damaged(const std::string& what) const {
    throw Error(EBADMSG, kOpen, name, what, kCause);
  }

  int source_fd() const noexcept { return image ? image->fd() : fd.get(); }

  // Reads [offset, offset + length) of the wrapper (base + offset in the file).
  void read_at(void* into, std::size_t length, std::uint64_t offset) const {
    std::size_t got = 0;
    if (const int err = os::pread_full(source_fd(), into, length, base + offset, &got); err != 0) {
      throw Error(err, kOpen, name, "(pread of " + str(length) + " bytes at " + str(offset) + ")");
    }
    if (got != length) {
      throw Error(EIO, kOpen, name, "(the file shrank while it was read: " + str(got) + " of " +
                                        str(length) + " bytes at " + str(offset) + ")", kCause);
    }
  }

  std::optional<detail::Trailer> read_trailer(std::uint64_t offset, std::string* why) const {
    std::array<std::byte, kWrapperTrailerBytes> bytes;
    read_at(bytes.data(), bytes.size(), offset);
    return detail::decode_trailer(bytes, why);
  }

  // Maps the first message, [0, bytes) of the wrapper: its segment table must describe
  // exactly that.
  void map_message(std::uint64_t length) {
    try {
      reader = std::make_unique<MappedMessageReader>(source_fd(), base, length);
      bytes = reader->data();
      mapped = length;
    } catch (const Error& e) {
      // The frame checks name the fd; say which wrapper, and keep the cause.
      if (e.error() == EINVAL) refuse_not_a_wrapper(e.detail());
      throw Error(e.error(), kOpen, name, e.detail());
    }
  }

  // The root's magic and format version, before anything else is trusted.
  std::uint32_t peek_version() {
    try {
      const auto root = reader->getRoot<schema::WrapperFile>();
      if (root.getMagic() != kWrapperMagic) refuse_not_a_wrapper("the magic number is wrong");
      return root.getFormatVersion();
    } catch (const kj::Exception& e) {
      refuse("(malformed Cap'n Proto data: " + std::string(e.getDescription().cStr()) + ")");
    }
  }

  // Finds the wrapper's layout (the first message, and the trailer in version 2), maps the
  // first message and checks the metadata digest. Reads the segment table, the trailer and
  // the hashed metadata; no chunk, no zero range.
  void map() {
    constexpr std::uint64_t kTrailer = kWrapperTrailerBytes;
    const std::uint64_t n = size;
    // The segment table: at most 4 + 4 * 511 bytes, padded to 2048.
    std::array<::capnp::word, 256> head{};
    const auto head_bytes = static_cast<std::size_t>(std::min<std::uint64_t>(n, sizeof head));
    read_at(head.data(), head_bytes, 0);
    const auto* head_data = reinterpret_cast<const std::byte*>(head.data());
    std::uint64_t s = 0;
    try {
      s = detail::parse_frame_table(head_data, head_bytes, name).size;
    } catch (const Error& e) {
      refuse_not_a_wrapper(e.detail());
    }

    std::string why;
    if (n >= kTrailer) trailer = read_trailer(n - kTrailer, &why);
    if (trailer && trailer->wrapper_size != n) {
      // A trailer for a wrapper that does not start where this one does (another wrapper
      // appended to this one, say): not ours.
      why = "it is the trailer of a wrapper of " + str(trailer->wrapper_size) + " bytes, not of " +
            (base == 0 ? std::string("the whole file")
                       : "the " + str(n) + " bytes from byte " + str(base));
      trailer.reset();
    }
    if (trailer) {
      // Version 2, found from its end.
      if (s != n - kTrailer) {
        damaged("(the segment table says the message ends at byte " + str(s) +
                ", but the trailer puts its end at byte " + str(n - kTrailer) +
                ": the file is damaged)");
      }
    } else if (n < s) {
      damaged("(truncated at byte " + str(n) + " of at least " + str(s) + " expected)");
    }
    map_message(s);
    message_size = s;

    if (!trailer) {
      // No trailer at the end: a version 1 file, or a version 2 file with its end missing,
      // damaged, or followed by other bytes.
      const std::uint32_t v = peek_version();
      if (v == 1) {
        if (n > s) {
          damaged("(" + str(n - s) + " bytes after the wrapper, which ends at byte " + str(s) + ")");
        }
        return;
      }
      if (v == kWrapperFormatVersion || v == kWrapperCompressedFormatVersion) {
        const std::uint64_t e = s + kTrailer;
        if (n < e) damaged("(truncated at byte " + str(n) + " of " + str(e) + " expected)");
        if (n == e) damaged("(the trailer is damaged: " + why + ")");
        std::string inner;
        const auto after = read_trailer(s, &inner);
        if (after && after->wrapper_size == e) {
          damaged("(" + str(n - e) + " bytes after the wrapper, which ends at byte " + str(e) + ")");
        }
        damaged("(no valid trailer at the end of the file (" + why + ") nor after its message (" +
                inner + "): the file is damaged)");
      }
      return;  // read_root() refuses the version
    }

    prefix_end = detail::hashed_prefix_end(bytes);
    const std::uint64_t m = trailer->metadata_offset;
    if (m < prefix_end || m > s || m % sizeof(::capnp::word) != 0) {
      damaged("(the trailer's metadata offset " + str(m) + " is not a word between " +
              str(prefix_end) + " and " + str(s) + ": the file is damaged)");
    }
    integrity = true;
    zero_end = m;
    if (detail::metadata_digest(bytes, prefix_end, m, message_size, trailer->wrapper_size) !=
        trailer->metadata_digest) {
      damaged("(the metadata digest does not match: the file is damaged)");
    }
  }

  // ---- the FlatBuffers form (wrapper.fbs) ----

  std::string prefix_label() const {
    return format == WrapperFormat::kFlatBuffers ? "header" : "segment table";
  }

  Digest flat_digest() const noexcept {
    return detail::flat_metadata_digest({bytes, kFlatWrapperHeaderBytes}, flat_metadata,
                                        flat_trailer->wrapper_size, flat_trailer->metadata_offset);
  }

  const Digest& stored_digest() const noexcept {
    return format == WrapperFormat::kFlatBuffers ? flat_trailer->metadata_digest
                                                 : trailer->metadata_digest;
  }

  // Whether the wrapper begins with the FlatBuffers form's header magic.
  bool starts_flat() const {
    if (size < 8) return false;
    std::array<std::byte, 8> magic;
    read_at(magic.data(), magic.size(), 0);
    return detail::has_flat_magic(magic);
  }

  // The header and the trailer, then the whole wrapper mapped and the metadata digest checked.
  // Reads the header, the trailer and the metadata; no chunk, no zero range.
  void map_flat() {
    format = WrapperFormat::kFlatBuffers;
    constexpr std::uint64_t kHeader = kFlatWrapperHeaderBytes;
    constexpr std::uint64_t kTrailer = kFlatWrapperTrailerBytes;
    const std::uint64_t n = size;
    if (n < kHeader) damaged("(truncated at byte " + str(n) + ", inside the header)");
    std::array<std::byte, kHeader> header;
    read_at(header.data(), header.size(), 0);
    std::uint32_t form = 0;
    for (int i = 3; i >= 0; --i) form = form << 8 | static_cast<std::uint32_t>(header[8 + i]);
    if (form != kFlatWrapperFormatVersion) {
      refuse("(FlatBuffers form version " + str(form) + " is not supported; this build reads version " +
             str(kFlatWrapperFormatVersion) + ")");
    }
    if (header != detail::encode_flat_header()) {
      damaged("(the header's reserved bytes are not zero: the file is damaged)");
    }
    if (n < kHeader + 8 + kTrailer) {
      damaged("(truncated: " + str(n) + " bytes, fewer than a header, a metadata buffer and a trailer)");
    }
    std::array<std::byte, kTrailer> tail;
    read_at(tail.data(), tail.size(), n - kTrailer);
    std::string why;
    flat_trailer = detail::decode_flat_trailer(tail, &why);
    if (!flat_trailer) {
      if (const std::uint64_t end = trailer_end_before(n); end != 0) {
        damaged("(" + str(n - end) + " bytes after the wrapper, which ends at byte " + str(end) + ")");
      }
      damaged("(no valid trailer at the end (" + why +
              "): the file is truncated or damaged, or has bytes after the wrapper)");
    }
    const detail::FlatTrailer& t = *flat_trailer;
    if (t.wrapper_size != n) {
      damaged("(the trailer says the wrapper has " + str(t.wrapper_size) + " bytes, not " + str(n) +
              ": the file is damaged)");
    }
    const std::uint64_t m = t.metadata_offset;
    if (m < kHeader || m % 8 != 0 || m > n - kTrailer || t.metadata_size != n - kTrailer - m ||
        t.metadata_size < 8) {
      damaged("(the trailer puts the metadata at byte " + str(m) + " with " + str(t.metadata_size) +
              " bytes, not at a multiple of 8 after the header ending where the trailer begins (byte " +
              str(n - kTrailer) + "): the file is damaged)");
    }
    try {
      detail::MappedInput input = image ? detail::map_input(*image, kOpen)
                                        : detail::map_input(source_fd(), base, n, kWrapperAlignment, kOpen);
      flat_mapping = std::move(input.keep_alive);
      bytes = input.data;
      mapped = input.size;
    } catch (const Error& e) {
      throw Error(e.error(), kOpen, name, e.detail());
    }
    if (mapped != n) {
      throw Error(EIO, kOpen, name, "(the file changed size while it was opened)", kCause);
    }
    flat_metadata = {bytes + m, static_cast<std::size_t>(t.metadata_size)};
    integrity = true;
    prefix_end = kHeader;
    zero_end = m;
    if (flat_digest() != t.metadata_digest) {
      damaged("(the metadata digest does not match: the file is damaged)");
    }
  }

  // Where a FlatBuffers-form trailer that says the wrapper ends right after it ends, within
  // the last 64 KiB before `n` (bytes appended to a wrapper); 0 if there is none.
  std::uint64_t trailer_end_before(std::uint64_t n) const {
    constexpr std::uint64_t kLook = 64 << 10;
    const std::uint64_t from = n > kLook ? n - kLook : 0;
    std::vector<std::byte> tail(static_cast<std::size_t>(n - from));
    read_at(tail.data(), tail.size(), from);
    for (std::uint64_t at = tail.size() >= kFlatWrapperTrailerBytes ? tail.size() - kFlatWrapperTrailerBytes : 0;
         at-- > 0;) {
      if (std::memcmp(tail.data() + at, "MWFBTRLR", 8) != 0) continue;
      const auto found = detail::decode_flat_trailer(
          std::span<const std::byte>(tail).subspan(static_cast<std::size_t>(at), kFlatWrapperTrailerBytes), nullptr);
      if (found && found->wrapper_size == from + at + kFlatWrapperTrailerBytes) return found->wrapper_size;
    }
    return 0;
  }

  void read_flat_root() {
    std::string why;
    auto metadata = detail::decode_flat_metadata(flat_metadata, &why);
    if (!metadata) refuse("(the metadata is not a valid wrapper FlatBuffer: " + why + ")");
    version = metadata->format_version;
    if (version != kFlatWrapperFormatVersion) {
      refuse("(the metadata says form version " + str(version) + ", the header " +
             str(kFlatWrapperFormatVersion) + ")");
    }
    producer = std::move(metadata->producer);
    entries.reserve(metadata->entries.size());
    for (std::size_t i = 0; i < metadata->entries.size(); ++i) {
      accept(i, std::move(metadata->entries[i]));
    }
  }

  void check_root() {
    try {
      read_root();
    } catch (const kj::Exception& e) {
      refuse("(malformed Cap'n Proto data: " + std::string(e.getDescription().cStr()) + ")");
    }
  }

  void read_root() {
    const auto root = reader->getRoot<schema::WrapperFile>();
    if (root.getMagic() != kWrapperMagic) refuse_not_a_wrapper("the magic number is wrong");
    version = root.getFormatVersion();
    if (version != kWrapperFormatVersion && version != kWrapperCompressedFormatVersion &&
        version != 1) {
      refuse("(format version " + str(version) + " is not supported; this build reads versions 1 to " +
             str(kWrapperCompressedFormatVersion) + ")");
    }
    if (trailer && version == 1) {
      damaged("(the root says format version 1 but the file has a version " +
              str(kWrapperFormatVersion) + " trailer: the file is damaged)");
    }
    producer = root.getProducer();
    const auto list = root.getEntries();
    entries.reserve(list.size());
    for (::capnp::uint i = 0; i < list.size(); ++i) read_entry(i, list[i]);
  }

  // A Cap'n Proto entry as plain values, for accept().
  void read_entry(std::size_t i, schema::Entry::Reader from) {
    detail::RawEntry raw;
    const auto name_text = from.getName();
    raw.name.assign(name_text.begin(), name_text.size());
    raw.kind = static_cast<std::uint16_t>(from.getKind());
    raw.digest_algorithm = static_cast<std::uint16_t>(from.getDigestAlgorithm());
    const auto digest = from.getDigest();
    raw.digest.assign(reinterpret_cast<const std::byte*>(digest.begin()),
                      reinterpret_cast<const std::byte*>(digest.end()));
    for (const auto dep : from.getDependencies()) raw.dependencies.emplace_back(dep.cStr(), dep.size());
    raw.size = from.getSize();
    const auto chunks = from.getChunks();
    raw.chunks.reserve(chunks.size());
    for (const auto chunk : chunks) {
      const auto* first = reinterpret_cast<const std::byte*>(chunk.begin());
      // Cap'n Proto has already bounded the blob by its segment, and the segment by the file;
      // accept() checks it again, and a blob before the mapping is placed outside it.
      raw.chunks.push_back({first < bytes ? UINT64_MAX : static_cast<std::uint64_t>(first - bytes),
                            chunk.size()});
    }
    raw.compression = static_cast<std::uint16_t>(from.getCompression());
    raw.frame_size = from.getFrameSize();
    raw.has_frame_ends = from.hasFrameEnds();
    for (const std::uint64_t end : from.getFrameEnds()) raw.frame_ends.push_back(end);
    accept(i, std::move(raw));
  }

  // Checks entry #i as either form gives it and adds it to `entries`.
  void accept(std::size_t i, detail::RawEntry&& from) {
    WrapperEntry entry;
    entry.name = std::move(from.name);
    const auto bad = [&](const std::string& what) { refuse(entry_label(i, entry.name) + ": " + what); };
    if (entry.name.empty()) bad("the name is empty");
    if (entry.name.size() > kMaxEntryNameBytes) {
      bad("the name is longer than " + str(kMaxEntryNameBytes) + " bytes");
    }
    if (entry.name.find('\0') != std::string::npos) bad("the name contains NUL");
    switch (from.kind) {  // both schemas number them alike
      case 0: entry.kind = EntryKind::kSharedLibrary; break;
      case 1: entry.kind = EntryKind::kData; break;
      default: bad("unknown kind " + str(from.kind));
    }
    if (from.digest_algorithm != 0) bad("unknown digest algorithm " + str(from.digest_algorithm));
    if (from.digest.size() != entry.digest.bytes.size()) {
      bad("the digest has " + str(from.digest.size()) + " bytes, not " + str(entry.digest.bytes.size()));
    }
    std::memcpy(entry.digest.bytes.data(), from.digest.data(), from.digest.size());
    entry.dependencies = std::move(from.dependencies);

    entry.size = from.size;
    std::uint64_t total = 0;
    entry.chunks.reserve(from.chunks.size());
    for (std::size_t c = 0; c < from.chunks.size(); ++c) {
      const detail::RawChunk chunk = from.chunks[c];
      if (chunk.size == 0) bad("chunk " + str(c) + " is empty");
      if (chunk.offset > mapped || chunk.size > mapped - chunk.offset) {
        bad("chunk " + str(c) + " lies outside the wrapper");
      }
      if (chunk.offset % kWrapperAlignment != 0) {
        bad("chunk " + str(c) + " starts at offset " + str(chunk.offset) + ", which is not " +
            str(kWrapperAlignment) + "-byte aligned");
      }
      if (chunk.size > UINT64_MAX - total) bad("the chunk sizes overflow");
      total += chunk.size;
      entry.chunks.emplace_back(bytes + chunk.offset, static_cast<std::size_t>(chunk.size));
    }
    entry.stored_size = total;
    switch (from.compression) {  // both schemas number them alike
      case 0:
        if (from.frame_size != 0 || from.has_frame_ends) bad("it has frames but no compression");
        if (total != entry.size) {
          bad("its size says " + str(entry.size) + " bytes but its chunks hold " + str(total));
        }
        break;
      case 1: {
        if (format == WrapperFormat::kCapnProto && version != kWrapperCompressedFormatVersion) {
          bad("it is compressed, which format version " + str(version) + " does not allow");
        }
        entry.compression = EntryCompression::kZstd;
        entry.frame_bytes = from.frame_size;
        entry.frame_ends = std::move(from.frame_ends);
        if (std::string why = detail::frame_table_problem(entry.size, entry.frame_bytes,
                                                          entry.frame_ends, total);
            !why.empty()) {
          bad("its zstd frames do not fit: " + why);
        }
        if (!entry.contiguous()) bad("it is compressed, but its chunks are not contiguous");
        break;
      }
      default:
        bad("unknown compression " + str(from.compression));
    }
    // A file offset (the loader copies from the file): base + the offset in the wrapper.
    entry.offset = entry.chunks.empty() ? 0 : base + from.chunks.front().offset;
    entries.push_back(std::move(entry));
  }

  // No two chunks (of one entry or of two) share a byte; in version 2 every chunk lies
  // between the hashed prefix and the metadata, so the rest of that range is the zero part.
  void check_overlaps() {
    for (std::size_t i = 0; i < entries.size(); ++i) {
      for (std::size_t c = 0; c < entries[i].chunks.size(); ++c) {
        const auto& chunk = entries[i].chunks[c];
        chunk_ranges.push_back({static_cast<std::uint64_t>(chunk.data() - bytes), chunk.size(), i, c});
      }
    }
    std::sort(chunk_ranges.begin(), chunk_ranges.end(),
              [](const ChunkRange& a, const ChunkRange& b) { return a.offset < b.offset; });
    for (std::size_t k = 1; k < chunk_ranges.size(); ++k) {
      const ChunkRange& before = chunk_ranges[k - 1];
      if (chunk_ranges[k].offset < before.offset + before.size) {
        const std::size_t a = std::min(before.entry, chunk_ranges[k].entry);
        const std::size_t b = std::max(before.entry, chunk_ranges[k].entry);
        refuse(entry_label(b, entries[b].name) + ": its bytes overlap those of " +
               (a == b ? std::string("itself") : entry_label(a, entries[a].name)));
      }
    }
    if (!integrity || chunk_ranges.empty()) return;
    const ChunkRange& first = chunk_ranges.front();
    const ChunkRange& last = chunk_ranges.back();
    const auto outside = [&](const ChunkRange& range) {
      refuse(entry_label(range.entry, entries[range.entry].name) + ": chunk " + str(range.chunk) +
             " at byte " + str(range.offset) + " is not between the " + prefix_label() + " (" +
             str(prefix_end) + " bytes) and the metadata (at byte " + str(zero_end) + ")");
    };
    if (first.offset < prefix_end) outside(first);
    if (last.offset + last.size > zero_end) outside(last);
  }

  // The first non-zero byte of [begin, end) of the message, or end.
  std::uint64_t first_nonzero(std::uint64_t begin, std::uint64_t end) const noexcept {
    const std::byte* data = bytes;
    std::uint64_t at = begin;
    while (at < end && at % sizeof(std::uint64_t) != 0) {
      if (data[at] != std::byte{0}) return at;
      ++at;
    }
    for (; at + sizeof(std::uint64_t) <= end; at += sizeof(std::uint64_t)) {
      std::uint64_t word;
      std::memcpy(&word, data + at, sizeof word);
      if (word != 0) break;
    }
    for (; at < end; ++at) {
      if (data[at] != std::byte{0}) return at;
    }
    return end;
  }

  // Whether the trailer still says what it said at open(), and the metadata still hashes to
  // its digest.
  void verify_hashed(const char* operation) const {
    std::string why;
    bool same = false;
    Digest digest;
    if (format == WrapperFormat::kFlatBuffers) {
      std::array<std::byte, kFlatWrapperTrailerBytes> now;
      read_at(now.data(), now.size(), size - now.size());
      const auto found = detail::decode_flat_trailer(now, &why);
      same = found && found->wrapper_size == flat_trailer->wrapper_size &&
             found->metadata_offset == flat_trailer->metadata_offset &&
             found->metadata_size == flat_trailer->metadata_size &&
             found->metadata_digest == flat_trailer->metadata_digest;
      digest = flat_digest();
    } else {
      const auto now = read_trailer(size - kWrapperTrailerBytes, &why);
      same = now && now->wrapper_size == trailer->wrapper_size &&
             now->metadata_offset == trailer->metadata_offset &&
             now->metadata_digest == trailer->metadata_digest;
      digest = detail::metadata_digest(bytes, prefix_end, trailer->metadata_offset, message_size,
                                       trailer->wrapper_size);
    }
    if (!same) {
      throw Error(EBADMSG, operation, name,
                  "(the trailer changed since the file was opened: the file is damaged)", kCause);
    }
    if (digest != stored_digest()) {
      throw Error(EBADMSG, operation, name,
                  "(the metadata digest does not match: the file is damaged)", kCause);
    }
  }

  void verify_metadata() const {
    if (!integrity) return;
    const char* kVerify = "verifying wrapper";
    verify_hashed(kVerify);
    std::uint64_t at = prefix_end;
    const auto zero_until = [&](std::uint64_t end, const std::string& where) {
      const std::uint64_t bad = first_nonzero(at, end);
      if (bad != end) {
        throw Error(EBADMSG, kVerify, name,
                    "(byte " + str(bad) + ", " + where +
                        ", is not zero: the file is damaged)", kCause);
      }
    };
    for (const ChunkRange& range : chunk_ranges) {
      zero_until(range.offset, "before " + entry_label(range.entry, entries[range.entry].name) +
                                   " chunk " + str(range.chunk));
      at = range.offset + range.size;
    }
    zero_until(zero_end, chunk_ranges.empty()
                             ? "between the " + prefix_label() + " and the metadata"
                             : std::string("between the last chunk and the metadata"));
  }

  void check_graph() {
    std::vector<detail::GraphEntry> graph;
    graph.reserve(entries.size());
    for (const WrapperEntry& entry : entries) {
      graph.push_back({entry.name, entry.kind, &entry.dependencies});
    }
    edges = detail::check_dependencies(graph, kOpen, name);  // also refuses duplicate names
    for (std::size_t i = 0; i < entries.size(); ++i) index.emplace(entries[i].name, i);
  }

  // The wrapper at the end of the file open on `fd`: Wrapper::open_embedded().
  static std::unique_ptr<State> find_embedded(os::OwnedFd fd, std::string name);

  void check() {
    if (starts_flat()) {
      map_flat();
      read_flat_root();
    } else {
      map();
      check_root();
    }
    check_overlaps();
    check_graph();
  }
};

// ---- Wrapper ---------------------------------------------------------------------------------

Wrapper::Wrapper(std::unique_ptr<State> state) noexcept : state_(std::move(state)) {}
Wrapper::Wrapper(Wrapper&&) noexcept = default;
Wrapper& Wrapper::operator=(Wrapper&&) noexcept = default;
Wrapper::~Wrapper() = default;

namespace {

// Opens `path` read-only for open() and open_embedded(). Only a regular file can be mapped and
// checked: a FIFO, socket or device (a pipe, or /dev/zero, would otherwise read as an "empty
// file"), and procfs/sysfs files, whose size says nothing of their content, are refused as
// what they are. /proc/self/exe opens the executable itself (a regular file elsewhere).
os::OwnedFd open_regular(const std::filesystem::path& path, const std::string& name) {
  int raw = -1;
  // O_NONBLOCK: a FIFO must not make open() wait for a writer; it is refused just below.
  if (const int err = os::open(path.c_str(), O_RDONLY | O_NONBLOCK, 0, &raw); err != 0) {
    throw Error(err, kOpen, name);
  }
  os::OwnedFd fd(raw);
  os::FileStatus status;
  if (const int err = os::fd_status(raw, &status); err != 0) {
    throw Error(err, kOpen, name, "(fstat)");
  }
  if (status.type != os::FileType::kRegular || status.pseudo) {
    // ENODEV, as mmap(2) says of a file it cannot map: the wrong kind of file, not damage.
    const std::string kind = status.pseudo ? std::string("a file of procfs or sysfs")
                                           : std::string("a ") + os::to_string(status.type);
    throw Error(ENODEV, kOpen, name, "(not a regular file: " + kind + ")", kCause);
  }
  // A regular file: read and copied (sendfile to the loader) as any other.
  if (const int err = os::clear_nonblocking(raw); err != 0) {
    throw Error(err, kOpen, name, "(fcntl)");
  }
  return fd;
}

os::OwnedFd duplicate(int fd, const std::string& name) {
  int raw = -1;
  if (const int err = os::dup_cloexec(fd, 0, &raw); err != 0) {
    throw Error(err, kOpen, name, "(dup)");
  }
  return os::OwnedFd(raw);
}

std::uint64_t size_of(int fd, const std::string& name) {
  std::uint64_t size = 0;
  if (const int err = os::file_size(fd, &size); err != 0) {
    throw Error(err, kOpen, name, "(fstat)");
  }
  return size;
}

std::string fd_name(int fd) { return "wrapper fd " + std::to_string(fd); }

}  // namespace

// The wrapper at the end of the file open on `fd` (see open_embedded() in wrapper.h).
std::unique_ptr<Wrapper::State> Wrapper::State::find_embedded(os::OwnedFd fd, std::string name) {
  const std::uint64_t file = size_of(fd.get(), name);
  const auto at = [&](std::uint64_t base, std::uint64_t size) {
    auto state = std::make_unique<State>();
    state->name = name;
    state->fd = duplicate(fd.get(), name);
    state->base = base;
    state->size = size;
    return state;
  };
  // Where the trailer at the end puts the wrapper, or why it puts it nowhere.
  std::string why;
  std::optional<std::uint64_t> wrapper_size = size_from_trailer(fd.get(), file, name, &why);
  if (wrapper_size && !wrapper_start(*wrapper_size, file, &why)) wrapper_size.reset();
  std::exception_ptr located_failure;
  if (wrapper_size) {
    auto state = at(file - *wrapper_size, *wrapper_size);
    try {
      state->check();
      return state;
    } catch (const Error&) {
      located_failure = std::current_exception();
      // A well-formed trailer that puts the wrapper where there is none: a wrapper was found
      // and is damaged (its trailer's size, or the bytes where it starts), not absent.
      if (state->not_a_wrapper) {
        located_failure = std::make_exception_ptr(
            Error(EBADMSG, kOpen, name,
                  "(damaged: its trailer puts a wrapper of " + str(state->size) +
                      " bytes at byte " + str(state->base) + ", but there is none there: " +
                      state->not_a_wrapper_why + ")",
                  kCause));
      }
      if (state->base == 0) std::rethrow_exception(located_failure);  // the whole file
    }
  }
  // No wrapper where the end says (or the one there does not open). If a wrapper begins the
  // file, the file is that wrapper with its end damaged, or a version 1 wrapper, which has no
  // trailer: say what is wrong with it.
  auto whole = at(0, file);
  try {
    whole->check();
  } catch (const Error&) {
    if (!whole->not_a_wrapper) throw;
    if (located_failure) std::rethrow_exception(located_failure);
    throw Error(ENOMSG, kOpen, name, "(no wrapper at the end of the file: " + why + ")", kCause);
  }
  if (whole->format == WrapperFormat::kCapnProto && whole->version == 1) {
    throw Error(ENOTSUP, kOpen, name,
                "(a format version 1 wrapper: version 1 has no trailer, so it cannot be found "
                "from the end of a file; open it as a whole file, or repack it)", kCause);
  }
  return whole;
}

Wrapper Wrapper::open(const std::filesystem::path& path, WrapperOpenOptions options) {
  auto state = std::make_unique<State>();
  state->name = options.name.empty() ? path.string() : std::move(options.name);
  state->fd = open_regular(path, state->name);
  state->size = size_of(state->fd.get(), state->name);
  state->check();
  return Wrapper(std::move(state));
}

Wrapper Wrapper::open(int fd, WrapperOpenOptions options) {
  auto state = std::make_unique<State>();
  state->name = options.name.empty() ? fd_name(fd) : std::move(options.name);
  state->fd = duplicate(fd, state->name);
  state->size = size_of(state->fd.get(), state->name);
  state->check();
  return Wrapper(std::move(state));
}

Wrapper Wrapper::open(int fd, std::uint64_t offset, std::uint64_t size,
                      WrapperOpenOptions options) {
  auto state = std::make_unique<State>();
  state->name = options.name.empty() ? fd_name(fd) : std::move(options.name);
  const auto bad_range = [&](const std::string& what) {
    throw Error(EINVAL, kOpen, state->name, "(" + what + ")", kCause);
  };
  if (offset % kWrapperAlignment != 0) {
    bad_range("offset " + str(offset) + " is not a multiple of " + str(kWrapperAlignment) +
              ": a wrapper's chunks must stay page-aligned in the file");
  }
  state->fd = duplicate(fd, state->name);
  const std::uint64_t file = size_of(state->fd.get(), state->name);
  if (offset > file) {
    bad_range("offset " + str(offset) + " is past the end of the file (" + str(file) + " bytes)");
  }
  if (size == 0) {
    size = file - offset;
    if (size == 0) {
      bad_range("nothing after offset " + str(offset) + ": the file has " + str(file) + " bytes");
    }
  } else if (size > file - offset) {
    bad_range("the range of " + str(size) + " bytes at offset " + str(offset) +
              " runs past the end of the file (" + str(file) + " bytes)");
  }
  state->base = offset;
  state->size = size;
  state->check();
  return Wrapper(std::move(state));
}

Wrapper Wrapper::open_embedded(const std::filesystem::path& path, WrapperOpenOptions options) {
  std::string name = options.name.empty() ? path.string() : std::move(options.name);
  os::OwnedFd fd = open_regular(path, name);
  return Wrapper(State::find_embedded(std::move(fd), std::move(name)));
}

Wrapper Wrapper::open_embedded(int fd, WrapperOpenOptions options) {
  std::string name = options.name.empty() ? fd_name(fd) : std::move(options.name);
  os::OwnedFd own = duplicate(fd, name);
  return Wrapper(State::find_embedded(std::move(own), std::move(name)));
}

Wrapper Wrapper::open(const SealedImage& image, WrapperOpenOptions options) {
  auto state = std::make_unique<State>();
  state->name =
      options.name.empty() ? "sealed wrapper fd " + std::to_string(image.fd()) : std::move(options.name);
  state->image = image;  // shares the image: its fd and mapping live as long as this
  state->size = image.size();
  state->check();
  return Wrapper(std::move(state));
}

const std::string& Wrapper::name() const noexcept { return state_->name; }
std::uint32_t Wrapper::format_version() const noexcept { return state_->version; }
bool Wrapper::metadata_checked() const noexcept { return state_->integrity; }
WrapperFormat Wrapper::format() const noexcept { return state_->format; }
std::span<const std::byte> Wrapper::metadata() const noexcept { return state_->flat_metadata; }
const std::string& Wrapper::producer() const noexcept { return state_->producer; }
std::uint64_t Wrapper::offset() const noexcept { return state_->base; }
std::uint64_t Wrapper::size() const noexcept { return state_->size; }
std::uint64_t Wrapper::file_size() const noexcept { return state_->size; }
int Wrapper::fd() const noexcept { return state_->image ? state_->image->fd() : state_->fd.get(); }
const std::vector<WrapperEntry>& Wrapper::entries() const noexcept { return state_->entries; }

const WrapperEntry* Wrapper::find(std::string_view name) const noexcept {
  const auto found = state_->index.find(name);
  return found == state_->index.end() ? nullptr : &state_->entries[found->second];
}

const WrapperEntry& Wrapper::entry(std::string_view name) const {
  if (const WrapperEntry* found = find(name)) return *found;
  throw Error(ENOENT, "finding wrapper entry", detail::printable(name), "in '" + state_->name + "'");
}

bool Wrapper::verify_entry(const WrapperEntry& entry) const noexcept {
  detail::DigestStream digest;
  if (entry.compression == EntryCompression::kNone) {
    for (const auto& chunk : entry.chunks) digest.update(chunk.data(), chunk.size());
    return digest.finish() == entry.digest;
  }
  const auto hash = [&](std::span<const std::byte> plain, std::uint64_t) {
    digest.update(plain.data(), plain.size());
  };
  try {
    return detail::decode_frames(detail::frames_of(entry), nullptr, hash).empty() &&
           digest.finish() == entry.digest;
  } catch (const std::bad_alloc&) {
    return false;
  }
}

void Wrapper::read_entry(const WrapperEntry& entry, const ReadPiece& take) const {
  if (entry.compression == EntryCompression::kNone) {
    std::uint64_t at = 0;
    for (const auto& chunk : entry.chunks) {
      take(chunk, at);
      at += chunk.size();
    }
    return;
  }
  if (std::string why = detail::decode_frames(detail::frames_of(entry), nullptr, take);
      !why.empty()) {
    throw Error(EBADMSG, "decoding wrapper entry", state_->name + ":" + detail::printable(entry.name),
                "(" + why + ")", kCause);
  }
}

void Wrapper::verify_metadata() const { state_->verify_metadata(); }

void Wrapper::verify() const {
  verify_metadata();
  for (const WrapperEntry& entry : state_->entries) {
    if (!verify_entry(entry)) {
      throw Error(EBADMSG, "verifying wrapper", state_->name,
                  "entry '" + detail::printable(entry.name) + "': the digest does not match its bytes (expected " +
                      entry.digest.hex() + ")", kCause);
    }
  }
}

Library Wrapper::load_library(std::string_view name, LoadOptions options) const {
  const WrapperEntry& e = entry(name);
  if (options.name.empty()) options.name = state_->name + ":" + detail::printable(e.name);
  if (e.kind != EntryKind::kSharedLibrary) {
    throw Error(EINVAL, "loading library", options.name, "(it is a data entry, not a library)",
                kCause);
  }
  if (e.size == 0) {
    throw Error(EINVAL, "loading library", options.name, "(the entry is empty)", kCause);
  }
  // What is loaded is what the digest describes: the sealed copy is hashed just before
  // dlopen(), so a file changed after open() or verify() cannot slip anything in.
  options.check = [digest = e.digest, user = std::move(options.check),
                   label = options.name](std::span<const std::byte> bytes) {
    if (digest_of(bytes) != digest) {
      throw Error(EBADMSG, "loading library", label,
                  "(its bytes do not match the entry's digest " + digest.hex() + ")", kCause);
    }
    if (user) user(bytes);
  };
  if (e.contiguous() && e.compression == EntryCompression::kNone) {
    return mapwright::load_library(fd(), e.offset, e.size, options);
  }
  // Compressed (decoded into a sealed memfd, then loaded from it with no copy), or chunks with
  // gaps between them (files over 4 GiB: gathered there).
  return mapwright::load_library(detail::gather_entry(e, options.name), options);
}

SealedImage Wrapper::image(std::string_view name) const {
  const WrapperEntry& e = entry(name);
  const auto index = static_cast<std::size_t>(&e - state_->entries.data());
  std::lock_guard lock(state_->images_mutex);
  if (auto it = state_->images.find(index); it != state_->images.end()) return it->second;
  SealedImage image = detail::gather_entry(e, state_->name + ":" + detail::printable(e.name));
  if (digest_of(image.map()) != e.digest) {
    throw Error(EBADMSG, "making image of wrapper entry", state_->name + ":" + detail::printable(e.name),
                "(its bytes do not match the entry's digest " + e.digest.hex() + ")", kCause);
  }
  state_->images.emplace(index, image);
  return image;
}

detail::CompressedFrames detail::frames_of(const WrapperEntry& entry) noexcept {
  CompressedFrames frames;
  frames.stored = entry.chunks.empty() ? nullptr : entry.chunks.front().data();
  frames.ends = entry.frame_ends.data();
  frames.count = entry.frame_ends.size();
  frames.frame_bytes = entry.frame_bytes;
  frames.size = entry.size;
  return frames;
}

SealedImage detail::gather_entry(const WrapperEntry& entry, const std::string& memfd_name) {
  RegionOptions region_options;
  region_options.capacity = (entry.size + 4095) / 4096 * 4096;
  Region region = Region::memfd(memfd_name, region_options);
  region.ensure(entry.size);
  if (entry.compression != EntryCompression::kNone) {
    if (std::string why = decode_frames(frames_of(entry), region.data(), {}); !why.empty()) {
      throw Error(EBADMSG, "decoding wrapper entry", memfd_name, "(" + why + ")", kCause);
    }
    region.finish(entry.size);
    return std::move(region).seal();
  }
  std::uint64_t at = 0;
  for (const auto& chunk : entry.chunks) {
    std::memcpy(region.data() + at, chunk.data(), chunk.size());
    at += chunk.size();
  }
  region.finish(entry.size);
  return std::move(region).seal();
}

LazyImage Wrapper::lazy(std::string_view name, LazyOptions options) const {
  const WrapperEntry& e = entry(name);
  const std::string label = state_->name + ":" + detail::printable(e.name);
  if (options.name == LazyOptions{}.name) options.name = label;
  if (e.compression == EntryCompression::kNone) {
    if (!e.contiguous()) {
      throw Error(EINVAL, "mapping wrapper entry lazily", label,
                  "(its chunks are not contiguous in the file: use image())", kCause);
    }
    LazySource source = LazySource::from_file(fd(), e.offset, e.size, label);
    return LazyImage(std::move(source), std::move(options));
  }
  const std::size_t index = static_cast<std::size_t>(&e - state_->entries.data());
  std::optional<LazySource> source;
  {
    const std::lock_guard lock(state_->lazy_mutex);
    auto found = state_->lazy_sources.find(index);
    if (found == state_->lazy_sources.end()) {
      found = state_->lazy_sources
                  .emplace(index, LazySource::compressed(fd(), e.offset, e.stored_size, e.size,
                                                         e.frame_bytes, e.frame_ends,
                                                         label + " (zstd)"))
                  .first;
    }
    source = found->second;
  }
  return LazyImage(std::move(*source), std::move(options));
}

LoadedLibraries Wrapper::load_in_order(const std::vector<std::size_t>& order,
                                       const LoadOptions& options) const {
  LoadedLibraries loaded;
  for (const std::size_t i : order) {
    const WrapperEntry& entry = state_->entries[i];
    LoadOptions one = options;
    one.name = (options.name.empty() ? state_->name : options.name) + ":" + detail::printable(entry.name);
    // One new namespace for the whole set: the first library makes it, the others join it,
    // so that each finds its dependencies (by SONAME) there.
    if (options.link_namespace == LoadOptions::Namespace::kNew && !loaded.libraries_.empty()) {
      one.link_namespace = LoadOptions::Namespace::kBeside;
      one.beside = &loaded.libraries_.front();
    }
    try {
      loaded.libraries_.push_back(load_library(entry.name, std::move(one)));
    } catch (const Error& e) {
      // A DT_NEEDED name that is neither loaded nor on disk: say how the wrapper can carry it.
      if (e.error() != ENOEXEC ||
          e.detail().find("cannot open shared object file") == std::string::npos) {
        throw;
      }
      throw Error(e.error(), e.operation(), e.subject(),
                  e.detail() + " (not among the dependencies of '" + detail::printable(entry.name) +
                      "' in the wrapper, nor on this system: add it to the wrapper as a library "
                      "entry and name it as a dependency of '" + detail::printable(entry.name) + "')",
                  kCause);
    }
    loaded.names_.push_back(entry.name);
  }
  return loaded;
}

LoadedLibraries Wrapper::load_with_dependencies(std::string_view name, LoadOptions options) const {
  const auto root = static_cast<std::size_t>(&entry(name) - state_->entries.data());
  return load_in_order(detail::load_order(state_->edges, {root}), options);
}

LoadedLibraries Wrapper::load_all(LoadOptions options) const {
  std::vector<std::size_t> roots;
  for (std::size_t i = 0; i < state_->entries.size(); ++i) {
    if (state_->entries[i].kind == EntryKind::kSharedLibrary) roots.push_back(i);
  }
  return load_in_order(detail::load_order(state_->edges, roots), options);
}

}  // namespace mapwright
