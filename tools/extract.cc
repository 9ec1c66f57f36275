// tools/extract.cc — `mapwright extract`: one entry's bytes, exactly, to a file or stdout.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "commands.h"
#include "mapwright/error.h"
#include "mapwright/region.h"

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
  // The entry's bytes piece by piece: its chunks, or its frames decoded one at a time (a
  // frame that does not decode was the digest's mismatch above, or is this Error with
  // --no-verify).
  const auto each_piece = [&](const Wrapper::ReadPiece& take) {
    try {
      wrapper.read_entry(*entry, take);
    } catch (const mapwright::Error& e) {
      if (e.operation() != "decoding wrapper entry") throw;
      throw ToolError(kExitDamaged, fmt::format("extracting entry {} from wrapper {}: {}",
                                                in_quotes(entry->name), in_quotes(wrapper.name()),
                                                e.what()));
    }
  };
  if (to_stdout) {
    each_piece([&](std::span<const std::byte> piece, std::uint64_t) {
      if (const int error = write_all(STDOUT_FILENO, piece.data(), piece.size()); error != 0) {
        throw ToolError(kExitFailure,
                        fmt::format("writing entry {} to standard output: {}",
                                    in_quotes(entry->name), std::strerror(error)));
      }
    });
    return kExitOk;
  }
  // Replacing the wrapper by one of its entries would lose the wrapper.
  struct stat target, source;
  if (::stat(options.output.c_str(), &target) == 0 && ::fstat(wrapper.fd(), &source) == 0 &&
      target.st_dev == source.st_dev && target.st_ino == source.st_ino) {
    throw ToolError(kExitFailure,
                    fmt::format("extracting entry {} to {}: that is the wrapper itself",
                                in_quotes(entry->name), in_quotes(options.output)));
  }
  // A staged file beside the target (beside the file a symbolic link names), renamed over it
  // once complete: a failure leaves the target as it was. Region::staged refuses a target
  // that is not a regular file before anything is written; publish() keeps a replaced
  // file's mode.
  const auto failed = [&](const mapwright::Error& e) {
    if (e.operation().starts_with("creating staging") && e.detail().starts_with("(")) {
      // The target refused as it is ("(not a regular file: a FIFO; nothing written)").
      return ToolError(kExitFailure,
                       fmt::format("extracting entry {} to {} {}{}", in_quotes(entry->name),
                                   in_quotes(options.output), e.detail(),
                                   e.detail_is_cause() ? "" : ": " + e.code().message()));
    }
    return ToolError(kExitFailure,
                     fmt::format("extracting entry {} to {}: {} (the target is left as it was)",
                                 in_quotes(entry->name), in_quotes(options.output), e.what()));
  };
  std::optional<Region> region;
  try {
    RegionOptions region_options;
    region_options.capacity = std::max<std::uint64_t>(entry->size, 4096);
    region_options.max_step = 16ull << 20;
    region.emplace(Region::staged(options.output, region_options));
    region->ensure(entry->size);  // a full disk or RLIMIT_FSIZE: an Error here, not SIGXFSZ
  } catch (const mapwright::Error& e) {
    throw failed(e);
  }
  each_piece([&](std::span<const std::byte> chunk, std::uint64_t at) {
    for (std::size_t done = 0; done < chunk.size();) {
      const ssize_t wrote = ::pwrite(region->fd(), chunk.data() + done, chunk.size() - done,
                                     static_cast<off_t>(at + done));
      if (wrote < 0 && errno == EINTR) continue;
      if (wrote < 0) throw failed(mapwright::Error(errno, "writing", options.output, "(pwrite)"));
      done += static_cast<std::size_t>(wrote);
    }
  });
  try {
    region->finish(entry->size);
    region->publish();
  } catch (const mapwright::Error& e) {
    throw failed(e);
  }
  return kExitOk;
}

}  // namespace

Subcommand add_extract(CLI::App& app) {
  CLI::App* command =
      app.add_subcommand("extract", "Copy one entry's bytes, exactly, to a file (or stdout)");
  auto options = std::make_shared<ExtractOptions>();
  command
      ->add_option("FILE", options->file,
                   "The wrapper file, or a file with one appended (mapwright pack --append-to)")
      ->required();
  command->add_option("NAME", options->name, "The entry")->required();
  command
      ->add_option("-o,--output", options->output,
                   "Where to write it: a new file (mode 0666 less the umask) or a regular file "
                   "replaced atomically, keeping its mode (a link to a file replaces the file); "
                   "- for stdout")
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
