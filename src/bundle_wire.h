// src/bundle_wire.h — the message of send_bundle()/receive_bundle() (share.h has its
// layout), encoded and parsed apart from the sockets: the parser is what the fuzz target
// (tests/fuzz/bundle_fuzz.cc) feeds, and tests send malformed messages with
// send_bundle_message().
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "mapwright/wrapper.h"

namespace mapwright::detail {

inline constexpr std::uint64_t kBundleMagic = 0x4c444e42'574d4150ull;  // "PAMWBNDL"
inline constexpr std::size_t kBundleHeaderBytes = 24;
inline constexpr std::size_t kBundleRecordBytes = 32;

// What the message says about one library (its fd travels beside it).
struct WireLibrary {
  std::string name;
  Digest digest;
  std::uint64_t size = 0;
  std::vector<std::uint32_t> dependencies;
  friend bool operator==(const WireLibrary&, const WireLibrary&) = default;
};

// The message for `libraries`, as is: no limit or rule is checked (tests make bad ones).
std::vector<std::byte> encode_bundle(const std::vector<WireLibrary>& libraries,
                                     std::uint32_t version = 1);

// Parses an untrusted message that arrived with `fd_count` fds, and checks every rule of
// share.h ("What the receiver checks") that the message alone can break: Error(EPROTO)
// for the framing (magic, version, announced length, counts, lengths, fd count), and
// Error(EBADMSG) for names and dependencies; `subject` names the socket in messages. Reads
// nothing outside `message`. Not async-signal-safe.
std::vector<WireLibrary> parse_bundle(std::span<const std::byte> message, std::size_t fd_count,
                                      const std::string& subject);

// Sends `message` with `fds` attached, as send_bundle() does; tests use it to send messages
// and fds that break the rules. Throws Error. Not async-signal-safe.
void send_bundle_message(int unix_socket, std::span<const std::byte> message,
                         std::span<const int> fds);

}  // namespace mapwright::detail
