#include "frame_decoders.h"

#include <sched.h>
#include <signal.h>
#include <ucontext.h>

#include <cerrno>
#include <cstring>
#include <new>

#define ZSTD_STATIC_LINKING_ONLY  // ZSTD_initStaticDCtx, ZSTD_estimateDCtxSize (zstd 1.3+)
#include <zstd.h>

#include "os/os.h"

namespace mapwright::detail {
namespace {

// A decoder slot is held for one frame's decoding (well under a second); a thread that finds
// them all busy yields this many times before it reports EBUSY instead of waiting on.
constexpr unsigned kMaxWaits = 1000000;

std::uint64_t round_up(std::uint64_t value, std::uint64_t to) { return (value + to - 1) / to * to; }

}  // namespace

FrameDecoders::FrameDecoders(unsigned slots, std::uint64_t frame_bytes)
    : count_(slots == 0 ? 1 : slots), frame_bytes_(frame_bytes) {
  const std::uint64_t page = os::page_size();
  const std::uint64_t context = round_up(ZSTD_estimateDCtxSize(), page);
  const std::uint64_t buffer = round_up(frame_bytes, page);
  const std::uint64_t table = round_up(sizeof(Slot) * count_, page);
  const std::uint64_t stack = page + kStackBytes;  // a guard page, then the stack
  const std::uint64_t each = context + buffer + stack;
  mapping_length_ = table + count_ * each;
  if (os::reserve(mapping_length_, &mapping_) != 0) throw std::bad_alloc();
  if (os::protect(mapping_, mapping_length_, true) != 0) {
    (void)os::munmap(mapping_, mapping_length_);
    throw std::bad_alloc();
  }
  auto* base = static_cast<std::byte*>(mapping_);
  slots_ = reinterpret_cast<Slot*>(base);
  for (unsigned i = 0; i < count_; ++i) {
    Slot* slot = new (&slots_[i]) Slot;
    std::byte* at = base + table + i * each;
    slot->context = ZSTD_initStaticDCtx(at, context);
    slot->buffer = at + context;
    slot->stack = at + context + buffer + page;
    if (slot->context == nullptr || os::protect(slot->stack - page, page, false) != 0) {
      (void)os::munmap(mapping_, mapping_length_);
      throw std::bad_alloc();
    }
  }
  // Each function decode() calls, called once here: a program linked with lazy binding
  // resolves a PLT entry on its first call, and that resolver (which saves the vector
  // registers on the stack) must not run in the handler, where the stack may be a 4 KiB
  // sigaltstack. An empty input through the whole path (getcontext, sigfillset, makecontext,
  // swapcontext, zstd on the slot's stack) binds them all; a test that runs first in its
  // process caught the context functions missing here.
  Slot* first = &slots_[0];
  first->in = nullptr;
  first->in_size = 0;
  first->out_size = 0;
  switch_and_decode(first);
  (void)ZSTD_getErrorName(first->result);
  (void)ZSTD_isError(first->result);
  volatile std::size_t none = 0;  // a real call to memset, not an inlined store
  std::memset(first->buffer, 0, none);
  (void)::sched_yield();
}

FrameDecoders::~FrameDecoders() {
  if (mapping_ != nullptr) (void)os::munmap(mapping_, mapping_length_);
}

// Not instrumented by ASan or TSan: it runs inside the fault handler, possibly on a 4 KiB
// alternate stack (see os::fill_missing()). zstd itself is not instrumented either.
__attribute__((no_sanitize_address, no_sanitize_thread))
int FrameDecoders::decode(const CompressedFrames& frames, std::uint64_t index,
                          const std::byte** buffer, const char** reason) noexcept {
  if (frames.frame_bytes > frame_bytes_ || index >= frames.count) {
    *reason = "the frame is not one these decoders were made for";  // a caller's bug
    return EINVAL;
  }
  Slot* slot = nullptr;
  for (unsigned wait = 0; slot == nullptr; ++wait) {
    for (unsigned i = 0; i < count_; ++i) {
      if (!slots_[i].busy.load(std::memory_order_relaxed) &&
          !slots_[i].busy.exchange(true, std::memory_order_acquire)) {
        slot = &slots_[i];
        break;
      }
    }
    if (slot != nullptr) break;
    if (wait == kMaxWaits) {
      *reason = "every frame decoder stayed busy";
      return EBUSY;
    }
    (void)::sched_yield();
  }
  const FramePlace place = frame_place(frames, index);
  const std::uint64_t expected = place.length;
  // zstd on the slot's own stack, every signal blocked there as here.
  slot->in = frames.stored + place.stored_begin;
  slot->in_size = place.stored_end - place.stored_begin;
  slot->out_size = expected;
  switch_and_decode(slot);
  const std::size_t got = slot->result;
  if (ZSTD_isError(got) != 0 || got != expected) {
    slot->busy.store(false, std::memory_order_release);
    *reason = ZSTD_isError(got) != 0 ? ZSTD_getErrorName(got)
                                     : "a compressed frame decodes to fewer bytes than it should";
    return EBADMSG;
  }
  const std::uint64_t page = os::page_size();
  const std::uint64_t padded = (expected + page - 1) / page * page;
  std::memset(slot->buffer + expected, 0, padded - expected);
  *buffer = slot->buffer;
  return 0;
}

// getcontext() returns twice, as setjmp() does: kept in a function of its own, whose only
// local is its argument, so that no variable of decode() lives across it.
__attribute__((noinline, no_sanitize_address, no_sanitize_thread))
void FrameDecoders::switch_and_decode(Slot* slot) noexcept {
  (void)::getcontext(&slot->run);
  ::sigfillset(&slot->run.uc_sigmask);
  slot->run.uc_stack.ss_sp = slot->stack;
  slot->run.uc_stack.ss_size = kStackBytes;
  slot->run.uc_link = &slot->back;
  ::makecontext(&slot->run, reinterpret_cast<void (*)()>(&run_on_slot_stack), 2,
                static_cast<unsigned>(reinterpret_cast<std::uintptr_t>(slot)),
                static_cast<unsigned>(reinterpret_cast<std::uintptr_t>(slot) >> 32));
  (void)::swapcontext(&slot->back, &slot->run);
}

// Runs on a slot's stack (makecontext passes the slot's address as two ints) and returns to
// the slot's `back` context (uc_link).
__attribute__((no_sanitize_address, no_sanitize_thread))
void FrameDecoders::run_on_slot_stack(unsigned low, unsigned high) noexcept {
  auto* slot = reinterpret_cast<Slot*>(static_cast<std::uintptr_t>(low) |
                                       (static_cast<std::uintptr_t>(high) << 32));
  slot->result = ZSTD_decompressDCtx(static_cast<ZSTD_DCtx*>(slot->context), slot->buffer,
                                     slot->out_size, slot->in, slot->in_size);
}

void FrameDecoders::release(const std::byte* buffer) noexcept {
  for (unsigned i = 0; i < count_; ++i) {
    if (slots_[i].buffer == buffer) {
      slots_[i].busy.store(false, std::memory_order_release);
      return;
    }
  }
}

}  // namespace mapwright::detail
