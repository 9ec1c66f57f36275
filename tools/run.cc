// tools/run.cc — `mapwright run`: verify a wrapper, load a library entry and its dependencies
// from it (nothing written to disk), and call `int SYMBOL(int argc, char** argv)` in it.
#include <cerrno>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "commands.h"
#include "mapwright/error.h"

namespace mapwright::tool {
namespace {

struct RunOptions {
  std::string file;
  std::string library;
  std::string symbol;
  std::vector<std::string> arguments;  // after SYMBOL, from split_run_arguments()
  std::vector<std::string> unused;     // the ARGS positional: never filled
};

constexpr const char* kRunFooter =
    "Every entry's digest is checked first: nothing is loaded from a damaged wrapper (exit 1).\n"
    "LIB and the library entries it depends on are loaded from the wrapper, dependencies\n"
    "first, through sealed memfds (nothing is written to disk), into a link-map namespace of\n"
    "their own (dlmopen): they find each other before anything else, never the tool's own\n"
    "libraries (libkj, libcapnp, libfmt, libstdc++); then SYMBOL is called as\n"
    "int SYMBOL(int argc, char** argv) with argv = {LIB, ARGS...}, and the tool exits with\n"
    "its return value (its low 8 bits, as for any exit status); the libraries are unloaded\n"
    "(dlclose) before the exit. Before the call, the exit codes below apply; once the function\n"
    "was called, its return value decides, so 1, 2 and 3 are ambiguous then.\n"
    "Everything after SYMBOL is passed on unchanged, options included (a -- right after\n"
    "SYMBOL is dropped, so that both of these pass --verbose input.txt):\n"
    "  mapwright run app.mwr libapp app_main --verbose input.txt\n"
    "  mapwright run app.mwr libapp app_main -- --verbose input.txt\n";

bool is_option(std::string_view argument) { return argument.size() > 1 && argument[0] == '-'; }

int run(const RunOptions& options) {
  const Wrapper wrapper = open_wrapper(options.file);
  try {
    wrapper.verify_metadata();  // format version 2: every byte outside the entries, too
  } catch (const Error& e) {
    throw ToolError(kExitDamaged, std::string(e.what()) + "; nothing was loaded");
  }
  std::vector<std::string> damaged;
  for (const WrapperEntry& entry : wrapper.entries()) {
    if (!wrapper.verify_entry(entry)) damaged.push_back(in_quotes(entry.name));
  }
  if (!damaged.empty()) {
    throw ToolError(
        kExitDamaged,
        fmt::format("wrapper {}: digest mismatch in {} {}; nothing was loaded",
                    in_quotes(wrapper.name()), damaged.size() == 1 ? "entry" : "entries",
                    fmt::join(damaged, ", ")));
  }
  const WrapperEntry* entry = wrapper.find(options.library);
  if (entry == nullptr) {
    throw ToolError(kExitFailure,
                    fmt::format("running {} from wrapper {}: no such entry",
                                in_quotes(options.library), in_quotes(wrapper.name())));
  }
  if (entry->kind != EntryKind::kSharedLibrary) {
    throw ToolError(
        kExitFailure,
        fmt::format("running {} from wrapper {}: it is a {} entry, not a library",
                    in_quotes(entry->name), in_quotes(wrapper.name()), to_string(entry->kind)));
  }

  // The loader hashes each library's sealed copy again: a file changed since the check above
  // is refused there (EBADMSG), and that is damage too.
  // In a link-map namespace of their own (dlmopen), so that a wrapper library whose SONAME
  // is one the tool itself links (libkj, libcapnp, libfmt, libstdc++) is the one its
  // dependents bind to, not the tool's.
  LoadOptions load_options;
  load_options.link_namespace = LoadOptions::Namespace::kNew;
  const LoadedLibraries libraries = [&] {
    try {
      return wrapper.load_with_dependencies(options.library, load_options);
    } catch (const Error& e) {
      if (e.error() == EBADMSG) throw ToolError(kExitDamaged, e.what());
      if (e.error() == ENOEXEC &&
          e.detail().find("cannot open shared object file") != std::string::npos) {
        throw ToolError(kExitFailure,
                        std::string(e.what()) +
                            "; with mapwright pack, a library's dependencies follow its path: "
                            "--lib NAME=PATH:DEP[,DEP...]");
      }
      throw;
    }
  }();
  using EntryPoint = int(int, char**);
  EntryPoint* function = nullptr;
  try {
    function = libraries.at(options.library).function<EntryPoint>(options.symbol.c_str());
  } catch (const Error& e) {
    // The loader's message names the symbol and dlerror()'s text; say so if it ever does not.
    if (std::string_view(e.what()).find(options.symbol) != std::string_view::npos) throw;
    throw ToolError(kExitFailure,
                    fmt::format("looking up symbol {} in entry {}: {}", in_quotes(options.symbol),
                                in_quotes(entry->name), e.what()));
  }

  std::vector<std::string> arguments;
  arguments.push_back(options.library);
  arguments.insert(arguments.end(), options.arguments.begin(), options.arguments.end());
  std::vector<char*> argv;
  for (std::string& argument : arguments) argv.push_back(argument.data());
  argv.push_back(nullptr);

  // The namespace has its own copy of the C library, with its own stdio buffers, which the
  // tool's exit() does not flush: flush them through its fflush (if the library links libc).
  using Flush = int(std::FILE*);
  Flush* namespace_fflush = nullptr;
  try {
    namespace_fflush = libraries.at(options.library).function<Flush>("fflush");
  } catch (const Error&) {
    // No C library in the namespace: nothing buffered there.
  }

  std::fflush(nullptr);  // our output, if any, before the function's
  const int status = function(static_cast<int>(arguments.size()), argv.data());
  if (namespace_fflush != nullptr) namespace_fflush(nullptr);
  std::fflush(nullptr);  // the function's stdio output, before the libraries go
  return status;
}

}  // namespace

SplitCommandLine split_run_arguments(int argc, char** argv) {
  int i = 1;
  while (i < argc && is_option(argv[i])) ++i;  // the top level's options take no value
  if (i == argc || std::string_view(argv[i]) != "run") return {argc, {}};
  int positionals = 0;  // FILE, LIB, SYMBOL
  bool only_positionals = false;
  for (++i; i < argc && positionals < 3; ++i) {
    const std::string_view argument = argv[i];
    if (!only_positionals && argument == "--") {
      only_positionals = true;
    } else if (only_positionals || !is_option(argument)) {
      ++positionals;
    }
  }
  if (positionals < 3) return {argc, {}};  // let CLI11 report what is missing
  const int parse_argc = i;
  if (i < argc && std::string_view(argv[i]) == "--") ++i;
  return {parse_argc, std::vector<std::string>(argv + i, argv + argc)};
}

Subcommand add_run(CLI::App& app, std::vector<std::string> arguments) {
  CLI::App* command = app.add_subcommand(
      "run", "Load a library entry and its dependencies from a wrapper and call a function in it");
  auto options = std::make_shared<RunOptions>();
  options->arguments = std::move(arguments);
  command
      ->add_option("FILE", options->file,
                   "The wrapper file, or a file with one appended (mapwright pack --append-to)")
      ->required();
  command->add_option("LIB", options->library, "The library entry to load")->required();
  command->add_option("SYMBOL", options->symbol, "The function to call: int SYMBOL(int, char**)")
      ->required();
  // For the usage line only: split_run_arguments() has taken the ARGS off the command line.
  command->add_option("ARGS", options->unused, "Its arguments (argv[1], ...), options included");
  command->footer(std::string(kRunFooter) + "\n" + kExitCodesHelp);
  return {command, [options] { return run(*options); }};
}

}  // namespace mapwright::tool
