#include "zstd_frames.h"

#include <zstd.h>

#include <algorithm>
#include <cerrno>
#include <new>

#include "mapwright/error.h"

namespace mapwright::detail {

namespace {
std::string str(std::uint64_t v) { return std::to_string(v); }
}  // namespace

std::string frame_size_problem(std::uint64_t frame_bytes) {
  if (frame_bytes % 4096 != 0 || frame_bytes < kMinFrameBytes || frame_bytes > kMaxFrameBytes) {
    return "frame size " + str(frame_bytes) + " is not a multiple of 4096 from " +
           str(kMinFrameBytes) + " to " + str(kMaxFrameBytes);
  }
  return {};
}

std::string frame_table_problem(std::uint64_t size, std::uint64_t frame_bytes,
                                std::span<const std::uint64_t> ends, std::uint64_t stored) {
  if (std::string why = frame_size_problem(frame_bytes); !why.empty()) return "its " + why;
  const std::uint64_t count = size / frame_bytes + (size % frame_bytes != 0 ? 1 : 0);
  if (ends.size() != count) {
    return "it has " + str(ends.size()) + " frames, but " + str(size) + " bytes in frames of " +
           str(frame_bytes) + " make " + str(count);
  }
  std::uint64_t before = 0;
  for (std::size_t i = 0; i < ends.size(); ++i) {
    if (ends[i] <= before) {
      return "frame " + str(i) + " ends at stored byte " + str(ends[i]) + ", not after " +
             str(before);
    }
    before = ends[i];
  }
  if (before != stored) {
    return "its frames end at stored byte " + str(before) + " but its chunks hold " + str(stored);
  }
  return {};
}

struct FrameEncoder::State {
  ZSTD_CCtx* context = nullptr;
  std::unique_ptr<std::byte[]> out;
  std::size_t capacity = 0;
  ~State() { ZSTD_freeCCtx(context); }
};

FrameEncoder::FrameEncoder(int level, std::uint64_t frame_bytes) : state_(std::make_unique<State>()) {
  if (level < 0 || level > ZSTD_maxCLevel()) {
    throw Error(EINVAL, "compressing", "zstd",
                "(level " + std::to_string(level) + " is not from 0 to " +
                    std::to_string(ZSTD_maxCLevel()) + ")", Error::DetailIsCause{});
  }
  state_->context = ZSTD_createCCtx();
  if (state_->context == nullptr) throw std::bad_alloc();
  (void)ZSTD_CCtx_setParameter(state_->context, ZSTD_c_compressionLevel, level);
  (void)ZSTD_CCtx_setParameter(state_->context, ZSTD_c_contentSizeFlag, 1);
  // Each frame carries a checksum of its bytes (4 bytes, XXH64), which decoding checks: a
  // damaged frame is refused when it is decoded (a lazy fill fails) rather than handing out
  // wrong bytes until verify() runs. zstd's structure alone does not catch a flipped literal.
  (void)ZSTD_CCtx_setParameter(state_->context, ZSTD_c_checksumFlag, 1);
  state_->capacity = ZSTD_compressBound(static_cast<std::size_t>(frame_bytes));
  state_->out.reset(new std::byte[state_->capacity]);
}

FrameEncoder::~FrameEncoder() = default;

std::span<const std::byte> FrameEncoder::encode(std::span<const std::byte> plain) {
  const std::size_t got = ZSTD_compress2(state_->context, state_->out.get(), state_->capacity,
                                         plain.data(), plain.size());
  if (ZSTD_isError(got) != 0) {
    throw Error(ENOMEM, "compressing", "zstd", std::string("(") + ZSTD_getErrorName(got) + ")",
                Error::DetailIsCause{});
  }
  return {state_->out.get(), got};
}

FrameDecoder::FrameDecoder() : context_(ZSTD_createDCtx()) {
  if (context_ == nullptr) throw std::bad_alloc();
}

FrameDecoder::~FrameDecoder() { ZSTD_freeDCtx(static_cast<ZSTD_DCtx*>(context_)); }

std::string FrameDecoder::decode(std::span<const std::byte> frame, std::span<std::byte> out) {
  const std::size_t got = ZSTD_decompressDCtx(static_cast<ZSTD_DCtx*>(context_), out.data(),
                                              out.size(), frame.data(), frame.size());
  if (ZSTD_isError(got) != 0) return ZSTD_getErrorName(got);
  if (got != out.size()) {
    return "it decodes to " + std::to_string(got) + " bytes, not " + std::to_string(out.size());
  }
  return {};
}

std::string decode_frames(const CompressedFrames& frames, std::byte* out,
                          const std::function<void(std::span<const std::byte>, std::uint64_t)>& take) {
  if (frames.count == 0) return {};
  FrameDecoder decoder;
  std::vector<std::byte> reused;
  if (out == nullptr) reused.resize(static_cast<std::size_t>(std::min(frames.frame_bytes, frames.size)));
  for (std::uint64_t i = 0; i < frames.count; ++i) {
    const FramePlace place = frame_place(frames, i);
    const std::span<std::byte> plain(out != nullptr ? out + place.first : reused.data(),
                                     static_cast<std::size_t>(place.length));
    const std::span<const std::byte> stored(frames.stored + place.stored_begin,
                                            static_cast<std::size_t>(place.stored_end - place.stored_begin));
    if (std::string why = decoder.decode(stored, plain); !why.empty()) {
      return "frame " + str(i) + " (bytes " + str(place.first) + " to " +
             str(place.first + place.length) + ") does not decode: " + why;
    }
    if (take) take(plain, place.first);
  }
  return {};
}

}  // namespace mapwright::detail
