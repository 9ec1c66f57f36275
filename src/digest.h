// src/digest.h — the wrapper digest (XXH3-128) computed over pieces, for the writer and the
// reader. Not part of the public API: wrapper.h has Digest and digest_of().
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <thread>

#include "mapwright/wrapper.h"

namespace mapwright::detail {

// Feeds bytes in any number of pieces; finish() gives the same digest as digest_of() over
// their concatenation. Not async-signal-safe (allocates its state once, at construction).
class DigestStream {
 public:
  DigestStream();
  ~DigestStream();
  DigestStream(const DigestStream&) = delete;
  DigestStream& operator=(const DigestStream&) = delete;

  void update(const std::byte* data, std::size_t size) noexcept;
  Digest finish() const noexcept;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// A DigestStream fed on a second thread, so that hashing one piece overlaps producing the
// next (a copy into the wrapper, say). Pieces are hashed in the order submitted; each must
// stay readable and unchanged until finish(). Before hashing a piece the worker maps it in
// one call (MADV_POPULATE_READ), cheaper than a page fault per 64 KiB. With threaded ==
// false, submit() hashes at once on the caller's thread. `after`, if set, runs after each
// piece is hashed, on the same thread (the writer starts the piece's write-back there, and
// drops the pages from its page tables, off the copying thread). At most kMaxQueuedBytes
// wait: submit() blocks while that much does, so a producer faster than the hash cannot run
// ahead and keep an unbounded part of the file mapped. Without finish(), the destructor
// abandons what is queued and joins the worker. Not async-signal-safe.
class DigestPipeline {
 public:
  using After = std::function<void(std::span<const std::byte>)>;
  static constexpr std::size_t kMaxQueuedBytes = 16u << 20;
  explicit DigestPipeline(bool threaded, After after = {});
  ~DigestPipeline();
  DigestPipeline(const DigestPipeline&) = delete;
  DigestPipeline& operator=(const DigestPipeline&) = delete;

  void submit(const std::byte* data, std::size_t size);
  // Waits for every submitted piece to be hashed.
  Digest finish();

 private:
  void work();
  void hash_piece(std::span<const std::byte> piece);

  DigestStream stream_;
  After after_;
  std::mutex mutex_;
  std::condition_variable ready_;   // a piece was queued, or the queue closed
  std::condition_variable space_;   // a piece left the queue
  std::deque<std::span<const std::byte>> queue_;  // guarded by mutex_
  std::size_t queued_bytes_ = 0;                  // guarded by mutex_
  bool closed_ = false;                           // guarded by mutex_
  std::thread worker_;                            // not joinable when not threaded
};

}  // namespace mapwright::detail
