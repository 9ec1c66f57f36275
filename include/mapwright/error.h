// mapwright/error.h — the one exception type the library throws for operating-system
// failures and bad input.
#pragma once

#include <string>
#include <system_error>

namespace mapwright {

// An errno value together with what was being done and to what. what() reads
//
//     growing region 'wrapper.mwr' to 8 GiB (store at offset 8589938688): No space left on device
//     └ operation ─┘ └ subject ┘ └──────────── detail ──────────────┘   └─ strerror(code) ─┘
//
// so that a message shown to a person names the operation, the path or region, and the
// cause. code() is std::error_code(errno, std::generic_category()), so callers can test
// `e.code() == std::errc::no_space_on_device`.
class Error : public std::system_error {
 public:
  // `subject` is quoted in the message; leave it empty when there is none. `detail` follows
  // it after a space (sizes, offsets, the reason an input was refused).
  Error(int error, std::string operation, std::string subject, std::string detail = {});
  // For a cause that is not an errno — dlerror()'s text, say: what() ends with `detail` and
  // not with strerror(error), which would mislead ("undefined symbol: f: No such file or
  // directory"). code() is still `error`, for callers that test it.
  struct DetailIsCause {};
  Error(int error, std::string operation, std::string subject, std::string detail,
        DetailIsCause);

  const char* what() const noexcept override;

  int error() const noexcept { return code().value(); }
  // Whether it was made with DetailIsCause: what() ends with detail(), no strerror() text.
  bool detail_is_cause() const noexcept { return !text_.empty(); }
  const std::string& operation() const noexcept { return operation_; }
  const std::string& subject() const noexcept { return subject_; }
  const std::string& detail() const noexcept { return detail_; }

 private:
  std::string operation_;
  std::string subject_;
  std::string detail_;
  std::string text_;  // what(), when the detail is the cause; else empty
};

}  // namespace mapwright
