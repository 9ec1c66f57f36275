#include "reservation.h"

#include <cerrno>
#include <cstdio>
#include <utility>

#include "line.h"
#include "mapwright/error.h"
#include "os/os.h"

namespace mapwright::detail {
namespace {

std::string describe_bytes(std::uint64_t bytes) {
  char text[64];
  LineWriter(text, sizeof text).bytes(bytes);
  return text;
}

[[noreturn]] void refuse(int err, std::uint64_t length, const std::string& name, void* at,
                         const char* option = "RegionOptions::capacity") {
  std::string detail = "(" + describe_bytes(length);
  if (at != nullptr) {
    char where[24];
    std::snprintf(where, sizeof where, "%#llx",
                  static_cast<unsigned long long>(reinterpret_cast<std::uintptr_t>(at)));
    detail += std::string(" at ") + where;
    if (err == EEXIST) detail += ": the address is taken";
  }
  std::uint64_t limit = UINT64_MAX;
  if (err == ENOMEM && os::address_space_limit(&limit) == 0 && limit != UINT64_MAX) {
    std::uint64_t used = 0;
    (void)os::address_space_used(&used);
    detail += ", but RLIMIT_AS is " + describe_bytes(limit) + " with " + describe_bytes(used) +
              " in use: " + (option != nullptr ? "lower " + std::string(option) + " or " : "") +
              "raise `ulimit -v`";
  }
  throw Error(err, "reserving address space for region", name, detail + ")");
}

}  // namespace

std::uint64_t Reservation::automatic_length(std::uint64_t preferred, std::uint64_t guard,
                                            const std::string& name) {
  std::uint64_t limit = UINT64_MAX;
  if (os::address_space_limit(&limit) != 0 || limit == UINT64_MAX) return preferred;
  std::uint64_t used = 0;
  (void)os::address_space_used(&used);
  const std::uint64_t room = limit > used + guard ? limit - used - guard : 0;
  const std::uint64_t page = os::page_size();
  const std::uint64_t quarter = room / 4 / page * page;
  if (quarter < page) {
    throw Error(ENOMEM, "creating region", name,
                "(RLIMIT_AS is " + describe_bytes(limit) + " and " + describe_bytes(used) +
                    " of it is in use: no address space is left to reserve; raise `ulimit -v`)");
  }
  return quarter < preferred ? quarter : preferred;
}

Reservation Reservation::anonymous(std::uint64_t length, std::uint64_t guard,
                                   const std::string& name, void* at, const char* option) {
  void* base = nullptr;
  if (const int err = os::reserve(length + guard, &base, at); err != 0) {
    refuse(err, length, name, at, option);
  }
  Reservation r;
  r.base_ = static_cast<std::byte*>(base);
  r.length_ = length;
  r.guard_ = guard;
  return r;
}

Reservation Reservation::over_file(int fd, std::uint64_t length, std::uint64_t guard,
                                   const std::string& name, void* at) {
  void* base = nullptr;
  if (const int err = os::map_shared(fd, length + guard, &base, at); err != 0) {
    refuse(err, length, name, at);
  }
  Reservation r;
  r.base_ = static_cast<std::byte*>(base);
  r.length_ = length;
  r.guard_ = guard;
  return r;
}

Reservation::Reservation(Reservation&& other) noexcept
    : base_(std::exchange(other.base_, nullptr)),
      length_(std::exchange(other.length_, 0)),
      guard_(std::exchange(other.guard_, 0)) {}

Reservation& Reservation::operator=(Reservation&& other) noexcept {
  if (this != &other) {
    if (base_ != nullptr) os::munmap(base_, mapped());
    base_ = std::exchange(other.base_, nullptr);
    length_ = std::exchange(other.length_, 0);
    guard_ = std::exchange(other.guard_, 0);
  }
  return *this;
}

Reservation::~Reservation() {
  if (base_ != nullptr) os::munmap(base_, mapped());
}

int Reservation::map_file(int fd, std::uint64_t offset, std::uint64_t length) noexcept {
  if (offset > length_ || length > length_ - offset) return EINVAL;
  return os::map_shared_fixed(base_ + offset, length, fd, offset);
}

int Reservation::remap_private_readonly(int fd) noexcept {
  return os::remap_private_readonly(base_, mapped(), fd);
}

int Reservation::remap_shared_writable(int fd) noexcept {
  return os::remap_shared_writable(base_, mapped(), fd);
}

std::byte* Reservation::release_keeping(std::uint64_t keep) noexcept {
  const std::uint64_t page = os::page_size();
  keep = (keep + page - 1) / page * page;
  if (keep > mapped()) keep = mapped();
  if (keep < mapped()) os::munmap(base_ + keep, mapped() - keep);
  std::byte* kept = keep != 0 ? base_ : nullptr;
  base_ = nullptr;
  length_ = 0;
  guard_ = 0;
  return kept;
}

}  // namespace mapwright::detail
