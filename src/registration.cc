#include "registration.h"

#include <cerrno>
#include <new>
#include <stdexcept>
#include <utility>

#include "mapwright/error.h"
#include "range_table.h"
#include "recovery.h"

namespace mapwright::detail {

Registration::Registration(std::uintptr_t begin, std::uintptr_t end, FaultOwner* owner,
                           const char* name) {
  try {
    fault_table().insert(begin, end, owner);
  } catch (const std::invalid_argument& e) {
    throw Error(EEXIST, "registering region", name, std::string("(") + e.what() + ")");
  } catch (const std::bad_alloc&) {
    throw Error(ENOMEM, "registering region", name, "(the range table could not grow)");
  }
  begin_ = begin;
}

Registration& Registration::operator=(Registration&& other) noexcept {
  if (this != &other) {
    reset();
    begin_ = std::exchange(other.begin_, 0);
  }
  return *this;
}

void Registration::reset() noexcept {
  if (begin_ != 0) fault_table().erase(begin_);
  begin_ = 0;
}

void commit_range(FaultOwner& owner, std::byte* base, std::uint64_t span, std::uint64_t offset,
                  std::uint64_t length) {
  if (offset >= span || length == 0) return;
  const auto begin = reinterpret_cast<std::uintptr_t>(base);
  const std::uint64_t end = length > span - offset ? span : offset + length;
  FaultReport report;
  if (owner.commit(begin + offset, begin + end, &report) != FaultOutcome::kResolved) {
    throw_report(report);
  }
}

[[noreturn]] void throw_report(const FaultReport& report) {
  FailureRecord record;
  record_failure(report, &record);
  throw Error(record.error, record.operation, record.subject, record.detail);
}

}  // namespace mapwright::detail
