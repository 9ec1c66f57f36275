// FixedImageBroker (fixed_image.h): a process holds sealed fixed images and hands them to
// clients by name over a Unix socket; clients map them at their base and share the pages.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <future>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "child.h"
#include "mapwright/error.h"
#include "mapwright/fixed_image.h"
#include "wrapper_helpers.h"

namespace mapwright {
namespace {

using test::expect_error;
using test::TempDir;

struct Blob {
  const std::byte* bytes;
  std::uint64_t size;
};

// An image of `size` bytes of pattern behind a root that points to them.
SealedImage blob_image(std::uintptr_t base, std::uint64_t size) {
  FixedImageOptions options;
  options.name = "blob";
  options.base = base;
  options.capacity = size + (1 << 20);
  options.types = {fixed_type<Blob>("Blob")};
  FixedImageBuilder builder(options);
  auto* blob = builder.create<Blob>();
  auto* bytes = static_cast<std::byte*>(builder.allocate(size, 4096));
  for (std::uint64_t page = 0; page < size / 4096; ++page) {
    std::memset(bytes + page * 4096, static_cast<int>(page % 251), 4096);
  }
  *blob = {bytes, size};
  builder.set_root(blob);
  return builder.seal();
}

FixedMapOptions blob_options() {
  FixedMapOptions options;
  options.types = {fixed_type<Blob>("Blob")};
  options.check = FixedMapOptions::Check::kHeader;  // from a broker this process trusts
  return options;
}

TEST(FixedImageBroker, ServesImagesByName) {
  TempDir dir;
  const auto path = dir / "broker.sock";
  FixedImageBroker broker(path);
  broker.add("blob", blob_image(kDefaultFixedBase + (20ull << 32), 1 << 20));
  std::thread server([&] { broker.serve(); });
  {
    const SealedImage image = request_image(path, "blob");
    const FixedImage mapped = FixedImage::map(image, blob_options());
    EXPECT_TRUE(mapped.report().at_base);
    const Blob* blob = mapped.root<Blob>();
    EXPECT_EQ(blob->size, 1u << 20);
    EXPECT_EQ(blob->bytes[4096 * 7], std::byte{7});
  }
  expect_error([&] { (void)request_image(path, "nothing"); }, ENOENT, {"'nothing' from broker", "no image of that name"});
  expect_error([&] { (void)request_image(dir / "absent.sock", "blob"); }, ENOENT, {"connect"});
  expect_error([&] { FixedImageBroker again(path); }, EADDRINUSE, {"another broker runs"});
  expect_error([&] { broker.add("two\nlines", blob_image(kDefaultFixedBase + (21ull << 32), 4096)); }, EINVAL, {"newline"});
  broker.stop();
  server.join();
  EXPECT_EQ(broker.served(), 1u);
}

// The Pss of the mapping that starts at `address` (/proc/self/smaps), in KiB; -1 if none.
long pss_kib(const void* address) {
  std::ifstream smaps("/proc/self/smaps");
  std::ostringstream prefix;
  prefix << std::hex << reinterpret_cast<std::uintptr_t>(address) << "-";
  std::string line;
  bool inside = false;
  while (std::getline(smaps, line)) {
    if (line.find('-') != std::string::npos && line.find(' ') > line.find('-') &&
        std::isxdigit(static_cast<unsigned char>(line[0]))) {
      inside = line.rfind(prefix.str(), 0) == 0;
      continue;
    }
    if (inside && line.rfind("Pss:", 0) == 0) return std::stol(line.substr(4));
  }
  return -1;
}

// A broker process holds a 256 MiB image; 8 client processes request it, map it at its base
// and read every page: together they are charged one copy of it (PSS), each about an eighth.
TEST(FixedImageBroker, EightClientsShareOneImagesPages) {
  TempDir dir;
  const auto path = dir / "broker.sock";
  constexpr std::uint64_t kSize = 256ull << 20;
  constexpr int kClients = 8;
  const pid_t broker = ::fork();
  ASSERT_GE(broker, 0);
  if (broker == 0) {
    try {
      SealedImage model = blob_image(kDefaultFixedBase + (22ull << 32), kSize);  // before the socket appears
      FixedImageBroker server(path);
      server.add("model", std::move(model));
      server.serve();
    } catch (...) {
      _exit(3);
    }
    _exit(0);
  }
  // The broker listens once the socket exists (at most 60 s).
  for (int i = 0; i < 600 && !std::filesystem::exists(path); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  int ready[2];
  int go[2];
  int results[2];
  int leave[2];  // a client exits only when every one has measured: its leaving lowers the others' sharers
  ASSERT_EQ(::pipe(ready), 0);
  ASSERT_EQ(::pipe(go), 0);
  ASSERT_EQ(::pipe(results), 0);
  ASSERT_EQ(::pipe(leave), 0);
  std::vector<pid_t> clients;
  for (int c = 0; c < kClients; ++c) {
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid != 0) {
      clients.push_back(pid);
      continue;
    }
    ::close(ready[0]);
    ::close(go[1]);
    ::close(results[0]);
    ::close(leave[1]);
    long result[3] = {-1, -1, 0};
    try {
      const auto start = std::chrono::steady_clock::now();
      const SealedImage image = request_image(path, "model");
      const FixedImage mapped = FixedImage::map(image, blob_options());
      result[1] = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - start).count();
      result[2] = mapped.report().at_base ? 1 : 0;
      const Blob* blob = mapped.root<Blob>();
      std::uint64_t sum = 0;
      for (std::uint64_t page = 0; page < blob->size / 4096; ++page) sum += static_cast<std::uint8_t>(blob->bytes[page * 4096]);
      if (sum == 0) _exit(4);
      char byte = 'r';
      (void)!::write(ready[1], &byte, 1);
      (void)!::read(go[0], &byte, 1);  // returns at end of file: every client is ready
      result[0] = pss_kib(mapped.data());
      (void)!::write(results[1], result, sizeof result);
      (void)!::read(leave[0], &byte, 1);  // end of file once every client has measured
    } catch (...) {
      _exit(5);
    }
    _exit(0);
  }
  ::close(ready[1]);
  ::close(go[0]);
  ::close(results[1]);
  ::close(leave[0]);
  for (int c = 0; c < kClients; ++c) {
    char byte = 0;
    ASSERT_EQ(::read(ready[0], &byte, 1), 1) << "a client failed before it was ready";
  }
  ::close(go[1]);
  long total = 0;
  for (int c = 0; c < kClients; ++c) {
    long result[3];
    ASSERT_EQ(::read(results[0], result, sizeof result), static_cast<ssize_t>(sizeof result));
    EXPECT_EQ(result[2], 1) << "not mapped at its base";
    EXPECT_GT(result[0], 0);
    // About an eighth each; more where memory pressure took pages out of other clients'
    // page tables meanwhile (a page mapped by fewer processes is shared by fewer), but never
    // a copy of its own.
    EXPECT_LT(result[0], static_cast<long>(kSize / 1024 / 2)) << "a client holds a copy of the image";
    total += result[0];
    std::printf("client %d: request + map %ld us, Pss %ld KiB\n", c, result[1], result[0]);
  }
  ::close(leave[1]);
  EXPECT_LT(total, static_cast<long>(kSize / 1024 * 5 / 4)) << "the clients hold more than one copy";
  for (const pid_t pid : clients) {
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  }
  ::kill(broker, SIGKILL);
  int status = 0;
  ::waitpid(broker, &status, 0);
  ::close(ready[0]);
  ::close(results[0]);
}

// ---- hostile clients and neighbours --------------------------------------------------------

sockaddr_un unix_address(const std::filesystem::path& path) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, path.c_str(), sizeof address.sun_path - 1);
  return address;
}

// A Unix stream socket connected to `path` (-1 if it cannot be).
int raw_connect(const std::filesystem::path& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un address = unix_address(path);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// A broker serving "blob" in a thread; stopped and joined when it goes. serve() must return
// within 10 s of stop(), else the test fails rather than hang.
struct ServingBroker {
  explicit ServingBroker(const std::filesystem::path& path, std::uintptr_t base) : broker(path) {
    broker.add("blob", blob_image(base, 64 << 10));
    done = std::async(std::launch::async, [this] { broker.serve(); });
  }
  ~ServingBroker() { stop(); }
  void stop() {
    if (!done.valid()) return;
    broker.stop();
    if (done.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
      ADD_FAILURE() << "serve() did not return within 10 s of stop()";
      std::abort();
    }
    done.get();
  }
  FixedImageBroker broker;
  std::future<void> done;
};

// Clients that ask and hang up before the answer: the broker's writes find no reader (EPIPE,
// which must not be a SIGPIPE: that would end the broker), and it goes on serving.
TEST(FixedImageBroker, ClientsThatHangUpDoNotEndTheBroker) {
  TempDir dir;
  const auto path = dir / "broker.sock";
  ServingBroker serving(path, kDefaultFixedBase + (23ull << 32));
  for (int i = 0; i < 200; ++i) {
    const int fd = raw_connect(path);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::send(fd, "blob\n", 5, MSG_NOSIGNAL), 5);
    ::close(fd);
  }
  const FixedImage mapped = FixedImage::map(request_image(path, "blob"), blob_options());
  EXPECT_EQ(mapped.root<Blob>()->size, 64u << 10);
}

// A name no broker could serve is refused before anything is sent, and quoted shortened.
TEST(FixedImageBroker, NamesABrokerCannotServeAreRefusedUpFront) {
  TempDir dir;
  const auto path = dir / "broker.sock";
  ServingBroker serving(path, kDefaultFixedBase + (24ull << 32));
  const std::string huge(1 << 20, 'n');
  try {
    (void)request_image(path, huge);
    ADD_FAILURE() << "a 1 MiB name was sent";
  } catch (const Error& e) {
    EXPECT_EQ(e.error(), EINVAL);
    EXPECT_LT(std::strlen(e.what()), 400u) << "the whole name is quoted";
    EXPECT_NE(std::string(e.what()).find("1 to 256 bytes"), std::string::npos) << e.what();
  }
  expect_error([&] { (void)request_image(path, ""); }, EINVAL, {"1 to 256 bytes"});
  expect_error([&] { (void)request_image(path, "a\nb"); }, EINVAL, {"without a newline"});
  expect_error([&] { (void)request_image(path, "blob", std::chrono::milliseconds(0)); }, EINVAL, {"timeout"});
  EXPECT_EQ(serving.broker.served(), 0u);
  (void)request_image(path, "blob");
  serving.stop();  // the count goes up after the image is sent, maybe after it arrived
  EXPECT_EQ(serving.broker.served(), 1u);
}

// A "broker" that accepts and never answers, and one whose backlog is full: the request gives
// up after its timeout, saying so.
TEST(FixedImageBroker, RequestsTimeOut) {
  TempDir dir;
  const auto path = dir / "silent.sock";
  const int listener = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un address = unix_address(path);
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  ASSERT_EQ(::listen(listener, 0), 0);
  // Accepted (by the kernel's backlog), never answered.
  expect_error([&] { (void)request_image(path, "blob", std::chrono::milliseconds(300)); }, ETIMEDOUT,
               {"requesting fixed image 'blob' from broker", "no answer within 300 ms"});
  // Fill the backlog with connections nobody accepts, until one would wait.
  std::vector<int> waiting;
  for (int i = 0; i < 64; ++i) {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
      ASSERT_EQ(errno, EAGAIN) << std::strerror(errno);
      ::close(fd);
      break;
    }
    waiting.push_back(fd);
  }
  expect_error([&] { (void)request_image(path, "blob", std::chrono::milliseconds(300)); }, ETIMEDOUT,
               {"no answer within 300 ms"});
  for (const int fd : waiting) ::close(fd);
  ::close(listener);
}

// A client that says its name a byte at a time, forever: the broker gives it 2 s in all, not
// 2 s per byte, and then serves the next one.
TEST(FixedImageBroker, ASlowClientHoldsTheBrokerForTwoSecondsAtMost) {
  TempDir dir;
  const auto path = dir / "broker.sock";
  ServingBroker serving(path, kDefaultFixedBase + (25ull << 32));
  const int slow = raw_connect(path);
  ASSERT_GE(slow, 0);
  std::atomic<bool> done{false};
  std::thread dribble([&] {
    while (!done.load()) {
      if (::send(slow, "b", 1, MSG_NOSIGNAL) != 1) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the broker is reading it
  try {
    (void)request_image(path, "blob", std::chrono::seconds(8));
  } catch (const Error& e) {
    ADD_FAILURE() << e.what();
  }
  done.store(true);
  dribble.join();
  ::close(slow);
}

// stop() wakes serve() without touching the socket's path (which may be gone, or someone
// else's by now), and from a signal handler.
FixedImageBroker* g_stopped_by_signal = nullptr;
void stop_broker(int) { g_stopped_by_signal->stop(); }

TEST(FixedImageBroker, StopNeedsNoPathAndWorksFromASignalHandler) {
  TempDir dir;
  const auto path = dir / "broker.sock";
  {
    ServingBroker serving(path, kDefaultFixedBase + (26ull << 32));
    std::filesystem::remove(path);
    serving.stop();
  }
  ServingBroker serving(path, kDefaultFixedBase + (26ull << 32));
  g_stopped_by_signal = &serving.broker;
  struct sigaction action{};
  struct sigaction previous{};
  action.sa_handler = stop_broker;
  ASSERT_EQ(::sigaction(SIGUSR1, &action, &previous), 0);
  ASSERT_EQ(::raise(SIGUSR1), 0);
  EXPECT_EQ(serving.done.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  ::sigaction(SIGUSR1, &previous, nullptr);
  serving.stop();
}

// A broker removes its socket's path when it goes only if the socket there is still its own:
// not one that a second broker made at the same path after the first one's was removed.
TEST(FixedImageBroker, ABrokerRemovesOnlyItsOwnSocket) {
  TempDir dir;
  const auto path = dir / "broker.sock";
  auto first = std::make_unique<ServingBroker>(path, kDefaultFixedBase + (27ull << 32));
  std::filesystem::remove(path);
  ServingBroker second(path, kDefaultFixedBase + (28ull << 32));
  first.reset();
  ASSERT_TRUE(std::filesystem::exists(std::filesystem::symlink_status(path)));
  const FixedImage mapped = FixedImage::map(request_image(path, "blob"), blob_options());
  second.stop();
  EXPECT_EQ(second.broker.served(), 1u);
}

// A timeout too long for a socket to say is the longest one it can: no overflow, no false
// ETIMEDOUT, no wait without end.
TEST(FixedImageBroker, AnyTimeoutWorks) {
  TempDir dir;
  const auto path = dir / "broker.sock";
  ServingBroker serving(path, kDefaultFixedBase + (29ull << 32));
  (void)request_image(path, "blob", std::chrono::milliseconds::max());
  (void)request_image(path, "blob", std::chrono::hours(24 * 365));
  std::string nul = "bl";
  nul += '\0';
  nul += "b";
  expect_error([&] { (void)request_image(path, nul); }, EINVAL, {"'bl?b'", "newline or NUL"});
}

// A child forked from the broker's process (a worker that inherited a SIGTERM handler, an
// exit() that runs destructors) stops and removes only its own copy: the parent serves on.
TEST(FixedImageBroker, AForkedChildNeitherStopsNorRemovesTheParentsBroker) {
  TempDir dir;
  const auto path = dir / "broker.sock";
  ServingBroker serving(path, kDefaultFixedBase + (30ull << 32));
  const pid_t stopper = ::fork();
  ASSERT_GE(stopper, 0);
  if (stopper == 0) {
    serving.broker.stop();  // async-signal-safe: fine in a child of a threaded process
    ::_exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(stopper, &status, 0), stopper);
  EXPECT_EQ(serving.done.wait_for(std::chrono::milliseconds(300)), std::future_status::timeout)
      << "the child's stop() ended the parent's serve()";
  (void)request_image(path, "blob");

  auto* idle = new FixedImageBroker(dir / "idle.sock");
  const pid_t leaver = ::fork();
  ASSERT_GE(leaver, 0);
  if (leaver == 0) {
    delete idle;  // as exit() destroys a global broker
    ::_exit(0);
  }
  ASSERT_EQ(::waitpid(leaver, &status, 0), leaver);
  EXPECT_TRUE(std::filesystem::exists(std::filesystem::symlink_status(dir / "idle.sock")))
      << "the child removed the parent's socket";
  delete idle;
  EXPECT_FALSE(std::filesystem::exists(std::filesystem::symlink_status(dir / "idle.sock")));
}

// CPU ticks (user + system) that process `pid` has used: /proc/PID/stat fields 14 and 15.
long cpu_ticks(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  std::istringstream fields(text.substr(text.rfind(')') + 2));
  std::string field;
  long ticks = 0;
  for (int i = 3; i <= 15 && fields >> field; ++i) {
    if (i >= 14) ticks += std::stol(field);
  }
  return ticks;
}

// A broker out of fds cannot accept the client that waits (the listener stays readable): it
// waits for fds to come back rather than spin, and then serves it.
TEST(FixedImageBroker, ABrokerOutOfFdsWaitsThenServes) {
  TempDir dir;
  const auto path = dir / "broker.sock";
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t broker = ::fork();
  ASSERT_GE(broker, 0);
  if (broker == 0) {
    try {
      FixedImageBroker server(path);
      server.add("blob", blob_image(kDefaultFixedBase + (31ull << 32), 64 << 10));
      rlimit limit{256, 4096};
      if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) ::_exit(2);
      while (::dup(0) >= 0) {
      }
      (void)::write(ready[1], "r", 1);
      server.serve();
    } catch (...) {
      ::_exit(3);
    }
    ::_exit(0);
  }
  char byte = 0;
  ASSERT_EQ(::read(ready[0], &byte, 1), 1);
  auto client = std::async(std::launch::async, [&] { return request_image(path, "blob", std::chrono::seconds(60)); });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const long before = cpu_ticks(broker);
  std::this_thread::sleep_for(std::chrono::seconds(1));
  const long spent = cpu_ticks(broker) - before;
  EXPECT_LT(spent, ::sysconf(_SC_CLK_TCK) / 4) << "the broker spun on the queued connection";
  rlimit more{4096, 4096};
  ASSERT_EQ(::prlimit(broker, RLIMIT_NOFILE, &more, nullptr), 0);
  try {
    const FixedImage mapped = FixedImage::map(client.get(), blob_options());
    EXPECT_EQ(mapped.root<Blob>()->size, 64u << 10);
  } catch (const Error& e) {
    ADD_FAILURE() << e.what();
  }
  ::kill(broker, SIGTERM);
  int status = 0;
  ::waitpid(broker, &status, 0);
  ::close(ready[0]);
  ::close(ready[1]);
}

// What is at a path that is no broker's socket is said, and left alone: a regular file, a FIFO,
// a device, a symbolic link, a socket nobody serves.
TEST(FixedImageBroker, WhatIsNotABrokersSocketIsNamedAndLeftAlone) {
  TempDir dir;
  const auto file = dir / "file";
  std::ofstream(file) << "mine";
  const auto fifo = dir / "fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const auto link = dir / "link";
  std::filesystem::create_symlink(file, link);
  for (const auto& [path, kind] : {std::pair{file, "a regular file"}, std::pair{fifo, "a FIFO"},
                                   std::pair{link, "a symbolic link"},
                                   std::pair{std::filesystem::path("/dev/null"), "a character device"}}) {
    expect_error([&] { FixedImageBroker b(path); }, EADDRINUSE, {kind, "not a socket", "left as it was"});
    EXPECT_TRUE(std::filesystem::exists(std::filesystem::symlink_status(path))) << path;
  }
  expect_error([&] { (void)request_image(file, "blob"); }, ECONNREFUSED, {"it is a regular file, not a broker's socket"});
  expect_error([&] { (void)request_image(fifo, "blob"); }, ECONNREFUSED, {"it is a FIFO"});
  EXPECT_EQ(std::ifstream(file).rdbuf()->sgetc(), 'm');
  // A socket whose broker died (bound, never listened on, closed).
  const auto stale = dir / "stale.sock";
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un address = unix_address(stale);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  ::close(fd);
  expect_error([&] { FixedImageBroker b(stale); }, EADDRINUSE, {"a socket nobody serves", "remove it first"});
  expect_error([&] { (void)request_image(stale, "blob"); }, ECONNREFUSED, {"no broker serves this socket"});
}

}  // namespace
}  // namespace mapwright
