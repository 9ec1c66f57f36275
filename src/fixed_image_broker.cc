// src/fixed_image_broker.cc — FixedImageBroker and request_image() (fixed_image.h).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cerrno>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include <sys/uio.h>

#include "mapwright/error.h"
#include "mapwright/fixed_image.h"
#include "os/os.h"

namespace mapwright {
namespace {

constexpr Error::DetailIsCause kCause{};
constexpr std::size_t kMaxName = 256;
// All a client gets to say its name and take the answer, from when it is accepted.
constexpr std::chrono::milliseconds kClientDeadline{2000};

using Clock = std::chrono::steady_clock;
// The longest wait a socket timeout can say (INT_MAX ms, 24.8 days): longer ones are this.
constexpr std::chrono::milliseconds kLongestTimeout{INT32_MAX};

// Milliseconds left until `deadline` (at least 1), or 0 when it has passed.
int left_until(Clock::time_point deadline) {
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
  if (left <= 0) return 0;
  return left > INT32_MAX ? INT32_MAX : static_cast<int>(left);
}

bool valid_name(const std::string& name) {
  return !name.empty() && name.size() <= kMaxName && name.find('\n') == std::string::npos &&
         name.find('\0') == std::string::npos;
}

// `name` as a message quotes it: control characters (a newline, a NUL that would end the
// message early) as '?', and no more than 64 bytes of one too long to be a name.
std::string shown(const std::string& name) {
  std::string text = name.size() <= kMaxName ? name : name.substr(0, 64) + "...";
  for (char& c : text) {
    if (static_cast<unsigned char>(c) < ' ' || c == 0x7f) c = '?';
  }
  return text;
}

// What is at `path`, where a broker could not bind: said so that nobody is told to remove a
// file that is not a dead broker's socket.
std::string what_is_there(const std::string& path) {
  os::FileStatus status;
  if (os::path_status(path.c_str(), false, &status) != 0) return "something is there";
  if (status.type != os::FileType::kSocket) {
    return std::string("a ") + os::to_string(status.type) +
           " is there, not a socket: choose another path; it was left as it was";
  }
  int fd = -1;
  if (os::connect_unix(path.c_str(), 1000, &fd) == 0) {
    (void)os::close(fd);
    return "a socket that is being served is there: another broker runs";
  }
  return "a socket nobody serves is there, which a broker that died leaves: remove it first";
}

// How long serve() waits before accepting again when this process is out of fds or memory:
// the connection stays queued (the listener readable), and retrying at once would spin.
constexpr int kShortageBackoffMs = 100;

}  // namespace

struct FixedImageBroker::State {
  std::string path;
  os::OwnedFd listener;
  // Readable once stop() was called, in the process whose it is: a child forked from this one
  // shares the eventfd, so a stop() there must not wake this process's serve() (a serve() in
  // the child makes an eventfd of its own first).
  os::OwnedFd wakeup;
  std::atomic<int> wakeup_fd{-1};
  std::atomic<int> wakeup_owner{0};  // the pid whose eventfd it is
  int creator = 0;                   // the pid that made the socket, the only one to remove it
  dev_t socket_device = 0;     // what is at `path` when we made it: removed at the end only if
  ino_t socket_inode = 0;      // it is still ours

  void make_wakeup() {
    int fd = -1;
    if (const int err = os::open_wakeup(&fd); err != 0) {
      throw Error(err, "serving fixed images", path, "(eventfd)");
    }
    os::OwnedFd made(fd);
    wakeup_fd.store(fd);
    std::swap(wakeup, made);  // the old one (another process's, inherited) closes
    wakeup_owner.store(os::process_id());
  }
  std::mutex mutex;
  std::map<std::string, SealedImage, std::less<>> images;
  std::atomic<bool> stopping{false};
  std::atomic<std::uint64_t> served{0};

  // One request: the name, then the answer, all within kClientDeadline; a client that is
  // slow, gone or says too much is dropped without one. Nothing a client does raises a signal
  // here (MSG_NOSIGNAL throughout).
  void answer(int client) {
    const Clock::time_point deadline = Clock::now() + kClientDeadline;
    std::string name;
    char buffer[kMaxName + 1];
    for (;;) {
      const int left = left_until(deadline);
      if (left == 0 || os::set_socket_timeouts(client, left) != 0) return;
      std::size_t got = 0;
      std::size_t fds = 0;
      int flags = 0;
      if (os::receive_with_fds(client, buffer, sizeof buffer, nullptr, 0, &got, &fds, &flags) != 0 ||
          got == 0) {
        return;  // gone, too slow, or nothing said
      }
      name.append(buffer, got);
      if (const std::size_t end = name.find('\n'); end != std::string::npos) {
        name.resize(end);
        break;
      }
      if (name.size() > kMaxName) return;
    }
    std::optional<SealedImage> image;
    {
      const std::lock_guard lock(mutex);
      if (const auto found = images.find(name); found != images.end()) image = found->second;
    }
    const int left = left_until(deadline);
    if (left == 0 || os::set_socket_timeouts(client, left) != 0) return;
    const char status = image ? 'I' : 'N';
    if (os::send_all(client, &status, 1) != 0 || !image) return;
    try {
      send_image(client, *image);
      served.fetch_add(1, std::memory_order_relaxed);
    } catch (const Error&) {
      // The client went away: its loss.
    }
  }
};

FixedImageBroker::FixedImageBroker(const std::filesystem::path& socket_path)
    : state_(std::make_unique<State>()) {
  State& s = *state_;
  s.path = socket_path.string();
  s.creator = os::process_id();
  s.make_wakeup();
  int fd = -1;
  if (const int err = os::listen_unix(s.path.c_str(), &fd); err != 0) {
    throw Error(err, "starting fixed image broker", s.path,
                err == EADDRINUSE ? "(" + what_is_there(s.path) + ")" : "(socket, bind or listen)");
  }
  s.listener = os::OwnedFd(fd);
  os::FileStatus status;
  if (os::path_status(s.path.c_str(), false, &status) == 0 && status.type == os::FileType::kSocket) {
    s.socket_device = status.device;
    s.socket_inode = status.inode;
  }
}

FixedImageBroker::~FixedImageBroker() {
  if (!state_ || state_->listener.get() < 0 || state_->socket_inode == 0) return;
  // A forked child's copy of the broker (exit() runs destructors) leaves the socket to the
  // process that made it; and another broker may have been started at the same path since
  // (after ours was removed): its socket is not ours to remove.
  if (os::process_id() != state_->creator) return;
  os::FileStatus status;
  if (os::path_status(state_->path.c_str(), false, &status) == 0 &&
      status.type == os::FileType::kSocket && status.device == state_->socket_device &&
      status.inode == state_->socket_inode) {
    (void)os::unlink(state_->path.c_str());
  }
}

void FixedImageBroker::add(const std::string& name, SealedImage image) {
  if (!valid_name(name)) {
    throw Error(EINVAL, "adding image to broker", state_->path,
                "(the name must be 1 to 256 bytes without a newline or NUL)", kCause);
  }
  const std::lock_guard lock(state_->mutex);
  state_->images.insert_or_assign(name, std::move(image));
}

void FixedImageBroker::serve() {
  State& s = *state_;
  if (s.wakeup_owner.load() != os::process_id()) s.make_wakeup();  // a forked child's serve()
  const int waits[2] = {s.listener.get(), s.wakeup.get()};
  while (!s.stopping.load()) {
    std::size_t ready = 0;
    if (const int err = os::wait_readable(waits, 2, -1, &ready); err != 0) {
      throw Error(err, "serving fixed images", s.path, "(poll)");
    }
    if (ready == 1) continue;  // stop(): the loop's condition says so
    int client = -1;
    if (const int err = os::accept_connection(s.listener.get(), &client); err != 0) {
      if (err == EAGAIN || err == ECONNABORTED) continue;  // gone before it was taken
      if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
        // A passing shortage: wait for it to pass (or for stop()), not spin on the queue.
        std::size_t woken = 0;
        (void)os::wait_readable(&waits[1], 1, kShortageBackoffMs, &woken);
        continue;
      }
      throw Error(err, "serving fixed images", s.path, "(accept)");
    }
    const os::OwnedFd closer(client);
    s.answer(client);
  }
}

void FixedImageBroker::stop() noexcept {
  State& s = *state_;
  s.stopping.store(true);
  if (s.wakeup_owner.load() == os::process_id()) (void)os::wake(s.wakeup_fd.load());
}

std::uint64_t FixedImageBroker::served() const noexcept { return state_->served.load(); }

SealedImage request_image(const std::filesystem::path& socket_path, const std::string& name,
                          std::chrono::milliseconds timeout) {
  const std::string path = socket_path.string();
  const std::string operation = "requesting fixed image '" + shown(name) + "' from broker";
  if (!valid_name(name)) {
    throw Error(EINVAL, operation, path, "(a name is 1 to 256 bytes without a newline or NUL)",
                kCause);
  }
  if (timeout.count() <= 0) {
    throw Error(EINVAL, operation, path, "(the timeout must be positive)", kCause);
  }
  timeout = std::min(timeout, kLongestTimeout);  // so that the deadline cannot overflow
  const std::string late =
      "(no answer within " + std::to_string(timeout.count()) + " ms: the broker is busy or stuck)";
  const Clock::time_point deadline = Clock::now() + timeout;
  const auto arm = [&](int fd) {
    const int left = left_until(deadline);
    if (left == 0) throw Error(ETIMEDOUT, operation, path, late, kCause);
    if (const int err = os::set_socket_timeouts(fd, left); err != 0) {
      throw Error(err, operation, path, "(setsockopt)");
    }
  };
  const auto failed = [&](int err, const char* step) {
    if (err == EAGAIN) throw Error(ETIMEDOUT, operation, path, late, kCause);
    throw Error(err, operation, path, step);
  };
  int fd = -1;
  const int connect_within = left_until(deadline);  // 0 would be no limit at all
  if (connect_within == 0) throw Error(ETIMEDOUT, operation, path, late, kCause);
  if (const int err = os::connect_unix(path.c_str(), connect_within, &fd); err != 0) {
    os::FileStatus status;
    if (err == ECONNREFUSED && os::path_status(path.c_str(), true, &status) == 0) {
      throw Error(err, operation, path,
                  status.type == os::FileType::kSocket
                      ? std::string("(connect: no broker serves this socket)")
                      : std::string("(connect: it is a ") + os::to_string(status.type) +
                            ", not a broker's socket)");
    }
    failed(err, "(connect)");
  }
  const os::OwnedFd closer(fd);
  const std::string line = name + "\n";
  arm(fd);
  if (const int err = os::send_all(fd, line.data(), line.size()); err != 0) {
    failed(err, "(sending the name)");
  }
  char status = 0;
  std::size_t got = 0;
  std::size_t fds = 0;
  int flags = 0;
  arm(fd);
  if (const int err = os::receive_with_fds(fd, &status, 1, nullptr, 0, &got, &fds, &flags); err != 0) {
    failed(err, "(receiving the answer)");
  }
  if (got == 0) {
    throw Error(ECONNRESET, operation, path, "(the broker closed without answering)", kCause);
  }
  if (status == 'N') throw Error(ENOENT, operation, path, "(it has no image of that name)", kCause);
  if (status != 'I') throw Error(EPROTO, operation, path, "(not a broker's answer)", kCause);
  arm(fd);
  try {
    return receive_image(fd);
  } catch (const Error& e) {
    if (e.error() == EAGAIN) throw Error(ETIMEDOUT, operation, path, late, kCause);
    throw Error(e.error(), operation, path, "(receiving the image: " + std::string(e.what()) + ")",
                kCause);
  }
}

}  // namespace mapwright
