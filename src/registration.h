// src/registration.h — an owner's place in the fault table, from construction to destruction.
//
// The one way src/ puts an owner into the range table the SIGBUS handler searches: the
// constructor inserts [begin, end) → owner, the destructor erases it, and erase() returns only
// when no handler can still be using the owner (invariant 4), so whatever the owner needs
// (the mapping, the fd) may be released right after. Declare the Registration AFTER the
// owner and the mapping it protects, so that it is destroyed first.
#pragma once

#include <cstddef>
#include <cstdint>

#include "fault_owner.h"

namespace mapwright::detail {

class Registration {
 public:
  Registration() noexcept = default;
  // Throws Error (EEXIST for an overlap, ENOMEM) naming `name`. Not async-signal-safe.
  Registration(std::uintptr_t begin, std::uintptr_t end, FaultOwner* owner, const char* name);
  Registration(Registration&& other) noexcept : begin_(other.begin_) { other.begin_ = 0; }
  Registration& operator=(Registration&& other) noexcept;
  Registration(const Registration&) = delete;
  Registration& operator=(const Registration&) = delete;
  ~Registration() { reset(); }

  // Erases the range now (waiting for handlers that still use it). Idempotent.
  // Not async-signal-safe.
  void reset() noexcept;
  bool registered() const noexcept { return begin_ != 0; }

 private:
  std::uintptr_t begin_ = 0;
};

// Throws the Error an owner's report describes (the same text the handler's one line would
// carry), for the ordinary-code verbs (commit(), grow()). Not async-signal-safe.
[[noreturn]] void throw_report(const FaultReport& report);
// Calls owner.commit() on [base + offset, base + offset + length) clipped to the first
// `span` bytes (nothing when the range starts past them), throwing the report's Error when
// it fails: the prefetch() of lazy images and lazy pool instances. Not async-signal-safe.
void commit_range(FaultOwner& owner, std::byte* base, std::uint64_t span, std::uint64_t offset,
                  std::uint64_t length);

}  // namespace mapwright::detail
