// src/memfd_pool.cc — the process-wide pool of prepared memfds (memfd_pool.h).
//
// State, all under Pool::mutex:
//
//   classes      one per reserved (page-rounded) size, sorted by capacity:
//                  ready      prepared memfds: created, fallocate()d to `capacity`, unsealed
//                  preparing  how many the thread is preparing now (their fds are in in_flight)
//                Invariant: ready.size() + preparing <= count, except for the moment after
//                reserve() lowers a count, until the thread closes the surplus it finishes.
//   in_flight    fds the thread has created and not yet put in `ready` or closed. The thread
//                creates a memfd while holding the mutex, so that every fd of the pool is
//                known to the fork handler, which closes them in the child.
//   to_free      fds of unloaded libraries for the thread to close; to_free_bytes <= limit.
//
// Lock order: control (reserve/release/fork) before mutex. Nothing blocks while holding
// mutex except memfd_create (a few µs).
#include "mapwright/memfd_pool.h"

#include <fcntl.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <limits>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "mapwright/error.h"
#include "memfd_pool_internal.h"
#include "os/os.h"

namespace mapwright {
namespace {

struct SizeClass {
  std::uint64_t capacity = 0;
  std::uint64_t size = 0;  // the size reserve() was given: a prepared memfd's file size
  std::size_t count = 0;
  std::vector<std::pair<int, std::uint64_t>> ready;  // fd, file size
  std::size_t preparing = 0;
};

struct Pool {
  std::mutex control;  // serializes reserve(), release() and fork()
  std::mutex mutex;
  // Heap-allocated and never destroyed: after fork() the child replaces them (a condition
  // variable that had waiters in the parent cannot be destroyed or reused in the child).
  std::condition_variable* wake = new std::condition_variable;     // the thread waits here
  std::condition_variable* changed = new std::condition_variable;  // waiters for "ready"
  std::vector<SizeClass> classes;
  std::vector<int> in_flight;
  std::vector<std::pair<int, std::uint64_t>> to_free;
  std::uint64_t to_free_bytes = 0;
  // Taken from to_free by the thread and being closed (the lock is not held meanwhile): still
  // "not yet freed" for stats() and wait_until_ready().
  std::uint64_t closing = 0;
  std::uint64_t closing_bytes = 0;
  std::uint64_t limit_bytes = 0;
  std::thread* thread = nullptr;  // leaked in a child after fork(): the thread is not there
  bool stop = false;
  bool failed = false;
  std::string last_error;
  std::uint64_t loads_prepared = 0;
  std::uint64_t loads_none_ready = 0;
  std::uint64_t freed_in_background = 0;
};

// Never destroyed: the thread may still run during exit().
Pool& pool() {
  static Pool* const instance = new Pool;
  return *instance;
}

std::uint64_t round_to_pages(std::uint64_t size) {
  const std::uint64_t page = os::page_size();
  if (size > std::numeric_limits<std::uint64_t>::max() - page) return 0;
  return (size + page - 1) / page * page;
}

SizeClass* find_class(Pool& p, std::uint64_t capacity) {
  for (SizeClass& c : p.classes) {
    if (c.capacity == capacity) return &c;
  }
  return nullptr;
}

std::uint64_t limit_of(const Pool& p) {
  std::uint64_t limit = 0;
  for (const SizeClass& c : p.classes) limit += c.capacity * c.count;
  return limit;
}

bool all_ready(const Pool& p) {
  if (!p.to_free.empty() || p.closing != 0) return false;
  for (const SizeClass& c : p.classes) {
    if (c.ready.size() < c.count) return false;
  }
  return true;
}

// The thread: frees what it was handed first (that gives memory back), then prepares what
// the reservations lack, then sleeps. Once awake it does all there is to do; loads wake it
// only when half of a class is taken or half of the room for freeing is used.
void run(Pool& p) {
  std::unique_lock lock(p.mutex);
  while (!p.stop) {
    if (!p.to_free.empty()) {
      std::vector<std::pair<int, std::uint64_t>> batch;
      batch.swap(p.to_free);
      p.closing = batch.size();
      p.closing_bytes = p.to_free_bytes;
      p.to_free_bytes = 0;
      lock.unlock();
      for (const auto& [fd, bytes] : batch) os::close(fd);
      lock.lock();
      p.closing = 0;
      p.closing_bytes = 0;
      p.freed_in_background += batch.size();
      p.changed->notify_all();
      continue;
    }
    SizeClass* wanting = nullptr;
    if (!p.failed) {
      for (SizeClass& c : p.classes) {
        if (c.ready.size() + c.preparing < c.count) {
          wanting = &c;
          break;
        }
      }
    }
    if (wanting == nullptr) {
      // Loads hand memfds to free without waking it (see dispose_memfd): it looks again
      // within 100 ms, so that an unloaded library's memory is not kept for long.
      p.wake->wait_for(lock, std::chrono::milliseconds(100));
      continue;
    }
    const std::uint64_t capacity = wanting->capacity;
    const std::uint64_t size = wanting->size;
    int fd = -1;
    if (const int err = os::memfd_create("mapwright-prepared", &fd); err != 0) {
      p.failed = true;
      p.last_error = std::string("memfd_create: ") + std::strerror(err);
      p.changed->notify_all();
      continue;
    }
    ++wanting->preparing;
    p.in_flight.push_back(fd);
    lock.unlock();
    // The file size first, so that a load of exactly `size` bytes need not change it; then
    // every page up to the capacity, allocated now (not zeroed yet: shmem zeroes a
    // fallocate()d page when it is first read or partly written, and a write of a whole page
    // never needs it).
    // Growing a file past RLIMIT_FSIZE raises SIGXFSZ, which would end the process from this
    // thread: refused here instead (EFBIG), as the load itself would then be.
    std::string call = "ftruncate to " + std::to_string(size) + " bytes";
    std::uint64_t limit = 0;
    int err = os::file_size_limit(&limit);
    if (err == 0 && capacity > limit) err = EFBIG;
    if (err == 0) err = os::ftruncate(fd, size);
    if (err == 0) {
      call = "fallocate of " + std::to_string(capacity) + " bytes";
      err = os::fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, capacity);
    }
    lock.lock();
    std::erase(p.in_flight, fd);
    SizeClass* target = find_class(p, capacity);  // reserve() may have changed the classes
    if (target != nullptr && target->preparing > 0) --target->preparing;
    if (err != 0) {
      p.failed = true;
      p.last_error = call + ": " + std::strerror(err);
      os::close(fd);
    } else if (target == nullptr || target->ready.size() >= target->count) {
      os::close(fd);  // no longer wanted
    } else {
      target->ready.emplace_back(fd, size);
    }
    p.changed->notify_all();
  }
}

// pthread_atfork handlers (see the header's fork() paragraph).
void before_fork() {
  pool().control.lock();
  pool().mutex.lock();
}

void after_fork_parent() {
  pool().mutex.unlock();
  pool().control.unlock();
}

void after_fork_child() {
  Pool& p = pool();
  for (SizeClass& c : p.classes) {
    for (const auto& [fd, size] : c.ready) os::close(fd);
  }
  for (int fd : p.in_flight) os::close(fd);
  for (const auto& [fd, bytes] : p.to_free) os::close(fd);
  p.classes.clear();
  p.in_flight.clear();
  p.to_free.clear();
  p.to_free_bytes = 0;
  p.limit_bytes = 0;
  p.thread = nullptr;  // the parent's thread object; no such thread here
  p.stop = false;
  p.failed = false;
  p.last_error.clear();
  p.wake = new std::condition_variable;
  p.changed = new std::condition_variable;
  p.mutex.unlock();
  p.control.unlock();
}

void install_fork_handlers() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (const int err = os::at_fork(before_fork, after_fork_parent, after_fork_child); err != 0) {
      throw Error(err, "reserving prepared memfds", "memfd pool", "(pthread_atfork)");
    }
  });
}

}  // namespace

void MemfdPool::reserve(std::uint64_t size, std::size_t count) {
  const std::uint64_t capacity = round_to_pages(size);
  if (size == 0 || capacity == 0) {
    throw Error(EINVAL, "reserving prepared memfds", "memfd pool",
                "(a size of " + std::to_string(size) + " bytes)");
  }
  install_fork_handlers();
  Pool& p = pool();
  std::lock_guard control(p.control);
  std::vector<int> surplus;
  {
    std::lock_guard lock(p.mutex);
    std::uint64_t others = 0;
    for (const SizeClass& c : p.classes) {
      if (c.capacity != capacity) others += c.capacity * c.count;
    }
    if (count > 0 && (capacity > (std::numeric_limits<std::uint64_t>::max() - others) / count)) {
      throw Error(EINVAL, "reserving prepared memfds", "memfd pool",
                  "(" + std::to_string(count) + " of " + std::to_string(size) +
                      " bytes: the limit overflows)");
    }
    SizeClass* c = find_class(p, capacity);
    if (c == nullptr) {
      p.classes.push_back(SizeClass{capacity, size, 0, {}, 0});
      std::sort(p.classes.begin(), p.classes.end(),
                [](const SizeClass& a, const SizeClass& b) { return a.capacity < b.capacity; });
      c = find_class(p, capacity);
    }
    c->count = count;
    c->size = size;  // for the memfds prepared from now on
    while (c->ready.size() > count) {
      surplus.push_back(c->ready.back().first);
      c->ready.pop_back();
    }
    p.limit_bytes = limit_of(p);
    p.failed = false;
    p.last_error.clear();
    if (p.thread == nullptr) {
      p.stop = false;
      try {
        p.thread = new std::thread([&p] { run(p); });
      } catch (const std::system_error& e) {
        throw Error(e.code().value(), "reserving prepared memfds", "memfd pool",
                    "(starting its thread)");
      }
    }
    p.wake->notify_all();
  }
  for (int fd : surplus) os::close(fd);
}

void MemfdPool::release() noexcept {
  Pool& p = pool();
  std::lock_guard control(p.control);
  std::thread* thread = nullptr;
  {
    std::lock_guard lock(p.mutex);
    thread = std::exchange(p.thread, nullptr);
    p.stop = true;
    p.wake->notify_all();
  }
  if (thread != nullptr) {
    thread->join();
    delete thread;
  }
  // No thread now: nothing is in flight, and nothing more is handed to be freed.
  std::vector<int> fds;
  {
    std::lock_guard lock(p.mutex);
    for (SizeClass& c : p.classes) {
      for (const auto& [fd, size] : c.ready) fds.push_back(fd);
    }
    for (const auto& [fd, bytes] : p.to_free) fds.push_back(fd);
    p.classes.clear();
    p.to_free.clear();
    p.to_free_bytes = 0;
    p.limit_bytes = 0;
    p.stop = false;
    p.failed = false;
    p.last_error.clear();
    p.changed->notify_all();
  }
  for (int fd : fds) os::close(fd);
}

MemfdPoolStats MemfdPool::stats() {
  Pool& p = pool();
  std::lock_guard lock(p.mutex);
  MemfdPoolStats s;
  s.limit_bytes = p.limit_bytes;
  for (const SizeClass& c : p.classes) {
    s.prepared += c.ready.size();
    s.prepared_bytes += c.ready.size() * c.capacity;
  }
  s.freeing = p.to_free.size() + p.closing;
  s.freeing_bytes = p.to_free_bytes + p.closing_bytes;
  s.loads_prepared = p.loads_prepared;
  s.loads_none_ready = p.loads_none_ready;
  s.freed_in_background = p.freed_in_background;
  s.thread_running = p.thread != nullptr;
  s.last_error = p.last_error;
  return s;
}

bool MemfdPool::wait_until_ready(std::chrono::milliseconds timeout) {
  Pool& p = pool();
  std::unique_lock lock(p.mutex);
  p.wake->notify_one();  // it may be asleep with less than half of the work pending
  return p.changed->wait_for(lock, timeout, [&] { return all_ready(p) || p.failed; }) &&
         all_ready(p);
}

namespace detail {

PreparedMemfd take_prepared_memfd(std::uint64_t size, PoolUse* use) noexcept {
  *use = PoolUse::kNotReserved;
  const std::uint64_t needed = round_to_pages(size);
  if (size == 0 || needed == 0) return {};
  Pool& p = pool();
  std::lock_guard lock(p.mutex);
  for (SizeClass& c : p.classes) {
    if (c.capacity < needed || c.count == 0) continue;
    if (c.capacity / 2 > needed) break;  // sorted: every later one is larger still
    if (c.ready.empty()) {
      *use = PoolUse::kNoneReady;
      ++p.loads_none_ready;
      return {};
    }
    PreparedMemfd taken{c.ready.back().first, c.capacity, c.ready.back().second};
    c.ready.pop_back();
    *use = PoolUse::kPrepared;
    ++p.loads_prepared;
    // Wakes the thread to refill once half of the class is gone, not for each load: a wake
    // costs the loading thread a futex call and, on a busy machine, the CPU the thread then
    // takes (the 16 KiB fixture's back-to-back loads: 130 µs with a wake per load).
    if ((c.ready.size() + c.preparing) * 2 <= c.count) p.wake->notify_one();
    return taken;
  }
  return {};
}

void dispose_memfd(int fd, std::uint64_t bytes) noexcept {
  Pool& p = pool();
  {
    std::lock_guard lock(p.mutex);
    if (p.thread != nullptr && !p.stop && p.to_free_bytes + bytes <= p.limit_bytes) {
      try {
        p.to_free.emplace_back(fd, bytes);
        p.to_free_bytes += bytes;
        if (p.to_free_bytes * 2 >= p.limit_bytes) p.wake->notify_one();  // half the room used
        return;
      } catch (...) {
        // No memory for the entry: close it here.
      }
    }
  }
  os::close(fd);
}

}  // namespace detail
}  // namespace mapwright
