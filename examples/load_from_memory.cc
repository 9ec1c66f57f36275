// load_from_memory: takes a shared library built beside it by CMake, copies it into a memfd
// region, seals it, loads it with no file on disk behind it, calls it, and prints the load
// report, the time the load took, and the bytes this process wrote to storage meanwhile.
//
//     load_from_memory [LIBRARY]      (default: the greeting_library CMake built beside it)
#include <fcntl.h>
#include <mapwright/mapwright.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>

namespace {

// This process's "write_bytes:" from /proc/self/io: bytes it caused to be sent to storage.
long long write_bytes() {
  std::ifstream io("/proc/self/io");
  std::string key;
  long long value = 0;
  while (io >> key >> value) {
    if (key == "write_bytes:") return value;
  }
  return -1;  // no /proc, or no task I/O accounting in this kernel
}

}  // namespace

int main(int argc, char** argv) {
  const char* path = argc > 1 ? argv[1] : GREETING_LIBRARY_PATH;

  try {
    const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
    struct stat st {};
    if (fd < 0 || ::fstat(fd, &st) != 0) throw mapwright::Error(errno, "opening", path);
    const auto size = static_cast<std::uint64_t>(st.st_size);

    // Copy the library into a memfd region. ensure() comes first: pread(2) into region
    // memory that no file page backs yet does not fault and grow, it fails with EFAULT.
    mapwright::Region region = mapwright::Region::memfd("greeting_library");
    region.ensure(size);
    for (std::uint64_t done = 0; done < size;) {
      const ssize_t n = ::pread(fd, region.data() + done, size - done, static_cast<off_t>(done));
      if (n <= 0) throw mapwright::Error(n < 0 ? errno : EIO, "reading", path);
      done += static_cast<std::uint64_t>(n);
    }
    ::close(fd);
    region.finish(size);  // exactly the library's bytes, no growth slack
    const mapwright::SealedImage image = std::move(region).seal();
    std::printf("copied %s (%llu bytes) into sealed memfd %d\n", path,
                static_cast<unsigned long long>(image.size()), image.fd());

    const long long written_before = write_bytes();
    const auto start = std::chrono::steady_clock::now();
    const mapwright::Library library =
        mapwright::load_library(image, mapwright::LoadOptions{.name = "greeting_library"});
    const auto loaded = std::chrono::steady_clock::now();
    const long long written_after = write_bytes();

    auto* answer = library.function<int()>("answer");
    auto* greet = library.function<int(const char*, char*, int)>("greet");
    char greeting[128];
    greet("reader", greeting, static_cast<int>(sizeof greeting));
    std::printf("loaded as %s in %lld us\n", library.path().c_str(),
                static_cast<long long>(
                    std::chrono::duration_cast<std::chrono::microseconds>(loaded - start).count()));
    std::printf("answer() = %d\n", answer());
    std::printf("greet()  = \"%s\"\n", greeting);

    const mapwright::LoadReport& report = library.report();
    std::printf("strategy: %s, copy method: %s\n", mapwright::to_string(report.strategy),
                mapwright::to_string(report.copy_method));
    std::printf("bytes copied: %llu, bytes written to disk: %llu\n",
                static_cast<unsigned long long>(report.bytes_copied),
                static_cast<unsigned long long>(report.bytes_written_to_disk));
    if (!report.fallback_reason.empty())
      std::printf("fell back because: %s\n", report.fallback_reason.c_str());
    if (written_before >= 0 && written_after >= 0)
      std::printf("/proc/self/io write_bytes: %lld before the load, %lld after (+%lld)\n",
                  written_before, written_after, written_after - written_before);
  } catch (const mapwright::Error& e) {
    std::fprintf(stderr, "load_from_memory: %s\n", e.what());
    return 1;
  }
  return 0;
}
