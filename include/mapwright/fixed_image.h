// mapwright/fixed_image.h — fixed-base images: pointer-rich data built once at a chosen
// address, sealed, and mapped at that address in every process that uses it, with no parsing
// and no relocation; relocated (only the pages that hold pointers) when the address is taken;
// refused, never silently wrong, when what it depends on changed.
//
// Building (FixedImageBuilder): a memfd region reserved at options.base (MAP_FIXED_NOREPLACE;
// Error EEXIST when taken). Objects are made in it with create<T>() or through resource(), a
// std::pmr::memory_resource, so that std::pmr containers (vector, string, unordered_map...)
// and plain structs are built directly there. Every pointer into the image is recorded in a
// relocation table: explicitly with note_pointer(), and automatically at seal() by a scan of
// every allocated byte for 8-byte words whose value lies in the image's data (options.
// scan_pointers; see "The scan" below). seal() writes the header (base, size, root, the
// relocation table, the manifest of what the image depends on) and an XXH3-128 digest of
// the whole image, and seals the memfd (sealed_image.h): send it to other processes as any
// sealed image (send_image), or keep it.
//
// Mapping (FixedImage::map): MAP_PRIVATE (copy-on-write: data pages are shared with every
// other process mapping the image until one writes) exactly at the image's base with
// MAP_FIXED_NOREPLACE. When the base is taken (EEXIST), it is mapped wherever the kernel
// puts it and every recorded pointer is moved by the difference: only the pages that hold
// pointers are written (copied), and report() says which path ran and how many pages it
// touched. With Check::kFull (the default) the digest, every relocation entry and every
// recorded pointer's value (null or inside the image's data) are checked first: a damaged or
// hostile image is an Error, never a pointer out of the image. Check::kHeader reads only the
// header and the manifest (no page of data touched): for images that came sealed from
// a process you trust (a sealed memfd cannot change after the check; sealed_image.h).
//
// Staleness: an image records the mapwright version that wrote it, the layout of every type
// it declares (options.types: name, size, alignment, a schema hash you supply), and the
// images it points into (options.dependencies, by name, digest and address). map() refuses, with
// Error(ESTALE) naming the difference, an image whose writer version, types or dependencies
// are not exactly what the mapping process says (FixedMapOptions), so that a changed struct
// or a rebuilt dependency cannot be read through old addresses. FixedImageSet maps an image
// together with the images it points into, each at its base, from a source by name.
//
// Rules for what lives in an image:
//   * Read it; write only what is yours to write (the mapping is private: writes are copied
//     and never reach the image, nor other processes). Never free, grow or destroy objects in
//     a mapped image: a std::pmr container in it holds a pointer to the builder's
//     memory_resource, which does not exist in the mapping process.
//   * Only pointers into the image (or into a dependency, mapped at its base) are meaningful
//     there: no pointers to the heap, the stack, or code (no virtual functions, no
//     std::function, no std::any); types with such members are not fit for an image.
//   * Pointers are kept on as few pages as can be: what is allocated with an alignment below
//     8 (the characters of a std::pmr::string, byte buffers: nothing that holds a pointer)
//     goes to pages of its own, which the scan skips and relocation never writes.
//   * The scan: with scan_pointers, any 8-byte-aligned word of what was allocated with an
//     alignment of 8 or more whose value lies in [base + 4096, base + data end] is taken for
//     a pointer. An integer that happens
//     to have such a value (a 64-bit hash in a window of at most the image's size at 32 TiB,
//     by default: about 2^-34 per word for a 1 GiB image) would be moved too on the
//     relocation path (never on the base path). Turn the scan off and note_pointer() every
//     pointer when that matters.
//
// Not async-signal-safe, none of it.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <memory_resource>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "mapwright/sealed_image.h"
#include "mapwright/wrapper.h"  // Digest

namespace mapwright {

// 32 TiB: far from where Linux puts the heap, libraries and stacks on x86-64 and arm64 (47-bit
// user address spaces), so that it is free in most processes. Under ThreadSanitizer, whose
// shadow and metadata take most of 1 to 64 TiB (its mmap places nothing there), 256 GiB.
#if defined(__SANITIZE_THREAD__)
#define MAPWRIGHT_FIXED_BASE_UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define MAPWRIGHT_FIXED_BASE_UNDER_TSAN 1
#endif
#endif
#ifdef MAPWRIGHT_FIXED_BASE_UNDER_TSAN
inline constexpr std::uintptr_t kDefaultFixedBase = 0x4000000000;
#else
inline constexpr std::uintptr_t kDefaultFixedBase = 0x200000000000;
#endif
inline constexpr std::uint32_t kFixedImageFormatVersion = 1;
// No image is built or mapped below this address (Linux's default vm.mmap_min_addr), where a
// null pointer plus a small offset points.
inline constexpr std::uintptr_t kFixedImageLowestBase = 0x10000;
// Where images end at the most: the end of x86-64's 47-bit user address space, whose last page
// no process can map (arm64's 48-bit one goes further).
inline constexpr std::uintptr_t kFixedImageTop = (1ull << 47) - 4096;
// The header's size: the data starts this far from the base.
inline constexpr std::uint64_t kFixedImageHeaderBytes = 4096;

// A type an image holds, as the builder and the mapper see it.
struct FixedImageType {
  std::string name;  // printable ASCII, no spaces: "Dictionary", "ns::Record"
  std::uint64_t size = 0;
  std::uint64_t alignment = 0;
  std::uint64_t schema_hash = 0;  // yours to choose: a hash of the type's definition, a version
  friend bool operator==(const FixedImageType&, const FixedImageType&) = default;
};
template <class T>
FixedImageType fixed_type(std::string name, std::uint64_t schema_hash = 0) {
  return {std::move(name), sizeof(T), alignof(T), schema_hash};
}

// Another image that this one points into: get it from the mapped dependency with
// FixedImage::as_dependency(). Pointers into it are recorded like the image's own and must stay
// valid, so it must be mapped at its base wherever this image is used (as_dependency()
// refuses otherwise); they are never relocated.
struct FixedImageDependency {
  std::string name;  // its FixedImageOptions::name
  Digest digest;
  std::uintptr_t base = 0;      // where it is mapped
  std::uint64_t data_end = 0;   // its data: [base + kFixedImageHeaderBytes, base + data_end)
  friend bool operator==(const FixedImageDependency&, const FixedImageDependency&) = default;
};

struct FixedImageOptions {
  // Recorded in the image (what images that point into it call it) and used in messages: as
  // FixedImageType::name, printable ASCII without spaces.
  std::string name = "fixed-image";
  // Where the image's pointers are final: a multiple of the page size, and the image must fit
  // below kFixedImageTop.
  std::uintptr_t base = kDefaultFixedBase;
  // The most it can hold, header included (address space only until used).
  std::uint64_t capacity = 1ull << 30;
  std::vector<FixedImageType> types;
  std::vector<FixedImageDependency> dependencies;
  // Record pointers found by scanning the allocated bytes at seal() (see "The scan").
  bool scan_pointers = true;
};

struct FixedImageBuildStats {
  std::uint64_t size = 0;           // the sealed image's bytes
  std::uint64_t data_bytes = 0;     // allocated (with alignment padding)
  std::uint64_t relocations = 0;    // pointers recorded
  std::uint64_t pointer_pages = 0;  // distinct pages that hold them: the relocation path's cost
};

class FixedImageBuilder {
 public:
  // Reserves exactly [base, base + capacity) over a new memfd (no guard zone past it). Throws
  // Error: EEXIST when any page of it is taken, EINVAL for a base or capacity that cannot be
  // (unaligned, past kFixedImageTop, a type or dependency name that is empty, has spaces, or
  // is declared twice), ENOMEM (naming RLIMIT_AS) when the address space is not there.
  explicit FixedImageBuilder(FixedImageOptions options);
  FixedImageBuilder(FixedImageBuilder&&) noexcept;
  FixedImageBuilder& operator=(FixedImageBuilder&&) noexcept;
  ~FixedImageBuilder();

  std::byte* base() const noexcept;
  // Allocates inside the image (zeroed bytes). Throws Error(ENOMEM) past the capacity, and
  // EINVAL after seal(). `alignment`: a power of two up to 4096; below 8, the bytes are for
  // data without pointers (see "Rules"): a pointer stored there is found only if noted.
  void* allocate(std::size_t bytes, std::size_t alignment = alignof(std::max_align_t));
  template <class T, class... Args>
  T* create(Args&&... args) {
    return ::new (allocate(sizeof(T), alignof(T))) T(std::forward<Args>(args)...);
  }
  // Allocations for std::pmr containers (deallocation gives nothing back). Lives as long as
  // the builder; never use it after seal().
  std::pmr::memory_resource* resource() noexcept;

  // The 8-byte word at `location` (inside what was allocated, 8-aligned) holds a pointer into
  // the image, into a dependency's data, or null: record it. Throws Error(EINVAL) otherwise.
  void note_pointer(const void* location);
  // What root<T>() gives back after mapping (inside what was allocated).
  void set_root(const void* object);

  // Scans (options.scan_pointers), writes the header, the relocation table and the manifest,
  // hashes, seals. The builder is spent. Throws Error (EINVAL: a recorded pointer's word no
  // longer holds a pointer into the image or null, a manifest past 1 MiB; what sealing
  // throws: EBUSY when another process holds a writable mapping of the memfd — a child that
  // another thread fork()ed while the builder lived, until it execs or exits: retry then).
  SealedImage seal();
  // After seal().
  const FixedImageBuildStats& stats() const noexcept;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

struct FixedMapOptions {
  std::string name;  // for messages; empty: "fixed image fd N"
  // What this process expects the image to hold and depend on: compared with the image's
  // manifest, exactly (ESTALE on any difference).
  std::vector<FixedImageType> types;
  std::vector<FixedImageDependency> dependencies;
  enum class Check {
    kFull,    // digest, relocation table and every pointer checked: O(image)
    kHeader,  // header and manifest only (at most 1 MiB): no data page read; for sealed
              // images from a trusted process
  };
  Check check = Check::kFull;
  // false: Error(EEXIST) instead of relocating when the base is taken.
  bool allow_relocation = true;
};

struct FixedMapReport {
  bool at_base = false;             // true: mapped at its base, nothing relocated
  std::uint64_t relocations = 0;    // pointers moved (0 at the base)
  std::uint64_t pages_touched = 0;  // pages written by relocation (0 at the base)
  std::uint64_t pages_checked = 0;  // pages read by the checks (0 with Check::kHeader)
};

class FixedImage {
 public:
  // Maps `image` (see the top of this file): one private mapping of its size, nothing else.
  // Throws Error: EINVAL for what is not a fixed image or is malformed (naming the field),
  // EBADMSG when the digest does not match (checked first under Check::kFull, so that damage
  // is never reported as staleness) or a pointer lies outside the image, ESTALE for a writer
  // version, type layout or dependency other than expected, EEXIST with allow_relocation
  // false and the base taken, ENOMEM (naming RLIMIT_AS) without the address space.
  static FixedImage map(const SealedImage& image, FixedMapOptions options = {});
  FixedImage(FixedImage&&) noexcept;
  FixedImage& operator=(FixedImage&&) noexcept;
  ~FixedImage();  // unmaps

  std::byte* data() const noexcept;  // where it is mapped (== base() when report().at_base)
  std::uintptr_t base() const noexcept;  // where its pointers were final when built
  std::uint64_t size() const noexcept;
  const FixedMapReport& report() const noexcept;
  const Digest& digest() const noexcept;
  const std::string& writer() const noexcept;  // "mapwright 0.1.0"
  const std::string& image_name() const noexcept;  // FixedImageOptions::name of its builder
  // What an image that points into this one records (FixedImageOptions::dependencies) and
  // expects (FixedMapOptions::dependencies). Throws Error(EINVAL) unless this one is mapped at
  // its base: pointers into it are final for that address.
  FixedImageDependency as_dependency() const;
  // The object set_root() named, or null if none.
  template <class T>
  T* root() const noexcept {
    return static_cast<T*>(root_pointer());
  }

 private:
  struct State;
  explicit FixedImage(std::unique_ptr<State> state) noexcept;
  void* root_pointer() const noexcept;
  std::unique_ptr<State> state_;
};

// ---- images that point into other images ---------------------------------------------------

// Where a FixedImageSet gets an image by its name (FixedImageOptions::name): a broker
// (broker_source() below), images at hand, files. Whatever it throws is passed on, an Error
// with the image it was asked for added.
using FixedImageSource = std::function<SealedImage(const std::string& name)>;

// Images mapped together, so that one that points into others (tables sharing a string pool)
// is mapped with everything it needs. map(name) gets the image from the source, then — first
// — every image its manifest says it points into, and theirs, each once per set and each at
// its base (never relocated: pointers into it are final for that address), and maps the image
// itself with those as its FixedMapOptions::dependencies, so that a dependency the source
// gives that is not the one the image was built against (rebuilt: another digest; another
// base or size) is Error(ESTALE) naming both. The image asked for is relocated when its base
// is taken (as FixedImage::map does, unless its expectation says allow_relocation = false);
// a dependency whose base is taken is Error(EEXIST) naming it and who points into it.
//
// What the process expects of each image (types, check) is said per name with expect();
// an image without an expectation is mapped with FixedMapOptions{} (the full check, no types:
// one that declares types is refused as holding what this program does not expect).
// A source that answers with an image of another name, a chain of dependencies that comes
// back to an image being mapped, or one deeper than kFixedImageMaxDepth: Error(EINVAL).
// Nothing mapped by a map() that throws stays in the set. Not thread-safe: one thread at a
// time. Images are unmapped when the set goes.
inline constexpr int kFixedImageMaxDepth = 64;

class FixedImageSet {
 public:
  explicit FixedImageSet(FixedImageSource source);
  FixedImageSet(FixedImageSet&&) noexcept;
  FixedImageSet& operator=(FixedImageSet&&) noexcept;
  ~FixedImageSet();

  // How image `name` is to be mapped, as a dependency or not. options.dependencies must be
  // empty (the set fills them in: Error(EINVAL) otherwise); an empty options.name becomes
  // `name`. allow_relocation applies only when it is mapped as the image asked for.
  void expect(const std::string& name, FixedMapOptions options);
  // Maps `name` with its dependencies (see above), or returns it if this set mapped it
  // already. The reference lives as long as the set.
  const FixedImage& map(const std::string& name);
  // The image of that name if this set mapped it (asked for or as a dependency), or null.
  const FixedImage* find(const std::string& name) const noexcept;
  std::size_t size() const noexcept;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// ---- a broker: sealed images served by name to other processes ---------------------------

// A process keeps its fixed images (any sealed images) here and hands them to clients by name
// over a Unix stream socket; each client maps what it receives (FixedImage::map), so that
// every process shares the image's pages (a sealed memfd, mapped MAP_PRIVATE: nothing is
// copied until a page is written). One request per connection: the client sends the name and
// a newline; the broker answers 'I' followed by the image (send_image, sealed_image.h), or 'N'
// when it has none of that name (bytes after the newline are ignored). A client has 2 s from
// being accepted to send its name and take the answer, and a name of at most 256 bytes; one
// that is slower, says more before a newline, or goes away is dropped without an answer, and
// nothing it does raises a signal in the broker. A child forked from the broker's process
// shares its socket but never stops the parent's serve() nor removes its socket's path.
class FixedImageBroker {
 public:
  // Creates and listens on a Unix socket at `socket_path`. Throws Error (EADDRINUSE when
  // something exists there, saying what: another broker's socket, a stale socket of a broker
  // that died, which must be removed first, or a file that is not a socket, which is never
  // touched; ENAMETOOLONG past 107 bytes).
  explicit FixedImageBroker(const std::filesystem::path& socket_path);
  FixedImageBroker(const FixedImageBroker&) = delete;
  FixedImageBroker& operator=(const FixedImageBroker&) = delete;
  // Closes the socket and removes its path, if what is there is still the socket it made (not
  // one another broker made there since).
  ~FixedImageBroker();

  // Serves `image` as `name` (replacing one of that name). Thread-safe.
  void add(const std::string& name, SealedImage image);
  // Answers requests, one at a time, until stop(). Errors with one client (it went away, it
  // sent garbage) are that client's; the loop goes on. Throws Error only when the socket
  // itself fails. Call it from one thread at a time.
  void serve();
  // Makes serve() return after the request it is answering, if any (within 2 s), and every
  // later serve() at once. From any thread, and async-signal-safe: a SIGTERM handler may call
  // it.
  void stop() noexcept;
  // Images handed out so far.
  std::uint64_t served() const noexcept;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// How long request_image() waits for a broker by default, all steps together.
inline constexpr std::chrono::milliseconds kBrokerRequestTimeout{10000};

// Asks the broker at `socket_path` for image `name` and returns it (checked to be sealed, as
// receive_image() does), waiting at most `timeout` in all (longer than 24 days: 24 days) for
// room in a full backlog, to send, and for the answer. Throws Error: EINVAL for a name that is
// empty, longer than 256 bytes or holds a newline or NUL (a broker could not serve it);
// ENOENT when the broker has none of that name; ETIMEDOUT past the timeout; what connecting
// (ENOENT, ECONNREFUSED for no broker) or receiving throws (ECONNRESET, EPROTO for a peer
// that is not a broker). Never raises SIGPIPE.
SealedImage request_image(const std::filesystem::path& socket_path, const std::string& name,
                          std::chrono::milliseconds timeout = kBrokerRequestTimeout);

// A FixedImageSource that asks the broker at `socket_path` (request_image) for each image.
FixedImageSource broker_source(std::filesystem::path socket_path);

}  // namespace mapwright
