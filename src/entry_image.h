// src/entry_image.h — a wrapper entry's bytes gathered into a sealed memfd, for the reader's
// loads of entries with gaps between chunks and for LibraryBundle. Not part of the public API.
#pragma once

#include <string>

#include "mapwright/sealed_image.h"
#include "mapwright/wrapper.h"

namespace mapwright::detail {

// Copies `entry`'s chunks, in order, into a new memfd named `memfd_name` and seals it. Throws
// Error (memfd_create, growth) as Region::memfd does. Not async-signal-safe.
SealedImage gather_entry(const WrapperEntry& entry, const std::string& memfd_name);

}  // namespace mapwright::detail
