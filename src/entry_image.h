// src/entry_image.h — a wrapper entry's bytes gathered into a sealed memfd, for the reader's
// loads of entries with gaps between chunks and for LibraryBundle. Not part of the public API.
#pragma once

#include <functional>
#include <span>
#include <string>

#include "mapwright/sealed_image.h"
#include "mapwright/wrapper.h"

namespace mapwright::detail {

// Decodes a compressed entry's frames in order, handing each to take(bytes, offset in the
// entry) (a buffer reused for the next frame). Returns "" or why a frame does not decode
// ("frame 3 (bytes ... to ...) does not decode: ..."). Not async-signal-safe.
std::string decode_frames(const WrapperEntry& entry,
                          const std::function<void(std::span<const std::byte>, std::uint64_t)>& take);

// Copies `entry`'s chunks (decoded, if it is compressed), in order, into a new memfd named `memfd_name` and seals it. Throws
// Error (memfd_create, growth) as Region::memfd does. Not async-signal-safe.
SealedImage gather_entry(const WrapperEntry& entry, const std::string& memfd_name);

}  // namespace mapwright::detail
