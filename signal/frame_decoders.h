// signal/frame_decoders.h — zstd frames decoded inside the fault handler: a fixed set of
// decompression contexts and frame buffers, made ahead, taken and given back with atomics.
//
// A compressed lazy source (lazy.h; a wrapper entry written with compression) is a run of
// independent zstd frames, each `frame_bytes` of the entry but the last. A touch of a missing
// page decodes the one frame that holds it into a free slot's buffer, and the fill copies the
// frame's pages from there (signal/lazy_fill.h). Two threads decode two frames at once, each
// in its own slot; a thread that finds every slot busy yields and tries again, a bounded
// number of times (the handler runs with every signal blocked, so no slot is held by a
// thread that left its handler by longjmp: a busy slot is being decoded into).
//
// Decoding allocates nothing: each context is a static zstd context (ZSTD_initStaticDCtx)
// in memory mapped at construction, decoding is single-pass into the slot's buffer (no window
// buffer), and zstd makes no system call. So decode() is async-signal-safe.
//
// Stack: zstd's decoder needs more stack than a 4 KiB sigaltstack leaves a handler (after the
// kernel's signal frame, some 860 bytes with AVX-512 state), so each slot has a stack of its
// own (kStackBytes, with a guard page below it) and decode() runs zstd there: swapcontext(3)
// to a context made on that stack with every signal blocked, and back. (swapcontext and
// makecontext are not on POSIX's async-signal-safe list; glibc's save and load registers and
// call rt_sigprocmask, which is.) The handler's own stack then only holds this switch.
#pragma once

#include <ucontext.h>

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace mapwright::detail {

// The stored bytes of a compressed source and its frame table: frame i is stored at
// [ends[i-1], ends[i]) of `stored` (from 0 for i = 0) and decodes to frame_bytes bytes, the
// last to the rest of `size`. Checked when it was made (the wrapper reader, lazy.cc): ends
// increase, the last is the stored size, there are ceil(size / frame_bytes) of them.
struct CompressedFrames {
  const std::byte* stored = nullptr;
  const std::uint64_t* ends = nullptr;
  std::uint64_t count = 0;
  std::uint64_t frame_bytes = 0;  // a multiple of the page size
  std::uint64_t size = 0;         // decoded bytes in all
};

// Frame `index` of `frames`: stored at [stored_begin, stored_end) of frames.stored, it decodes
// to bytes [first, first + length) of the source. Async-signal-safe.
struct FramePlace {
  std::uint64_t stored_begin = 0;
  std::uint64_t stored_end = 0;
  std::uint64_t first = 0;
  std::uint64_t length = 0;
};
inline FramePlace frame_place(const CompressedFrames& frames, std::uint64_t index) noexcept {
  FramePlace place;
  place.stored_begin = index == 0 ? 0 : frames.ends[index - 1];
  place.stored_end = frames.ends[index];
  place.first = index * frames.frame_bytes;
  place.length = frames.size - place.first < frames.frame_bytes ? frames.size - place.first
                                                                : frames.frame_bytes;
  return place;
}

class FrameDecoders {
 public:
  // `slots` contexts and buffers of `frame_bytes` each (mapped, so untouched buffers cost no
  // memory). Throws std::bad_alloc when the mapping is refused. Not async-signal-safe.
  FrameDecoders(unsigned slots, std::uint64_t frame_bytes);
  ~FrameDecoders();
  FrameDecoders(const FrameDecoders&) = delete;
  FrameDecoders& operator=(const FrameDecoders&) = delete;

  // Takes a free slot and decodes frame `index` of `frames` into its buffer, zero-filled past
  // the frame's end to a whole page; *buffer gets the buffer (give it back with release()).
  // Returns 0, or an errno with nothing held: EBADMSG for a frame that zstd refuses or that
  // decodes to another size (*reason says which: a static text), EBUSY when no slot came free
  // after many tries, EINVAL for frames larger than the buffers or an index past the last
  // frame (a caller's bug, refused rather than overrun). Async-signal-safe.
  int decode(const CompressedFrames& frames, std::uint64_t index, const std::byte** buffer,
             const char** reason) noexcept;
  // Gives back the slot whose buffer decode() returned. Async-signal-safe.
  void release(const std::byte* buffer) noexcept;

 private:
  struct Slot {
    std::atomic<bool> busy{false};
    void* context = nullptr;    // a ZSTD_DCtx, static
    std::byte* buffer = nullptr;
    std::byte* stack = nullptr;  // kStackBytes, a guard page below
    // What the switch to the slot's stack passes and returns (written and read by the thread
    // that holds the slot).
    const std::byte* in = nullptr;
    std::size_t in_size = 0;
    std::size_t out_size = 0;
    std::size_t result = 0;
    ucontext_t run;   // zstd on the slot's stack
    ucontext_t back;  // the handler, while zstd runs
  };
  static constexpr std::uint64_t kStackBytes = 128 << 10;
  static void switch_and_decode(Slot* slot) noexcept;
  static void run_on_slot_stack(unsigned low, unsigned high) noexcept;
  unsigned count_ = 0;
  Slot* slots_ = nullptr;
  std::uint64_t frame_bytes_ = 0;
  void* mapping_ = nullptr;
  std::uint64_t mapping_length_ = 0;
};

}  // namespace mapwright::detail
