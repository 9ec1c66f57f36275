// src/fixed_image_broker.cc — FixedImageBroker and request_image() (fixed_image.h).
#include <algorithm>
#include <atomic>
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
constexpr int kClientTimeoutMs = 2000;

}  // namespace

struct FixedImageBroker::State {
  std::string path;
  os::OwnedFd listener;
  std::mutex mutex;
  std::map<std::string, SealedImage, std::less<>> images;
  std::atomic<bool> stopping{false};
  std::atomic<std::uint64_t> served{0};

  // One request: the name, then the answer; a client that is silent, gone or says too much
  // is dropped without one.
  void answer(int client) {
    (void)os::set_socket_timeouts(client, kClientTimeoutMs);
    std::string name;
    char buffer[kMaxName + 1];
    for (;;) {
      std::size_t got = 0;
      std::size_t fds = 0;
      int flags = 0;
      if (os::receive_with_fds(client, buffer, sizeof buffer, nullptr, 0, &got, &fds, &flags) != 0 ||
          got == 0) {
        return;  // gone, silent too long, or nothing said
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
    const char status = image ? 'I' : 'N';
    if (os::write_all(client, &status, 1) != 0 || !image) return;
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
  state_->path = socket_path.string();
  int fd = -1;
  if (const int err = os::listen_unix(state_->path.c_str(), &fd); err != 0) {
    throw Error(err, "starting fixed image broker", state_->path,
                err == EADDRINUSE ? "(something exists at that path: a broker that died leaves its "
                                    "socket; remove it first)"
                                  : "(socket, bind or listen)");
  }
  state_->listener = os::OwnedFd(fd);
}

FixedImageBroker::~FixedImageBroker() {
  if (state_ && state_->listener.get() >= 0) (void)os::unlink(state_->path.c_str());
}

void FixedImageBroker::add(const std::string& name, SealedImage image) {
  if (name.empty() || name.size() > kMaxName || name.find('\n') != std::string::npos) {
    throw Error(EINVAL, "adding image to broker", state_->path,
                "(the name must be 1 to 256 bytes without a newline)", kCause);
  }
  const std::lock_guard lock(state_->mutex);
  state_->images.insert_or_assign(name, std::move(image));
}

void FixedImageBroker::serve() {
  State& s = *state_;
  while (!s.stopping.load()) {
    int client = -1;
    if (const int err = os::accept_connection(s.listener.get(), &client); err != 0) {
      if (err == ECONNABORTED || err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
        continue;  // that client's, or a passing shortage
      }
      throw Error(err, "serving fixed images", s.path, "(accept)");
    }
    const os::OwnedFd closer(client);
    if (s.stopping.load()) break;
    s.answer(client);
  }
}

void FixedImageBroker::stop() {
  state_->stopping.store(true);
  int fd = -1;  // wakes accept()
  if (os::connect_unix(state_->path.c_str(), &fd) == 0) (void)os::close(fd);
}

std::uint64_t FixedImageBroker::served() const noexcept { return state_->served.load(); }

SealedImage request_image(const std::filesystem::path& socket_path, const std::string& name) {
  const std::string path = socket_path.string();
  const std::string what = "'" + name + "' from broker " + path;
  int fd = -1;
  if (const int err = os::connect_unix(path.c_str(), &fd); err != 0) {
    throw Error(err, "requesting fixed image", what, "(connect)");
  }
  const os::OwnedFd closer(fd);
  const std::string line = name + "\n";
  if (const int err = os::write_all(fd, line.data(), line.size()); err != 0) {
    throw Error(err, "requesting fixed image", what, "(sending the name)");
  }
  char status = 0;
  std::size_t got = 0;
  std::size_t fds = 0;
  int flags = 0;
  if (const int err = os::receive_with_fds(fd, &status, 1, nullptr, 0, &got, &fds, &flags); err != 0) {
    throw Error(err, "requesting fixed image", what, "(receiving the answer)");
  }
  if (got == 0) {
    throw Error(ECONNRESET, "requesting fixed image", what, "(the broker closed without answering)", kCause);
  }
  if (status == 'N') throw Error(ENOENT, "requesting fixed image", what, "(it has no image of that name)", kCause);
  if (status != 'I') throw Error(EPROTO, "requesting fixed image", what, "(not a broker's answer)", kCause);
  return receive_image(fd);
}

}  // namespace mapwright
