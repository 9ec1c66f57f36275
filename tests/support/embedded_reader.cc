// embedded_reader — a program for tests/embedded_test.cc and tests/cli_embedded_test.cc that
// reads the wrapper appended to its own executable, as a self-contained program would.
//
//     embedded_reader [LIB SYMBOL]
//
// Opens Wrapper::open_embedded("/proc/self/exe"), verifies every byte, prints one line
// "wrapper at byte OFFSET, SIZE bytes, N entries: NAME NAME ..."; with LIB and SYMBOL, loads
// LIB with its dependencies from the wrapper and prints "SYMBOL() = VALUE" for
// int SYMBOL(void). Exits 0 if all of that worked; 2 with the Error's errno name and message
// on stderr ("ENOMSG: opening wrapper ...") if not.
#include <cstdio>
#include <cstring>
#include <string>

#include "mapwright/error.h"
#include "mapwright/wrapper.h"

int main(int argc, char** argv) {
  try {
    const mapwright::Wrapper wrapper = mapwright::Wrapper::open_embedded("/proc/self/exe");
    wrapper.verify();
    std::string names;
    for (const mapwright::WrapperEntry& entry : wrapper.entries()) names += " " + entry.name;
    std::printf("wrapper at byte %llu, %llu bytes, %zu entries:%s\n",
                static_cast<unsigned long long>(wrapper.offset()),
                static_cast<unsigned long long>(wrapper.size()), wrapper.entries().size(),
                names.c_str());
    if (argc == 3) {
      const mapwright::LoadedLibraries libraries = wrapper.load_with_dependencies(argv[1]);
      auto* function = libraries.at(argv[1]).function<int()>(argv[2]);
      std::printf("%s() = %d\n", argv[2], function());
    }
  } catch (const mapwright::Error& e) {
    const char* name = strerrorname_np(e.error());
    std::fprintf(stderr, "%s: %s\n", name != nullptr ? name : "?", e.what());
    return 2;
  }
  return 0;
}
