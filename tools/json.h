// tools/json.h — JSON string literals for `mapwright inspect --json`.
#pragma once

#include <string>
#include <string_view>

namespace mapwright::tool {

// `text` as a JSON string literal (RFC 8259), quotes included: '"' and '\' escaped, control
// characters U+0000..U+001F as \u00XX, everything else as UTF-8. Entry names are arbitrary
// bytes without NUL, not necessarily UTF-8, and JSON text must be UTF-8: a byte that does not
// begin a valid UTF-8 sequence becomes U+FFFD (the replacement character), so such a name
// reads back changed. Valid UTF-8 reads back exactly.
std::string json_string(std::string_view text);

}  // namespace mapwright::tool
