#include "fork_holes.h"

#include <cerrno>
#include <map>
#include <mutex>
#include <new>

#include "os/os.h"

namespace mapwright::detail {
namespace {

struct Holes {
  std::mutex mutex;
  std::map<std::uintptr_t, std::uint64_t> ranges;  // begin -> length; guarded by mutex
};

Holes& holes() {
  static Holes* const all = new Holes;  // never destroyed: fork handlers may run at exit
  return *all;
}

// Held across fork(), so that the child's copy of the map is whole and its mutex free.
void before_fork() { holes().mutex.lock(); }
void after_fork_in_parent() { holes().mutex.unlock(); }
void after_fork_in_child() {
  Holes& h = holes();
  for (const auto& [begin, length] : h.ranges) {
    void* at = nullptr;
    // EEXIST where the child has something there: left alone.
    (void)os::reserve(length, &at, reinterpret_cast<void*>(begin));
  }
  h.mutex.unlock();
}

// Registered when the library is loaded, before any thread can fork (as signal/handler.cc
// does for the range table).
[[gnu::constructor]] void register_fork_handlers() {
  (void)holes();
  (void)os::at_fork(before_fork, after_fork_in_parent, after_fork_in_child);
}

}  // namespace

int dont_fork(void* base, std::uint64_t length) noexcept {
  Holes& h = holes();
  const auto begin = reinterpret_cast<std::uintptr_t>(base);
  {
    const std::lock_guard lock(h.mutex);
    try {
      h.ranges.insert_or_assign(begin, length);
    } catch (const std::bad_alloc&) {
      return ENOMEM;
    }
  }
  if (const int err = os::madvise(base, length, os::kMadvDontfork); err != 0) {
    forget_dont_fork(base, 1);
    return err;
  }
  return 0;
}

void forget_dont_fork(void* begin, std::uint64_t length) noexcept {
  Holes& h = holes();
  const auto first = reinterpret_cast<std::uintptr_t>(begin);
  const std::lock_guard lock(h.mutex);
  h.ranges.erase(h.ranges.lower_bound(first), h.ranges.lower_bound(first + length));
}

}  // namespace mapwright::detail
