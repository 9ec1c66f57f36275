// tools/commands.h — the `mapwright` tool's subcommands, the exit codes they end with, and
// the few helpers they share.
//
// Each add_*() adds one subcommand to the CLI11 app and returns it with the function that
// runs it. main() parses the command line, then calls the run function of the subcommand
// that was selected, outside CLI11, so that a failure is never mistaken for a usage error.
//
// Exit codes (also in `mapwright --help` and tools/README.md):
//   0  success;
//   1  the wrapper is invalid or damaged: Wrapper::open refused it, or a digest does not match;
//   2  usage error: the command line did not parse (CLI11's message is printed);
//   3  any other failure: I/O, a missing entry, a library that does not load or lacks the
//      symbol.
//   `mapwright run` exits with the called function's return value once it was called; before
//   the call, with the codes above.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "mapwright/wrapper.h"

namespace CLI {
class App;
}  // namespace CLI

namespace mapwright::tool {

inline constexpr int kExitOk = 0;
inline constexpr int kExitDamaged = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitFailure = 3;

// The exit codes, for the --help footers.
inline constexpr const char* kExitCodesHelp =
    "Exit codes:\n"
    "  0  success\n"
    "  1  the wrapper is invalid or damaged (its structure, format version or a digest)\n"
    "  2  usage error (the command line did not parse; nothing to pack)\n"
    "  3  any other failure (I/O, standard output included; a missing entry; a library\n"
    "     that does not load)";

// A failure that ends the tool with `exit_code`; main() prints "mapwright: <what()>" as one
// line on stderr. Anything else thrown (mapwright::Error, std::exception) ends it with
// kExitFailure the same way.
class ToolError : public std::runtime_error {
 public:
  ToolError(int exit_code, const std::string& message)
      : std::runtime_error(message), exit_code_(exit_code) {}
  int exit_code() const noexcept { return exit_code_; }

 private:
  int exit_code_;
};

// A parsed subcommand's work; returns the exit code. Throws on failure (see ToolError).
using RunFunction = std::function<int()>;

struct Subcommand {
  CLI::App* app = nullptr;
  RunFunction run;
};

Subcommand add_pack(CLI::App& app);
Subcommand add_inspect(CLI::App& app);
Subcommand add_verify(CLI::App& app);
Subcommand add_extract(CLI::App& app);
// `arguments`: the function's ARGS, cut from the command line by split_run_arguments().
Subcommand add_run(CLI::App& app, std::vector<std::string> arguments);

// `mapwright run FILE LIB SYMBOL [ARGS...]` passes everything after SYMBOL to the function
// unchanged, options included, and CLI11 must not see it (it would take "-h" as run's own,
// and reorder the rest). When argv is such a command line, returns the argc to give CLI11
// (up to and including SYMBOL) and the ARGS (without a "--" right after SYMBOL); otherwise
// {argc, {}}. The scan relies on no option before SYMBOL taking a value: the top level's are
// -h, --help, --version; run's are -h, --help.
struct SplitCommandLine {
  int parse_argc = 0;
  std::vector<std::string> run_arguments;
};
SplitCommandLine split_run_arguments(int argc, char** argv);

// ---- shared helpers (common.cc) ---------------------------------------------------------

// Wrapper::open_embedded(path) — a whole wrapper, or one appended to another file (a version
// 1 wrapper, which has no trailer, with Wrapper::open) — its failures sorted into exit codes:
// a file with no wrapper (ENOMSG), or one that opens but is refused as malformed (EINVAL and
// the other "bad content" errors, or a Cap'n Proto exception) is kExitDamaged; a file that
// cannot be opened or read (ENOENT, EACCES, EISDIR, ...) is kExitFailure. Throws ToolError
// with the library's message.
Wrapper open_wrapper(const std::filesystem::path& path);

// The valid UTF-8 sequence at text[at]: its length in bytes (1 to 4) and its code point; 0 if
// the bytes there are not one (a stray continuation byte, a truncated or overlong sequence, a
// surrogate, beyond U+10FFFF). `at` must be < text.size().
std::size_t decode_utf8(std::string_view text, std::size_t at, char32_t& code_point) noexcept;

// `text` for a terminal: printable bytes (and UTF-8) as they are, control characters as
// \n, \t, \xNN, a backslash doubled; so that an entry name cannot move the cursor or forge a
// line of output.
std::string printable(std::string_view text);
// printable(text) in single quotes, for messages.
std::string in_quotes(std::string_view text);
// The number of columns printable(text) takes, counting one per UTF-8 code point.
std::size_t display_width(std::string_view text);

// Writes all of `bytes` to `fd`, retrying EINTR and short writes. Returns 0 or an errno.
int write_all(int fd, const void* bytes, std::size_t size) noexcept;

// A byte count as people write it on a command line: decimal digits, then optionally one of
// k, m, g (powers of 1024; also K, M, G, and KiB, MiB, GiB in any case). Nothing else: no
// sign, no spaces, no hex, no fraction, no exponent. Returns "" and sets `bytes`, or says what
// is wrong with `text` ("'-4096' is not a size: ...", "... is too large").
std::string parse_size(std::string_view text, std::uint64_t& bytes);

}  // namespace mapwright::tool
