// mapwright/share.h — a wrapper's libraries as sealed images, handed to another process (a
// sandbox) in one message, and loaded there with no copy, sharing the sender's pages.
//
// The story. A runtime opens its wrapper once and makes a LibraryBundle of it: each library
// entry copied ONCE into a memfd of its own (glibc cannot dlopen() at an offset, so one
// memfd per library), sealed, and hashed again over the sealed bytes against the entry's
// digest. send_bundle() hands every memfd, with the names, digests, sizes and dependencies,
// to a sandboxed process in one sendmsg(); receive_bundle() there trusts nothing and checks
// it all itself; LibraryBundle::load() dlopen()s each memfd as /proc/self/fd/N (loader.h,
// step 1): nothing is copied, and every process that loads the bundle maps the same page-
// cache pages — N sandboxes cost one copy of each library, not N (measured below).
//
// Measured (kernel 6.18, 2 shared vCPUs; share_sandbox_test and share_bench, release build):
//   * eight sandboxed children that loaded the ~8 MB fixture from one bundle and read all of
//     it: Rss 8212 KiB each (65696 KiB in all), Pss 1032 KiB each — 8256 KiB in all for an
//     8207 KiB library, one copy (share_sandbox_test EightSandboxesLoadingThe8MBLibrary...);
//   * receive-to-first-call in a fresh child (build/release/tests/bench/share_bench, medians
//     of 3 runs): 3.2-3.5 ms for the 8 MB library against 14.7-18.1 ms when the child is
//     sent the wrapper's fd and loads from it (a kernel copy per child): 4.3-5.7x faster;
//     for two ~16 KB libraries 0.83-0.88 ms against 0.97-0.99 ms (1.1-1.2x). Of the 3.3 ms,
//     about 1 ms is the receiver's own XXH3 of the 8 MiB it is given.
//
//   sender                                        receiver (no file system, no O_CREAT)
//   Wrapper ─LibraryBundle::from_wrapper()─► memfds ─send_bundle()─► receive_bundle()
//            copy once, seal, hash                   one sendmsg,    check everything
//                                                    SCM_RIGHTS      └► load(): dlopen
//                                                                       /proc/self/fd/N
//
// The message (all integers little-endian; version 1):
//
//   header   u64 magic "PAMWBNDL"  u32 version (1)  u32 count (libraries = fds attached)
//            u32 message bytes (all of it, header included)  u32 zero
//   count ×  u64 size  u8[16] digest (XXH3-128, canonical)  u32 name bytes
//            u32 dependency count
//   count ×  the name's bytes, then its dependencies as u32 indices into the bundle
//
// with the count memfds attached as one SCM_RIGHTS control message, in bundle order. A
// dependency is an index, not a name, and must be SMALLER than its dependent's: the bundle's
// order is itself the load order, so "dependencies before dependents" and "no cycle" are one
// check the receiver can make without building a graph.
//
// What the receiver checks, before it returns a bundle (anything else: every fd that arrived
// is closed, and Error, nothing loaded):
//   * the message: the magic number, the version, its announced length against what arrived
//     (truncated or longer: EPROTO; a datagram or seqpacket message cut by the kernel,
//     MSG_TRUNC: EPROTO), every count and length inside it against the bytes that remain;
//     the control data (MSG_CTRUNC: more fds than a message may carry, EPROTO); the number
//     of fds against the count (EPROTO);
//   * the libraries: names non-empty, at most kMaxEntryNameBytes, no NUL byte, unique;
//     dependencies earlier in the bundle, none twice (EBADMSG);
//   * every fd: a memfd carrying all four seals (SealedImage::adopt: EPERM, EINVAL), its
//     size the announced one (EPROTO), and the XXH3-128 of its sealed bytes, computed by the
//     receiver itself, the announced digest (EBADMSG). Sealed, the bytes cannot change after
//     this check (invariant 9).
//
// Limits: at most kMaxBundleLibraries libraries (Linux passes at most 253 fds per message,
// SCM_MAX_FD), and a message of at most kMaxBundleMessageBytes (names and dependency lists
// of some 250 libraries with 400-byte names); a larger bundle is refused by send_bundle()
// with E2BIG, before anything is sent — split it into several bundles.
//
// Sockets: a connected Unix-domain socket of any type. SOCK_SEQPACKET is the one to prefer:
// a message arrives whole or not at all, its length is known, and it cannot run into the
// next one. On SOCK_STREAM the receiver reads the header (the fds arrive with its first
// byte), then exactly the announced length, so bundles sent back to back arrive one by one;
// but a peer that announces more than it sends and keeps the socket open makes
// receive_bundle() wait (set SO_RCVTIMEO to bound it: EAGAIN). On SOCK_DGRAM
// (socketpair) a message larger than the socket's buffer cannot be sent at all (EMSGSIZE).
//
// Loading (load()): each library in bundle order, so that a dependent finds its dependencies
// already loaded and matched by SONAME (loader.h: no file is searched for). In the default
// namespace (LoadOptions::Namespace::kDefault) the program's own libraries serve the rest
// (libc...): that is what a sandbox with no file system needs — a new namespace
// (Namespace::kNew) loads its own libc from disk, which a sandbox does not have.
//
// Hazards, plainly:
//   * The digest is a check against damage, not a signature (wrapper.h, "What the digest
//     is"): a receiver that does not trust its sender's code should not load the sender's
//     libraries at all. What the receiver's checks give is that what it loads cannot change
//     under it, and that a malformed message is refused without crashing, leaking an fd or
//     loading anything.
//   * Constructors of the libraries run inside load() (loader.h).
//   * Each fd a bundle holds costs one fd in each process; a loaded Library holds a second
//     (its dup, loader.h) while it lives.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "mapwright/loader.h"
#include "mapwright/sealed_image.h"
#include "mapwright/wrapper.h"

namespace mapwright {

// At most this many libraries in one bundle: SCM_MAX_FD, the fds one message can carry.
inline constexpr std::size_t kMaxBundleLibraries = 253;
// At most this many bytes in a bundle's message (under a seqpacket socket's default buffer,
// net.core.wmem_default, 212992 bytes).
inline constexpr std::size_t kMaxBundleMessageBytes = 128u << 10;
// The wire format's version (the message's layout is at the top of this file).
inline constexpr std::uint32_t kBundleFormatVersion = 1;

// One library of a bundle: a sealed memfd holding exactly its bytes, their digest, and the
// indices (into the bundle, all smaller than its own) of the libraries it needs loaded first.
struct BundledLibrary {
  std::string name;
  Digest digest;
  std::vector<std::uint32_t> dependencies;
  SealedImage image;
};

// Libraries as sealed images, in an order where every library comes after its dependencies.
// Copies share the images (SealedImage is a shared fd).
class LibraryBundle {
 public:
  // Every library entry of `wrapper`, each after its dependencies (depth first, in file
  // order, as Wrapper::load_all() loads them). Each entry is copied once into a new memfd
  // (chunk by chunk: files over 4 GiB too), sealed, and its sealed bytes hashed and compared
  // with the entry's digest: a mismatch is Error(EBADMSG) naming the entry (the file changed
  // after Wrapper::open, or was damaged), and nothing is kept. An empty library entry is
  // Error(EINVAL); more than kMaxBundleLibraries libraries is Error(E2BIG). A wrapper without
  // libraries gives an empty bundle. Data entries are not included.
  static LibraryBundle from_wrapper(const Wrapper& wrapper);
  // Only `roots` (library entry names) and what they depend on, each once, dependencies
  // first. An unknown name is Error(ENOENT); a data entry Error(EINVAL).
  static LibraryBundle from_wrapper(const Wrapper& wrapper, const std::vector<std::string>& roots);

  // In load order: dependencies first.
  const std::vector<BundledLibrary>& libraries() const noexcept { return libraries_; }
  std::size_t size() const noexcept { return libraries_.size(); }
  bool empty() const noexcept { return libraries_.empty(); }
  // The library called `name`, or nullptr.
  const BundledLibrary* find(std::string_view name) const noexcept;

  // dlopen()s every library, in bundle order, from its sealed memfd (loader.h, step 1: no
  // copy, nothing written anywhere). options.name, if set, names the set in messages
  // ("<name>:<library>"; default "bundle:<library>"). With options.link_namespace == kNew all
  // of them go into ONE new namespace, as Wrapper::load_all() does (and need a file system
  // for libc there); the default namespace is what a sandbox wants (top of this file).
  // Errors are load_library()'s: the first failure unloads what this call loaded and throws.
  LoadedLibraries load(LoadOptions options = {}) const;

 private:
  friend LibraryBundle receive_bundle(int unix_socket);
  std::vector<BundledLibrary> libraries_;
};

// Sends `bundle` over the connected Unix-domain socket `unix_socket` in one sendmsg(): the
// message at the top of this file, with every image's fd attached (SCM_RIGHTS). The bundle
// stays valid here. Error E2BIG for a bundle over the limits (nothing sent); EPIPE,
// ECONNRESET, EMSGSIZE... from sendmsg. An empty bundle is sent as a message with no fds.
// Not async-signal-safe.
void send_bundle(int unix_socket, const LibraryBundle& bundle);

// Receives one bundle sent by send_bundle() and checks everything listed at the top of this
// file before it returns; the fds arrive close-on-exec. Refusals are Error: ECONNRESET when
// the peer closed the connection before a message; EPROTO for a malformed or truncated
// message, wrong fd count or truncated control data; EBADMSG for bad names, dependencies or
// a digest that does not match; EPERM/EINVAL for an fd that is not a sealed memfd. On every
// refusal every fd that arrived is closed. Not async-signal-safe.
LibraryBundle receive_bundle(int unix_socket);

}  // namespace mapwright
