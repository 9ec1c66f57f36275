// tools/main.cc — the `mapwright` command line: parsing, dispatch to the subcommand, and the
// mapping of every outcome to one exit code and at most one "mapwright: ..." line on stderr.
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <string_view>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <kj/exception.h>

#include "commands.h"

namespace mapwright::tool {
namespace {

// "mapwright: <message>" as ONE line on stderr: a control character that a message carries in
// from a name (the library quotes names as they are) is shown escaped.
void report(std::string_view message) {
  std::string line = "mapwright: ";
  for (const char c : message) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7F) {
      line += fmt::format("\\x{:02x}", byte);
    } else {
      line += c;
    }
  }
  line += '\n';
  std::fflush(stdout);  // whatever was printed before the failure comes first
  (void)write_all(STDERR_FILENO, line.data(), line.size());
}

// Everything written to standard output must have reached it: `> /dev/full`, a full disk or
// an I/O error behind it is a failure (exit 3 if the command had succeeded), not a silent 0.
int finish_standard_output(int code) {
  errno = 0;
  if (std::fflush(stdout) == 0 && std::ferror(stdout) == 0) return code;
  const int err = errno != 0 ? errno : EIO;
  report(fmt::format("writing to standard output: {}", std::strerror(err)));
  return code == kExitOk ? kExitFailure : code;
}

// CLI11's message for a command line that did not parse, as one line that says where help is.
std::string usage_failure(const CLI::App* app, const CLI::Error& error) {
  const std::vector<CLI::App*> selected = app->get_subcommands();
  if (selected.empty()) {
    // "A subcommand is required" also when one was given but is not known: say that instead.
    const std::vector<std::string> unknown = app->remaining();
    if (!unknown.empty()) {
      return fmt::format(
          "mapwright: unknown {} {} (commands: pack, inspect, verify, extract, "
          "run; see 'mapwright --help')\n",
          unknown.front().starts_with('-') ? "option" : "command", in_quotes(unknown.front()));
    }
    return fmt::format("mapwright: {} (see 'mapwright --help')\n", error.what());
  }
  const CLI::App* command = selected.front();
  // An option of mapwright itself given after the command ("mapwright inspect --version"):
  // it is not the command's, and the fix is to move it.
  for (const std::string& extra : command->remaining()) {
    const std::string name = extra.substr(0, extra.find('='));
    if (name.starts_with('-') && command->get_option_no_throw(name) == nullptr &&
        app->get_option_no_throw(name) != nullptr) {
      return fmt::format(
          "mapwright: {} is an option of 'mapwright' itself, not of '{}': give it before the "
          "command (mapwright {} ...)\n",
          name, command->get_name(), name);
    }
  }
  return fmt::format("mapwright: {} (see 'mapwright {} --help')\n", error.what(),
                     command->get_name());
}

int main(int argc, char** argv) {
  CLI::App app("mapwright " MAPWRIGHT_VERSION
               ": wrapper files of shared libraries and data, built in place and loaded from "
               "memory",
               "mapwright");
  app.set_version_flag("--version", "mapwright " MAPWRIGHT_VERSION, "Print the version and exit");
  app.require_subcommand(1);
  app.failure_message(usage_failure);
  app.footer(kExitCodesHelp);  // before the subcommands, which inherit it

  SplitCommandLine split = split_run_arguments(argc, argv);
  const std::vector<Subcommand> commands = {add_pack(app), add_inspect(app), add_verify(app),
                                            add_extract(app),
                                            add_run(app, std::move(split.run_arguments))};
  try {
    app.parse(split.parse_argc, argv);
  } catch (const CLI::ParseError& error) {
    // --help and --version are "errors" with code 0; the rest are usage errors.
    const int code = app.exit(error);
    return code == 0 ? kExitOk : kExitUsage;
  }
  for (const Subcommand& command : commands) {
    if (command.app->parsed()) return finish_standard_output(command.run());
  }
  return kExitUsage;  // unreachable: require_subcommand(1)
}

}  // namespace
}  // namespace mapwright::tool

int main(int argc, char** argv) {
  using mapwright::tool::kExitFailure;
  using mapwright::tool::report;
  try {
    return mapwright::tool::main(argc, argv);
  } catch (const mapwright::tool::ToolError& error) {
    report(error.what());
    return error.exit_code();
  } catch (const std::exception& error) {
    // mapwright::Error's what() names the operation, the subject and the cause.
    report(error.what());
    return kExitFailure;
  } catch (const kj::Exception& error) {
    report(error.getDescription().cStr());
    return kExitFailure;
  } catch (...) {
    report("unknown exception");
    return kExitFailure;
  }
}
