#include "bundle_wire.h"

#include <sys/uio.h>

#include <cerrno>
#include <cstring>
#include <string_view>
#include <unordered_set>

#include "mapwright/error.h"
#include "mapwright/share.h"
#include "os/os.h"
#include "wrapper_graph.h"

namespace mapwright::detail {
namespace {

constexpr Error::DetailIsCause kCause{};
constexpr const char* kReceiving = "receiving bundle over";

// Little-endian integers, whatever the host (x86-64 is; the format says so).
template <class T>
void put(std::vector<std::byte>& out, T value) {
  for (std::size_t i = 0; i < sizeof(T); ++i) {
    out.push_back(static_cast<std::byte>(static_cast<std::uint64_t>(value) >> (8 * i)));
  }
}

// A cursor over the untrusted message: every read is checked against what remains.
class Reader {
 public:
  Reader(std::span<const std::byte> bytes, const std::string& subject)
      : bytes_(bytes), subject_(subject) {}
  template <class T>
  T take(const char* what) {
    need(sizeof(T), what);
    std::uint64_t value = 0;
    for (std::size_t i = 0; i < sizeof(T); ++i) {
      value |= std::uint64_t{static_cast<std::uint8_t>(bytes_[at_ + i])} << (8 * i);
    }
    at_ += sizeof(T);
    return static_cast<T>(value);
  }
  std::span<const std::byte> take_bytes(std::size_t length, const char* what) {
    need(length, what);
    const auto piece = bytes_.subspan(at_, length);
    at_ += length;
    return piece;
  }
  std::size_t remaining() const noexcept { return bytes_.size() - at_; }
  std::size_t offset() const noexcept { return at_; }

 private:
  void need(std::size_t length, const char* what) const {
    if (length > remaining()) {
      throw Error(EPROTO, kReceiving, subject_,
                  "(truncated message: " + std::string(what) + " needs " + std::to_string(length) +
                      " bytes at byte " + std::to_string(at_) + ", " + std::to_string(remaining()) +
                      " remain)",
                  kCause);
    }
  }
  std::span<const std::byte> bytes_;
  const std::string& subject_;
  std::size_t at_ = 0;
};

}  // namespace

std::vector<std::byte> encode_bundle(const std::vector<WireLibrary>& libraries,
                                     std::uint32_t version) {
  std::vector<std::byte> out;
  put(out, kBundleMagic);
  put(out, version);
  put(out, static_cast<std::uint32_t>(libraries.size()));
  put(out, std::uint32_t{0});  // the length, patched below
  put(out, std::uint32_t{0});
  for (const WireLibrary& library : libraries) {
    put(out, library.size);
    for (const std::byte b : library.digest.bytes) out.push_back(b);
    put(out, static_cast<std::uint32_t>(library.name.size()));
    put(out, static_cast<std::uint32_t>(library.dependencies.size()));
  }
  for (const WireLibrary& library : libraries) {
    for (const char c : library.name) out.push_back(static_cast<std::byte>(c));
    for (const std::uint32_t d : library.dependencies) put(out, d);
  }
  const auto length = static_cast<std::uint32_t>(out.size());
  for (std::size_t i = 0; i < 4; ++i) out[16 + i] = static_cast<std::byte>(length >> (8 * i));
  return out;
}

std::vector<WireLibrary> parse_bundle(std::span<const std::byte> message, std::size_t fd_count,
                                      const std::string& subject) {
  const auto refuse = [&](int error, const std::string& why) -> void {
    throw Error(error, kReceiving, subject, "(" + why + ")", kCause);
  };
  Reader in(message, subject);
  if (message.size() < kBundleHeaderBytes ||
      in.take<std::uint64_t>("the magic number") != kBundleMagic) {
    refuse(EPROTO, "not a mapwright bundle message");
  }
  const auto version = in.take<std::uint32_t>("the version");
  if (version != kBundleFormatVersion) {
    refuse(EPROTO, "bundle format version " + std::to_string(version) + ", this build reads " +
                       std::to_string(kBundleFormatVersion));
  }
  const auto count = in.take<std::uint32_t>("the count");
  const auto length = in.take<std::uint32_t>("the length");
  if (in.take<std::uint32_t>("the reserved word") != 0) refuse(EPROTO, "the reserved word is not zero");
  if (length != message.size()) {
    refuse(EPROTO, "the message announces " + std::to_string(length) + " bytes, " +
                       std::to_string(message.size()) + " arrived");
  }
  if (length > kMaxBundleMessageBytes) {
    refuse(EPROTO, "a message of " + std::to_string(length) + " bytes, more than the " +
                       std::to_string(kMaxBundleMessageBytes) + " a bundle may have");
  }
  if (count > kMaxBundleLibraries) {
    refuse(EPROTO, std::to_string(count) + " libraries, more than the " +
                       std::to_string(kMaxBundleLibraries) + " a bundle may have");
  }
  if (count != fd_count) {
    refuse(EPROTO, "the message lists " + std::to_string(count) + " libraries, " +
                       std::to_string(fd_count) + " fds arrived");
  }
  // The records are fixed-size: check they fit before allocating anything for them.
  if (std::uint64_t{count} * kBundleRecordBytes > in.remaining()) {
    refuse(EPROTO, "truncated message: " + std::to_string(count) + " records need " +
                       std::to_string(std::uint64_t{count} * kBundleRecordBytes) + " bytes, " +
                       std::to_string(in.remaining()) + " remain");
  }
  std::vector<WireLibrary> libraries(count);
  std::vector<std::uint32_t> name_bytes(count);
  std::vector<std::uint32_t> dependency_counts(count);
  for (std::uint32_t i = 0; i < count; ++i) {
    libraries[i].size = in.take<std::uint64_t>("a size");
    const auto digest = in.take_bytes(16, "a digest");
    std::memcpy(libraries[i].digest.bytes.data(), digest.data(), 16);
    name_bytes[i] = in.take<std::uint32_t>("a name length");
    dependency_counts[i] = in.take<std::uint32_t>("a dependency count");
  }
  std::unordered_set<std::string_view> names;
  for (std::uint32_t i = 0; i < count; ++i) {
    WireLibrary& library = libraries[i];
    const std::string which = "library #" + std::to_string(i);
    if (name_bytes[i] == 0) refuse(EBADMSG, which + " has an empty name");
    if (name_bytes[i] > kMaxEntryNameBytes) {
      refuse(EBADMSG, which + " has a name of " + std::to_string(name_bytes[i]) +
                          " bytes, more than " + std::to_string(kMaxEntryNameBytes));
    }
    const auto name = in.take_bytes(name_bytes[i], "a name");
    library.name.assign(reinterpret_cast<const char*>(name.data()), name.size());
    const std::string called = which + " '" + printable(library.name) + "'";
    if (library.name.find('\0') != std::string::npos) refuse(EBADMSG, called + ": its name holds a NUL byte");
    if (library.size == 0) refuse(EBADMSG, called + " is empty");
    if (std::uint64_t{dependency_counts[i]} * 4 > in.remaining()) {
      refuse(EPROTO, "truncated message: " + called + " lists " +
                         std::to_string(dependency_counts[i]) + " dependencies, " +
                         std::to_string(in.remaining()) + " bytes remain");
    }
    library.dependencies.reserve(dependency_counts[i]);
    for (std::uint32_t k = 0; k < dependency_counts[i]; ++k) {
      const auto d = in.take<std::uint32_t>("a dependency");
      // Earlier only: the bundle's order is the load order, and no cycle can form.
      if (d >= i) {
        refuse(EBADMSG, called + " depends on #" + std::to_string(d) +
                            (d == i ? ", itself" : d < count ? ", which comes after it" : ", which does not exist") +
                            ": dependencies must come before their dependents");
      }
      for (const std::uint32_t seen : library.dependencies) {
        if (seen == d) refuse(EBADMSG, called + " names dependency #" + std::to_string(d) + " twice");
      }
      library.dependencies.push_back(d);
    }
  }
  // After every string is in place (views into `libraries` stay valid: no more resizing).
  for (std::uint32_t i = 0; i < count; ++i) {
    if (!names.insert(libraries[i].name).second) {
      refuse(EBADMSG, "library #" + std::to_string(i) + " '" + printable(libraries[i].name) +
                          "': the name is used by an earlier library too");
    }
  }
  if (in.remaining() != 0) {
    refuse(EPROTO, std::to_string(in.remaining()) + " bytes after the last library");
  }
  return libraries;
}

void send_bundle_message(int unix_socket, std::span<const std::byte> message,
                         std::span<const int> fds) {
  const std::string subject = "socket fd " + std::to_string(unix_socket);
  const iovec data{const_cast<std::byte*>(message.data()), message.size()};
  std::size_t sent = 0;
  if (const int err = os::send_with_fds(unix_socket, &data, 1, fds.data(), fds.size(), &sent);
      err != 0) {
    throw Error(err, "sending bundle over", subject, "(sendmsg of " + std::to_string(message.size()) +
                                                         " bytes with " + std::to_string(fds.size()) + " fds)");
  }
  if (sent != message.size()) {
    // A stream socket whose buffer was full took part of it: the rest goes without the fds.
    const auto rest = message.subspan(sent);
    std::size_t more = 0;
    const iovec tail{const_cast<std::byte*>(rest.data()), rest.size()};
    while (more < rest.size()) {
      std::size_t n = 0;
      const iovec piece{static_cast<std::byte*>(tail.iov_base) + more, rest.size() - more};
      if (const int err = os::send_with_fds(unix_socket, &piece, 1, nullptr, 0, &n); err != 0) {
        throw Error(err, "sending bundle over", subject, "(sendmsg of the message's tail)");
      }
      more += n;
    }
  }
}

}  // namespace mapwright::detail
