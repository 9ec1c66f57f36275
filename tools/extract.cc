// tools/extract.cc — `mapwright extract`: one entry's bytes, exactly, to a file or stdout.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <string>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "commands.h"

namespace mapwright::tool {
namespace {

struct ExtractOptions {
  std::string file;
  std::string name;
  std::string output;
  bool no_verify = false;
};

int extract(const ExtractOptions& options) {
  const Wrapper wrapper = open_wrapper(options.file);
  const WrapperEntry* entry = wrapper.find(options.name);
  if (entry == nullptr) {
    throw ToolError(kExitFailure, fmt::format("extracting entry {} from wrapper {}: no such entry",
                                              in_quotes(options.name), in_quotes(wrapper.name())));
  }
  if (!options.no_verify && !wrapper.verify_entry(*entry)) {
    throw ToolError(kExitDamaged,
                    fmt::format("extracting entry {} from wrapper {}: digest mismatch, the entry "
                                "is damaged; nothing written (--no-verify extracts it anyway)",
                                in_quotes(entry->name), in_quotes(wrapper.name())));
  }

  const bool to_stdout = options.output == "-";
  // O_TRUNC on the wrapper itself would destroy the bytes about to be copied.
  struct stat target, source;
  if (!to_stdout && ::stat(options.output.c_str(), &target) == 0 &&
      ::fstat(wrapper.fd(), &source) == 0 && target.st_dev == source.st_dev &&
      target.st_ino == source.st_ino) {
    throw ToolError(kExitFailure,
                    fmt::format("extracting entry {} to {}: that is the wrapper itself",
                                in_quotes(entry->name), in_quotes(options.output)));
  }
  const int fd =
      to_stdout ? STDOUT_FILENO
                : ::open(options.output.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    throw ToolError(kExitFailure, fmt::format("creating {}: {}", in_quotes(options.output),
                                              std::strerror(errno)));
  }
  int error = 0;
  for (const std::span<const std::byte> chunk : entry->chunks) {
    error = write_all(fd, chunk.data(), chunk.size());
    if (error != 0) break;
  }
  if (!to_stdout && ::close(fd) != 0 && error == 0) error = errno;
  if (error != 0) {
    // Leave no partial copy that could pass for the entry.
    if (!to_stdout) ::unlink(options.output.c_str());
    throw ToolError(kExitFailure, fmt::format("writing entry {} to {}: {}", in_quotes(entry->name),
                                              in_quotes(options.output), std::strerror(error)));
  }
  return kExitOk;
}

}  // namespace

Subcommand add_extract(CLI::App& app) {
  CLI::App* command =
      app.add_subcommand("extract", "Copy one entry's bytes, exactly, to a file (or stdout)");
  auto options = std::make_shared<ExtractOptions>();
  command->add_option("FILE", options->file, "The wrapper file")->required();
  command->add_option("NAME", options->name, "The entry")->required();
  command
      ->add_option("-o,--output", options->output,
                   "Where to write it (created or truncated, mode 0644 before the umask); - for "
                   "stdout")
      ->required()
      ->type_name("PATH");
  command->add_flag("--no-verify", options->no_verify,
                    "Extract even if the entry's digest does not match");
  command->footer(std::string("The entry's digest is checked first: a damaged entry is not "
                              "extracted (exit 1) unless --no-verify.\n\n") +
                  kExitCodesHelp);
  return {command, [options] { return extract(*options); }};
}

}  // namespace mapwright::tool
