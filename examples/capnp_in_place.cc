// capnp_in_place: builds a large Cap'n Proto message straight into a file's pages (nothing is
// serialized or copied), publishes the file atomically, and reads it back twice: with Cap'n
// Proto's stock StreamFdMessageReader, and zero-copy with mapwright::MappedMessageReader.
//
//     capnp_in_place [PATH] [MiB]      (defaults: capnp_in_place.bin, 256 MiB of values)
#include <mapwright/mapwright.h>

#include <capnp/serialize.h>
#include <fcntl.h>
#include <kj/io.h>

#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>

#include "capnp_in_place.capnp.h"

namespace {

using example::Dataset;
using Clock = std::chrono::steady_clock;

constexpr std::uint64_t kAttachmentBytes = 3 * 4096 + 100;  // a few KiB, not whole pages

std::uint64_t value_at(std::uint64_t i) { return i * 0x9E3779B97F4A7C15ull; }

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

kj::AutoCloseFd open_read_only(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw mapwright::Error(errno, "opening", path);
  return kj::AutoCloseFd(fd);
}

// The same checks for both readers: the name, a few values, the attachment's ELF magic.
void verify(Dataset::Reader dataset, capnp::uint n, const char* reader) {
  const auto values = dataset.getValues();
  bool ok = dataset.getName() == "capnp_in_place" && values.size() == n;
  for (capnp::uint i : {0u, 1u, n / 2, n - 1}) ok = ok && values[i] == value_at(i);
  const auto attachment = dataset.getAttachment();
  ok = ok && attachment.size() == kAttachmentBytes &&
       std::memcmp(attachment.begin(), "\x7f" "ELF", 4) == 0;
  if (!ok) throw mapwright::Error(EINVAL, "verifying the message read by", reader);
}

}  // namespace

int main(int argc, char** argv) {
  const std::string path = argc > 1 ? argv[1] : "capnp_in_place.bin";
  const std::uint64_t mib = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 256;
  if (mib == 0 || mib > 4095) {  // one List(UInt64) holds at most 2^29 - 1 values
    std::fprintf(stderr, "capnp_in_place: MiB must be between 1 and 4095\n");
    return 1;
  }
  const auto n = static_cast<capnp::uint>((mib << 20) / 8);

  try {
    // 1. Build. A staged region: the file appears at `path` only when publish() succeeds.
    const auto start = Clock::now();
    mapwright::Region region = mapwright::Region::staged(path);
    mapwright::MappedMessageBuilder builder(region);
    // The attachment is a copy of this program's own executable (its first bytes), which
    // /proc/self/exe names. Opened outside guarded(): its body must not own resources.
    const kj::AutoCloseFd exe = open_read_only("/proc/self/exe");
    mapwright::guarded([&] {
      // Every store below lands in the file's pages; when one runs past the end of the
      // file, the SIGBUS handler grows it. guarded() turns a failed growth into an Error.
      Dataset::Builder root = builder.initRoot<Dataset>();
      root.setName("capnp_in_place");
      root.setCreated(static_cast<std::uint64_t>(std::time(nullptr)));
      capnp::List<std::uint64_t>::Builder values = root.initValues(n);
      for (capnp::uint i = 0; i < n; ++i) values.set(i, value_at(i));

      capnp::Orphan<capnp::Data> blob = builder.new_aligned_data(kAttachmentBytes);
      builder.fill_from_fd(blob.get(), exe.get(), 0, kAttachmentBytes, "/proc/self/exe");
      root.adoptAttachment(kj::mv(blob));
    });
    const std::uint64_t size = builder.finish();  // segment table, exact file size
    region.publish();                             // fsync, then link into place atomically
    const double build_s = seconds_since(start);
    const mapwright::RegionStats stats = region.stats();
    std::printf("built %s: %" PRIu64 " bytes, %" PRIu32 " segment(s), %" PRIu64
                " growth steps, %.3f s (%.0f MiB/s, publish included)\n",
                path.c_str(), size, builder.segment_count(), stats.growths, build_s,
                static_cast<double>(size) / (1 << 20) / build_s);

    // 2a. Read back with the stock reader: it reads the whole file into memory. Its default
    // traversal limit (8 Mi words, 64 MiB) is too small for this message.
    auto t = Clock::now();
    capnp::ReaderOptions options;
    options.traversalLimitInWords = 2 * size / sizeof(capnp::word);
    capnp::StreamFdMessageReader stock(open_read_only(path), options);
    verify(stock.getRoot<Dataset>(), n, "StreamFdMessageReader");
    std::printf("StreamFdMessageReader: verified in %.3f s (read into memory)\n",
                seconds_since(t));

    // 2b. Read back zero-copy: the segments are views into a read-only mapping of the file.
    t = Clock::now();
    mapwright::MappedMessageReader mapped(path);
    const Dataset::Reader dataset = mapped.getRoot<Dataset>();
    verify(dataset, n, "MappedMessageReader");
    // The mapping starts with the segment table, (count + 1) u32s padded to 8 bytes, and
    // segment 0 follows it directly; so the attachment's offset in the file is:
    const auto* file_start = reinterpret_cast<const std::byte*>(mapped.getSegment(0).begin()) -
                             8 * ((mapped.segment_count() + 2) / 2);
    const auto offset = reinterpret_cast<const std::byte*>(dataset.getAttachment().begin()) -
                        file_start;
    if (offset % 4096 != 0) {
      throw mapwright::Error(EINVAL, "checking the attachment in", path,
                             "(offset " + std::to_string(offset) + " is not page-aligned)");
    }
    std::printf("MappedMessageReader: verified in %.3f s (zero-copy); the %" PRIu64
                "-byte attachment is at offset %td, page-aligned\n",
                seconds_since(t), kAttachmentBytes, offset);

    // 3. The file is a standard stream-framed message: the stock tool reads it too.
    std::printf("decode it with:  capnp decode %s Dataset < %s\n", CAPNP_IN_PLACE_SCHEMA,
                path.c_str());
  } catch (const mapwright::Error& e) {
    std::fprintf(stderr, "capnp_in_place: %s\n", e.what());
    return 1;
  } catch (const kj::Exception& e) {  // Cap'n Proto's own checks while reading
    std::fprintf(stderr, "capnp_in_place: %s\n", e.getDescription().cStr());
    return 1;
  }
  return 0;
}
