// src/fixed_image.cc — FixedImageBuilder and FixedImage (fixed_image.h); the bytes are
// fixed_image_format.h's.
#include "mapwright/fixed_image.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>

#include "fixed_image_format.h"
#include "mapwright/error.h"
#include "mapwright/region.h"
#include "os/os.h"
#include "reservation.h"

#ifndef MAPWRIGHT_LIBRARY_VERSION
#error "MAPWRIGHT_LIBRARY_VERSION is set by CMakeLists.txt"
#endif

namespace mapwright {
namespace {

constexpr Error::DetailIsCause kCause{};
constexpr const char* kBuild = "building fixed image";
constexpr const char* kMap = "mapping fixed image";
const std::string kWriter = "mapwright " MAPWRIGHT_LIBRARY_VERSION;

std::string str(std::uint64_t value) { return std::to_string(value); }
using detail::hex;
std::uint64_t round_up(std::uint64_t value, std::uint64_t to) { return (value + to - 1) / to * to; }

std::string describe(const FixedImageType& t) {
  return "'" + t.name + "' (" + str(t.size) + " bytes, alignment " + str(t.alignment) +
         ", schema hash " + str(t.schema_hash) + ")";
}

}  // namespace

// ---- building ---------------------------------------------------------------------------

struct FixedImageBuilder::State {
  struct Resource final : std::pmr::memory_resource {
    State* state = nullptr;
    void* do_allocate(std::size_t bytes, std::size_t alignment) override {
      return state->allocate(bytes, alignment);
    }
    void do_deallocate(void*, std::size_t, std::size_t) override {}  // nothing given back
    bool do_is_equal(const memory_resource& other) const noexcept override { return this == &other; }
  };

  // Allocations are made from two streams of page-aligned chunks, so that pointers stay on
  // as few pages as they can: an object with a pointer in it is at least 8-aligned, so what
  // is asked for with a smaller alignment (the characters of strings, byte buffers) goes to
  // chunks of its own, which hold no pointer, are never scanned, and are never written by
  // relocation. The rest (anything that may hold a pointer) goes to the other stream.
  static constexpr std::uint64_t kChunk = 64 << 10;
  struct Stream {
    std::uint64_t next = 0;  // where its next allocation goes
    std::uint64_t end = 0;   // the end of its current chunk
  };
  enum { kWords, kBytes };

  FixedImageOptions options;
  Region region;
  std::byte* base = nullptr;
  Stream streams[2];
  std::uint64_t frontier = kFixedImageHeaderBytes;  // the end of the last chunk opened
  std::uint64_t next = kFixedImageHeaderBytes;      // the end of the data allocated so far
  std::vector<std::pair<std::uint64_t, std::uint64_t>> byte_chunks;  // [begin, end), in order
  std::vector<std::uint64_t> noted;
  std::uint64_t root = 0;
  bool sealed = false;
  FixedImageBuildStats stats;
  Resource resource;

  State(FixedImageOptions opts, Region r)
      : options(std::move(opts)), region(std::move(r)), base(region.data()) {
    resource.state = this;
  }

  [[noreturn]] void refuse(int error, const std::string& what) const {
    throw Error(error, kBuild, options.name, "(" + what + ")", kCause);
  }

  void* allocate(std::size_t bytes, std::size_t alignment) {
    if (sealed) refuse(EINVAL, "it is sealed: nothing more can be allocated");
    if (alignment == 0 || (alignment & (alignment - 1)) != 0 || alignment > 4096) {
      refuse(EINVAL, "alignment " + str(alignment) + " is not a power of two up to 4096");
    }
    const int kind = alignment < 8 ? kBytes : kWords;
    Stream& stream = streams[kind];
    std::uint64_t start = round_up(stream.next, alignment);
    if (stream.end == 0 || start > stream.end || bytes > stream.end - start) {
      // A new chunk, at the frontier: big enough for this allocation.
      start = round_up(frontier, 4096);
      if (bytes > options.capacity || start > options.capacity - bytes) {
        refuse(ENOMEM, "allocating " + str(bytes) + " bytes at offset " + str(start) +
                           " would pass its capacity of " + str(options.capacity) + " bytes");
      }
      const std::uint64_t end =
          std::min(options.capacity, start + std::max(kChunk, round_up(bytes, 4096)));
      stream.end = end;
      frontier = end;
      if (kind == kBytes) {
        if (!byte_chunks.empty() && byte_chunks.back().second == start) {
          byte_chunks.back().second = end;
        } else {
          byte_chunks.emplace_back(start, end);
        }
      }
    }
    region.ensure(std::max<std::uint64_t>(start + bytes, 1));
    stream.next = start + bytes;
    next = std::max(next, stream.next);
    return base + start;
  }

  // The offset of `p` in the allocated data, or refuses.
  std::uint64_t data_offset(const void* p, std::uint64_t length, const char* what) const {
    const auto at = reinterpret_cast<std::uintptr_t>(p);
    const auto begin = reinterpret_cast<std::uintptr_t>(base);
    if (at < begin + kFixedImageHeaderBytes || at - begin > next || length > next - (at - begin)) {
      refuse(EINVAL, std::string(what) + " " + hex(at) + " is not inside what was allocated");
    }
    return at - begin;
  }

  // Whether `value` is null or points into the data (one past its end included), its own or
  // a dependency's.
  bool pointer_ok(std::uint64_t value, std::uint64_t data_end) const noexcept {
    const auto begin = reinterpret_cast<std::uintptr_t>(base);
    if (value == 0 || (value >= begin + kFixedImageHeaderBytes && value <= begin + data_end)) return true;
    return std::any_of(options.dependencies.begin(), options.dependencies.end(),
                       [&](const FixedImageDependency& d) {
                         return value >= d.base + kFixedImageHeaderBytes && value <= d.base + d.data_end;
                       });
  }
};

FixedImageBuilder::FixedImageBuilder(FixedImageOptions options) {
  const auto refuse = [&](const std::string& what) {
    throw Error(EINVAL, kBuild, options.name, "(" + what + ")", kCause);
  };
  constexpr std::uint64_t kTop = kFixedImageTop;
  if (options.base < kFixedImageLowestBase || options.base % os::page_size() != 0 ||
      options.base >= kTop) {
    refuse("base " + hex(options.base) + " is not a page-aligned address from 64 KiB below 2^47 - 4 KiB");
  }
  if (options.capacity <= kFixedImageHeaderBytes || options.capacity > kTop - options.base) {
    refuse("capacity " + str(options.capacity) + " does not fit between the base and 2^47 - 4 KiB, or "
           "leaves no room after the header");
  }
  if (!detail::fixed_name_ok(options.name)) {
    refuse("its name '" + options.name + "' is empty or not printable ASCII without spaces");
  }
  std::unordered_set<std::string_view> names;
  for (const FixedImageType& t : options.types) {
    if (!detail::fixed_name_ok(t.name)) refuse("type name '" + t.name + "' is empty or not printable ASCII without spaces");
    if (!names.insert(t.name).second) refuse("type '" + t.name + "' is declared twice");
  }
  names.clear();
  for (const FixedImageDependency& d : options.dependencies) {
    if (!detail::fixed_name_ok(d.name)) refuse("dependency name '" + d.name + "' is empty or not printable ASCII without spaces");
    if (!names.insert(d.name).second) refuse("dependency '" + d.name + "' is declared twice");
    if (d.base == 0 || d.base % os::page_size() != 0 || d.data_end < kFixedImageHeaderBytes ||
        d.data_end > kTop - d.base ||
        (d.base < options.base + options.capacity && options.base < d.base + d.data_end)) {
      refuse("dependency '" + d.name + "' at " + hex(d.base) +
             " is not a mapped image's place (use FixedImage::as_dependency()), or overlaps this one");
    }
  }
  RegionOptions region_options;
  region_options.capacity = options.capacity;
  region_options.base = reinterpret_cast<void*>(options.base);
  region_options.grow_on_fault = false;  // every byte is handed out by allocate(), ensured first
  region_options.max_step = 64ull << 20;
  std::optional<Region> made;
  try {
    made.emplace(Region::memfd(options.name, region_options));
    made->ensure(kFixedImageHeaderBytes);
  } catch (const Error& e) {
    // Say it in this API's words: the base taken, or no room under RLIMIT_AS.
    std::string detail = e.detail();
    if (const auto at = detail.find("RegionOptions::capacity"); at != std::string::npos) {
      detail.replace(at, 23, "FixedImageOptions::capacity");
    }
    throw Error(e.error(), kBuild, options.name, detail);
  }
  Region region = std::move(*made);
  state_ = std::make_unique<State>(std::move(options), std::move(region));
}

FixedImageBuilder::FixedImageBuilder(FixedImageBuilder&&) noexcept = default;
FixedImageBuilder& FixedImageBuilder::operator=(FixedImageBuilder&&) noexcept = default;
FixedImageBuilder::~FixedImageBuilder() = default;

std::byte* FixedImageBuilder::base() const noexcept { return state_->base; }
void* FixedImageBuilder::allocate(std::size_t bytes, std::size_t alignment) {
  return state_->allocate(bytes, alignment);
}
std::pmr::memory_resource* FixedImageBuilder::resource() noexcept { return &state_->resource; }

void FixedImageBuilder::note_pointer(const void* location) {
  State& s = *state_;
  if (s.sealed) s.refuse(EINVAL, "it is sealed");
  const std::uint64_t at = s.data_offset(location, 8, "the pointer's location");
  if (at % 8 != 0) s.refuse(EINVAL, "the pointer's location " + hex(reinterpret_cast<std::uintptr_t>(location)) + " is not 8-aligned");
  s.noted.push_back(at);
}

void FixedImageBuilder::set_root(const void* object) {
  State& s = *state_;
  if (s.sealed) s.refuse(EINVAL, "it is sealed");
  s.root = s.data_offset(object, 1, "the root");
}

SealedImage FixedImageBuilder::seal() {
  State& s = *state_;
  if (s.sealed) s.refuse(EINVAL, "it is sealed already");
  const std::uint64_t data_end = s.next;
  std::vector<std::uint64_t> relocations = s.noted;
  for (const std::uint64_t at : relocations) {
    std::uint64_t value;
    std::memcpy(&value, s.base + at, 8);
    if (!s.pointer_ok(value, data_end)) {
      s.refuse(EINVAL, "the pointer noted at offset " + str(at) + " holds " + hex(value) +
                           ", which is neither null nor inside the image or a dependency");
    }
  }
  if (s.options.scan_pointers) {
    // Everything allocated but the byte chunks (see State::Stream).
    const auto scan = [&](std::uint64_t from, std::uint64_t to) {
      for (std::uint64_t at = from; at + 8 <= to; at += 8) {
        std::uint64_t value;
        std::memcpy(&value, s.base + at, 8);
        if (value != 0 && s.pointer_ok(value, data_end)) relocations.push_back(at);
      }
    };
    std::uint64_t from = kFixedImageHeaderBytes;
    for (const auto& [begin, end] : s.byte_chunks) {
      scan(from, std::min(begin, data_end));
      from = end;
    }
    scan(from, data_end);
  }
  std::sort(relocations.begin(), relocations.end());
  relocations.erase(std::unique(relocations.begin(), relocations.end()), relocations.end());

  detail::FixedManifest manifest{kWriter, s.options.name, s.options.types, s.options.dependencies};
  const std::string text = detail::encode_fixed_manifest(manifest);
  detail::FixedHeader header;
  header.base = reinterpret_cast<std::uintptr_t>(s.base);
  header.root = s.root;
  header.data_end = data_end;
  header.relocations = round_up(data_end, 8);
  header.relocation_count = relocations.size();
  header.manifest = header.relocations + 8 * relocations.size();
  header.manifest_bytes = text.size();
  if (text.size() > detail::kFixedManifestMaxBytes) {
    s.refuse(EINVAL, "its manifest of " + str(text.size()) + " bytes (types and dependencies) is "
                     "larger than a mapper reads, " + str(detail::kFixedManifestMaxBytes));
  }
  header.size = header.manifest + text.size();
  if (header.size > s.options.capacity) {
    s.refuse(ENOMEM, "its relocation table and manifest (" + str(header.size - data_end) +
                         " bytes) do not fit in its capacity");
  }
  s.region.ensure(header.size);
  if (!relocations.empty()) {
    std::memcpy(s.base + header.relocations, relocations.data(), 8 * relocations.size());
  }
  std::memcpy(s.base + header.manifest, text.data(), text.size());
  detail::encode_fixed_header(header, s.base);
  header.digest = detail::fixed_image_digest({s.base, header.size});
  detail::encode_fixed_header(header, s.base);
  s.region.finish(header.size);
  s.sealed = true;
  // The sealed region keeps its read-only view at the base as the image's cached mapping: an
  // image of its own fd instead, so that the base is free once this one is gone.
  SealedImage at_base = std::move(s.region).seal();
  int fd = -1;
  if (const int err = os::dup_cloexec(at_base.fd(), 0, &fd); err != 0) {
    throw Error(err, kBuild, s.options.name, "(dup of the sealed memfd)");
  }
  std::optional<SealedImage> adopted;
  try {
    adopted.emplace(SealedImage::adopt(fd));
  } catch (...) {
    (void)os::close(fd);
    throw;
  }
  SealedImage image = std::move(*adopted);
  s.stats.size = header.size;
  s.stats.data_bytes = data_end - kFixedImageHeaderBytes;
  s.stats.relocations = relocations.size();
  std::uint64_t last_page = UINT64_MAX;
  for (const std::uint64_t at : relocations) {
    if (at / 4096 != last_page) ++s.stats.pointer_pages;
    last_page = at / 4096;
    if ((at + 7) / 4096 != last_page) ++s.stats.pointer_pages, last_page = (at + 7) / 4096;
  }
  return image;
}

const FixedImageBuildStats& FixedImageBuilder::stats() const noexcept { return state_->stats; }

// ---- mapping ----------------------------------------------------------------------------

struct FixedImage::State {
  std::string name;
  SealedImage image;
  detail::Reservation reservation;
  std::byte* data = nullptr;
  detail::FixedHeader header;
  detail::FixedManifest manifest;
  FixedMapReport report;
};

FixedImage::FixedImage(std::unique_ptr<State> state) noexcept : state_(std::move(state)) {}
FixedImage::FixedImage(FixedImage&&) noexcept = default;
FixedImage& FixedImage::operator=(FixedImage&&) noexcept = default;
FixedImage::~FixedImage() = default;

FixedImage FixedImage::map(const SealedImage& image, FixedMapOptions options) {
  auto s = std::make_unique<State>(State{options.name.empty()
                                             ? "fixed image fd " + std::to_string(image.fd())
                                             : options.name,
                                         image, {}, nullptr, {}, {}, {}});
  const auto refuse = [&](int error, const std::string& what) {
    throw Error(error, kMap, s->name, "(" + what + ")", kCause);
  };
  const bool full = options.check == FixedMapOptions::Check::kFull;
  // The header and the manifest are read from the fd; everything else through the one
  // mapping made below (no read-only view besides it: half the address space).
  bool header_ok = false;
  std::string why;
  s->manifest = detail::read_fixed_image(image, &s->header, &header_ok, &why);
  if (!header_ok) refuse(EINVAL, why);
  const detail::FixedHeader& h = s->header;

  // Where: at the base, else (taken, or an address this process may not map at all: EPERM
  // below vm.mmap_min_addr) wherever the kernel puts it. With relocation off it is mapped there
  // all the same, for the checks, so that a damaged or stale image is said to be so first.
  const std::uint64_t length = round_up(h.size, os::page_size());
  const auto reserve = [&](void* at) {
    try {
      s->reservation = detail::Reservation::anonymous(length, 0, s->name, at, nullptr);
    } catch (const Error& e) {
      if (e.error() != ENOMEM) throw;
      throw Error(ENOMEM, kMap, s->name, e.detail());  // what RLIMIT_AS leaves, if it is that
    }
  };
  try {
    reserve(reinterpret_cast<void*>(h.base));
    s->report.at_base = true;
  } catch (const Error& e) {
    if (e.error() != EEXIST && e.error() != EPERM) throw;
    reserve(nullptr);
  }
  if (const int err = os::map_private_fixed(s->reservation.base(), length, image.fd()); err != 0) {
    throw Error(err, kMap, s->name, "(mmap of the image)");
  }
  s->data = s->reservation.base();
  const std::span<const std::byte> bytes(s->data, h.size);

  // Damage first, so that a flipped bit in the manifest is not taken for staleness.
  if (full && detail::fixed_image_digest(bytes) != h.digest) {
    refuse(EBADMSG, "the digest does not match: the image is damaged" +
                        (why.empty() ? std::string() : " (" + why + ")"));
  }
  if (!why.empty()) refuse(EINVAL, why);

  // Staleness: exactly what this process expects, or nothing.
  const detail::FixedManifest& m = s->manifest;
  if (m.writer != kWriter) {
    refuse(ESTALE, "written by " + m.writer + ", read by " + kWriter + ": rebuild it");
  }
  for (const FixedImageType& want : options.types) {
    const auto found = std::find_if(m.types.begin(), m.types.end(),
                                    [&](const FixedImageType& t) { return t.name == want.name; });
    if (found == m.types.end()) refuse(ESTALE, "it does not hold type '" + want.name + "'");
    if (!(*found == want)) {
      refuse(ESTALE, "its type " + describe(*found) + " is not this program's " + describe(want) +
                         ": rebuild it");
    }
  }
  for (const FixedImageType& has : m.types) {
    if (std::none_of(options.types.begin(), options.types.end(),
                     [&](const FixedImageType& t) { return t.name == has.name; })) {
      refuse(ESTALE, "it holds type " + describe(has) + ", which this program does not expect");
    }
  }
  for (const FixedImageDependency& need : m.dependencies) {
    const auto found = std::find_if(options.dependencies.begin(), options.dependencies.end(),
                                    [&](const FixedImageDependency& d) { return d.name == need.name; });
    if (found == options.dependencies.end()) {
      refuse(ESTALE, "it points into image '" + need.name + "' (digest " + need.digest.hex() +
                         "), which this program does not say it has mapped");
    }
    if (found->digest != need.digest) {
      refuse(ESTALE, "it points into image '" + need.name + "' with digest " + need.digest.hex() +
                         ", but the one mapped has " + found->digest.hex() + ": rebuild it");
    }
    if (found->base != need.base || found->data_end != need.data_end) {
      refuse(ESTALE, "it points into image '" + need.name + "' at " + hex(need.base) + " (" +
                         str(need.data_end) + " bytes of data), but the one mapped is at " +
                         hex(found->base) + " (" + str(found->data_end) + ")");
    }
  }
  for (const FixedImageDependency& have : options.dependencies) {
    if (std::none_of(m.dependencies.begin(), m.dependencies.end(),
                     [&](const FixedImageDependency& d) { return d.name == have.name; })) {
      refuse(ESTALE, "it does not depend on image '" + have.name + "', which this program expects");
    }
  }
  if (!s->report.at_base && !options.allow_relocation) {
    refuse(EEXIST, "its base " + hex(h.base) + " is taken in this process, and relocation is off");
  }

  const auto table = [&](std::uint64_t i) {
    std::uint64_t at;
    std::memcpy(&at, bytes.data() + h.relocations + 8 * i, 8);
    return at;
  };
  const auto check_table = [&] {
    std::uint64_t previous = 0;
    for (std::uint64_t i = 0; i < h.relocation_count; ++i) {
      const std::uint64_t at = table(i);
      if (at % 8 != 0 || at < kFixedImageHeaderBytes || at > h.data_end - 8 || (i > 0 && at <= previous)) {
        refuse(EBADMSG, "relocation " + str(i) + " (offset " + str(at) +
                            ") is not an 8-aligned word of the data after the one before");
      }
      previous = at;
    }
  };
  if (full) {
    check_table();
    for (std::uint64_t i = 0; i < h.relocation_count; ++i) {
      std::uint64_t value;
      std::memcpy(&value, bytes.data() + table(i), 8);
      const bool own = value >= h.base + kFixedImageHeaderBytes && value <= h.base + h.data_end;
      const bool dependency = std::any_of(m.dependencies.begin(), m.dependencies.end(),
                                          [&](const FixedImageDependency& d) {
                                            return value >= d.base + kFixedImageHeaderBytes &&
                                                   value <= d.base + d.data_end;
                                          });
      if (value != 0 && !own && !dependency) {
        refuse(EBADMSG, "the pointer at offset " + str(table(i)) + " holds " + hex(value) +
                            ", outside the image's data and its dependencies'");
      }
    }
    s->report.pages_checked = round_up(h.size, 4096) / 4096;
  }

  if (!s->report.at_base) {
    if (!full) check_table();  // it is written through
    const std::uint64_t delta = reinterpret_cast<std::uintptr_t>(s->data) - h.base;
    std::uint64_t last_page = UINT64_MAX;
    for (std::uint64_t i = 0; i < h.relocation_count; ++i) {
      const std::uint64_t at = table(i);
      std::uint64_t value;
      std::memcpy(&value, s->data + at, 8);
      // Only pointers into this image move; those into a dependency (mapped at its base) stay.
      if (value < h.base + kFixedImageHeaderBytes || value > h.base + h.data_end) continue;
      value += delta;
      std::memcpy(s->data + at, &value, 8);  // a copy of this page, this process's own
      ++s->report.relocations;
      for (const std::uint64_t page : {at / 4096, (at + 7) / 4096}) {
        if (page != last_page) ++s->report.pages_touched;
        last_page = page;
      }
    }
  }
  return FixedImage(std::move(s));
}

std::byte* FixedImage::data() const noexcept { return state_->data; }
std::uintptr_t FixedImage::base() const noexcept { return state_->header.base; }
std::uint64_t FixedImage::size() const noexcept { return state_->header.size; }
const FixedMapReport& FixedImage::report() const noexcept { return state_->report; }
const Digest& FixedImage::digest() const noexcept { return state_->header.digest; }
const std::string& FixedImage::writer() const noexcept { return state_->manifest.writer; }
const std::string& FixedImage::image_name() const noexcept { return state_->manifest.name; }

FixedImageDependency FixedImage::as_dependency() const {
  if (!state_->report.at_base) {
    throw Error(EINVAL, "using fixed image as a dependency", state_->name,
                "(it is not mapped at its base " + hex(state_->header.base) +
                    ": pointers into it are final for that address)", kCause);
  }
  return {state_->manifest.name, state_->header.digest, state_->header.base, state_->header.data_end};
}
void* FixedImage::root_pointer() const noexcept {
  return state_->header.root == 0 ? nullptr : state_->data + state_->header.root;
}

}  // namespace mapwright
