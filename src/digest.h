// src/digest.h — the wrapper digest (XXH3-128) computed over pieces, for the writer and the
// reader. Not part of the public API: wrapper.h has Digest and digest_of().
#pragma once

#include <cstddef>
#include <memory>

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

}  // namespace mapwright::detail
