// tests/fuzz/drivers.h — what each fuzz target does with one input, shared by the libFuzzer
// targets (tests/fuzz/*_fuzz.cc) and the regression suite (tests/fuzz_regression_test.cc),
// so that a saved input goes through exactly the code path that found it.
//
// A driver must return normally for every input: the library may refuse the bytes, but only
// with the errors its headers promise. Anything else is a finding:
//   * a crash, a sanitizer report, an uncaught exception (a kj::Exception escaping
//     Wrapper::open, say);
//   * a broken property, reported through check_failed() (below): an errno the header does
//     not promise, a span outside the input, an fd left open after the call, a stock Cap'n
//     Proto reader refusing a message that MappedMessageReader accepted, ...
//
// Each program that includes this header defines check_failed(): the fuzz targets print and
// abort (libFuzzer saves the input), the regression suite throws so that GoogleTest fails
// the one test.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <capnp/any.h>
#include <capnp/serialize.h>
#include <kj/array.h>
#include <kj/exception.h>

#include "bundle_wire.h"  // src/: the fuzz targets and the regression suite see the internals
#include "elf_info.h"
#include "mapwright/capnp.h"
#include "mapwright/error.h"
#include "mapwright/flatbuffers.h"
#include "mapwright/sealed_image.h"
#include "mapwright/share.h"
#include "mapwright/wrapper.h"
#include "targets.h"
#include "fixed_image_format.h"
#include "mapwright/fixed_image.h"
#include "mapwright/region.h"
#include "wrapper_flat.h"
#include "test_generated.h"  // tests/schema/test.fbs, by flatc

namespace mapwright::fuzz {

// Defined by each program that includes this header. Must not return normally.
[[noreturn]] void check_failed(const char* what, const char* file, int line);

#define MAPWRIGHT_FUZZ_CHECK(condition, what)                                    \
  do {                                                                           \
    if (!(condition)) ::mapwright::fuzz::check_failed((what), __FILE__, __LINE__); \
  } while (false)

using Input = std::span<const std::uint8_t>;

// Keeps the optimiser from dropping reads whose only purpose is to touch the bytes.
inline void sink(std::uint64_t value) {
  static volatile std::uint64_t sunk;
  sunk = sunk + value;
}

// An owned fd; -1 for none.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) noexcept : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) {
      reset();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  ~Fd() { reset(); }
  int get() const noexcept { return fd_; }
  int release() noexcept { return std::exchange(fd_, -1); }
  void reset() noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

// The number of open fds, from /proc/self/fd (the directory's own fd included, every time).
inline int open_fd_count() {
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return -1;
  int count = 0;
  while (const dirent* entry = ::readdir(dir)) {
    if (entry->d_name[0] != '.') ++count;
  }
  ::closedir(dir);
  return count;
}

// Checks, when it goes out of scope, that the scope closed every fd it opened. A driver
// runs millions of times in one fuzzing process: one fd lost per call ends the process.
class FdLeakCheck {
 public:
  FdLeakCheck() : before_(open_fd_count()) {}
  FdLeakCheck(const FdLeakCheck&) = delete;
  FdLeakCheck& operator=(const FdLeakCheck&) = delete;
  void verify() const {
    MAPWRIGHT_FUZZ_CHECK(open_fd_count() == before_, "an fd opened for this input is still open");
  }

 private:
  int before_;
};

// A memfd (sealing allowed) holding `prefix` then `bytes`. Aborts the run if the system
// cannot make one: that is the machine, not the input.
inline Fd memfd_with(Input bytes, std::span<const std::uint8_t> prefix = {}) {
  Fd fd(::memfd_create("mapwright-fuzz", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  MAPWRIGHT_FUZZ_CHECK(fd.get() >= 0, "memfd_create failed");
  for (const Input part : {prefix, bytes}) {
    std::size_t done = 0;
    while (done < part.size()) {
      const ssize_t n = ::write(fd.get(), part.data() + done, part.size() - done);
      MAPWRIGHT_FUZZ_CHECK(n > 0, "writing the input into a memfd failed");
      done += static_cast<std::size_t>(n);
    }
  }
  return fd;
}

// ---- wrapper_fuzz -----------------------------------------------------------------------

// The input found from its end (Wrapper::open_embedded), alone and after a page of other
// bytes (as appended to an executable). Whatever is found ends at the file's end and starts
// page-aligned; a whole version 2 wrapper (`whole`, what Wrapper::open accepted) is found
// where it starts, with the same entries at offsets moved by the page; a version 1 wrapper
// is refused with ENOTSUP; every refusal is one of the documented errnos.
inline void check_embedded(Input input, const Wrapper* whole) {
  static const std::array<std::uint8_t, kWrapperAlignment> kPrefix = [] {
    std::array<std::uint8_t, kWrapperAlignment> page{};
    for (std::size_t i = 0; i < page.size(); ++i) page[i] = static_cast<std::uint8_t>(i * 7 + 1);
    return page;
  }();
  for (const std::uint64_t prefix : {std::uint64_t{0}, std::uint64_t{kWrapperAlignment}}) {
    const Fd file = memfd_with(input, std::span(kPrefix.data(), prefix));
    std::optional<Wrapper> found;
    int error = 0;
    try {
      found.emplace(Wrapper::open_embedded(file.get(), {.name = "fuzz input"}));
    } catch (const Error& e) {
      error = e.error();
      MAPWRIGHT_FUZZ_CHECK(error == EINVAL || error == EBADMSG || error == ENOMSG || error == ENOTSUP,
                           "Wrapper::open_embedded refused with an undocumented errno");
    }
    if (found) {
      MAPWRIGHT_FUZZ_CHECK(found->offset() % kWrapperAlignment == 0, "a wrapper found off a page");
      MAPWRIGHT_FUZZ_CHECK(found->offset() + found->size() == prefix + input.size(),
                           "a wrapper found that does not end at the file's end");
    }
    if (whole == nullptr) continue;
    if (whole->format() == WrapperFormat::kCapnProto && whole->format_version() == 1) {
      if (prefix == 0) MAPWRIGHT_FUZZ_CHECK(error == ENOTSUP, "a version 1 wrapper was not refused with ENOTSUP");
      continue;
    }
    MAPWRIGHT_FUZZ_CHECK(found.has_value(), "a whole version 2 wrapper was not found from its end");
    MAPWRIGHT_FUZZ_CHECK(found->offset() == prefix, "a whole wrapper was found at another offset");
    MAPWRIGHT_FUZZ_CHECK(found->entries().size() == whole->entries().size(),
                         "the wrapper found has other entries");
    for (std::size_t i = 0; i < found->entries().size(); ++i) {
      const WrapperEntry& a = found->entries()[i];
      const WrapperEntry& b = whole->entries()[i];
      MAPWRIGHT_FUZZ_CHECK(a.name == b.name && a.size == b.size &&
                               a.offset == (b.chunks.empty() ? 0 : b.offset + prefix),
                           "an entry found from the end differs from the whole file's");
    }
  }
}

// The input is a whole wrapper file: Wrapper::open over a memfd holding it, then everything a
// reader of the entries would touch, but not load_library (dlopen of fuzzed bytes is out of
// scope).
// A compressed entry (Cap'n Proto format version 3, or the FlatBuffers form): a frame table
// that open() accepted describes the stored bytes exactly, and read_entry() gives exactly
// `size` bytes in frame order or throws EBADMSG (a frame that does not decode), never
// anything else.
inline void check_frames(const Wrapper& wrapper, const WrapperEntry& entry) {
  MAPWRIGHT_FUZZ_CHECK(wrapper.format() == WrapperFormat::kFlatBuffers ||
                           wrapper.format_version() == kWrapperCompressedFormatVersion,
                       "a compressed entry in a file of another version was accepted");
  MAPWRIGHT_FUZZ_CHECK(entry.frame_bytes % 4096 == 0 && entry.frame_bytes > 0,
                       "a frame size that is not a positive multiple of 4096 was accepted");
  MAPWRIGHT_FUZZ_CHECK(entry.frame_ends.size() == (entry.size + entry.frame_bytes - 1) / entry.frame_bytes,
                       "a frame count that does not cover the size was accepted");
  std::uint64_t previous = 0;
  for (const std::uint64_t end : entry.frame_ends) {
    MAPWRIGHT_FUZZ_CHECK(end > previous, "an empty or backward frame was accepted");
    previous = end;
  }
  MAPWRIGHT_FUZZ_CHECK(previous == entry.stored_size, "the frames do not end at stored_size");
  MAPWRIGHT_FUZZ_CHECK(entry.size == 0 || entry.contiguous(), "a compressed entry that is not contiguous was accepted");
  std::uint64_t next = 0;
  try {
    wrapper.read_entry(entry, [&](std::span<const std::byte> piece, std::uint64_t at) {
      MAPWRIGHT_FUZZ_CHECK(at == next && !piece.empty(), "read_entry() gave pieces out of order");
      next += piece.size();
    });
    MAPWRIGHT_FUZZ_CHECK(next == entry.size, "read_entry() gave other than size bytes");
  } catch (const Error& e) {
    MAPWRIGHT_FUZZ_CHECK(e.error() == EBADMSG, "read_entry() threw an errno other than EBADMSG");
  }
}

inline void check_wrapper(Input input);

// A wrapper file of either form; or, when the input is a bare wrapper FlatBuffer (the file
// identifier "MWRP" at bytes 4-7 — no wrapper starts so), the FlatBuffers-form wrapper around it.
inline void run_wrapper(Input input) {
  if (input.size() >= 8 && std::memcmp(input.data() + 4, "MWRP", 4) == 0) {
    // Three pages of zeros before it (room for chunks at 4096 and 8192); the trailer with its
    // digest, so that mutations reach the Verifier and the entry checks, not the digest.
    const std::vector<std::byte> wrapped =
        detail::flat_wrapper_around({}, 3 * 4096, std::as_bytes(input));
    check_wrapper({reinterpret_cast<const std::uint8_t*>(wrapped.data()), wrapped.size()});
    return;
  }
  check_wrapper(input);
}

inline void check_wrapper(Input input) {
  const FdLeakCheck leaks;
  {
    const Fd file = memfd_with(input);
    std::optional<Wrapper> opened;
    try {
      opened.emplace(Wrapper::open(file.get(), {.name = "fuzz input"}));
    } catch (const Error& e) {
      // wrapper.h: EINVAL for anything malformed, EBADMSG for a damaged file (the memfd
      // itself always opens and maps).
      MAPWRIGHT_FUZZ_CHECK(e.error() == EINVAL || e.error() == EBADMSG,
                           "Wrapper::open refused with an errno other than EINVAL or EBADMSG");
    }
    if (opened) {
      const Wrapper& wrapper = *opened;
      MAPWRIGHT_FUZZ_CHECK(wrapper.file_size() == input.size(), "file_size() is not the input's size");
      std::uint64_t sum = 0;
      bool all_match = true;
      for (const WrapperEntry& entry : wrapper.entries()) {
        MAPWRIGHT_FUZZ_CHECK(!entry.name.empty(), "an entry with an empty name was accepted");
        MAPWRIGHT_FUZZ_CHECK(wrapper.find(entry.name) == &entry, "find() does not give the entry back");
        std::uint64_t total = 0;
        for (const auto chunk : entry.chunks) {
          MAPWRIGHT_FUZZ_CHECK(!chunk.empty(), "an empty chunk was accepted");
          for (const std::byte b : chunk) sum += static_cast<std::uint8_t>(b);  // every byte
          total += chunk.size();
        }
        MAPWRIGHT_FUZZ_CHECK(total == entry.stored_size, "the chunks do not add up to stored_size");
        if (entry.compression == EntryCompression::kNone) {
          MAPWRIGHT_FUZZ_CHECK(entry.stored_size == entry.size, "an uncompressed entry's stored_size is not its size");
          MAPWRIGHT_FUZZ_CHECK(entry.frame_ends.empty(), "an uncompressed entry with frames was accepted");
        } else {
          check_frames(wrapper, entry);
        }
        MAPWRIGHT_FUZZ_CHECK(entry.offset % kWrapperAlignment == 0, "an entry's offset is not aligned");
        if (!entry.chunks.empty()) {
          // The first chunk is the input's bytes at entry.offset, whatever the mapping.
          const auto first = entry.chunks.front();
          MAPWRIGHT_FUZZ_CHECK(entry.offset <= input.size() && first.size() <= input.size() - entry.offset,
                               "an entry's first chunk lies outside the file");
          MAPWRIGHT_FUZZ_CHECK(std::memcmp(first.data(), input.data() + entry.offset, first.size()) == 0,
                               "an entry's first chunk is not the file's bytes at its offset");
        }
        for (const std::string& dependency : entry.dependencies) {
          const WrapperEntry* target = wrapper.find(dependency);
          MAPWRIGHT_FUZZ_CHECK(target != nullptr && target != &entry &&
                                   target->kind == EntryKind::kSharedLibrary,
                               "a dependency that is not another library entry was accepted");
        }
        if (entry.contiguous() && entry.compression == EntryCompression::kNone) {
          const auto bytes = entry.bytes();
          MAPWRIGHT_FUZZ_CHECK(bytes.size() == entry.size, "bytes() has the wrong size");
          if (!bytes.empty()) sum += static_cast<std::uint8_t>(bytes.back());
        } else {
          try {
            sink(entry.bytes().size());
            MAPWRIGHT_FUZZ_CHECK(false, "bytes() of a non-contiguous or compressed entry did not throw");
          } catch (const Error& e) {
            MAPWRIGHT_FUZZ_CHECK(e.error() == EINVAL, "bytes() threw an errno other than EINVAL");
          }
        }
        all_match = wrapper.verify_entry(entry) && all_match;
      }
      // Format version 2: the metadata digest held at open(); verify_metadata() can still
      // find bytes that should be zero and are not. Version 1 has nothing to check there.
      bool metadata_ok = true;
      try {
        wrapper.verify_metadata();
      } catch (const Error& e) {
        MAPWRIGHT_FUZZ_CHECK(e.error() == EBADMSG, "verify_metadata() threw an errno other than EBADMSG");
        MAPWRIGHT_FUZZ_CHECK(wrapper.metadata_checked(), "verify_metadata() failed on a version 1 file");
        metadata_ok = false;
      }
      try {
        wrapper.verify();
        MAPWRIGHT_FUZZ_CHECK(all_match && metadata_ok,
                             "verify() passed but verify_entry() or verify_metadata() failed");
      } catch (const Error& e) {
        MAPWRIGHT_FUZZ_CHECK(e.error() == EBADMSG, "verify() threw an errno other than EBADMSG");
        MAPWRIGHT_FUZZ_CHECK(!all_match || !metadata_ok,
                             "verify() failed but verify_entry() and verify_metadata() passed");
      }
      sink(sum);
    }
    check_embedded(input, opened ? &*opened : nullptr);
  }
  leaks.verify();
}

// ---- segment_table_fuzz -------------------------------------------------------------------

// The input is a stream-framed Cap'n Proto message, read with MappedMessageReader(fd, offset,
// 0) at offset 0 and at offset 8 (after an 8-byte prefix), then traversed with
// AnyPointer::targetSize() (bounded by the traversal limit). Exercises src/capnp_frame.cc.
inline void read_message_at(Input input, std::uint64_t offset) {
  static constexpr std::uint8_t kPrefix[8] = {'M', 'W', 'P', 'R', 'E', 'F', 'I', 'X'};
  const Fd file = memfd_with(input, std::span(kPrefix, offset));
  try {
    MappedMessageReader reader(file.get(), offset, 0);
    // The frame that was accepted describes exactly the input.
    MAPWRIGHT_FUZZ_CHECK(reader.size() == input.size(), "size() is not the input's size");
    MAPWRIGHT_FUZZ_CHECK(std::memcmp(reader.data(), input.data(), input.size()) == 0,
                         "data() is not the input's bytes");
    const std::uint32_t count = reader.segment_count();
    MAPWRIGHT_FUZZ_CHECK(count >= 1 && count <= kMaxSegments, "an impossible segment count was accepted");
    std::uint64_t at = (4 + 4 * std::uint64_t{count} + 7) / 8 * 8;
    for (std::uint32_t i = 0; i < count; ++i) {
      const auto segment = reader.getSegment(i);
      MAPWRIGHT_FUZZ_CHECK(reinterpret_cast<const std::byte*>(segment.begin()) == reader.data() + at,
                           "a segment does not start where the table says");
      at += segment.size() * sizeof(::capnp::word);
      MAPWRIGHT_FUZZ_CHECK(at <= input.size(), "a segment runs past the end of the input");
    }
    MAPWRIGHT_FUZZ_CHECK(at == input.size(), "the segments do not end at the end of the input");
    MAPWRIGHT_FUZZ_CHECK(reader.getSegment(count).size() == 0, "a segment past the count is not empty");

    // A stock reader accepts what MappedMessageReader accepted, and ends where it ends.
    auto words = kj::heapArray<::capnp::word>(input.size() / sizeof(::capnp::word));
    std::memcpy(words.begin(), input.data(), input.size());
    try {
      ::capnp::FlatArrayMessageReader stock(words);
      MAPWRIGHT_FUZZ_CHECK(stock.getEnd() == words.end(), "the stock reader ends elsewhere");
    } catch (const kj::Exception&) {
      MAPWRIGHT_FUZZ_CHECK(false, "FlatArrayMessageReader refuses a frame MappedMessageReader accepted");
    }

    try {
      const auto size = reader.getRoot<::capnp::AnyPointer>().targetSize();
      sink(size.wordCount + size.capCount);
    } catch (const kj::Exception&) {
      // Cap'n Proto's own checks: bad pointers, traversal and nesting limits (capnp.h).
    }
  } catch (const Error& e) {
    MAPWRIGHT_FUZZ_CHECK(e.error() == EINVAL, "MappedMessageReader refused with an errno other than EINVAL");
  }
}

inline void run_segment_table(Input input) {
  const FdLeakCheck leaks;
  read_message_at(input, 0);
  read_message_at(input, 8);
  leaks.verify();
}

// ---- sealed_image_fuzz --------------------------------------------------------------------
//
// The input drives SealedImage::adopt() or receive_image() with fds of every kind:
//
//   byte 0   bits 0-2: kind of fd A (FdKind), bits 3-5: kind of fd B,
//            bits 6-7: fds attached to the message: 0, 1 (A), 2 (A, B), 3 (A ten times)
//   byte 1   bits 0-3: seals added to fd A if it is kMemfdSeals; bits 4-7: the same for B
//   byte 2   bits 0-1: socket type (0, 3: SOCK_STREAM; 1: SOCK_SEQPACKET; 2: SOCK_DGRAM)
//            bit 2: shut the sending end down after sending
//            bit 3: start the payload with receive_image()'s magic number
//            bit 4: announce fd A's size in the payload (bytes 8-15)
//            bit 5: adopt fd A instead of sending anything
//            bit 6: grow fd A by byte 3 * 256 zero bytes before sealing it
//            bit 7: send nothing
//   byte 3   see bit 6
//   byte 4   payload length (at most what is left)
//   then     the payload, then the content of every memfd/file (the rest of the input)
//
// Missing header bytes read as zero, so every input means something.

enum class FdKind : std::uint8_t {
  kMemfdSeals = 0,      // a memfd with the seals from byte 1
  kMemfdSealed = 1,     // a memfd with all four seals: adopt() must take it
  kMemfdNoSealing = 2,  // a memfd made without MFD_ALLOW_SEALING (it carries F_SEAL_SEAL only)
  kRegularFile = 3,     // an unnamed regular file (O_TMPFILE) in the temporary directory
  kPipe = 4,            // the read end of a pipe
  kSocket = 5,          // one end of a socket pair
  kInvalid = 6,         // -1
  kClosed = 7,          // the number of an fd that was just closed (900 or above)
};

struct MadeFd {
  Fd fd;
  int number = -1;  // what to pass on (differs from fd.get() for kInvalid, kClosed)
  FdKind kind = FdKind::kInvalid;
  int seals = 0;    // seals requested (kMemfdSeals, kMemfdSealed)
  std::uint64_t size = 0;
};

inline void write_all(int fd, Input bytes) {
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    MAPWRIGHT_FUZZ_CHECK(n > 0, "writing fd content failed");
    done += static_cast<std::size_t>(n);
  }
}

inline MadeFd make_fd(FdKind kind, int seals, Input content, std::uint64_t extra) {
  MadeFd made;
  made.kind = kind;
  switch (kind) {
    case FdKind::kMemfdSeals:
    case FdKind::kMemfdSealed:
    case FdKind::kMemfdNoSealing: {
      const unsigned flags =
          MFD_CLOEXEC | (kind == FdKind::kMemfdNoSealing ? 0u : unsigned{MFD_ALLOW_SEALING});
      made.fd = Fd(::memfd_create("mapwright-fuzz", flags));
      MAPWRIGHT_FUZZ_CHECK(made.fd.get() >= 0, "memfd_create failed");
      write_all(made.fd.get(), content);
      made.size = content.size() + extra;
      if (extra != 0) {
        MAPWRIGHT_FUZZ_CHECK(::ftruncate(made.fd.get(), static_cast<off_t>(made.size)) == 0, "ftruncate failed");
      }
      if (kind == FdKind::kMemfdSealed) seals = kImageSeals;
      if (kind != FdKind::kMemfdNoSealing) {
        made.seals = seals & kImageSeals;
        if (made.seals != 0) {
          MAPWRIGHT_FUZZ_CHECK(::fcntl(made.fd.get(), F_ADD_SEALS, made.seals) == 0, "F_ADD_SEALS failed");
        }
      }
      break;
    }
    case FdKind::kRegularFile: {
      const std::string dir = std::filesystem::temp_directory_path().string();
      made.fd = Fd(::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
      MAPWRIGHT_FUZZ_CHECK(made.fd.get() >= 0, "open(O_TMPFILE) failed");
      write_all(made.fd.get(), content);
      made.size = content.size();
      break;
    }
    case FdKind::kPipe: {
      int ends[2];
      MAPWRIGHT_FUZZ_CHECK(::pipe2(ends, O_CLOEXEC) == 0, "pipe2 failed");
      ::close(ends[1]);
      made.fd = Fd(ends[0]);
      break;
    }
    case FdKind::kSocket: {
      int ends[2];
      MAPWRIGHT_FUZZ_CHECK(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ends) == 0,
                           "socketpair failed");
      ::close(ends[1]);
      made.fd = Fd(ends[0]);
      break;
    }
    case FdKind::kInvalid:
      made.number = -1;
      return made;
    case FdKind::kClosed: {
      // High up, so that the fds opened next (lowest free number first) do not reuse it.
      const int fd = ::fcntl(2, F_DUPFD_CLOEXEC, 900);
      MAPWRIGHT_FUZZ_CHECK(fd >= 0, "F_DUPFD failed");
      ::close(fd);
      made.number = fd;
      return made;
    }
  }
  made.number = made.fd.get();
  return made;
}

// What adopt() must do with `made`: 0 for success, else the errno (0 and -1 meaning "either
// EPERM or EINVAL": a tmpfs file carries F_SEAL_SEAL like a memfd made without sealing).
inline int expected_adopt_errno(const MadeFd& made) {
  switch (made.kind) {
    case FdKind::kMemfdSeals:
    case FdKind::kMemfdSealed: return made.seals == kImageSeals ? 0 : EPERM;
    case FdKind::kMemfdNoSealing: return EPERM;
    case FdKind::kRegularFile: return -1;
    case FdKind::kPipe:
    case FdKind::kSocket: return EINVAL;
    case FdKind::kInvalid:
    case FdKind::kClosed: return EBADF;
  }
  return -1;
}

inline void check_image(const SealedImage& image, std::uint64_t size) {
  MAPWRIGHT_FUZZ_CHECK(image.fd() >= 0 && image.size() == size, "the image has the wrong size");
  const auto bytes = image.map();
  MAPWRIGHT_FUZZ_CHECK(bytes.size() == size, "map() has the wrong size");
  std::uint64_t sum = 0;
  for (const std::byte b : bytes) sum += static_cast<std::uint8_t>(b);
  sink(sum);
}

inline void adopt_fd(MadeFd& made, Input content) {
  const int expected = expected_adopt_errno(made);
  try {
    const SealedImage image = SealedImage::adopt(made.number);
    made.fd.release();  // the image owns it now
    MAPWRIGHT_FUZZ_CHECK(expected == 0, "adopt() took an fd that is not a sealed memfd");
    check_image(image, made.size);
    const auto bytes = image.map();
    const std::size_t common = std::min(content.size(), bytes.size());
    MAPWRIGHT_FUZZ_CHECK(common == 0 || std::memcmp(bytes.data(), content.data(), common) == 0,
                         "the image's bytes are not the memfd's");
  } catch (const Error& e) {
    // adopt() leaves a refused fd open and the caller's: made.fd still closes it.
    if (expected == -1) {
      MAPWRIGHT_FUZZ_CHECK(e.error() == EPERM || e.error() == EINVAL, "adopt() refused a file with an odd errno");
    } else {
      MAPWRIGHT_FUZZ_CHECK(expected != 0, "adopt() refused a sealed memfd");
      MAPWRIGHT_FUZZ_CHECK(e.error() == expected, "adopt() refused with an unexpected errno");
    }
    if (made.fd.get() >= 0) {
      MAPWRIGHT_FUZZ_CHECK(::fcntl(made.fd.get(), F_GETFD) >= 0, "adopt() closed an fd it refused");
    }
  }
}

inline void send_and_receive(const std::uint8_t* header, Input payload, MadeFd& a, MadeFd& b) {
  const std::uint8_t flags = header[2];
  const int types[4] = {SOCK_STREAM, SOCK_SEQPACKET, SOCK_DGRAM, SOCK_STREAM};
  int ends[2];
  MAPWRIGHT_FUZZ_CHECK(::socketpair(AF_UNIX, types[flags & 3] | SOCK_CLOEXEC, 0, ends) == 0,
                       "socketpair failed");
  Fd sender(ends[0]);
  const Fd receiver(ends[1]);
  // Never block: with nothing to read, receive_image() gets EAGAIN and throws.
  MAPWRIGHT_FUZZ_CHECK(::fcntl(receiver.get(), F_SETFL, O_NONBLOCK) == 0, "O_NONBLOCK failed");

  std::vector<std::uint8_t> message(payload.begin(), payload.end());
  if ((flags & 0x08) != 0) {
    constexpr std::uint8_t kMagic[8] = {'P', 'A', 'M', 'W', 'I', 'M', 'G', '1'};
    message.resize(std::max<std::size_t>(message.size(), 8));
    std::memcpy(message.data(), kMagic, 8);
  }
  if ((flags & 0x10) != 0) {
    message.resize(std::max<std::size_t>(message.size(), 16));
    const std::uint64_t size = a.size;  // little-endian, like the sender's struct on x86-64
    std::memcpy(message.data() + 8, &size, 8);
  }

  std::vector<int> fds;
  switch (header[0] >> 6) {
    case 0: break;
    case 1: fds = {a.number}; break;
    case 2: fds = {a.number, b.number}; break;
    default: fds.assign(10, a.number); break;  // more than receive_image() has room for
  }
  bool sent = false;
  if ((flags & 0x80) == 0) {
    iovec data{message.data(), message.size()};
    alignas(cmsghdr) char control[CMSG_SPACE(10 * sizeof(int))] = {};
    msghdr out{};
    out.msg_iov = &data;
    out.msg_iovlen = 1;
    if (!fds.empty()) {
      out.msg_control = control;
      out.msg_controllen = CMSG_SPACE(fds.size() * sizeof(int));
      cmsghdr* rights = CMSG_FIRSTHDR(&out);
      rights->cmsg_level = SOL_SOCKET;
      rights->cmsg_type = SCM_RIGHTS;
      rights->cmsg_len = CMSG_LEN(fds.size() * sizeof(int));
      std::memcpy(CMSG_DATA(rights), fds.data(), fds.size() * sizeof(int));
    }
    sent = ::sendmsg(sender.get(), &out, MSG_NOSIGNAL | MSG_DONTWAIT) >= 0;  // EBADF for -1
  }
  if ((flags & 0x04) != 0) sender.reset();

  // receive_image() accepts only: one message of exactly 16 bytes (a stream may carry more
  // after it; a longer seqpacket or datagram message is cut, MSG_TRUNC, and refused), the
  // magic number, one fd, all four seals, the announced size.
  const bool stream = types[flags & 3] == SOCK_STREAM;
  constexpr std::uint64_t kMagic = 0x31474d49'574d4150ull;  // "PAMWIMG1"
  std::uint64_t magic = 0;
  std::uint64_t announced = 0;
  if (message.size() >= 16) {
    std::memcpy(&magic, message.data(), 8);
    std::memcpy(&announced, message.data() + 8, 8);
  }
  const bool can_succeed = sent && (header[0] >> 6) == 1 &&
                           (stream ? message.size() >= 16 : message.size() == 16) &&
                           magic == kMagic && announced == a.size && expected_adopt_errno(a) == 0;
  try {
    const SealedImage image = receive_image(receiver.get());
    MAPWRIGHT_FUZZ_CHECK(can_succeed, "receive_image() accepted an image it should have refused");
    MAPWRIGHT_FUZZ_CHECK(image.fd() != a.number, "the received fd is the sender's number");
    const int fd_flags = ::fcntl(image.fd(), F_GETFD);
    MAPWRIGHT_FUZZ_CHECK(fd_flags >= 0 && (fd_flags & FD_CLOEXEC) != 0, "the received fd is not close-on-exec");
    check_image(image, a.size);
  } catch (const Error& e) {
    MAPWRIGHT_FUZZ_CHECK(!can_succeed, "receive_image() refused a well-formed image message");
    MAPWRIGHT_FUZZ_CHECK(e.error() != 0, "receive_image() threw errno 0");
  }
}

inline void run_sealed_image(Input input) {
  const FdLeakCheck leaks;
  {
    std::uint8_t header[5] = {};
    std::memcpy(header, input.data(), std::min(input.size(), sizeof header));
    const Input rest = input.subspan(std::min(input.size(), sizeof header));
    const std::size_t payload_size = std::min<std::size_t>(header[4], rest.size());
    const Input payload = rest.first(payload_size);
    const Input content = rest.subspan(payload_size);
    const std::uint64_t extra = (header[2] & 0x40) != 0 ? std::uint64_t{header[3]} * 256 : 0;

    MadeFd a = make_fd(static_cast<FdKind>(header[0] & 7), header[1] & 0xf, content, extra);
    if ((header[2] & 0x20) != 0) {
      adopt_fd(a, content);
    } else {
      MadeFd b = make_fd(static_cast<FdKind>((header[0] >> 3) & 7), header[1] >> 4, content, 0);
      send_and_receive(header, payload, a, b);
    }
  }
  leaks.verify();
}

// ---- elf_info_fuzz ------------------------------------------------------------------------

// The input is a shared library's bytes, read by detail::read_elf() (src/elf_info.h) as the
// wrapper writer and the loader read them: every read must lie inside the input, and what it
// says must be consistent — a problem has a reason, no problem means an ET_DYN of this machine,
// a SONAME only from a dynamic section that was read — and the same whether read through a
// callback or from the span.
inline void run_elf_info(Input input) {
  const auto bytes = std::as_bytes(input);
  const detail::ElfReadAt read = [bytes](std::uint64_t offset, void* buffer, std::size_t length) {
    MAPWRIGHT_FUZZ_CHECK(offset < bytes.size() && length <= bytes.size() - offset,
                         "read_elf read outside the image");
    std::memcpy(buffer, bytes.data() + offset, length);
    return length;
  };
  const detail::ElfInfo info = detail::read_elf(bytes.size(), read);
  if (info.problem == detail::ElfProblem::kNone) {
    MAPWRIGHT_FUZZ_CHECK(info.reason.empty(), "a reason without a problem");
    MAPWRIGHT_FUZZ_CHECK(info.type == 3 /* ET_DYN */, "accepted an ELF that is not ET_DYN");
    MAPWRIGHT_FUZZ_CHECK(detail::host_elf_machine() == 0 || info.machine == detail::host_elf_machine(),
                         "accepted an ELF for another machine");
  } else {
    MAPWRIGHT_FUZZ_CHECK(!info.reason.empty(), "a problem without a reason");
  }
  MAPWRIGHT_FUZZ_CHECK(info.dynamic_read || (!info.has_soname && info.needed.empty()),
                       "a SONAME or DT_NEEDED from a dynamic section that was not read");
  MAPWRIGHT_FUZZ_CHECK(info.has_soname || info.soname.empty(), "a SONAME without DT_SONAME");
  std::uint64_t sum = info.soname.size();
  for (const std::string& name : info.needed) {
    MAPWRIGHT_FUZZ_CHECK(name.find('\0') == std::string::npos, "a DT_NEEDED name holds a NUL");
    sum += name.size();
  }
  sink(sum);
  const detail::ElfInfo again = detail::read_elf(bytes);
  MAPWRIGHT_FUZZ_CHECK(again.problem == info.problem && again.reason == info.reason &&
                           again.has_soname == info.has_soname && again.soname == info.soname &&
                           again.needed == info.needed && again.dynamic_read == info.dynamic_read,
                       "read_elf over a span and over a callback disagree");
}

// ---- bundle_fuzz ----------------------------------------------------------------------------

// The input (share.h's receiver): one byte of flags, then each fd's content, then the message.
//   flags bits 0-2: the number of fds to attach (0-7); bit 3: SOCK_STREAM, else SOCK_SEQPACKET;
//         bits 4-5: the last fd's kind: 0 a sealed memfd, 1 a memfd without seals, 2 a memfd
//         with three seals (no F_SEAL_SEAL), 3 the read end of a pipe; others are sealed
//         memfds; bit 6: the sender closes its end after sending.
//   per fd: one length byte, then that many bytes of content.
//   the rest: the message, sent as it is (the seeds are real messages from encode_bundle).
// The parser (detail::parse_bundle) alone, then receive_bundle() over a socketpair. Checked:
// the parser accepts only messages that encode_bundle() writes byte for byte (so a field it
// ignored or a byte it skipped shows), with dependencies earlier, names unique; the receiver
// refuses with the errnos share.h promises, accepts exactly what the parser accepts with
// sealed fds of the announced sizes and digests, and closes every fd on every path.
inline void run_bundle(Input input) {
  const FdLeakCheck leaks;
  {
    const std::uint8_t flags = input.empty() ? 0 : input[0];
    Input rest = input.subspan(std::min<std::size_t>(1, input.size()));
    const std::size_t fd_count = flags & 7;
    const bool stream = (flags & 0x08) != 0;
    const int last_kind = (flags >> 4) & 3;
    std::vector<Fd> fds;
    std::vector<std::vector<std::uint8_t>> contents;
    bool all_sealed = true;
    for (std::size_t i = 0; i < fd_count; ++i) {
      const std::size_t length = rest.empty() ? 0 : std::min<std::size_t>(rest[0], rest.size() - 1);
      const Input content = rest.subspan(rest.empty() ? 0 : 1, length);
      rest = rest.subspan(std::min<std::size_t>(rest.size(), 1 + length));
      contents.emplace_back(content.begin(), content.end());
      const int kind = i + 1 == fd_count ? last_kind : 0;
      if (kind == 3) {
        int ends[2];
        MAPWRIGHT_FUZZ_CHECK(::pipe2(ends, O_CLOEXEC) == 0, "pipe2 failed");
        ::close(ends[1]);
        fds.emplace_back(ends[0]);
        all_sealed = false;
        continue;
      }
      Fd memfd = memfd_with(content);
      const int seals = kind == 0 ? kImageSeals : kind == 2 ? kImageSeals & ~F_SEAL_SEAL : 0;
      if (seals != 0) MAPWRIGHT_FUZZ_CHECK(::fcntl(memfd.get(), F_ADD_SEALS, seals) == 0, "F_ADD_SEALS failed");
      all_sealed = all_sealed && kind == 0;
      fds.push_back(std::move(memfd));
    }
    const auto message = std::as_bytes(rest);

    // The parser alone.
    std::vector<detail::WireLibrary> parsed;
    bool parsed_ok = false;
    try {
      parsed = detail::parse_bundle(message, fd_count, "fuzz input");
      parsed_ok = true;
    } catch (const Error& e) {
      MAPWRIGHT_FUZZ_CHECK(e.error() == EPROTO || e.error() == EBADMSG,
                           "parse_bundle refused with an errno other than EPROTO or EBADMSG");
    }
    if (parsed_ok) {
      MAPWRIGHT_FUZZ_CHECK(parsed.size() == fd_count, "parse_bundle accepted a count that is not the fd count");
      const auto again = detail::encode_bundle(parsed);
      MAPWRIGHT_FUZZ_CHECK(again.size() == message.size() &&
                               std::memcmp(again.data(), message.data(), message.size()) == 0,
                           "parse_bundle accepted a message that encode_bundle would not write");
      for (std::size_t i = 0; i < parsed.size(); ++i) {
        MAPWRIGHT_FUZZ_CHECK(!parsed[i].name.empty() && parsed[i].name.size() <= kMaxEntryNameBytes,
                             "parse_bundle accepted a bad name length");
        for (std::size_t k = 0; k < i; ++k) {
          MAPWRIGHT_FUZZ_CHECK(parsed[k].name != parsed[i].name, "parse_bundle accepted a name twice");
        }
        for (const std::uint32_t d : parsed[i].dependencies) {
          MAPWRIGHT_FUZZ_CHECK(d < i, "parse_bundle accepted a dependency that is not earlier");
        }
      }
    }

    // The whole receiver, over a socket.
    int ends[2];
    MAPWRIGHT_FUZZ_CHECK(::socketpair(AF_UNIX, (stream ? SOCK_STREAM : SOCK_SEQPACKET) | SOCK_CLOEXEC, 0, ends) == 0,
                         "socketpair failed");
    Fd sender(ends[0]);
    const Fd receiver(ends[1]);
    // Never block: with nothing (more) to read, receive_bundle() gets EAGAIN and throws.
    MAPWRIGHT_FUZZ_CHECK(::fcntl(receiver.get(), F_SETFL, O_NONBLOCK) == 0, "O_NONBLOCK failed");
    std::vector<int> numbers;
    for (const Fd& fd : fds) numbers.push_back(fd.get());
    bool sent = false;
    try {
      detail::send_bundle_message(sender.get(), message, numbers);
      sent = true;
    } catch (const Error&) {
      // An empty message on a stream socket sends nothing a receiver could see; a message
      // larger than the socket's buffer is EMSGSIZE. Nothing to receive then.
    }
    if ((flags & 0x40) != 0) sender.reset();
    bool expect_success = sent && !message.empty() && parsed_ok && all_sealed;
    for (std::size_t i = 0; expect_success && i < parsed.size(); ++i) {
      const auto bytes = std::as_bytes(std::span(contents[i]));
      expect_success = parsed[i].size == bytes.size() && parsed[i].digest == digest_of(bytes);
    }
    try {
      const LibraryBundle bundle = receive_bundle(receiver.get());
      MAPWRIGHT_FUZZ_CHECK(expect_success, "receive_bundle() accepted a bundle it should have refused");
      MAPWRIGHT_FUZZ_CHECK(bundle.size() == parsed.size(), "receive_bundle() lost a library");
      for (std::size_t i = 0; i < bundle.size(); ++i) {
        const BundledLibrary& library = bundle.libraries()[i];
        MAPWRIGHT_FUZZ_CHECK(library.name == parsed[i].name && library.dependencies == parsed[i].dependencies &&
                                 library.image.size() == contents[i].size(),
                             "receive_bundle() and parse_bundle() disagree");
        MAPWRIGHT_FUZZ_CHECK((::fcntl(library.image.fd(), F_GETFD) & FD_CLOEXEC) != 0,
                             "a received fd is not close-on-exec");
      }
    } catch (const Error& e) {
      MAPWRIGHT_FUZZ_CHECK(!expect_success, "receive_bundle() refused a well-formed bundle");
      const int err = e.error();
      MAPWRIGHT_FUZZ_CHECK(err == EPROTO || err == EBADMSG || err == EPERM || err == EINVAL ||
                               err == ECONNRESET || err == EAGAIN,
                           "receive_bundle() refused with an errno share.h does not promise");
    }
  }
  leaks.verify();
}

// ---- flatbuffer_fuzz ----------------------------------------------------------------------
//
// The input is a FlatBuffers buffer of the test schema (tests/schema/test.fbs), read with
// MappedFlatBuffer(fd, 0, 0) from a memfd and verified as a Catalog, with the reader's
// default limits and with tight ones. Properties: a refusal is EINVAL; the reader and a stock
// Verifier over a heap copy agree; everything an accepted buffer leads to lies inside it.

inline bool inside(const MappedFlatBuffer& reader, const void* begin, std::uint64_t size) {
  const auto* p = static_cast<const std::uint8_t*>(begin);
  return p >= reader.data() && size <= reader.size() &&
         static_cast<std::uint64_t>(p - reader.data()) <= reader.size() - size;
}

inline void walk_catalog(const MappedFlatBuffer& reader, const ::mapwright::test::fb::Catalog* catalog,
                         int depth) {
  MAPWRIGHT_FUZZ_CHECK(depth < 80, "a verified buffer nests deeper than the depth limit");
  MAPWRIGHT_FUZZ_CHECK(inside(reader, catalog, 4), "a table lies outside the buffer");
  if (const auto* title = catalog->title()) {
    MAPWRIGHT_FUZZ_CHECK(inside(reader, title->data(), title->size() + 1), "a string runs outside the buffer");
  }
  if (const auto* items = catalog->items()) {
    for (const auto* item : *items) {
      sink(item->value());
      if (const auto* name = item->name()) {
        MAPWRIGHT_FUZZ_CHECK(inside(reader, name->data(), name->size() + 1), "a name runs outside the buffer");
      }
      if (const auto* tags = item->tags()) {
        for (const auto* tag : *tags) {
          MAPWRIGHT_FUZZ_CHECK(inside(reader, tag->data(), tag->size() + 1), "a tag runs outside the buffer");
        }
      }
    }
  }
  if (const auto* blob = catalog->blob()) {
    MAPWRIGHT_FUZZ_CHECK(inside(reader, blob->data(), blob->size()), "a byte vector runs outside the buffer");
    std::uint64_t sum = 0;
    for (const std::uint8_t byte : *blob) sum += byte;
    sink(sum);
  }
  if (const auto* numbers = catalog->numbers()) {
    MAPWRIGHT_FUZZ_CHECK(inside(reader, numbers->data(), numbers->size() * 4ull), "a vector runs outside the buffer");
  }
  if (const auto* child = catalog->child()) walk_catalog(reader, child, depth + 1);
}

inline void read_flatbuffer(Input input, const FlatBufferReaderOptions& options) {
  namespace fb = ::mapwright::test::fb;
  const Fd file = memfd_with(input);
  std::optional<MappedFlatBuffer> reader;
  try {
    reader.emplace(file.get(), 0, 0);
  } catch (const Error& e) {
    MAPWRIGHT_FUZZ_CHECK(e.error() == EINVAL, "MappedFlatBuffer refused with an errno other than EINVAL");
    MAPWRIGHT_FUZZ_CHECK(input.empty(), "MappedFlatBuffer refused a non-empty input before verifying it");
    return;
  }
  MAPWRIGHT_FUZZ_CHECK(reader->size() == input.size() &&
                           std::memcmp(reader->data(), input.data(), input.size()) == 0,
                       "the view is not the input");
  // The stock Verifier, over a heap copy with the same limits, must agree.
  std::vector<std::uint8_t> copy(input.begin(), input.end());
  ::flatbuffers::Verifier heap(copy.data(), copy.size(), reader->verifier_options(options));
  const bool stock_accepts = heap.VerifyBuffer<fb::Catalog>(nullptr);
  try {
    const fb::Catalog* catalog = reader->root<fb::Catalog>(nullptr, options);
    MAPWRIGHT_FUZZ_CHECK(stock_accepts, "MappedFlatBuffer accepted what the stock Verifier refuses");
    walk_catalog(*reader, catalog, 0);
  } catch (const Error& e) {
    MAPWRIGHT_FUZZ_CHECK(e.error() == EINVAL, "root() refused with an errno other than EINVAL");
    MAPWRIGHT_FUZZ_CHECK(!stock_accepts, "MappedFlatBuffer refused what the stock Verifier accepts");
  }
  try {
    (void)reader->root<fb::Catalog>(fb::CatalogIdentifier(), options);
  } catch (const Error& e) {
    MAPWRIGHT_FUZZ_CHECK(e.error() == EINVAL, "root(identifier) refused with an errno other than EINVAL");
  }
}

inline void run_flatbuffer(Input input) {
  const FdLeakCheck leaks;
  read_flatbuffer(input, {});
  FlatBufferReaderOptions tight;
  tight.max_depth = 3;
  tight.max_tables = 16;
  read_flatbuffer(input, tight);
  leaks.verify();
}

// ---- fixed_image_fuzz -------------------------------------------------------------------

// Maps `image` with `check`; on success, every recorded pointer is null or inside the mapped
// data, and the report agrees with where it went.
inline std::optional<FixedImage> map_fixed(const SealedImage& image, FixedMapOptions::Check check) {
  FixedMapOptions options;
  options.check = check;
  std::optional<FixedImage> mapped;
  try {
    mapped.emplace(FixedImage::map(image, options));
  } catch (const Error& e) {
    // fixed_image.h: EINVAL malformed, EBADMSG damaged or hostile, ESTALE stale; ENOMEM for
    // an address space that is not there.
    MAPWRIGHT_FUZZ_CHECK(e.error() == EINVAL || e.error() == EBADMSG || e.error() == ESTALE ||
                             e.error() == ENOMEM,
                         "FixedImage::map refused with an undocumented errno");
    return std::nullopt;
  }
  const FixedImage& f = *mapped;
  std::string why;
  const detail::FixedHeader h = detail::decode_fixed_header(image.map(), image.size(), &why);
  MAPWRIGHT_FUZZ_CHECK(why.empty(), "an image whose header does not decode was mapped");
  MAPWRIGHT_FUZZ_CHECK(!f.report().at_base || f.data() == reinterpret_cast<std::byte*>(f.base()),
                       "at_base, but mapped elsewhere");
  MAPWRIGHT_FUZZ_CHECK(f.report().at_base || f.report().pages_touched <= f.report().relocations * 2,
                       "more pages touched than pointers moved");
  if (check == FixedMapOptions::Check::kFull) {
    for (std::uint64_t i = 0; i < h.relocation_count; ++i) {
      std::uint64_t at;
      std::memcpy(&at, f.data() + h.relocations + 8 * i, 8);
      MAPWRIGHT_FUZZ_CHECK(at >= kFixedImageHeaderBytes && at + 8 <= h.data_end, "a relocation outside the data");
      std::uint64_t value;
      std::memcpy(&value, f.data() + at, 8);
      const auto data = reinterpret_cast<std::uintptr_t>(f.data());
      MAPWRIGHT_FUZZ_CHECK(value == 0 || (value >= data + kFixedImageHeaderBytes && value <= data + h.data_end),
                           "a pointer of a mapped image points outside it");
    }
  }
  if (f.root<void>() != nullptr) {
    MAPWRIGHT_FUZZ_CHECK(f.root<std::byte>() >= f.data() + kFixedImageHeaderBytes &&
                             f.root<std::byte>() < f.data() + h.data_end,
                         "the root lies outside the data");
  }
  return mapped;
}

inline SealedImage sealed_copy(std::span<const std::byte> bytes) {
  RegionOptions options;
  options.capacity = std::max<std::uint64_t>(bytes.size(), 1);
  Region region = Region::memfd("fuzz fixed image", options);
  region.ensure(bytes.size());
  if (!bytes.empty()) std::memcpy(region.data(), bytes.data(), bytes.size());
  region.finish(bytes.size());
  return std::move(region).seal();
}

// The input is a fixed-base image (fixed_image.h). Mapped as it is with full checks; then,
// when its header decodes, with its digest recomputed (so that mutations reach the relocation
// table, the pointers and the manifest rather than stop at the digest): with full checks
// (at its base when free), again while that one holds the base (the relocation path), and
// with header-only checks.
inline void run_fixed_image(Input input) {
  const FdLeakCheck leaks;
  {
    std::vector<std::byte> bytes(reinterpret_cast<const std::byte*>(input.data()),
                                 reinterpret_cast<const std::byte*>(input.data()) + input.size());
    (void)map_fixed(sealed_copy(bytes), FixedMapOptions::Check::kFull);
    std::string why;
    detail::FixedHeader h = detail::decode_fixed_header(bytes, bytes.size(), &why);
    if (why.empty()) {
      h.digest = detail::fixed_image_digest(bytes);
      detail::encode_fixed_header(h, bytes.data());
      const SealedImage image = sealed_copy(bytes);
      const auto first = map_fixed(image, FixedMapOptions::Check::kFull);
      const auto second = map_fixed(image, FixedMapOptions::Check::kFull);
      const auto trusted = map_fixed(image, FixedMapOptions::Check::kHeader);
      MAPWRIGHT_FUZZ_CHECK(first.has_value() == second.has_value(),
                           "an image mapped once and refused the second time");
    }
  }
  leaks.verify();
}

}  // namespace mapwright::fuzz
