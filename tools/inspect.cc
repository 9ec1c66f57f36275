// tools/inspect.cc — `mapwright inspect`: a wrapper's header and table of entries, as text
// for a person or as JSON for a script.
#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "commands.h"
#include "json.h"

namespace mapwright::tool {
namespace {

struct InspectOptions {
  std::string file;
  bool json = false;
  std::string metadata_out;  // --metadata-out FILE: the FlatBuffers form's metadata
};

std::string join_dependencies(const std::vector<std::string>& names) {
  if (names.empty()) return "-";
  std::string joined;
  for (const std::string& name : names) {
    if (!joined.empty()) joined += ',';
    joined += printable(name);
  }
  return joined;
}

// The size of the file that holds the wrapper (more than the wrapper's when it is appended to
// another file).
std::uint64_t containing_file_size(const Wrapper& wrapper) {
  struct stat status;
  if (::fstat(wrapper.fd(), &status) != 0) return wrapper.offset() + wrapper.size();
  return static_cast<std::uint64_t>(status.st_size);
}

void print_text(const Wrapper& wrapper) {
  const std::vector<WrapperEntry>& entries = wrapper.entries();
  // Where the wrapper is, when it is not the whole file (appended to an executable, say).
  const std::string where =
      wrapper.offset() == 0 ? std::string()
                            : fmt::format(" at byte {} of a file of {} bytes", wrapper.offset(),
                                          containing_file_size(wrapper));
  const std::string form = wrapper.format() == WrapperFormat::kFlatBuffers
                               ? fmt::format("FlatBuffers form version {}", wrapper.format_version())
                               : fmt::format("format version {}", wrapper.format_version());
  fmt::print("wrapper {}: {} ({}), producer {}, {} bytes{}, {} {}\n", in_quotes(wrapper.name()),
             form,
             wrapper.metadata_checked() ? "metadata checked" : "metadata unchecked: repack",
             in_quotes(wrapper.producer()), wrapper.size(), where, entries.size(),
             entries.size() == 1 ? "entry" : "entries");

  constexpr std::size_t kColumns = 8;
  // Left-aligned text columns, right-aligned numbers.
  constexpr std::array<bool, kColumns> kRight = {false, false, true, true, true, true, false, false};
  using Row = std::array<std::string, kColumns>;
  std::vector<Row> rows;
  // STORED: the bytes in the file, "zstd" and their share of SIZE for a compressed entry.
  rows.push_back({"NAME", "KIND", "OFFSET", "SIZE", "STORED", "CHUNKS", "DIGEST", "DEPENDENCIES"});
  for (const WrapperEntry& entry : entries) {
    const std::string stored =
        entry.compression == EntryCompression::kNone
            ? std::to_string(entry.stored_size)
            : fmt::format("{} {} ({:.1f}%)", to_string(entry.compression), entry.stored_size,
                          entry.size == 0 ? 100.0 : 100.0 * static_cast<double>(entry.stored_size) /
                                                        static_cast<double>(entry.size));
    rows.push_back({printable(entry.name), to_string(entry.kind), std::to_string(entry.offset),
                    std::to_string(entry.size), stored, std::to_string(entry.chunks.size()),
                    entry.digest.hex(), join_dependencies(entry.dependencies)});
  }
  // Cells are printable() already: one column per code point.
  const auto width = [](const std::string& cell) {
    return static_cast<std::size_t>(std::count_if(cell.begin(), cell.end(), [](char c) {
      return (static_cast<unsigned char>(c) & 0xC0) != 0x80;
    }));
  };
  std::array<std::size_t, kColumns> widths{};
  for (const Row& row : rows) {
    for (std::size_t i = 0; i < kColumns; ++i) widths[i] = std::max(widths[i], width(row[i]));
  }
  for (const Row& row : rows) {
    std::string line;
    for (std::size_t i = 0; i < kColumns; ++i) {
      const std::string padding(widths[i] - width(row[i]), ' ');
      if (i > 0) line += "  ";
      if (kRight[i]) {
        line += padding + row[i];
      } else if (i + 1 < kColumns) {
        line += row[i] + padding;
      } else {
        line += row[i];  // no trailing blanks
      }
    }
    fmt::print("{}\n", line);
  }
}

void print_json(const Wrapper& wrapper) {
  std::string out = "{\n";
  out += fmt::format("  \"format\": \"{}\",\n", to_string(wrapper.format()));
  out += fmt::format("  \"format_version\": {},\n", wrapper.format_version());
  out += fmt::format("  \"metadata_checked\": {},\n", wrapper.metadata_checked());
  out += fmt::format("  \"producer\": {},\n", json_string(wrapper.producer()));
  out += fmt::format("  \"file_size\": {},\n", containing_file_size(wrapper));
  out += fmt::format("  \"wrapper_offset\": {},\n", wrapper.offset());
  out += fmt::format("  \"wrapper_size\": {},\n", wrapper.size());
  out += "  \"entries\": [";
  bool first = true;
  for (const WrapperEntry& entry : wrapper.entries()) {
    out += first ? "\n" : ",\n";
    first = false;
    std::string dependencies;
    for (const std::string& name : entry.dependencies) {
      if (!dependencies.empty()) dependencies += ", ";
      dependencies += json_string(name);
    }
    out += fmt::format(
        "    {{\"name\": {}, \"kind\": \"{}\", \"offset\": {}, \"size\": {}, \"digest\": \"{}\", "
        "\"dependencies\": [{}], \"chunks\": {}, \"compression\": \"{}\", \"stored_size\": {}, "
        "\"frame_size\": {}, \"frames\": {}}}",
        json_string(entry.name), to_string(entry.kind), entry.offset, entry.size,
        entry.digest.hex(), dependencies, entry.chunks.size(), to_string(entry.compression),
        entry.stored_size, entry.frame_bytes, entry.frame_ends.size());
  }
  out += first ? "]\n}\n" : "\n  ]\n}\n";
  fmt::print("{}", out);
}

// The metadata FlatBuffer, published atomically at `path` (a staged file: a failure leaves
// what was there).
void write_metadata(const Wrapper& wrapper, const std::string& path) {
  if (wrapper.format() != WrapperFormat::kFlatBuffers) {
    throw ToolError(kExitUsage,
                    fmt::format("inspect: --metadata-out: {} is in the Cap'n Proto form, whose "
                                "metadata is the file itself: decode it with `capnp decode "
                                "wrapper.capnp WrapperFile < FILE`",
                                in_quotes(wrapper.name())));
  }
  const std::span<const std::byte> metadata = wrapper.metadata();
  try {
    RegionOptions region_options;
    region_options.capacity = std::max<std::uint64_t>(metadata.size(), 4096);
    Region region = Region::staged(path, region_options);
    region.ensure(metadata.size());
    std::memcpy(region.data(), metadata.data(), metadata.size());
    region.finish(metadata.size());
    region.publish();
  } catch (const mapwright::Error& e) {
    throw ToolError(kExitFailure, fmt::format("inspect: writing the metadata to {}: {} (the "
                                              "target is left as it was)",
                                              in_quotes(path), e.what()));
  }
}

int inspect(const InspectOptions& options) {
  const Wrapper wrapper = open_wrapper(options.file);
  if (!options.metadata_out.empty()) write_metadata(wrapper, options.metadata_out);
  if (options.json) {
    print_json(wrapper);
  } else {
    print_text(wrapper);
  }
  return kExitOk;
}

}  // namespace

Subcommand add_inspect(CLI::App& app) {
  CLI::App* command = app.add_subcommand(
      "inspect", "Show a wrapper's format version, producer, size and table of entries");
  auto options = std::make_shared<InspectOptions>();
  command
      ->add_option("FILE", options->file,
                   "The wrapper file, or a file with one appended (mapwright pack --append-to)")
      ->required();
  command->add_flag("--json", options->json,
                    "Print JSON for scripts: {\"format\", \"format_version\", \"metadata_checked\", \"producer\", "
                    "\"file_size\", \"wrapper_offset\", \"wrapper_size\", "
                    "\"entries\": [{\"name\", \"kind\", \"offset\", \"size\", \"digest\", "
                    "\"dependencies\", \"chunks\", \"compression\", \"stored_size\", "
                    "\"frame_size\", \"frames\"}]}");
  command->add_option("--metadata-out", options->metadata_out,
                      "FlatBuffers form: also write the metadata FlatBuffer to this file, for "
                      "`flatc --json --raw-binary <include dir>/mapwright/wrapper.fbs -- FILE`")
      ->type_name("FILE");
  command->footer(
      std::string("The structure (and, but in format version 1, the metadata digest) is checked when "
                  "the file is opened; the entries' digests and the padding are not (use "
                  "`mapwright verify`).\n"
                  "The digest is XXH3-128 in hex, as xxh128sum prints it for the extracted "
                  "entry.\n"
                  "FILE may be a wrapper or a file with one appended (mapwright pack "
                  "--append-to): the header then says at which byte the wrapper starts (JSON: "
                  "wrapper_offset; file_size is the whole file's). Entry offsets are offsets in "
                  "FILE.\n\n") +
      kExitCodesHelp);
  return {command, [options] { return inspect(*options); }};
}

}  // namespace mapwright::tool
