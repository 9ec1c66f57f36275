// src/entry_image.h — a wrapper entry's bytes gathered into a sealed memfd, for the reader's
// loads of entries with gaps between chunks and for LibraryBundle. Not part of the public API.
#pragma once

#include <string>

#include "frame_decoders.h"
#include "mapwright/sealed_image.h"
#include "mapwright/wrapper.h"

namespace mapwright::detail {

// A compressed entry's frames, for decode_frames() (zstd_frames.h). Async-signal-safe.
CompressedFrames frames_of(const WrapperEntry& entry) noexcept;

// Copies `entry`'s chunks (decoded, if it is compressed), in order, into a new memfd named
// `memfd_name` and seals it. Throws Error (memfd_create, growth) as Region::memfd does, and
// Error(EBADMSG) for a frame that does not decode. Not async-signal-safe.
SealedImage gather_entry(const WrapperEntry& entry, const std::string& memfd_name);

}  // namespace mapwright::detail
