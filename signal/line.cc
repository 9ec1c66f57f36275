#include "line.h"

#include <string.h>

namespace mapwright::detail {

LineWriter& LineWriter::error_text(int error) noexcept {
  const char* description = ::strerrordesc_np(error);
  if (description != nullptr) return text(description);
  return text("error ").number(static_cast<std::uint64_t>(error));
}

}  // namespace mapwright::detail
