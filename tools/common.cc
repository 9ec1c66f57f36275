// tools/common.cc — what the subcommands share: opening a wrapper with its failures sorted
// into exit codes, and text fit for a terminal.
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include <fmt/format.h>
#include <kj/exception.h>

#include "commands.h"
#include "mapwright/error.h"

namespace mapwright::tool {
namespace {

// errno values with which Wrapper::open refuses a file it could read: the content is wrong.
bool is_damage(int error) {
  switch (error) {
    case EINVAL:
    case EBADMSG:
    case EPROTO:
    case EOVERFLOW:
    case ERANGE:
    case ENOTSUP:
    case EILSEQ:
    case ENOMSG:
    case ENOEXEC:
      return true;
    default:
      return false;
  }
}

// A version 1 wrapper opens, but no digest covers its metadata: say so, once, on stderr.
void warn_unchecked(const Wrapper& wrapper) {
  const std::string line = fmt::format(
      "mapwright: warning: wrapper {} is format version {}: no digest covers its metadata "
      "(names, kinds, dependencies); repack it to have every byte checked\n",
      in_quotes(wrapper.name()), wrapper.format_version());
  std::fflush(stdout);
  (void)write_all(STDERR_FILENO, line.data(), line.size());
}

}  // namespace

Wrapper open_wrapper(const std::filesystem::path& path) {
  // A directory opens with open(2); say what it is rather than let it read as a damaged file.
  struct stat status;
  if (::stat(path.c_str(), &status) == 0 && S_ISDIR(status.st_mode)) {
    throw ToolError(kExitFailure, fmt::format("opening wrapper {}: {}", in_quotes(path.string()),
                                              std::strerror(EISDIR)));
  }
  try {
    // The wrapper at the end of the file: the whole file, or one appended to an executable.
    // A file that begins with a wrapper but has no usable trailer gets the same errors as
    // from Wrapper::open (open_embedded says so); a version 1 wrapper (no trailer) is
    // refused with ENOTSUP and opened whole.
    Wrapper wrapper = [&] {
      try {
        return Wrapper::open_embedded(path);
      } catch (const Error& e) {
        if (e.error() != ENOTSUP) throw;
        return Wrapper::open(path);
      }
    }();
    if (!wrapper.metadata_checked()) warn_unchecked(wrapper);
    return wrapper;
  } catch (const Error& e) {
    // A FIFO, a device or a /proc file is ENODEV: the wrong kind of file, not damage.
    throw ToolError(is_damage(e.error()) ? kExitDamaged : kExitFailure, e.what());
  } catch (const kj::Exception& e) {
    // The library is meant to turn these into Error; should one get through, it is about
    // the file's content.
    throw ToolError(kExitDamaged, fmt::format("opening wrapper {}: {}", in_quotes(path.string()),
                                              e.getDescription().cStr()));
  }
}

std::size_t decode_utf8(std::string_view text, std::size_t at, char32_t& code_point) noexcept {
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
  const unsigned char lead = byte(at);
  if (lead < 0x80) {
    code_point = lead;
    return 1;
  }
  // The sequence's length, the lead byte's payload bits, and the smallest code point that
  // needs that many bytes (anything below is an overlong encoding).
  struct Form {
    unsigned char mask, match, payload;
    std::size_t length;
    char32_t minimum;
  };
  static constexpr Form kForms[] = {
      {0xE0, 0xC0, 0x1F, 2, 0x80}, {0xF0, 0xE0, 0x0F, 3, 0x800}, {0xF8, 0xF0, 0x07, 4, 0x10000}};
  const Form* form = nullptr;
  for (const Form& f : kForms) {
    if ((lead & f.mask) == f.match) form = &f;
  }
  if (form == nullptr) return 0;  // a continuation byte, or 0xF8..0xFF
  const std::size_t length = form->length;
  const char32_t minimum = form->minimum;
  char32_t value = lead & form->payload;
  if (text.size() - at < length) return 0;
  for (std::size_t i = 1; i < length; ++i) {
    if ((byte(at + i) & 0xC0) != 0x80) return 0;
    value = (value << 6) | (byte(at + i) & 0x3F);
  }
  if (value < minimum || value > 0x10FFFF || (value >= 0xD800 && value <= 0xDFFF)) return 0;
  code_point = value;
  return length;
}

std::string printable(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    char32_t code_point = 0;
    const std::size_t length = decode_utf8(text, i, code_point);
    // C0 and C1 controls, DEL and invalid bytes are escaped; C1 (U+0080..U+009F) too, since
    // some terminals act on them.
    if (length == 0 || code_point < 0x20 || code_point == 0x7F ||
        (code_point >= 0x80 && code_point <= 0x9F)) {
      const std::size_t escaped = length == 0 ? 1 : length;
      for (std::size_t j = 0; j < escaped; ++j) {
        const unsigned char b = static_cast<unsigned char>(text[i + j]);
        switch (b) {
          case '\n':
            out += "\\n";
            break;
          case '\t':
            out += "\\t";
            break;
          case '\r':
            out += "\\r";
            break;
          default:
            out += fmt::format("\\x{:02x}", b);
        }
      }
      i += escaped;
    } else if (c == '\\') {
      out += "\\\\";
      ++i;
    } else {
      out.append(text.substr(i, length));
      i += length;
    }
  }
  return out;
}

std::string in_quotes(std::string_view text) { return "'" + printable(text) + "'"; }

std::size_t display_width(std::string_view text) {
  std::size_t width = 0;
  for (const char c : printable(text)) {
    if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) ++width;
  }
  return width;
}

int write_all(int fd, const void* bytes, std::size_t size) noexcept {
  const char* next = static_cast<const char*>(bytes);
  while (size > 0) {
    const ssize_t written = ::write(fd, next, size);
    if (written < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    next += written;
    size -= static_cast<std::size_t>(written);
  }
  return 0;
}

std::string parse_size(std::string_view text, std::uint64_t& bytes) {
  const auto not_a_size = [&] {
    return fmt::format("{} is not a size (decimal digits, optionally followed by k, m or g)",
                       in_quotes(text));
  };
  std::size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
  if (digits == 0) return not_a_size();
  std::string suffix(text.substr(digits));
  for (char& c : suffix) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  unsigned shift = 0;
  if (suffix.empty() || suffix == "b") {
    shift = 0;
  } else if (suffix == "k" || suffix == "kib") {
    shift = 10;
  } else if (suffix == "m" || suffix == "mib") {
    shift = 20;
  } else if (suffix == "g" || suffix == "gib") {
    shift = 30;
  } else {
    return not_a_size();
  }
  std::uint64_t value = 0;
  for (std::size_t i = 0; i < digits; ++i) {
    const auto digit = static_cast<std::uint64_t>(text[i] - '0');
    if (value > (UINT64_MAX - digit) / 10) return fmt::format("{} is too large", in_quotes(text));
    value = value * 10 + digit;
  }
  if (shift != 0 && value > (UINT64_MAX >> shift)) {
    return fmt::format("{} is too large", in_quotes(text));
  }
  bytes = value << shift;
  return {};
}

}  // namespace mapwright::tool
