// Wrapper: open() checks the whole structure once and turns it into plain values; after that
// nothing reads Cap'n Proto again (no traversal limit to run out of, no pointer to chase).

#include "mapwright/wrapper.h"

#include <fcntl.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>

#include <kj/exception.h>

#include "digest.h"
#include "mapwright/capnp.h"
#include "mapwright/error.h"
#include "os/os.h"
#include "wrapper.capnp.h"
#include "wrapper_graph.h"

namespace mapwright {
namespace {

constexpr const char* kOpen = "opening wrapper";

std::string str(std::uint64_t value) { return std::to_string(value); }

std::string entry_label(std::size_t index, std::string_view name) {
  return "entry #" + str(index) + (name.empty() ? std::string() : " '" + detail::printable(name) + "'");
}

}  // namespace

// ---- WrapperEntry, LoadedLibraries --------------------------------------------------------

bool WrapperEntry::contiguous() const noexcept {
  for (std::size_t i = 1; i < chunks.size(); ++i) {
    if (chunks[i].data() != chunks[i - 1].data() + chunks[i - 1].size()) return false;
  }
  return true;
}

std::span<const std::byte> WrapperEntry::bytes() const {
  if (chunks.empty()) return {};
  if (!contiguous()) {
    throw Error(EINVAL, "reading wrapper entry", name,
                "(its " + str(chunks.size()) + " chunks are not contiguous in the file: use chunks)");
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

struct Wrapper::State {
  std::string name;
  os::OwnedFd fd;                                 // when opened from a path or an fd
  std::optional<SealedImage> image;               // when opened from one
  std::unique_ptr<MappedMessageReader> reader;    // owns the mapping the spans point into
  std::uint32_t version = 0;
  std::string producer;
  std::uint64_t file_size = 0;
  std::vector<WrapperEntry> entries;
  std::unordered_map<std::string_view, std::size_t> index;  // views into entries' names
  std::vector<std::vector<std::size_t>> edges;              // direct dependencies

  [[noreturn]] void refuse(const std::string& what) const { throw Error(EINVAL, kOpen, name, what); }

  void map() {
    try {
      reader = image ? std::make_unique<MappedMessageReader>(*image)
                     : std::make_unique<MappedMessageReader>(fd.get(), 0, 0);
    } catch (const Error& e) {
      // The frame checks name the fd; say which wrapper, and keep the cause.
      if (e.error() == EINVAL) refuse("(not a wrapper: " + e.detail() + ")");
      throw Error(e.error(), kOpen, name, e.detail());
    }
    file_size = reader->size();
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
    if (root.getMagic() != kWrapperMagic) {
      refuse("(not a wrapper: the magic number is wrong)");
    }
    version = root.getFormatVersion();
    if (version != kWrapperFormatVersion) {
      refuse("(format version " + str(version) + " is not supported; this build reads version " +
             str(kWrapperFormatVersion) + ")");
    }
    producer = root.getProducer();
    const auto list = root.getEntries();
    entries.reserve(list.size());
    for (::capnp::uint i = 0; i < list.size(); ++i) read_entry(i, list[i]);
  }

  void read_entry(std::size_t i, schema::Entry::Reader from) {
    WrapperEntry entry;
    const auto name_text = from.getName();
    entry.name.assign(name_text.begin(), name_text.size());
    const auto bad = [&](const std::string& what) { refuse(entry_label(i, entry.name) + ": " + what); };
    if (entry.name.empty()) bad("the name is empty");
    if (entry.name.size() > kMaxEntryNameBytes) {
      bad("the name is longer than " + str(kMaxEntryNameBytes) + " bytes");
    }
    if (entry.name.find('\0') != std::string::npos) bad("the name contains NUL");
    switch (from.getKind()) {
      case schema::Kind::SHARED_LIBRARY: entry.kind = EntryKind::kSharedLibrary; break;
      case schema::Kind::DATA: entry.kind = EntryKind::kData; break;
      default: bad("unknown kind " + str(static_cast<std::uint16_t>(from.getKind())));
    }
    if (from.getDigestAlgorithm() != schema::DigestAlgorithm::XXH3X128) {
      bad("unknown digest algorithm " + str(static_cast<std::uint16_t>(from.getDigestAlgorithm())));
    }
    const auto digest = from.getDigest();
    if (digest.size() != entry.digest.bytes.size()) {
      bad("the digest has " + str(digest.size()) + " bytes, not " + str(entry.digest.bytes.size()));
    }
    std::memcpy(entry.digest.bytes.data(), digest.begin(), digest.size());
    for (const auto dep : from.getDependencies()) entry.dependencies.emplace_back(dep.cStr(), dep.size());

    entry.size = from.getSize();
    std::uint64_t total = 0;
    const auto chunks = from.getChunks();
    entry.chunks.reserve(chunks.size());
    for (::capnp::uint c = 0; c < chunks.size(); ++c) {
      const auto chunk = chunks[c];
      if (chunk.size() == 0) bad("chunk " + str(c) + " is empty");
      const auto* first = reinterpret_cast<const std::byte*>(chunk.begin());
      // Cap'n Proto has already bounded the blob by its segment, and the segment by the file;
      // these checks hold even if that ever changed.
      if (first < reader->data() ||
          static_cast<std::uint64_t>(first - reader->data()) > file_size ||
          chunk.size() > file_size - static_cast<std::uint64_t>(first - reader->data())) {
        bad("chunk " + str(c) + " lies outside the file");
      }
      const auto offset = static_cast<std::uint64_t>(first - reader->data());
      if (offset % kWrapperAlignment != 0) {
        bad("chunk " + str(c) + " starts at offset " + str(offset) + ", which is not " +
            str(kWrapperAlignment) + "-byte aligned");
      }
      if (chunk.size() > UINT64_MAX - total) bad("the chunk sizes overflow");
      total += chunk.size();
      entry.chunks.emplace_back(first, chunk.size());
    }
    if (total != entry.size) {
      bad("its size says " + str(entry.size) + " bytes but its chunks hold " + str(total));
    }
    entry.offset = entry.chunks.empty()
                       ? 0
                       : static_cast<std::uint64_t>(entry.chunks.front().data() - reader->data());
    entries.push_back(std::move(entry));
  }

  // No two chunks (of one entry or of two) share a byte.
  void check_overlaps() const {
    struct Range {
      const std::byte* first;
      std::size_t size;
      std::size_t entry;
    };
    std::vector<Range> ranges;
    for (std::size_t i = 0; i < entries.size(); ++i) {
      for (const auto& chunk : entries[i].chunks) ranges.push_back({chunk.data(), chunk.size(), i});
    }
    std::sort(ranges.begin(), ranges.end(),
              [](const Range& a, const Range& b) { return a.first < b.first; });
    for (std::size_t k = 1; k < ranges.size(); ++k) {
      const Range& before = ranges[k - 1];
      if (ranges[k].first < before.first + before.size) {
        const std::size_t a = std::min(before.entry, ranges[k].entry);
        const std::size_t b = std::max(before.entry, ranges[k].entry);
        refuse(entry_label(b, entries[b].name) + ": its bytes overlap those of " +
               (a == b ? std::string("itself") : entry_label(a, entries[a].name)));
      }
    }
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

  void check() {
    map();
    check_root();
    check_overlaps();
    check_graph();
  }
};

// ---- Wrapper ---------------------------------------------------------------------------------

Wrapper::Wrapper(std::unique_ptr<State> state) noexcept : state_(std::move(state)) {}
Wrapper::Wrapper(Wrapper&&) noexcept = default;
Wrapper& Wrapper::operator=(Wrapper&&) noexcept = default;
Wrapper::~Wrapper() = default;

Wrapper Wrapper::open(const std::filesystem::path& path, WrapperOpenOptions options) {
  auto state = std::make_unique<State>();
  state->name = options.name.empty() ? path.string() : std::move(options.name);
  int raw = -1;
  // O_NONBLOCK: a FIFO must not make open() wait for a writer; it is refused just below.
  if (const int err = os::open(path.c_str(), O_RDONLY | O_NONBLOCK, 0, &raw); err != 0) {
    throw Error(err, kOpen, state->name);
  }
  state->fd.reset(raw);
  // Only a regular file can be mapped and checked: a FIFO, socket or device (a pipe, or
  // /dev/zero, would otherwise read as an "empty file"), and procfs/sysfs files, whose size
  // says nothing of their content, are refused as what they are.
  os::FileStatus status;
  if (const int err = os::fd_status(raw, &status); err != 0) {
    throw Error(err, kOpen, state->name, "(fstat)");
  }
  if (status.type != os::FileType::kRegular || status.pseudo) {
    throw Error(EINVAL, kOpen, state->name,
                std::string("(not a regular file: ") +
                    (status.pseudo ? "a file of procfs or sysfs" : "a ") +
                    (status.pseudo ? "" : os::to_string(status.type)) + ")");
  }
  // A regular file: read and copied (sendfile to the loader) as any other.
  if (const int err = os::clear_nonblocking(raw); err != 0) {
    throw Error(err, kOpen, state->name, "(fcntl)");
  }
  state->check();
  return Wrapper(std::move(state));
}

Wrapper Wrapper::open(int fd, WrapperOpenOptions options) {
  auto state = std::make_unique<State>();
  state->name = options.name.empty() ? "wrapper fd " + std::to_string(fd) : std::move(options.name);
  int raw = -1;
  if (const int err = os::dup_cloexec(fd, 0, &raw); err != 0) {
    throw Error(err, kOpen, state->name, "(dup)");
  }
  state->fd.reset(raw);
  state->check();
  return Wrapper(std::move(state));
}

Wrapper Wrapper::open(const SealedImage& image, WrapperOpenOptions options) {
  auto state = std::make_unique<State>();
  state->name =
      options.name.empty() ? "sealed wrapper fd " + std::to_string(image.fd()) : std::move(options.name);
  state->image = image;  // shares the image: its fd and mapping live as long as this
  state->check();
  return Wrapper(std::move(state));
}

const std::string& Wrapper::name() const noexcept { return state_->name; }
std::uint32_t Wrapper::format_version() const noexcept { return state_->version; }
const std::string& Wrapper::producer() const noexcept { return state_->producer; }
std::uint64_t Wrapper::file_size() const noexcept { return state_->file_size; }
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
  for (const auto& chunk : entry.chunks) digest.update(chunk.data(), chunk.size());
  return digest.finish() == entry.digest;
}

void Wrapper::verify() const {
  for (const WrapperEntry& entry : state_->entries) {
    if (!verify_entry(entry)) {
      throw Error(EBADMSG, "verifying wrapper", state_->name,
                  "entry '" + detail::printable(entry.name) + "': the digest does not match its bytes (expected " +
                      entry.digest.hex() + ")");
    }
  }
}

Library Wrapper::load_library(std::string_view name, LoadOptions options) const {
  const WrapperEntry& e = entry(name);
  if (options.name.empty()) options.name = state_->name + ":" + detail::printable(e.name);
  if (e.kind != EntryKind::kSharedLibrary) {
    throw Error(EINVAL, "loading library", options.name, "(it is a data entry, not a library)");
  }
  if (e.size == 0) throw Error(EINVAL, "loading library", options.name, "(the entry is empty)");
  // What is loaded is what the digest describes: the sealed copy is hashed just before
  // dlopen(), so a file changed after open() or verify() cannot slip anything in.
  options.check = [digest = e.digest, user = std::move(options.check),
                   label = options.name](std::span<const std::byte> bytes) {
    if (digest_of(bytes) != digest) {
      throw Error(EBADMSG, "loading library", label,
                  "(its bytes do not match the entry's digest " + digest.hex() + ")");
    }
    if (user) user(bytes);
  };
  if (e.contiguous()) return mapwright::load_library(fd(), e.offset, e.size, options);
  // Chunks with gaps between them (files over 4 GiB): gather them into a sealed memfd.
  RegionOptions region_options;
  region_options.capacity = (e.size + 4095) / 4096 * 4096;
  Region region = Region::memfd(options.name, region_options);
  region.ensure(e.size);
  std::uint64_t at = 0;
  for (const auto& chunk : e.chunks) {
    std::memcpy(region.data() + at, chunk.data(), chunk.size());
    at += chunk.size();
  }
  region.finish(e.size);
  return mapwright::load_library(std::move(region).seal(), options);
}

LoadedLibraries Wrapper::load_in_order(const std::vector<std::size_t>& order,
                                       const LoadOptions& options) const {
  LoadedLibraries loaded;
  for (const std::size_t i : order) {
    const std::string& entry_name = state_->entries[i].name;
    LoadOptions one = options;
    one.name = (options.name.empty() ? state_->name : options.name) + ":" + detail::printable(entry_name);
    loaded.libraries_.push_back(load_library(entry_name, std::move(one)));
    loaded.names_.push_back(entry_name);
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
