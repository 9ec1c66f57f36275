#include "mapwright/share.h"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <utility>

#include "bundle_wire.h"
#include "entry_image.h"
#include "mapwright/error.h"
#include "mapwright/region.h"
#include "os/os.h"
#include "wrapper_graph.h"

namespace mapwright {
namespace {

constexpr Error::DetailIsCause kCause{};

std::string describe_socket(int fd) { return "socket fd " + std::to_string(fd); }

// The digest of an image's sealed bytes, through a mapping of its own that is gone when this
// returns (SealedImage::map() would keep one for the image's lifetime: a second mapping of
// every library in every process that holds the bundle).
Digest digest_of_image(const SealedImage& image, const std::string& operation,
                       const std::string& subject) {
  const void* address = nullptr;
  if (const int err = os::map_readonly(image.fd(), image.size(), &address); err != 0) {
    throw Error(err, operation, subject, "(mapping the image to hash it)");
  }
  const Digest digest = digest_of({static_cast<const std::byte*>(address), image.size()});
  os::munmap(address, image.size());
  return digest;
}

// A memfd name: /proc/PID/maps shows "/memfd:<name> (deleted)". memfd_create takes at most
// 249 bytes and no NUL; control bytes would garble the maps line.
std::string memfd_name(std::string_view entry) {
  std::string name = "mapwright-bundle:";
  for (const char c : entry.substr(0, 200)) {
    const auto byte = static_cast<unsigned char>(c);
    name += (byte < 0x20 || byte == 0x7f) ? '?' : c;
  }
  return name;
}

}  // namespace

LibraryBundle LibraryBundle::from_wrapper(const Wrapper& wrapper) {
  std::vector<std::string> roots;
  for (const WrapperEntry& entry : wrapper.entries()) {
    if (entry.kind == EntryKind::kSharedLibrary) roots.push_back(entry.name);
  }
  return from_wrapper(wrapper, roots);
}

LibraryBundle LibraryBundle::from_wrapper(const Wrapper& wrapper,
                                          const std::vector<std::string>& roots) {
  const std::string operation = "making a bundle of wrapper";
  const std::vector<WrapperEntry>& entries = wrapper.entries();
  // Wrapper::open checked the graph already; this only computes the edges again.
  std::vector<detail::GraphEntry> graph;
  graph.reserve(entries.size());
  for (const WrapperEntry& e : entries) graph.push_back({e.name, e.kind, &e.dependencies});
  const auto edges = detail::check_dependencies(graph, operation, wrapper.name());
  std::vector<std::size_t> root_indices;
  for (const std::string& root : roots) {
    const WrapperEntry& e = wrapper.entry(root);  // ENOENT
    if (e.kind != EntryKind::kSharedLibrary) {
      throw Error(EINVAL, operation, wrapper.name(),
                  "entry '" + detail::printable(root) + "' is a data entry, not a library", kCause);
    }
    root_indices.push_back(static_cast<std::size_t>(&e - entries.data()));
  }
  const std::vector<std::size_t> order = detail::load_order(edges, root_indices);
  if (order.size() > kMaxBundleLibraries) {
    throw Error(E2BIG, operation, wrapper.name(),
                "(" + std::to_string(order.size()) + " libraries, more than the " +
                    std::to_string(kMaxBundleLibraries) + " one message can carry)");
  }
  std::vector<std::uint32_t> position(entries.size(), 0);
  LibraryBundle bundle;
  bundle.libraries_.reserve(order.size());
  for (const std::size_t index : order) {
    const WrapperEntry& e = entries[index];
    const std::string label = "entry '" + detail::printable(e.name) + "'";
    if (e.size == 0) throw Error(EINVAL, operation, wrapper.name(), label + " is empty", kCause);
    // Copied once, from the wrapper's mapping into the memfd's (chunk by chunk, so gaps
    // between chunks in files over 4 GiB are no matter).
    SealedImage image = detail::gather_entry(e, memfd_name(e.name));
    // Hashed again over the sealed bytes: what is sent is what the digest describes, even
    // if the wrapper's file changed after open().
    if (digest_of_image(image, operation, wrapper.name()) != e.digest) {
      throw Error(EBADMSG, operation, wrapper.name(),
                  label + ": its bytes do not match the entry's digest " + e.digest.hex(), kCause);
    }
    BundledLibrary library{e.name, e.digest, {}, std::move(image)};
    for (const std::size_t d : edges[index]) library.dependencies.push_back(position[d]);
    position[index] = static_cast<std::uint32_t>(bundle.libraries_.size());
    bundle.libraries_.push_back(std::move(library));
  }
  return bundle;
}

const BundledLibrary* LibraryBundle::find(std::string_view name) const noexcept {
  for (const BundledLibrary& library : libraries_) {
    if (library.name == name) return &library;
  }
  return nullptr;
}

LoadedLibraries LibraryBundle::load(LoadOptions options) const {
  LoadedLibraries loaded;
  const std::string set = options.name.empty() ? "bundle" : options.name;
  for (const BundledLibrary& library : libraries_) {
    LoadOptions one = options;
    one.name = set + ":" + detail::printable(library.name);
    // One new namespace for the whole set, as Wrapper::load_all() does.
    if (options.link_namespace == LoadOptions::Namespace::kNew && !loaded.libraries_.empty()) {
      one.link_namespace = LoadOptions::Namespace::kBeside;
      one.beside = &loaded.libraries_.front();
    }
    loaded.libraries_.push_back(load_library(library.image, one));  // step 1: no copy
    loaded.names_.push_back(library.name);
  }
  return loaded;
}

void send_bundle(int unix_socket, const LibraryBundle& bundle) {
  std::vector<detail::WireLibrary> wire;
  std::vector<int> fds;
  wire.reserve(bundle.size());
  for (const BundledLibrary& library : bundle.libraries()) {
    wire.push_back({library.name, library.digest, library.image.size(), library.dependencies});
    fds.push_back(library.image.fd());
  }
  const std::vector<std::byte> message = detail::encode_bundle(wire);
  if (bundle.size() > kMaxBundleLibraries || message.size() > kMaxBundleMessageBytes) {
    throw Error(E2BIG, "sending bundle over", describe_socket(unix_socket),
                "(" + std::to_string(bundle.size()) + " libraries in a message of " +
                    std::to_string(message.size()) + " bytes; at most " +
                    std::to_string(kMaxBundleLibraries) + " and " +
                    std::to_string(kMaxBundleMessageBytes) + ")");
  }
  detail::send_bundle_message(unix_socket, message, fds);
}

namespace {

// One message as it arrived: its bytes and every fd that came with it (owned: closed on any
// refusal). Refuses (every fd closed) what the socket layer alone shows is wrong.
struct Arrived {
  std::unique_ptr<std::byte[]> bytes;
  std::size_t size = 0;
  std::vector<os::OwnedFd> fds;
};

[[noreturn]] void refuse(const std::string& subject, int error, const std::string& why) {
  throw Error(error, "receiving bundle over", subject, "(" + why + ")", kCause);
}

Arrived receive_message(int unix_socket, const std::string& subject) {
  const char* const operation = "receiving bundle over";
  int type = 0;
  if (const int err = os::socket_type(unix_socket, &type); err != 0) {
    throw Error(err, operation, subject, "(getsockopt SO_TYPE)");
  }
  // One byte more than a message may have: a longer datagram or seqpacket message is cut
  // and flagged MSG_TRUNC either way; this one shows in the length check too. Not zeroed:
  // only the pages the message lands in are touched (zeroing all 128 KiB cost a fresh
  // process some 80 us of page faults).
  constexpr std::size_t kBufferBytes = kMaxBundleMessageBytes + 1;
  Arrived arrived{std::make_unique_for_overwrite<std::byte[]>(kBufferBytes), 0, {}};
  std::byte* const buffer = arrived.bytes.get();
  // On a stream, the header alone first: the fds arrive with the first byte of their
  // message, and a longer read could run into the next message (a stream keeps no
  // boundaries; the kernel only stops after a part that carried fds).
  const std::size_t first = type == SOCK_STREAM ? detail::kBundleHeaderBytes : kBufferBytes;
  int received[os::kMaxFdsPerMessage];
  std::size_t& got = arrived.size;
  std::size_t count = 0;
  int flags = 0;
  if (const int err = os::receive_with_fds(unix_socket, buffer, first, received,
                                           os::kMaxFdsPerMessage, &got, &count, &flags);
      err != 0) {
    throw Error(err, operation, subject, "(recvmsg)");
  }
  arrived.fds.reserve(count);
  for (std::size_t i = 0; i < count; ++i) arrived.fds.emplace_back(received[i]);
  if (got == 0) refuse(subject, ECONNRESET, "the peer closed the connection");
  if ((flags & MSG_CTRUNC) != 0) {
    refuse(subject, EPROTO, "control data truncated: more fds than one message can carry");
  }
  if ((flags & MSG_TRUNC) != 0) {
    refuse(subject, EPROTO, "the message is longer than a bundle message may be");
  }
  if (type != SOCK_STREAM) return arrived;
  // The first part carried the fds; the rest follows without any: the rest of the header
  // (for the announced length), then exactly that many bytes.
  std::size_t want = detail::kBundleHeaderBytes;
  for (bool header = true;; header = false) {
    while (got < want) {
      std::size_t more = 0;
      std::size_t more_fds = 0;
      int more_flags = 0;
      int none[1];
      if (const int err = os::receive_with_fds(unix_socket, buffer + got, want - got, none, 0,
                                               &more, &more_fds, &more_flags);
          err != 0) {
        throw Error(err, operation, subject, "(recvmsg of the message's rest)");
      }
      for (std::size_t i = 0; i < more_fds; ++i) os::close(none[i]);
      if (more == 0) {
        refuse(subject, EPROTO, "truncated message: the peer closed the connection after " +
                                    std::to_string(got) + " bytes");
      }
      if ((more_flags & MSG_CTRUNC) != 0 || more_fds != 0) {
        refuse(subject, EPROTO, "fds arrived after the first part of the message");
      }
      got += more;
    }
    if (!header) return arrived;
    std::uint32_t length = 0;
    for (std::size_t i = 0; i < 4; ++i) {
      length |= std::uint32_t{static_cast<std::uint8_t>(buffer[16 + i])} << (8 * i);
    }
    // Not ours, or too long: parse_bundle() says which, from what arrived.
    if (length <= got || length > kMaxBundleMessageBytes) return arrived;
    want = length;
  }
}

}  // namespace

LibraryBundle receive_bundle(int unix_socket) {
  const std::string subject = describe_socket(unix_socket);
  Arrived arrived = receive_message(unix_socket, subject);
  std::vector<os::OwnedFd>& fds = arrived.fds;
  std::vector<detail::WireLibrary> wire =
      detail::parse_bundle(std::span<const std::byte>(arrived.bytes.get(), arrived.size), fds.size(), subject);
  LibraryBundle bundle;
  bundle.libraries_.reserve(wire.size());
  for (std::size_t i = 0; i < wire.size(); ++i) {
    detail::WireLibrary& w = wire[i];
    const std::string which = "library #" + std::to_string(i) + " '" + detail::printable(w.name) + "'";
    SealedImage image = [&] {
      try {
        return SealedImage::adopt(fds[i].get());  // the seals, checked here, by the receiver
      } catch (const Error& e) {
        refuse(subject, e.error(), which + ": " + e.what());
      }
    }();
    fds[i].release();  // the image owns it now
    if (image.size() != w.size) {
      refuse(subject, EPROTO, which + ": announced " + std::to_string(w.size) +
                                  " bytes, the fd has " + std::to_string(image.size()));
    }
    if (digest_of_image(image, "receiving bundle over", subject) != w.digest) {
      refuse(subject, EBADMSG, which + ": its bytes do not match the announced digest " + w.digest.hex());
    }
    bundle.libraries_.push_back({std::move(w.name), w.digest, std::move(w.dependencies), std::move(image)});
  }
  return bundle;
}

}  // namespace mapwright
