// capnp_bench — building the same Cap'n Proto message into a disk file in MAPWRIGHT_BENCH_DIR
// (default: the current directory), three ways:
//
//   capnp/mapped/<shape>        (a) mapwright::MappedMessageBuilder over Region::file(path)
//                                   (default options: 64 GiB capacity, so a 17-slot, 72-byte
//                                   segment table), fill, finish().
//   capnp/malloc_write/<shape>  (b) what users write today: capnp::MallocMessageBuilder
//                                   (default options), fill, capnp::writeMessageToFd(fd, ...).
//   capnp/presized_flat/<shape> (c) the limit, the best a user can do who knows the message's
//                                   exact size in advance: ftruncate(size), mmap MAP_SHARED,
//                                   an 8-byte single-segment header written by hand, and
//                                   capnp::FlatMessageBuilder over the words after it.
//
// Shapes (schema-less, so no code generation; the same fill code runs for every variant):
//   u64_list/<S>     root = List(UInt64) of S / 8 elements, element i = i ^ kPattern.
//                    S = 512 MiB and 1 GiB; with MAPWRIGHT_BENCH_BYTES=B (smoke runs), B / 2
//                    and B.
//   struct_list/<S>  root = List(struct { id :UInt64; name :Text }) of S / 32 elements (one
//                    data word, one pointer; id = i, name = "item-<i>", at most 13 bytes), about
//                    32 bytes per element, so a message of about S bytes; S = the smaller
//                    u64_list size (512 MiB by default).
//
// RATIO rows: mapped / malloc_write (issue target: mapped >= 1.5x faster at 512 MiB, aiming
// for 2x) and mapped / presized_flat (target: within 5%).
//
// Timed (manual time, steady_clock), from an empty open file to a finished, stream-framed
// message in it:
//   (a) constructing the builder, the fill, finish() (segment table, ftruncate to the size);
//   (b) constructing the builder, the fill (calloc'ed segments), writeMessageToFd;
//   (c) ftruncate, mmap, the header, constructing the builder, the fill.
// Not timed: creating the empty file (open O_TRUNC; for (a) Region::file, which also reserves
// and registers its address range); for (c) computing the size (a formula for u64_list, a dry
// run into a one-segment MallocMessageBuilder for struct_list, once per benchmark run); the
// teardown (destroying the builders — for (b) freeing the heap segments — munmap, close,
// unlink); and the check of the result. No fsync or msync anywhere: this measures building
// into the page cache; every file is unlinked before the kernel writes it back.
//
// The messages are the same content but not byte-identical: (a) and (c) are one segment; (b)
// has MallocMessageBuilder's 1024-word first segment holding a far pointer to the big list in
// a second segment (a few words more). Each benchmark's file is read back once per program
// run (after the first iteration of its first repetition), untimed, with stock
// capnp::FlatArrayMessageReader over an mmap of the file: the message must fill the file
// exactly, and the list length and every element must be right; a wrong message fails the
// benchmark (SkipWithError, so the smoke test fails).
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <capnp/any.h>
#include <capnp/message.h>
#include <capnp/serialize.h>
#include <mapwright/mapwright.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>

#include "bench_main.h"

namespace mapwright::bench {
namespace {

using SteadyClock = std::chrono::steady_clock;

constexpr std::uint64_t kPattern = 0x9E3779B97F4A7C15ull;

enum class Shape { kU64List, kStructList };

struct Case {
  Shape shape;
  std::uint64_t bytes;     // the size the shape is named after
  std::uint64_t elements;  // list length
};

const char* shape_name(Shape shape) {
  return shape == Shape::kU64List ? "u64_list" : "struct_list";
}

std::string size_name(std::uint64_t bytes) {
  if (bytes % (1ull << 30) == 0) return std::to_string(bytes >> 30) + "GiB";
  if (bytes % (1ull << 20) == 0) return std::to_string(bytes >> 20) + "MiB";
  if (bytes % (1ull << 10) == 0) return std::to_string(bytes >> 10) + "KiB";
  return std::to_string(bytes) + "B";
}

double seconds_since(SteadyClock::time_point start) {
  return std::chrono::duration<double>(SteadyClock::now() - start).count();
}

[[noreturn]] void fail(const std::string& what) { throw std::runtime_error(what); }

[[noreturn]] void fail_errno(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

// "item-<i>" into `buf` (NUL-terminated); returns its length.
std::size_t item_name(char (&buf)[32], std::uint64_t i) {
  std::memcpy(buf, "item-", 5);
  const auto [end, ec] = std::to_chars(buf + 5, buf + sizeof buf - 1, i);
  (void)ec;  // 20 digits always fit
  *end = '\0';
  return static_cast<std::size_t>(end - buf);
}

// The fill, never inlined, so that every variant runs literally the same code: the root is
// set through AnyPointer (a root may be any pointer), as a user without a schema would.
[[gnu::noinline]] void build_message(::capnp::MessageBuilder& builder, const Case& c) {
  auto root = builder.getRoot<::capnp::AnyPointer>();
  const auto n = static_cast<::capnp::uint>(c.elements);
  if (c.shape == Shape::kU64List) {
    auto list = root.initAs<::capnp::List<std::uint64_t>>(n);
    for (::capnp::uint i = 0; i < n; ++i) list.set(i, i ^ kPattern);
    return;
  }
  auto list = root.initAsListOfAnyStruct(1, 1, n);
  char name[32];
  for (::capnp::uint i = 0; i < n; ++i) {
    auto item = list[i];
    const std::uint64_t id = i;
    std::memcpy(item.getDataSection().begin(), &id, sizeof id);  // little-endian host
    const std::size_t len = item_name(name, i);
    item.getPointerSection()[0].setAs<::capnp::Text>(::capnp::Text::Reader(name, len));
  }
}

// Words of the message body as one segment (everything but the 8-byte header), for (c).
std::uint64_t single_segment_words(const Case& c) {
  if (c.shape == Shape::kU64List) return 1 + c.elements;  // root pointer + the elements
  // A dry run into a MallocMessageBuilder whose first segment (calloc'ed; only the pages
  // touched cost anything) holds the whole message, so it stays one segment.
  ::capnp::MallocMessageBuilder dry(static_cast<::capnp::uint>(kMaxSegmentWords),
                                    ::capnp::AllocationStrategy::FIXED_SIZE);
  build_message(dry, c);
  const auto segments = dry.getSegmentsForOutput();
  if (segments.size() != 1) fail("struct_list dry run: expected one segment");
  if (::capnp::computeSerializedSizeInWords(dry) != 1 + segments[0].size()) {
    fail("struct_list dry run: unexpected serialized size");
  }
  return segments[0].size();
}

// Whether this variant and case still need their one check in this process (a benchmark
// function runs once per repetition; the first run checks its file).
bool first_check(const char* variant, const Case& c) {
  static std::set<std::string> done;
  return done.insert(std::string(variant) + shape_name(c.shape) + size_name(c.bytes)).second;
}

// Reads the finished file back with stock Cap'n Proto and checks it; throws on any mismatch.
void check_file(const std::filesystem::path& path, const Case& c, const char* variant) {
  const std::string what = std::string(variant) + ": " + path.string() + ": ";
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail_errno("open " + path.string());
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    fail_errno("fstat " + path.string());
  }
  const auto size = static_cast<std::uint64_t>(st.st_size);
  if (size == 0 || size % 8 != 0) {
    ::close(fd);
    fail(what + "file size " + std::to_string(size) + " is not a positive multiple of 8");
  }
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) fail_errno("mmap " + path.string());
  struct Unmap {
    void* p;
    std::uint64_t n;
    ~Unmap() { ::munmap(p, n); }
  } unmap{map, size};

  try {
    const kj::ArrayPtr<const ::capnp::word> words(static_cast<const ::capnp::word*>(map),
                                                   size / 8);
    ::capnp::ReaderOptions options;
    options.traversalLimitInWords = std::numeric_limits<std::uint64_t>::max();
    ::capnp::FlatArrayMessageReader reader(words, options);
    if (reader.getEnd() != words.end()) fail(what + "the message does not fill the file");
    const auto root = reader.getRoot<::capnp::AnyPointer>();
    if (c.shape == Shape::kU64List) {
      const auto list = root.getAs<::capnp::List<std::uint64_t>>();
      if (list.size() != c.elements) fail(what + "wrong list length " + std::to_string(list.size()));
      for (::capnp::uint i = 0; i < list.size(); ++i) {
        if (list[i] != (i ^ kPattern)) fail(what + "wrong element " + std::to_string(i));
      }
    } else {
      const auto list = root.getAs<::capnp::AnyList>().as<::capnp::List<::capnp::AnyStruct>>();
      if (list.size() != c.elements) fail(what + "wrong list length " + std::to_string(list.size()));
      char name[32];
      for (::capnp::uint i = 0; i < list.size(); ++i) {
        const auto item = list[i];
        const auto data = item.getDataSection();
        std::uint64_t id = ~0ull;
        if (data.size() >= sizeof id) std::memcpy(&id, data.begin(), sizeof id);
        const auto pointers = item.getPointerSection();
        const std::size_t len = item_name(name, i);
        if (id != i || pointers.size() < 1 ||
            pointers[0].getAs<::capnp::Text>() != ::capnp::Text::Reader(name, len)) {
          fail(what + "wrong element " + std::to_string(i));
        }
      }
    }
  } catch (const kj::Exception& e) {
    fail(what + "Cap'n Proto refused the message: " + std::string(e.getDescription().cStr()));
  }
}

// Removes a file the Region created, also when the benchmark ends by an exception.
struct RemoveOnExit {
  std::filesystem::path path;
  ~RemoveOnExit() {
    std::error_code ignored;
    std::filesystem::remove(path, ignored);
  }
};

void set_counters(benchmark::State& state, std::uint64_t message_bytes) {
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * message_bytes));
  state.counters["msg_MiB"] = static_cast<double>(message_bytes) / (1 << 20);
}

// (a) MappedMessageBuilder over a file Region.
void build_mapped(benchmark::State& state, Case c) {
  skip_on_error(state, [&] {
    const std::filesystem::path path = scratch_path("capnp-mapped");
    const RemoveOnExit cleanup{path};
    bool checked = !first_check("mapped", c);
    std::uint64_t message_bytes = 0;
    RegionStats stats;
    for (auto _ : state) {
      std::optional<Region> region;
      region.emplace(Region::file(path));
      std::optional<MappedMessageBuilder> builder;  // destroyed before the region, untimed
      const auto start = SteadyClock::now();
      builder.emplace(*region);
      guarded([&] { build_message(*builder, c); });
      message_bytes = builder->finish();
      state.SetIterationTime(seconds_since(start));
      stats = region->stats();
      if (region->size() != message_bytes) fail("mapped: the file is not the message's size");
      builder.reset();
      region.reset();
      if (!checked) {
        check_file(path, c, "mapped");
        checked = true;
      }
      std::filesystem::remove(path);
    }
    set_counters(state, message_bytes);
    state.counters["growths"] = static_cast<double>(stats.growths);
  });
}

// (b) MallocMessageBuilder, then writeMessageToFd.
void build_malloc_write(benchmark::State& state, Case c) {
  skip_on_error(state, [&] {
    const std::filesystem::path path = scratch_path("capnp-malloc-write");
    bool checked = !first_check("malloc_write", c);
    std::uint64_t message_bytes = 0;
    std::uint64_t segments = 0;
    for (auto _ : state) {
      const ScratchFile file(Target::kDisk, path);
      std::optional<::capnp::MallocMessageBuilder> builder;  // freed after the timed part
      const auto start = SteadyClock::now();
      builder.emplace();
      build_message(*builder, c);
      ::capnp::writeMessageToFd(file.fd(), *builder);
      state.SetIterationTime(seconds_since(start));
      message_bytes = ::capnp::computeSerializedSizeInWords(*builder) * 8;
      segments = builder->getSegmentsForOutput().size();
      builder.reset();
      if (!checked) {
        check_file(path, c, "malloc_write");
        checked = true;
      }
    }
    set_counters(state, message_bytes);
    state.counters["segments"] = static_cast<double>(segments);
  });
}

// (c) The limit: a file mapped at its final size, FlatMessageBuilder over it.
void build_presized_flat(benchmark::State& state, Case c) {
  skip_on_error(state, [&] {
    const std::filesystem::path path = scratch_path("capnp-presized-flat");
    const std::uint64_t words = single_segment_words(c);  // once, untimed
    if (words > kMaxSegmentWords) fail("presized_flat: the message does not fit one segment");
    const std::uint64_t bytes = 8 + words * 8;
    bool checked = !first_check("presized_flat", c);
    for (auto _ : state) {
      const ScratchFile file(Target::kDisk, path);
      const auto start = SteadyClock::now();
      if (::ftruncate(file.fd(), static_cast<off_t>(bytes)) != 0) fail_errno("ftruncate");
      void* map = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, file.fd(), 0);
      if (map == MAP_FAILED) fail_errno("mmap");
      struct Unmap {
        void* p;
        std::uint64_t n;
        ~Unmap() { ::munmap(p, n); }
      } unmap{map, bytes};
      auto* header = static_cast<std::uint32_t*>(map);
      header[0] = 0;  // segment count - 1
      header[1] = static_cast<std::uint32_t>(words);
      {
        ::capnp::FlatMessageBuilder builder(
            kj::ArrayPtr<::capnp::word>(static_cast<::capnp::word*>(map) + 1, words));
        build_message(builder, c);
        state.SetIterationTime(seconds_since(start));
        builder.requireFilled();  // the size computed in advance was exact
      }
      if (!checked) {
        check_file(path, c, "presized_flat");
        checked = true;
      }
    }
    set_counters(state, bytes);
  });
}

}  // namespace

void register_benchmarks() {
  const std::uint64_t large = bench_bytes();  // 1 GiB unless scaled down for a smoke run
  const std::uint64_t small = large / 2 / 8 * 8;
  if (small == 0) throw std::invalid_argument("MAPWRIGHT_BENCH_BYTES is too small (need >= 16)");
  // A List(UInt64) (or any list) holds at most 2^29 - 1 elements; the flat limit needs the
  // message in one segment.
  if (large / 8 + 1 > kMaxSegmentWords) {
    throw std::invalid_argument("MAPWRIGHT_BENCH_BYTES is too large (at most 4 GiB - 16)");
  }
  const Case cases[] = {
      {Shape::kU64List, small, small / 8},
      {Shape::kU64List, large, large / 8},
      {Shape::kStructList, small, small / 32},
  };
  for (const Case& c : cases) {
    const std::string rest =
        std::string("/") + shape_name(c.shape) + "/" + size_name(c.bytes);
    benchmark::RegisterBenchmark(("capnp/presized_flat" + rest).c_str(), build_presized_flat, c)
        ->UseManualTime()
        ->Iterations(2)
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("capnp/mapped" + rest).c_str(), build_mapped, c)
        ->UseManualTime()
        ->Iterations(2)
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("capnp/malloc_write" + rest).c_str(), build_malloc_write, c)
        ->UseManualTime()
        ->Iterations(2)
        ->Unit(benchmark::kMillisecond);
  }
  compare("capnp/mapped", "capnp/malloc_write");
  compare("capnp/mapped", "capnp/presized_flat");
}

}  // namespace mapwright::bench
