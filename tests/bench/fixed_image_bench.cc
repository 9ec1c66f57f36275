// fixed_image_bench — a string -> record map of N entries (1,000,000 at the default
// MAPWRIGHT_BENCH_BYTES of 1 GiB: one entry per KiB of it), loaded at startup:
//
//   fixed/map_at_base         FixedImage::map() of the sealed image at its base (header-only
//                             check, as for an image from a trusted broker) + one lookup
//   fixed/rebuild             what a user writes without it: read the serialized form (a Cap'n
//                             Proto List(Item) in a memfd, mapped) and insert every entry into a
//                             std::unordered_map<std::string, Record> (reserved) + one lookup
//   fixed/relocate            the same map() while the base is taken: every pointer page
//                             written (std::unordered_map's nodes put pointers on every page)
//   fixed/map_full_check      map() at the base with the full check (digest, every pointer)
//   fixed/lookup              1,000 lookups in the mapped std::pmr::unordered_map
//   fixed/lookup_offset_ptr   the same in a boost::unordered_map in a Boost.Interprocess
//                             managed_mapped_file (offset_ptr: no relocation ever needed)
//
// RATIO rows: fixed/map_at_base against fixed/rebuild (target >= 1000x the speed) and
// fixed/relocate; fixed/lookup against fixed/lookup_offset_ptr (target: no slower).
#include <capnp/message.h>
#include <capnp/serialize.h>
#include <unistd.h>

#include <boost/container_hash/hash.hpp>
#include <boost/interprocess/allocators/allocator.hpp>
#include <boost/interprocess/containers/string.hpp>
#include <boost/interprocess/managed_mapped_file.hpp>
#include <boost/unordered_map.hpp>
#include <mapwright/fixed_image.h>
#include <mapwright/region.h>

#include <cstdint>
#include <cstring>
#include <memory_resource>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "bench_main.h"
#include "test.capnp.h"

namespace mapwright::bench {
namespace {

namespace bip = boost::interprocess;

struct Record {
  std::uint64_t id;
  double weight;
};
using FixedMap = std::pmr::unordered_map<std::pmr::string, Record>;
constexpr std::uintptr_t kBase = kDefaultFixedBase + (64ull << 30);

std::string key(std::uint64_t i) { return "key-" + std::to_string(i); }

std::uint64_t entries() { return std::max<std::uint64_t>(bench_bytes() / 1024, 1000); }

std::vector<FixedImageType> types() { return {fixed_type<FixedMap>("FixedMap"), fixed_type<Record>("Record")}; }

const SealedImage& fixed_image() {
  static const SealedImage image = [] {
    FixedImageOptions options;
    options.name = "fixed_image_bench";
    options.base = kBase;
    options.capacity = 8ull << 30;
    options.types = types();
    FixedImageBuilder builder(options);
    auto* map = builder.create<FixedMap>(builder.resource());
    map->reserve(entries());
    for (std::uint64_t i = 0; i < entries(); ++i) map->emplace(key(i), Record{i, static_cast<double>(i) / 2});
    builder.set_root(map);
    return builder.seal();
  }();
  return image;
}

// The serialized form: TestAll.items, one Item {key, value} per entry, in a sealed memfd.
const SealedImage& serialized() {
  static const SealedImage image = [] {
    ::capnp::MallocMessageBuilder message;
    auto items = message.initRoot<::TestAll>().initItems(static_cast<unsigned>(entries()));
    for (std::uint64_t i = 0; i < entries(); ++i) {
      items[static_cast<unsigned>(i)].setKey(key(i));
      items[static_cast<unsigned>(i)].setValue(i);
    }
    const auto words = ::capnp::messageToFlatArray(message);
    const auto bytes = words.asBytes();
    Region region = Region::memfd("fixed_image_bench serialized");
    region.ensure(bytes.size());
    std::memcpy(region.data(), bytes.begin(), bytes.size());
    region.finish(bytes.size());
    return std::move(region).seal();
  }();
  return image;
}

FixedMapOptions map_options(FixedMapOptions::Check check) {
  FixedMapOptions options;
  options.types = types();
  options.check = check;
  return options;
}

void lookup_one(const FixedImage& image, benchmark::State& state) {
  const FixedMap* map = image.root<FixedMap>();
  const auto found = map->find(std::pmr::string("key-12345"));
  if (found == map->end() || found->second.id != 12345) state.SkipWithError("lookup failed");
  benchmark::DoNotOptimize(found);
}

// map() at the base with `check`, + one lookup.
void map_at_base(benchmark::State& state, FixedMapOptions::Check check) {
  const SealedImage& sealed = fixed_image();
  for (auto _ : state) {
    const FixedImage image = FixedImage::map(sealed, map_options(check));
    if (!image.report().at_base) state.SkipWithError("not at the base");
    lookup_one(image, state);
  }
}

void relocate(benchmark::State& state) {
  const SealedImage& sealed = fixed_image();
  const FixedImage holder = FixedImage::map(sealed, map_options(FixedMapOptions::Check::kHeader));
  std::uint64_t pages = 0;
  for (auto _ : state) {
    const FixedImage image = FixedImage::map(sealed, map_options(FixedMapOptions::Check::kHeader));
    if (image.report().at_base) state.SkipWithError("at the base, which should be taken");
    pages = image.report().pages_touched;
    lookup_one(image, state);
  }
  state.counters["pages_touched"] = static_cast<double>(pages);
  state.counters["image_pages"] = static_cast<double>((sealed.size() + 4095) / 4096);
}

void rebuild(benchmark::State& state) {
  const SealedImage& sealed = serialized();
  for (auto _ : state) {
    const auto bytes = sealed.map();
    ::capnp::ReaderOptions options;
    options.traversalLimitInWords = UINT64_MAX;
    ::capnp::FlatArrayMessageReader reader(
        ::kj::arrayPtr(reinterpret_cast<const ::capnp::word*>(bytes.data()), bytes.size() / 8), options);
    const auto items = reader.getRoot<::TestAll>().getItems();
    std::unordered_map<std::string, Record> map;
    map.reserve(items.size());
    for (const auto item : items) {
      const auto text = item.getKey();
      map.emplace(std::string(text.begin(), text.size()),
                  Record{item.getValue(), static_cast<double>(item.getValue()) / 2});
    }
    const auto found = map.find("key-12345");
    if (found == map.end()) state.SkipWithError("lookup failed");
    benchmark::DoNotOptimize(found);
  }
}

constexpr int kLookups = 1000;

std::vector<std::uint64_t> lookup_indexes() {
  std::vector<std::uint64_t> out;
  std::uint64_t x = 88172645463325252ull;
  for (int i = 0; i < kLookups; ++i) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    out.push_back(x % entries());
  }
  return out;
}

void lookup(benchmark::State& state) {
  const FixedImage image = FixedImage::map(fixed_image(), map_options(FixedMapOptions::Check::kHeader));
  const FixedMap* map = image.root<FixedMap>();
  std::vector<std::pmr::string> keys;
  for (const std::uint64_t i : lookup_indexes()) keys.emplace_back(key(i));
  for (auto _ : state) {
    std::uint64_t sum = 0;
    for (const auto& k : keys) sum += map->find(k)->second.id;
    benchmark::DoNotOptimize(sum);
  }
}

// Boost.Interprocess: the same map with offset_ptr, in a managed_mapped_file.
using Segment = bip::managed_mapped_file::segment_manager;
using BString = bip::basic_string<char, std::char_traits<char>, bip::allocator<char, Segment>>;
struct BHash {
  std::size_t operator()(const BString& s) const noexcept {
    return boost::hash_range(s.begin(), s.end());
  }
};
using BMap = boost::unordered_map<BString, Record, BHash, std::equal_to<BString>,
                                  bip::allocator<std::pair<const BString, Record>, Segment>>;

// Built once per process in a scratch file, opened again as a program at startup would, and
// removed at exit.
struct OffsetPtrMap {
  std::string path = scratch_path("offset-ptr").string();
  std::optional<bip::managed_mapped_file> file;
  const BMap* map = nullptr;
  OffsetPtrMap() {
    bip::file_mapping::remove(path.c_str());
    {
      bip::managed_mapped_file built(bip::create_only, path.c_str(), entries() * 256 + (64ull << 20));
      BMap* m = built.construct<BMap>("map")(entries(), BHash(), std::equal_to<BString>(),
                                             built.get_segment_manager());
      for (std::uint64_t i = 0; i < entries(); ++i) {
        m->emplace(BString(key(i).c_str(), built.get_segment_manager()),
                   Record{i, static_cast<double>(i) / 2});
      }
    }
    file.emplace(bip::open_only, path.c_str());
    map = file->find<BMap>("map").first;
  }
  ~OffsetPtrMap() {
    file.reset();
    bip::file_mapping::remove(path.c_str());
  }
};

void lookup_offset_ptr(benchmark::State& state) {
  static OffsetPtrMap built;
  std::vector<BString> keys;
  for (const std::uint64_t i : lookup_indexes()) keys.emplace_back(key(i).c_str(), built.file->get_segment_manager());
  for (auto _ : state) {
    std::uint64_t sum = 0;
    for (const auto& k : keys) sum += built.map->find(k)->second.id;
    benchmark::DoNotOptimize(sum);
  }
}

}  // namespace

void register_benchmarks() {
  benchmark::RegisterBenchmark("fixed/map_at_base", map_at_base, FixedMapOptions::Check::kHeader)
      ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("fixed/map_full_check", map_at_base, FixedMapOptions::Check::kFull)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("fixed/relocate", relocate)->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("fixed/rebuild", rebuild)->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("fixed/lookup", lookup)->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("fixed/lookup_offset_ptr", lookup_offset_ptr)->Unit(benchmark::kMicrosecond);
  compare("fixed/map_at_base", "fixed/rebuild");
  compare("fixed/map_at_base", "fixed/relocate");
  compare("fixed/relocate", "fixed/rebuild");
  compare("fixed/lookup", "fixed/lookup_offset_ptr");
}

}  // namespace mapwright::bench
