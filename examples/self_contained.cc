// self_contained: a program that carries its own libraries. The build appends a wrapper
// holding greeting_library to this executable (`mapwright pack --append-to`, see
// CMakeLists.txt); at startup the program finds that wrapper at the end of its own file
// (/proc/self/exe), verifies every byte of it, loads the library from it into a sealed memfd
// and calls it. Nothing is written to disk: /proc/self/io's write_bytes is the same before
// and after (the program fails if it is not).
//
//     self_contained          (built as examples/self_contained; the bare program, without
//                              the wrapper, is self_contained_bare and says so)
#include <mapwright/mapwright.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>

namespace {

using Clock = std::chrono::steady_clock;

long long us_since(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start).count();
}

// This process's "write_bytes:" from /proc/self/io: bytes it caused to be sent to storage.
// -1 without /proc or task I/O accounting.
long long write_bytes() {
  std::ifstream io("/proc/self/io");
  std::string key;
  long long value = 0;
  while (io >> key >> value) {
    if (key == "write_bytes:") return value;
  }
  return -1;
}

}  // namespace

int main() {
  const long long written_before = write_bytes();
  try {
    const auto start = Clock::now();
    // The executable itself; the wrapper is found from the trailer at its end.
    const mapwright::Wrapper wrapper = mapwright::Wrapper::open_embedded("/proc/self/exe");
    wrapper.verify();  // every byte of the wrapper: metadata, padding, each entry's digest
    std::printf("found a wrapper of %llu bytes at byte %llu of /proc/self/exe: %zu %s, "
                "verified in %lld us\n",
                static_cast<unsigned long long>(wrapper.size()),
                static_cast<unsigned long long>(wrapper.offset()), wrapper.entries().size(),
                wrapper.entries().size() == 1 ? "entry" : "entries", us_since(start));

    const auto load = Clock::now();
    const mapwright::Library library = wrapper.load_library("greeting");
    const long long load_us = us_since(load);
    auto* answer = library.function<int()>("answer");
    auto* greet = library.function<int(const char*, char*, int)>("greet");
    char greeting[128];
    greet("self-contained program", greeting, static_cast<int>(sizeof greeting));
    const mapwright::LoadReport& report = library.report();
    std::printf("loaded entry 'greeting' (%llu bytes) as %s in %lld us: %s, copied by %s\n",
                static_cast<unsigned long long>(wrapper.entry("greeting").size),
                library.path().c_str(), load_us, mapwright::to_string(report.strategy),
                mapwright::to_string(report.copy_method));
    std::printf("answer() = %d\n", answer());
    std::printf("greet()  = \"%s\"\n", greeting);
  } catch (const mapwright::Error& e) {
    std::fprintf(stderr, "self_contained: %s\n", e.what());
    if (e.error() == ENOMSG) {
      std::fprintf(stderr, "self_contained: (run the build's self_contained, which has the "
                           "wrapper appended, not self_contained_bare)\n");
    }
    return 1;
  }
  const long long written_after = write_bytes();
  if (written_before < 0 || written_after < 0) {
    std::printf("/proc/self/io write_bytes: not available here\n");
    return 0;
  }
  std::printf("/proc/self/io write_bytes: %lld before, %lld after (+%lld)\n", written_before,
              written_after, written_after - written_before);
  if (written_after != written_before) {
    std::fprintf(stderr, "self_contained: this process wrote %lld bytes to storage\n",
                 written_after - written_before);
    return 1;
  }
  return 0;
}
