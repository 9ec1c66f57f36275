// share_bench — a child process getting a wrapper's libraries from its parent and calling into
// them, two ways, for an ~8 MB library (libmwfixture_big.so, fixture_big_answer) and two
// small ones (libmwfixture_a.so and libmwfixture_b.so, which needs a; fixture_b_answer):
//
//   share/<size>/bundle      share.h: the parent made a LibraryBundle of the wrapper once
//                            (untimed) and sends it; the child receive_bundle()s it (checks
//                            the message, the seals and, hashing each memfd itself, the
//                            digests), load()s it — each memfd dlopen()ed as is, no copy — and
//                            calls the last library's function.
//   share/<size>/wrapper_fd  what a user would write without share.h, and what the project
//                            offered before: the parent sends the wrapper file's fd (a disk
//                            file in MAPWRIGHT_BENCH_DIR, in the page cache) over the same
//                            socket (SCM_RIGHTS); the child Wrapper::open()s it (the metadata
//                            digest) and load_all()s it — each library copied from the file
//                            range into a new memfd in the kernel (sendfile), hashed and
//                            dlopen()ed — then calls the same function. Every child gets its
//                            own copy of every library's pages. (A temporary file per child is
//                            not an alternative for a sandbox that may create no file.)
//
// Timed (manual time, measured in the child with CLOCK_MONOTONIC): from just before the child
// starts receiving — the message is already waiting on its socket — to the return of its
// first call. Not timed: writing the wrapper, making the bundle, sending, fork(), the child's
// exit. Each iteration is a new child, so every load is a real first load. Both ways check
// digests: the bundle's receiver hashes every image; Wrapper::load_library hashes every copy.
//
// RATIO rows: bundle over wrapper_fd, for both sizes.
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <mapwright/loader.h>
#include <mapwright/share.h>
#include <mapwright/wrapper.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include "bench_main.h"

#ifndef MAPWRIGHT_BENCH_FIXTURE_SMALL
#error "MAPWRIGHT_BENCH_FIXTURE_SMALL (path of libmwfixture_a.so) must be defined"
#endif
#ifndef MAPWRIGHT_BENCH_FIXTURE_DEPENDENT
#error "MAPWRIGHT_BENCH_FIXTURE_DEPENDENT (path of libmwfixture_b.so) must be defined"
#endif
#ifndef MAPWRIGHT_BENCH_FIXTURE_BIG
#error "MAPWRIGHT_BENCH_FIXTURE_BIG (path of libmwfixture_big.so) must be defined"
#endif

namespace mapwright::bench {
namespace {

struct Case {
  const char* size_name;  // "small", "big"
  const char* symbol;     // the last library's function
  int answer;
};

const Case kCases[] = {
    {"small", "fixture_b_answer", 43},
    {"big", "fixture_big_answer", 42},
};

[[noreturn]] void throw_errno(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

std::int64_t now_ns() {
  timespec t{};
  ::clock_gettime(CLOCK_MONOTONIC, &t);
  return std::int64_t{t.tv_sec} * 1'000'000'000 + t.tv_nsec;
}

// The wrapper the parent holds: a disk file in bench_dir(), removed at the end.
class BenchWrapper {
 public:
  explicit BenchWrapper(const Case& c)
      : path_(scratch_path(std::string("share-") + c.size_name + ".mwr")) {
    WrapperWriterOptions options;
    options.durable = false;
    WrapperWriter writer(path_, options);
    if (std::string(c.size_name) == "small") {
      writer.add_library("liba", MAPWRIGHT_BENCH_FIXTURE_SMALL);
      writer.add_library("libb", MAPWRIGHT_BENCH_FIXTURE_DEPENDENT, {"liba"});
    } else {
      writer.add_library("big", MAPWRIGHT_BENCH_FIXTURE_BIG);
    }
    writer.publish();
    wrapper_.emplace(Wrapper::open(path_));
  }
  ~BenchWrapper() {
    wrapper_.reset();
    std::error_code ignored;
    std::filesystem::remove(path_, ignored);
  }
  const Wrapper& wrapper() const { return *wrapper_; }

 private:
  std::filesystem::path path_;
  std::optional<Wrapper> wrapper_;
};

// Sends with `send` on a new socketpair, forks a child that runs `receive_and_call` on the
// other end (it throws if anything, the first call's answer included, is wrong) and writes
// its elapsed time to a pipe. Gives back that time in seconds; throws if the child failed.
template <class Parent, class Child>
double run_child(Parent&& send, Child&& receive_and_call) {
  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) throw_errno("socketpair");
  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0) throw_errno("pipe2");
  send(pair[0]);  // waiting on the child's socket before the child exists
  const pid_t pid = ::fork();
  if (pid < 0) throw_errno("fork");
  if (pid == 0) {
    std::int64_t elapsed = -1;
    try {
      const std::int64_t start = now_ns();
      receive_and_call(pair[1]);
      elapsed = now_ns() - start;
    } catch (...) {
    }
    (void)::write(report[1], &elapsed, sizeof elapsed);
    ::_exit(0);
  }
  ::close(pair[0]);
  ::close(pair[1]);
  ::close(report[1]);
  std::int64_t elapsed = -1;
  const ssize_t n = ::read(report[0], &elapsed, sizeof elapsed);
  ::close(report[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (n != sizeof elapsed || elapsed < 0) {
    throw std::runtime_error("the child failed to receive, load or call (or got a wrong answer)");
  }
  return static_cast<double>(elapsed) * 1e-9;
}

// Every child checks its answer (checked_call), so a wrong load fails the benchmark.
template <class Parent, class Child>
void measure(benchmark::State& state, Parent&& send, Child&& receive_and_call) {
  for (auto _ : state) state.SetIterationTime(run_child(send, receive_and_call));
}

int checked_call(const LoadedLibraries& loaded, const Case& c) {
  const int answer = loaded[loaded.size() - 1].function<int()>(c.symbol)();
  if (answer != c.answer) throw std::runtime_error("wrong answer");
  return answer;
}

void share_bundle(benchmark::State& state, const Case* c) {
  skip_on_error(state, [&] {
    const BenchWrapper file(*c);
    const LibraryBundle bundle = LibraryBundle::from_wrapper(file.wrapper());
    measure(state, [&](int socket) { send_bundle(socket, bundle); },
            [&](int socket) {
              const LibraryBundle received = receive_bundle(socket);
              const LoadedLibraries loaded = received.load();
              return checked_call(loaded, *c);
            });
    state.SetLabel("sealed memfds, no copy");
  });
}

// The wrapper's fd over SCM_RIGHTS, as anyone would pass an fd.
void send_fd(int socket, int fd) {
  char byte = 'w';
  iovec data{&byte, 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr header{};
  header.msg_iov = &data;
  header.msg_iovlen = 1;
  header.msg_control = control;
  header.msg_controllen = sizeof control;
  cmsghdr* rights = CMSG_FIRSTHDR(&header);
  rights->cmsg_level = SOL_SOCKET;
  rights->cmsg_type = SCM_RIGHTS;
  rights->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(rights), &fd, sizeof fd);
  if (::sendmsg(socket, &header, MSG_NOSIGNAL) != 1) throw_errno("sendmsg");
}

int receive_fd(int socket) {
  char byte = 0;
  iovec data{&byte, 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr header{};
  header.msg_iov = &data;
  header.msg_iovlen = 1;
  header.msg_control = control;
  header.msg_controllen = sizeof control;
  if (::recvmsg(socket, &header, MSG_CMSG_CLOEXEC) != 1) throw_errno("recvmsg");
  const cmsghdr* rights = CMSG_FIRSTHDR(&header);
  if (rights == nullptr || rights->cmsg_type != SCM_RIGHTS) throw std::runtime_error("no fd");
  int fd = -1;
  std::memcpy(&fd, CMSG_DATA(rights), sizeof fd);
  return fd;
}

void share_wrapper_fd(benchmark::State& state, const Case* c) {
  skip_on_error(state, [&] {
    const BenchWrapper file(*c);
    measure(state, [&](int socket) { send_fd(socket, file.wrapper().fd()); },
            [&](int socket) {
              const int fd = receive_fd(socket);
              const Wrapper wrapper = Wrapper::open(fd);  // dup()s it
              ::close(fd);
              const LoadedLibraries loaded = wrapper.load_all();
              return checked_call(loaded, *c);
            });
    state.SetLabel("a copy per child");
  });
}

}  // namespace

void register_benchmarks() {
  for (const Case& c : kCases) {
    const std::string prefix = std::string("share/") + c.size_name + "/";
    benchmark::RegisterBenchmark((prefix + "bundle").c_str(), share_bundle, &c)
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark((prefix + "wrapper_fd").c_str(), share_wrapper_fd, &c)
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond);
    compare(prefix + "bundle", prefix + "wrapper_fd");
  }
}

}  // namespace mapwright::bench
