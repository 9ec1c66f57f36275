#include "mapwright/sealed_image.h"

#include <fcntl.h>

#include <mutex>
#include <string>

#include "mapwright/error.h"
#include "os/os.h"
#include "sealed_image_state.h"

namespace mapwright {
namespace {

std::string describe_fd(int fd) { return "fd " + std::to_string(fd); }

std::string missing_seals(int seals) {
  std::string names;
  const auto add = [&](int bit, const char* name) {
    if ((seals & bit) == 0) names += names.empty() ? name : std::string(", ") + name;
  };
  add(F_SEAL_SEAL, "F_SEAL_SEAL");
  add(F_SEAL_SHRINK, "F_SEAL_SHRINK");
  add(F_SEAL_GROW, "F_SEAL_GROW");
  add(F_SEAL_WRITE, "F_SEAL_WRITE");
  return names;
}

}  // namespace

static_assert(kImageSeals == (F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE));

SealedImage::State::~State() {
  if (mapping != nullptr && mapping_length != 0) os::munmap(mapping, mapping_length);
  if (fd >= 0) os::close(fd);
}

SealedImage::SealedImage(std::shared_ptr<State> state) noexcept : state_(std::move(state)) {}

SealedImage SealedImage::adopt(int fd) {
  int seals = 0;
  if (const int err = os::get_seals(fd, &seals); err != 0) {
    throw Error(err == EINVAL ? EINVAL : err, "adopting image", describe_fd(fd),
                err == EINVAL ? "(the file cannot carry seals: not a memfd)" : "(F_GET_SEALS)");
  }
  if ((seals & kImageSeals) != kImageSeals) {
    throw Error(EPERM, "adopting image", describe_fd(fd),
                "(not immutable: missing " + missing_seals(seals) + ")");
  }
  std::uint64_t size = 0;
  if (const int err = os::file_size(fd, &size); err != 0) {
    throw Error(err, "adopting image", describe_fd(fd), "(fstat)");
  }
  auto state = std::make_shared<State>();
  state->fd = fd;
  state->size = size;
  return SealedImage(std::move(state));
}

int SealedImage::fd() const noexcept { return state_ ? state_->fd : -1; }

std::uint64_t SealedImage::size() const noexcept { return state_ ? state_->size : 0; }

std::span<const std::byte> SealedImage::map() const {
  if (!state_ || state_->size == 0) return {};
  const std::lock_guard lock(state_->mutex);
  if (state_->mapping == nullptr) {
    const void* address = nullptr;
    if (const int err = os::map_readonly(state_->fd, state_->size, &address); err != 0) {
      throw Error(err, "mapping image", describe_fd(state_->fd), "read-only");
    }
    state_->mapping = address;
    state_->mapping_length = state_->size;
  }
  return {static_cast<const std::byte*>(state_->mapping), state_->size};
}

}  // namespace mapwright
