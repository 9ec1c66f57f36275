// tools/verify.cc — `mapwright verify`: the structure and metadata digest (when opened), the
// zero bytes and the metadata again (format version 2), and every entry's digest.
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "commands.h"
#include "mapwright/error.h"

namespace mapwright::tool {
namespace {

struct VerifyOptions {
  std::string file;
};

int verify(const VerifyOptions& options) {
  const Wrapper wrapper = open_wrapper(options.file);
  try {
    wrapper.verify_metadata();  // nothing to check in version 1 (open_wrapper warned)
  } catch (const Error& e) {
    throw ToolError(kExitDamaged, e.what());
  }
  std::vector<std::string> damaged;
  for (const WrapperEntry& entry : wrapper.entries()) {
    const bool ok = wrapper.verify_entry(entry);
    fmt::print("{:<15}  {}\n", ok ? "ok" : "DIGEST MISMATCH", printable(entry.name));
    if (!ok) damaged.push_back(in_quotes(entry.name));
  }
  const std::size_t count = wrapper.entries().size();
  if (!damaged.empty()) {
    throw ToolError(
        kExitDamaged,
        fmt::format("wrapper {}: digest mismatch in {} {} ({} of {} damaged)",
                    in_quotes(wrapper.name()), damaged.size() == 1 ? "entry" : "entries",
                    fmt::join(damaged, ", "), damaged.size(), count));
  }
  fmt::print("wrapper {}: {} {} ok, {}\n", in_quotes(wrapper.name()), count,
             count == 1 ? "entry" : "entries",
             wrapper.metadata_checked()
                 ? "metadata and every other byte ok (" +
                       std::string(wrapper.format() == WrapperFormat::kFlatBuffers
                                       ? "FlatBuffers form version "
                                       : "format version ") +
                       std::to_string(wrapper.format_version()) + ")"
                 : "metadata UNCHECKED (format version " +
                       std::to_string(wrapper.format_version()) + ": repack to check it)");
  return kExitOk;
}

}  // namespace

Subcommand add_verify(CLI::App& app) {
  CLI::App* command = app.add_subcommand(
      "verify", "Check a wrapper's structure and every entry's digest; exit 0 only if all pass");
  auto options = std::make_shared<VerifyOptions>();
  command
      ->add_option("FILE", options->file,
                   "The wrapper file, or a file with one appended (mapwright pack --append-to)")
      ->required();
  command->footer(
      std::string("Prints one line per entry (ok / DIGEST MISMATCH), then a summary. In format "
                  "version 2 every byte of the file is checked: the metadata digest, the "
                  "padding (must be zero) and each entry's digest, so any flipped bit is "
                  "found; a version 1 file has no metadata digest (a warning says so). The "
                  "digests (XXH3-128) detect accidental damage; they are not a signature.\n\n") +
      kExitCodesHelp);
  return {command, [options] { return verify(*options); }};
}

}  // namespace mapwright::tool
