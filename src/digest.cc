#include "digest.h"

// xxHash used header-only: its functions are compiled into this file, nothing is linked.
#define XXH_INLINE_ALL
#include <xxhash.h>

#include <cstring>

namespace mapwright {

const char* to_string(EntryKind kind) noexcept {
  switch (kind) {
    case EntryKind::kSharedLibrary: return "library";
    case EntryKind::kData: return "data";
  }
  return "unknown";
}

namespace {

Digest from_hash(XXH128_hash_t hash) noexcept {
  XXH128_canonical_t canonical;
  XXH128_canonicalFromHash(&canonical, hash);
  Digest digest;
  static_assert(sizeof canonical.digest == sizeof digest.bytes);
  std::memcpy(digest.bytes.data(), canonical.digest, sizeof canonical.digest);
  return digest;
}

}  // namespace

std::string Digest::hex() const {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string text;
  text.reserve(bytes.size() * 2);
  for (const std::byte byte : bytes) {
    const auto value = static_cast<unsigned>(byte);
    text += kDigits[value >> 4];
    text += kDigits[value & 15];
  }
  return text;
}

Digest digest_of(std::span<const std::byte> bytes) noexcept {
  return from_hash(XXH3_128bits(bytes.data(), bytes.size()));
}

namespace detail {

struct DigestStream::State {
  XXH3_state_t xxh;
};

DigestStream::DigestStream() : state_(std::make_unique<State>()) {
  XXH3_128bits_reset(&state_->xxh);
}

DigestStream::~DigestStream() = default;

void DigestStream::update(const std::byte* data, std::size_t size) noexcept {
  XXH3_128bits_update(&state_->xxh, data, size);
}

Digest DigestStream::finish() const noexcept {
  return from_hash(XXH3_128bits_digest(&state_->xxh));
}

}  // namespace detail
}  // namespace mapwright
