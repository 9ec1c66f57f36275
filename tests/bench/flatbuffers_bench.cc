// flatbuffers_bench — building the same FlatBuffers buffer into a durable file in
// MAPWRIGHT_BENCH_DIR (default: the current directory), two ways:
//
//   flatbuffers/mapped/<S>  mapwright::MappedFlatBufferBuilder over FlatBufferTarget::file:
//                           the buffer is built at the top of the file, finish() takes the
//                           unused front off (COLLAPSE_RANGE on ext4 and xfs) or copies it
//                           down, sync() fsyncs.
//   flatbuffers/stock/<S>   what users write today: flatbuffers::FlatBufferBuilder on the heap
//                           (default allocator, initial size 1 KiB), then write(2) of the
//                           finished buffer to the file, and fsync.
//
// The buffer (the same calls on both builders, so the same bytes): a page-aligned byte vector
// of 3/4 of S written in place (PreAlign + CreateUninitializedVector; its content, a pattern,
// arrives in 1 MiB pieces that the stock path memcpys into the heap and the mapped path hands
// to fill(), which writes them into the file's pages without mapping them), then S/4 / 48 Item tables (a name string and a number each) in a vector, and the
// Catalog root (tests/schema/test.fbs). S = 256 MiB and 1.5 GiB (MAPWRIGHT_BENCH_BYTES=B
// scales them to B/4 and 3B/2).
//
// Timed (manual time, steady_clock), from nothing to a buffer durable in the file: creating
// the file (the builder's constructor; open O_TRUNC for stock), building, finish()/write(2),
// fsync. Not timed: destroying the builder, unlinking the file, and the check that reads the
// file back once per program run (MappedFlatBuffer + Verifier, the blob's bytes sampled).
//
// Counters: peak_rss_MiB, the growth of the resident set during one build (VmHWM after the
// build less VmRSS before, with the peak reset through /proc/self/clear_refs); moved_MiB, the
// bytes growth copied (stock: the allocator's memcpy_downward, counted by a wrapping
// allocator; mapped: stats().data_bytes_moved + scratch_bytes_moved); copied_MiB, what
// finish() copied (0 when it collapsed).
//
// RATIO rows: flatbuffers/mapped / flatbuffers/stock (issue target: >= 1.0x the speed, that
// is, a time ratio <= 1).
#include <fcntl.h>
#include <unistd.h>

#include <mapwright/mapwright.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "bench_main.h"
#include "test_generated.h"

namespace mapwright::bench {
namespace {

namespace fb = ::mapwright::test::fb;
using SteadyClock = std::chrono::steady_clock;

constexpr std::uint64_t kMiB = 1ull << 20;

std::uint64_t status_kib(const char* field) {
  std::ifstream status("/proc/self/status");
  std::string line;
  const std::size_t length = std::strlen(field);
  while (std::getline(status, line)) {
    if (line.compare(0, length, field) == 0) return std::stoull(line.substr(length + 1));
  }
  return 0;
}

// Resets VmHWM to the current RSS (Linux 4.0+).
void reset_peak() { std::ofstream("/proc/self/clear_refs") << "5"; }

// The default allocator, counting what reallocate_downward copies.
class CountingAllocator final : public flatbuffers::Allocator {
 public:
  std::uint8_t* allocate(std::size_t size) override { return base_.allocate(size); }
  void deallocate(std::uint8_t* p, std::size_t size) override { base_.deallocate(p, size); }
  std::uint8_t* reallocate_downward(std::uint8_t* old_p, std::size_t old_size,
                                    std::size_t new_size, std::size_t in_use_back,
                                    std::size_t in_use_front) override {
    moved += in_use_back + in_use_front;
    std::uint8_t* p = allocate(new_size);
    memcpy_downward(old_p, old_size, p, new_size, in_use_back, in_use_front);
    deallocate(old_p, old_size);
    return p;
  }
  std::uint64_t moved = 0;

 private:
  flatbuffers::DefaultAllocator base_;
};

std::uint64_t blob_bytes(std::uint64_t size) { return size / 4 * 3; }
std::uint64_t table_count(std::uint64_t size) { return size / 4 / 48; }

// The blob's content arrives in 1 MiB pieces (made here; read from somewhere, for a user),
// and `store` puts each in place: memcpy for the stock builder, fill() for the mapped one.
template <class Store>
void build(flatbuffers::FlatBufferBuilder& fbb, std::uint64_t size, Store&& store) {
  const std::uint64_t bytes = blob_bytes(size);
  std::uint8_t* data = nullptr;
  fbb.PreAlign(bytes, 4096);
  const auto blob = fbb.CreateUninitializedVector(bytes, &data);
  std::vector<std::uint64_t> piece(kMiB / 8);
  for (std::uint64_t at = 0; at < bytes; at += kMiB) {
    const std::uint64_t n = std::min(kMiB, bytes - at);
    for (std::uint64_t w = 0; w < n / 8; ++w) piece[w] = (at + w * 8) * 0x9e3779b97f4a7c15ull;
    store(data + at, piece.data(), n);
  }
  std::vector<flatbuffers::Offset<fb::Item>> items;
  const std::uint64_t count = table_count(size);
  items.reserve(count);
  char name[32];
  for (std::uint64_t i = 0; i < count; ++i) {
    const int n = std::snprintf(name, sizeof name, "item-%llu", static_cast<unsigned long long>(i));
    items.push_back(fb::CreateItem(fbb, fbb.CreateString(name, static_cast<std::size_t>(n)), i));
  }
  fbb.Finish(fb::CreateCatalog(fbb, fbb.CreateString("bench"), fbb.CreateVector(items), blob),
             fb::CatalogIdentifier());
}

// Reads the file back with the reader: a wrong buffer fails the benchmark.
bool check(const std::filesystem::path& path, std::uint64_t size, std::string* why) {
  try {
    const MappedFlatBuffer reader(path);
    const fb::Catalog* catalog = reader.root<fb::Catalog>(fb::CatalogIdentifier());
    if (catalog->items()->size() != table_count(size) ||
        catalog->blob()->size() != blob_bytes(size) ||
        catalog->items()->Get(7)->name()->str() != "item-7") {
      *why = "the buffer read back is not the one built";
      return false;
    }
    const std::uint8_t* data = catalog->blob()->data();
    for (std::uint64_t i = 0; i + 8 <= blob_bytes(size); i += 1'048'573 / 8 * 8) {
      std::uint64_t word = 0;
      std::memcpy(&word, data + i, 8);
      if (word != i * 0x9e3779b97f4a7c15ull) {
        *why = "the blob read back is wrong";
        return false;
      }
    }
    return true;
  } catch (const std::exception& e) {
    *why = e.what();
    return false;
  }
}

double seconds_since(SteadyClock::time_point start) {
  return std::chrono::duration<double>(SteadyClock::now() - start).count();
}

void report(benchmark::State& state, std::uint64_t size, std::uint64_t peak, std::uint64_t moved,
            std::uint64_t copied) {
  state.counters["peak_rss_MiB"] = static_cast<double>(peak) / kMiB;
  state.counters["moved_MiB"] = static_cast<double>(moved) / kMiB;
  state.counters["copied_MiB"] = static_cast<double>(copied) / kMiB;
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * size));
}

void build_mapped(benchmark::State& state, std::uint64_t size) {
  static bool checked = false;
  const auto path = scratch_path("flatbuffers-mapped");
  std::uint64_t peak = 0, moved = 0, copied = 0;
  for (auto _ : state) {
    const std::uint64_t rss_before = status_kib("VmRSS:") * 1024;
    reset_peak();
    const auto start = SteadyClock::now();
    {
      MappedFlatBufferBuilder builder(FlatBufferTarget::file(path));
      build(builder, size, [&](std::uint8_t* to, const void* from, std::size_t n) {
        builder.fill(to, from, n);
      });
      const FlatBufferFinish done = builder.finish();
      builder.sync();
      state.SetIterationTime(seconds_since(start));
      const MappedFlatBufferStats stats = builder.stats();
      moved = stats.data_bytes_moved + stats.scratch_bytes_moved;
      copied = done.bytes_copied;
    }
    peak = std::max(peak, status_kib("VmHWM:") * 1024 - rss_before);
    std::string why;
    if (!checked && !check(path, size, &why)) state.SkipWithError(why.c_str());
    checked = true;
    std::filesystem::remove(path);
  }
  report(state, size, peak, moved, copied);
}

void build_stock(benchmark::State& state, std::uint64_t size) {
  static bool checked = false;
  const auto path = scratch_path("flatbuffers-stock");
  std::uint64_t peak = 0, moved = 0;
  for (auto _ : state) {
    const std::uint64_t rss_before = status_kib("VmRSS:") * 1024;
    reset_peak();
    const auto start = SteadyClock::now();
    {
      CountingAllocator allocator;
      flatbuffers::FlatBufferBuilder fbb(1024, &allocator);
      const int fd = ::open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
      if (fd < 0) {
        state.SkipWithError("open failed");
        break;
      }
      build(fbb, size, [](std::uint8_t* to, const void* from, std::size_t n) {
        std::memcpy(to, from, n);
      });
      write_all(fd, fbb.GetBufferPointer(), fbb.GetSize());
      ::fsync(fd);
      ::close(fd);
      state.SetIterationTime(seconds_since(start));
      moved = allocator.moved;
    }
    peak = std::max(peak, status_kib("VmHWM:") * 1024 - rss_before);
    std::string why;
    if (!checked && !check(path, size, &why)) state.SkipWithError(why.c_str());
    checked = true;
    std::filesystem::remove(path);
  }
  report(state, size, peak, moved, 0);
}

std::string size_name(std::uint64_t bytes) {
  return bytes % kMiB == 0 ? std::to_string(bytes / kMiB) + "MiB" : std::to_string(bytes) + "B";
}

}  // namespace

void register_benchmarks() {
  const std::uint64_t base = bench_bytes();  // 1 GiB unless scaled down for a smoke run
  for (const std::uint64_t size : {base / 4 / 4096 * 4096, base / 2 * 3 / 4096 * 4096}) {
    if (size == 0 || size >= kMaxFlatBufferBytes) {
      throw std::invalid_argument("MAPWRIGHT_BENCH_BYTES out of range for flatbuffers_bench");
    }
    const std::string rest = "/" + size_name(size);
    benchmark::RegisterBenchmark(("flatbuffers/mapped" + rest).c_str(), build_mapped, size)
        ->UseManualTime()
        ->Iterations(1)
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("flatbuffers/stock" + rest).c_str(), build_stock, size)
        ->UseManualTime()
        ->Iterations(1)
        ->Unit(benchmark::kMillisecond);
  }
  compare("flatbuffers/mapped", "flatbuffers/stock");
}

}  // namespace mapwright::bench
