#include "digest.h"

// xxHash used header-only: its functions are compiled into this file, nothing is linked.
#define XXH_INLINE_ALL
#include <xxhash.h>

#include <sys/mman.h>

#include <cstdint>
#include <cstring>
#include <utility>

#include "os/os.h"


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

DigestPipeline::DigestPipeline(bool threaded, After after) : after_(std::move(after)) {
  if (threaded) worker_ = std::thread([this] { work(); });
}

DigestPipeline::~DigestPipeline() {
  if (!worker_.joinable()) return;
  {
    const std::lock_guard lock(mutex_);
    queue_.clear();
    queued_bytes_ = 0;
    closed_ = true;
  }
  ready_.notify_one();
  worker_.join();
}

void DigestPipeline::hash_piece(std::span<const std::byte> piece) {
  // Whole pages only; a failure (an old kernel, memory that is not a mapping) changes nothing
  // but the speed.
  const std::uint64_t page = os::page_size();
  const auto first = reinterpret_cast<std::uintptr_t>(piece.data()) / page * page;
  const auto end = reinterpret_cast<std::uintptr_t>(piece.data() + piece.size());
  if (piece.size() >= page) {
    (void)os::madvise(reinterpret_cast<void*>(first), end - first, os::kMadvPopulateRead);
  }
  stream_.update(piece.data(), piece.size());
  if (after_) after_(piece);
}

void DigestPipeline::submit(const std::byte* data, std::size_t size) {
  if (!worker_.joinable()) {
    hash_piece({data, size});
    return;
  }
  {
    std::unique_lock lock(mutex_);
    space_.wait(lock, [this] { return queued_bytes_ < kMaxQueuedBytes; });
    queue_.emplace_back(data, size);
    queued_bytes_ += size;
  }
  ready_.notify_one();
}

void DigestPipeline::work() {
  std::unique_lock lock(mutex_);
  for (;;) {
    ready_.wait(lock, [this] { return closed_ || !queue_.empty(); });
    if (queue_.empty()) return;  // closed, and all done
    const std::span<const std::byte> piece = queue_.front();
    queue_.pop_front();
    queued_bytes_ -= piece.size();
    lock.unlock();
    space_.notify_one();
    hash_piece(piece);
    lock.lock();
  }
}

Digest DigestPipeline::finish() {
  if (worker_.joinable()) {
    {
      const std::lock_guard lock(mutex_);
      closed_ = true;
    }
    ready_.notify_one();
    worker_.join();
  }
  return stream_.finish();
}

}  // namespace detail
}  // namespace mapwright
