// tools/json.cc — JSON string literals.
#include "json.h"

#include <fmt/format.h>

#include "commands.h"

namespace mapwright::tool {

std::string json_string(std::string_view text) {
  std::string out;
  out.reserve(text.size() + 2);
  out += '"';
  for (std::size_t i = 0; i < text.size();) {
    char32_t code_point = 0;
    const std::size_t length = decode_utf8(text, i, code_point);
    if (length == 0) {
      out += "\\ufffd";
      ++i;
      continue;
    }
    if (code_point == '"') {
      out += "\\\"";
    } else if (code_point == '\\') {
      out += "\\\\";
    } else if (code_point < 0x20) {
      out += fmt::format("\\u{:04x}", static_cast<unsigned>(code_point));
    } else {
      out.append(text.substr(i, length));
    }
    i += length;
  }
  out += '"';
  return out;
}

}  // namespace mapwright::tool
