// tools/verify.cc — `mapwright verify`: the structure (when opened) and every entry's digest.
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "commands.h"

namespace mapwright::tool {
namespace {

struct VerifyOptions {
  std::string file;
};

int verify(const VerifyOptions& options) {
  const Wrapper wrapper = open_wrapper(options.file);
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
  fmt::print("wrapper {}: {} {} ok\n", in_quotes(wrapper.name()), count,
             count == 1 ? "entry" : "entries");
  return kExitOk;
}

}  // namespace

Subcommand add_verify(CLI::App& app) {
  CLI::App* command = app.add_subcommand(
      "verify", "Check a wrapper's structure and every entry's digest; exit 0 only if all pass");
  auto options = std::make_shared<VerifyOptions>();
  command->add_option("FILE", options->file, "The wrapper file")->required();
  command->footer(
      std::string("Prints one line per entry (ok / DIGEST MISMATCH). The digest (XXH3-128) "
                  "detects accidental damage; it is not a signature.\n\n") +
      kExitCodesHelp);
  return {command, [options] { return verify(*options); }};
}

}  // namespace mapwright::tool
