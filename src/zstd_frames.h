// src/zstd_frames.h — compressed wrapper entries: an entry's bytes cut in frames of a fixed
// size, each compressed on its own as one zstd frame (Debian's libzstd), so that any frame can
// be decoded without the others. The writer encodes; verify(), extract, image() and the eager
// path decode here; the fault handler decodes with signal/frame_decoders.h. Not part of the
// public API (wrapper.h: EntryCompression, WrapperCompression).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "frame_decoders.h"  // CompressedFrames, frame_place

namespace mapwright::detail {

// The frame sizes a writer accepts and a reader trusts: multiples of 4096 in this range.
inline constexpr std::uint64_t kMinFrameBytes = 4096;
inline constexpr std::uint64_t kMaxFrameBytes = 64ull << 20;

// Why a frame size is not one a writer accepts or a reader trusts (a multiple of 4096 in
// [kMinFrameBytes, kMaxFrameBytes]), or "".
std::string frame_size_problem(std::uint64_t frame_bytes);

// Why a frame table cannot describe `size` bytes stored in `stored` bytes, or "" when it
// can: frame_bytes a multiple of 4096 in [kMinFrameBytes, kMaxFrameBytes]; ceil(size /
// frame_bytes) frames, each ending after the one before and after at least one byte (a zstd
// frame is never empty), the last at `stored`.
std::string frame_table_problem(std::uint64_t size, std::uint64_t frame_bytes,
                                std::span<const std::uint64_t> ends, std::uint64_t stored);

// One frame at a time, with one compression context. Not async-signal-safe.
class FrameEncoder {
 public:
  // zstd level (1..19; 0: zstd's default, 3). Throws Error(EINVAL) for another level.
  FrameEncoder(int level, std::uint64_t frame_bytes);
  ~FrameEncoder();
  FrameEncoder(const FrameEncoder&) = delete;
  FrameEncoder& operator=(const FrameEncoder&) = delete;

  // `plain` (at most frame_bytes) as one zstd frame that records its size; valid until the
  // next call. Throws Error(ENOMEM) if zstd fails.
  std::span<const std::byte> encode(std::span<const std::byte> plain);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// Decodes frames with one context. Not async-signal-safe.
class FrameDecoder {
 public:
  FrameDecoder();
  ~FrameDecoder();
  FrameDecoder(const FrameDecoder&) = delete;
  FrameDecoder& operator=(const FrameDecoder&) = delete;

  // Decodes `frame` into exactly out.size() bytes. Returns "" or why not (zstd's error text,
  // or "it decodes to N bytes, not M").
  std::string decode(std::span<const std::byte> frame, std::span<std::byte> out);

 private:
  void* context_;
};

// Decodes every frame of `frames` in order: into `out` at each frame's place (`out` holds
// frames.size bytes), or, when `out` is null, into a buffer reused for the next frame; then
// hands the frame's bytes to take(bytes, offset in the source) if there is one. Returns "" or
// why a frame does not decode ("frame 3 (bytes ... to ...) does not decode: ...").
std::string decode_frames(const CompressedFrames& frames, std::byte* out,
                          const std::function<void(std::span<const std::byte>, std::uint64_t)>& take);

}  // namespace mapwright::detail
