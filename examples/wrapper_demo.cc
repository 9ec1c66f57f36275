// wrapper_demo: a wrapper file end to end. The producer packs a shared library and a 64 MiB
// lookup table (written in place, straight into the file's pages) into one file and publishes
// it; then, as a program would at startup, the file is opened, verified, and the library
// loaded from it and called. Nothing is written to disk on the runtime side.
//
//     wrapper_demo [OUT] [--keep]     (default OUT: wrapper_demo.mwr; removed unless --keep)
#include <mapwright/mapwright.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>

namespace {

using Clock = std::chrono::steady_clock;

long long us_since(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start).count();
}

// From /proc/self/io: the bytes this process caused to be sent to storage ("write_bytes",
// counted when it dirties page-cache pages of a disk file) less those dropped before write-back
// ("cancelled_write_bytes": the growth slack publish() truncates away). -1 without task I/O
// accounting.
long long write_bytes() {
  std::ifstream io("/proc/self/io");
  std::string key;
  long long value = 0, written = -1, cancelled = 0;
  while (io >> key >> value) {
    if (key == "write_bytes:") written = value;
    if (key == "cancelled_write_bytes:") cancelled = value;
  }
  return written < 0 ? -1 : written - cancelled;
}

// A path relative to the current directory when it lies below it, else as it is.
std::string shown(const std::filesystem::path& path) {
  std::error_code ignored;
  const std::filesystem::path relative = std::filesystem::proximate(path, ignored);
  return relative.empty() || *relative.begin() == ".." ? path.string() : relative.string();
}

// Removes the wrapper unless asked to keep it.
void remove_unless(bool keep, const std::filesystem::path& path) {
  std::error_code ignored;
  if (!keep && std::filesystem::remove(path, ignored))
    std::printf("\nremoved %s (--keep keeps it)\n", shown(path).c_str());
}

// The data entry: sqrt(i) for every i < 2^24, as floats (16 Mi x 4 bytes = 64 MiB).
constexpr std::uint64_t kTableEntries = 1ull << 24;

}  // namespace

int main(int argc, char** argv) {
  std::filesystem::path out = "wrapper_demo.mwr";
  bool keep = false;
  bool published = false;  // only then is `out` ours to remove
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--keep") == 0) {
      keep = true;
    } else {
      out = argv[i];
    }
  }
  const std::filesystem::path library = GREETING_LIBRARY_PATH;

  try {
    // ---- 1. The producer: pack a library and a data blob, publish atomically. ----
    std::printf("== producer: packing a library and a 64 MiB lookup table into %s\n",
                shown(out).c_str());
    const long long produce_io = write_bytes();
    const auto produce = Clock::now();
    mapwright::WrapperWriterOptions options;
    options.producer = "wrapper_demo";  // recorded in the file; `mapwright inspect` shows it
    // Staged beside `out`, which stays untouched until publish().
    mapwright::WrapperWriter writer(out, options);

    auto step = Clock::now();
    writer.add_library("greeting", library);  // copied in the kernel (copy_file_range)
    std::printf("  add_library(\"greeting\", %s): %llu bytes, %lld us\n", shown(library).c_str(),
                static_cast<unsigned long long>(std::filesystem::file_size(library)),
                us_since(step));

    step = Clock::now();
    writer.add_data("sqrt_table", kTableEntries * sizeof(float),
                    [](std::span<std::byte> chunk, std::uint64_t offset) {
                      // `chunk` is the wrapper file's own mapped pages: no buffer, no copy.
                      auto* table = reinterpret_cast<float*>(chunk.data());
                      const std::uint64_t first = offset / sizeof(float);
                      for (std::uint64_t i = 0; i < chunk.size() / sizeof(float); ++i)
                        table[i] = std::sqrt(static_cast<float>(first + i));
                    });
    std::printf(
        "  add_data(\"sqrt_table\", 64 MiB, fill): sqrt(i) for i < 2^24 stored in place, %lld us\n",
        us_since(step));

    step = Clock::now();
    const std::uint64_t file_size = writer.publish();  // metadata, fsync, link + rename
    published = true;
    std::printf("  publish(): metadata, fsync, link + rename over the target, %lld us\n",
                us_since(step));
    const long long produced_io = write_bytes();
    std::printf("  wrote %s: %llu bytes (%.1f MiB), %llu entries, in %.1f ms\n", shown(out).c_str(),
                static_cast<unsigned long long>(file_size),
                static_cast<double>(file_size) / (1 << 20),
                static_cast<unsigned long long>(writer.entry_count()),
                static_cast<double>(us_since(produce)) / 1000);
    if (produce_io >= 0 && produced_io >= 0)
      std::printf(
          "  /proc/self/io write_bytes: +%lld (%.1f MiB: the wrapper file; a dirtied page-cache\n"
          "    folio counts whole, and the kernel may use folios of up to 2 MiB)\n",
          produced_io - produce_io, static_cast<double>(produced_io - produce_io) / (1 << 20));

    // ---- 2. The runtime, as at startup: open, verify, load, call. ----
    std::printf("\n== runtime: as a program would at startup\n");
    const long long runtime_io = write_bytes();
    step = Clock::now();
    // Maps the file read-only and checks its structure and the metadata digest.
    const mapwright::Wrapper wrapper = mapwright::Wrapper::open(out);
    std::printf("  Wrapper::open: %lld us (mapped read-only, structure and metadata digest checked, no entry hashed)\n",
                us_since(step));
    for (const mapwright::WrapperEntry& e : wrapper.entries())
      std::printf("    %-10s %-7s %10llu bytes at offset %-8llu xxh128 %s\n", e.name.c_str(),
                  mapwright::to_string(e.kind), static_cast<unsigned long long>(e.size),
                  static_cast<unsigned long long>(e.offset), e.digest.hex().c_str());

    step = Clock::now();
    wrapper.verify();  // XXH3-128 of every entry against its digest; throws on a mismatch
    std::printf("  verify(): %lld us (every byte hashed: all digests match)\n", us_since(step));

    step = Clock::now();
    const mapwright::Library greeting = wrapper.load_library("greeting");
    const long long load_us = us_since(step);
    const mapwright::LoadReport& report = greeting.report();
    std::printf("  load_library(\"greeting\"): %lld us, as %s\n", load_us, greeting.path().c_str());
    std::printf(
        "    strategy: %s, copy method: %s, %llu bytes copied, %llu bytes written to disk\n",
        mapwright::to_string(report.strategy), mapwright::to_string(report.copy_method),
        static_cast<unsigned long long>(report.bytes_copied),
        static_cast<unsigned long long>(report.bytes_written_to_disk));
    if (!report.fallback_reason.empty())
      std::printf("    (%s: it fell back to %s)\n", report.fallback_reason.c_str(),
                  mapwright::to_string(report.copy_method));

    char text[128];
    greeting.function<int(const char*, char*, int)>("greet")("reader", text, sizeof text);
    std::printf("  greet(\"reader\") = \"%s\"\n", text);
    // The data entry is read where it lies: a span of the wrapper's mapping, no copy.
    const auto* table = reinterpret_cast<const float*>(wrapper.entry("sqrt_table").bytes().data());
    std::printf("  sqrt_table[1000000] = %g, read in place from the mapping\n", table[1000000]);
    const long long runtime_end_io = write_bytes();
    if (runtime_io >= 0 && runtime_end_io >= 0)
      std::printf("  /proc/self/io write_bytes during the runtime part: +%lld\n",
                  runtime_end_io - runtime_io);

    // ---- 3. Looking inside. ----
    std::printf("\n== inspect it (rerun with --keep to keep the file)\n");
    std::printf("  %s inspect %s\n", shown(MAPWRIGHT_CLI).c_str(), shown(out).c_str());
    std::printf("  capnp decode %s WrapperFile < %s  # every byte: ~140 MB of text\n",
                shown(MAPWRIGHT_WRAPPER_SCHEMA).c_str(), shown(out).c_str());
  } catch (const std::exception& e) {  // mapwright::Error names the operation, file and cause
    std::fprintf(stderr, "wrapper_demo: %s\n", e.what());
    if (published) remove_unless(keep, out);
    return 1;
  }
  remove_unless(keep, out);
  return 0;
}
