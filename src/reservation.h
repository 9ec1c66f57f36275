// src/reservation.h — address space, and nothing else: a range that never moves for the
// reservation's lifetime, with a guard zone after it.
//
//     base()                                  base() + length()        + guard
//     ├── what the user of the reservation gets ─┼── guard: reserved, never backed ──┤
//
// Two ways to make one:
//   * anonymous(): PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE — a touch is a
//     SIGSEGV until something is mapped into it (map_file()); for owners that map parts of a
//     file as they commit them (DownwardGrowth, a copy-on-write slot);
//   * over_file(): the whole range MAP_SHARED | MAP_NORESERVE over an fd from offset 0 — pages
//     past the file's end raise SIGBUS (BUS_ADRERR), which is what an upward growth owner
//     resolves (Region).
// Either may ask for a preferred address: MAP_FIXED_NOREPLACE, which fails with EEXIST when
// any page of the range is taken (never silently moved, never replacing a mapping).
//
// The ways the base address can change: none. remap_*() replace the pages in place
// (MAP_FIXED over our own range); release_keeping() hands a prefix to someone else.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace mapwright::detail {

class Reservation {
 public:
  Reservation() noexcept = default;
  // Throws Error ("reserving address space for region '<name>'"), naming RLIMIT_AS when it
  // is what refused, and `option` as what to lower (null: only `ulimit -v` to raise). `at`
  // (optional) is the preferred base: page-aligned, EEXIST if taken.
  // Not async-signal-safe, nor is anything here.
  static Reservation anonymous(std::uint64_t length, std::uint64_t guard, const std::string& name,
                               void* at = nullptr, const char* option = "RegionOptions::capacity");
  static Reservation over_file(int fd, std::uint64_t length, std::uint64_t guard,
                               const std::string& name, void* at = nullptr);

  // How much to reserve when the user did not say: `preferred`, or a quarter of the address
  // space RLIMIT_AS leaves free (less `guard`), whichever is less, rounded down to a page, so
  // that a process under `ulimit -v` can still make several reservations. Throws Error
  // (ENOMEM, naming RLIMIT_AS) when not even a page is left.
  static std::uint64_t automatic_length(std::uint64_t preferred, std::uint64_t guard,
                                        const std::string& name);

  Reservation(Reservation&& other) noexcept;
  Reservation& operator=(Reservation&& other) noexcept;
  Reservation(const Reservation&) = delete;
  Reservation& operator=(const Reservation&) = delete;
  ~Reservation();  // unmaps everything still held

  std::byte* base() const noexcept { return base_; }
  std::uint64_t length() const noexcept { return length_; }
  std::uint64_t mapped() const noexcept { return length_ + guard_; }  // with the guard

  // Maps [offset, offset + length) of `fd` read-write MAP_SHARED at base() + offset.
  // Returns 0 or the errno.
  int map_file(int fd, std::uint64_t offset, std::uint64_t length) noexcept;
  // The whole range, in place: a read-only MAP_PRIVATE view of `fd` (no shared writable
  // mapping of it remains), and back. Return 0 or the errno.
  int remap_private_readonly(int fd) noexcept;
  int remap_shared_writable(int fd) noexcept;
  // Unmaps all but [base(), base() + keep) (keep rounded up to a page) and gives that up:
  // the caller owns it now. Returns base(), or null if keep is 0 (all unmapped).
  std::byte* release_keeping(std::uint64_t keep) noexcept;

 private:
  std::byte* base_ = nullptr;
  std::uint64_t length_ = 0;
  std::uint64_t guard_ = 0;
};

}  // namespace mapwright::detail
