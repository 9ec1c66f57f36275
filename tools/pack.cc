// tools/pack.cc — `mapwright pack`: a wrapper file from shared libraries and data files.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <filesystem>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <kj/exception.h>

#include "commands.h"
#include "mapwright/error.h"
#include "progress.h"

namespace mapwright::tool {
namespace {

struct PackOptions {
  std::string output;
  std::string append_to;               // --append-to EXE: OUT is EXE, padded, then the wrapper
  std::vector<std::string> libraries;  // NAME=PATH[:DEP,...], bound only to count them
  std::vector<std::string> data;       // NAME=PATH
  std::string producer = "mapwright " MAPWRIGHT_VERSION;
  std::uint64_t chunk_bytes = kDefaultChunkBytes;
  std::string compress = "none";            // --compress none|zstd
  std::string format = "capnp";             // --format capnp|flatbuffers
  std::uint64_t frame_bytes = 256ull << 10;  // --frame-size
  int level = 3;                             // --level
  bool progress = false;
  bool no_progress = false;
  bool no_sync = false;
};

// One --lib or --data, in command-line order.
struct PackItem {
  bool library = false;
  std::string name;
  std::filesystem::path path;
  std::vector<std::string> depends;
};

constexpr const char* kPackFooter =
    "Entries are added in command-line order. NAME is everything before the first '=';\n"
    "for --lib, the rest is PATH when it names an existing file (so a PATH may contain\n"
    "':'); otherwise it is split at its LAST ':' into PATH and a comma-separated list of\n"
    "the library entries it depends on (loaded before it by `mapwright run`):\n"
    "  --lib liba=build/liba.so --lib libb=build/libb.so:liba --data config=app.json\n"
    "PATH - is standard input (for one entry). A FIFO, a socket and a file whose size\n"
    "reads 0 (/proc/self/status) are read until their end; a FIFO with no writer yet is\n"
    "waited for, as `cat` would. Devices (/dev/zero) are refused. OUT must be a regular\n"
    "file or not exist (a directory, FIFO or device is refused before anything is read).\n"
    "With --append-to EXE, OUT is a copy of EXE, zeros up to a multiple of 4096, then the\n"
    "wrapper, with EXE's permission bits: an executable runs as before (the kernel ignores\n"
    "the bytes after an ELF file's segments) and finds the wrapper at its own end\n"
    "(Wrapper::open_embedded(\"/proc/self/exe\")); inspect, verify, extract and run read\n"
    "OUT as a wrapper. EXE is copied in the kernel into the staged OUT, which is renamed\n"
    "into place once complete, as always. EXE must be a regular file and not OUT itself.\n"
    "An EXE that already ends with a wrapper is copied with it, and the new wrapper hides\n"
    "it (a warning says so): append to the program without one.\n"
    "  mapwright pack --append-to build/app -o build/app.packed --lib core=build/libcore.so\n"
    "With --compress zstd every entry is stored as independent zstd frames of --frame-size\n"
    "bytes (format version 3): Wrapper::lazy() then decodes one frame per first touch of a\n"
    "page, and verify, extract and run decode it; the digest is of the uncompressed bytes.\n"
    "  mapwright pack --compress zstd --frame-size 64k -o assets.mwr --data model=model.bin\n";

// NAME=REST with a non-empty NAME and REST; "" if `spec` is one, else what is wrong.
std::string check_spec(const std::string& spec, const char* form) {
  const std::size_t equals = spec.find('=');
  if (equals == std::string::npos || equals == 0 || equals + 1 == spec.size()) {
    return fmt::format("expected {}, got '{}'", form, spec);
  }
  return {};
}

std::vector<std::string> split_names(std::string_view list) {
  std::vector<std::string> names;
  while (!list.empty()) {
    const std::size_t comma = list.find(',');
    const std::string_view name = list.substr(0, comma);
    if (!name.empty()) names.emplace_back(name);
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return names;
}

PackItem parse_library(const std::string& spec) {
  const std::size_t equals = spec.find('=');
  PackItem item;
  item.library = true;
  item.name = spec.substr(0, equals);
  const std::string rest = spec.substr(equals + 1);
  std::error_code error;
  const std::size_t colon = rest.rfind(':');
  if (std::filesystem::exists(rest, error) || colon == std::string::npos) {
    item.path = rest;
  } else {
    item.path = rest.substr(0, colon);
    item.depends = split_names(std::string_view(rest).substr(colon + 1));
  }
  return item;
}

PackItem parse_data(const std::string& spec) {
  const std::size_t equals = spec.find('=');
  PackItem item;
  item.name = spec.substr(0, equals);
  item.path = spec.substr(equals + 1);
  return item;
}

// The --lib and --data values in the order they were given.
std::vector<PackItem> items_in_order(const CLI::App& command, const CLI::Option* libraries,
                                     const CLI::Option* data) {
  std::vector<PackItem> items;
  std::size_t next_library = 0;
  std::size_t next_data = 0;
  for (const CLI::Option* option : command.parse_order()) {
    if (option == libraries) {
      items.push_back(parse_library(libraries->results().at(next_library++)));
    } else if (option == data) {
      items.push_back(parse_data(data->results().at(next_data++)));
    }
  }
  return items;
}

// "-" for an entry's PATH: standard input.
bool is_stdin(const PackItem& item) { return item.path == "-"; }

// The size of an input the writer copies as a file, or nullopt for one it streams (stdin, a
// FIFO, a socket, a file whose size reads 0 such as /proc/self/status). An input that cannot
// be sized counts as 0; it fails in add_*() with its own message.
std::optional<std::uint64_t> known_size(const PackItem& item) {
  if (is_stdin(item)) return std::nullopt;
  struct stat status;
  if (::stat(item.path.c_str(), &status) != 0) return 0;
  if (S_ISFIFO(status.st_mode) || S_ISSOCK(status.st_mode)) return std::nullopt;
  if (S_ISREG(status.st_mode) && status.st_size == 0) return std::nullopt;
  return S_ISREG(status.st_mode) ? static_cast<std::uint64_t>(status.st_size) : 0;
}

// `pack -o -`: the wrapper is built under a private directory of $TMPDIR (or /tmp), whose
// one file is opened, unlinked and the directory removed as soon as it is published; then
// the open file is copied to standard output. Only a process killed between the publishing
// and the unlinking leaves a "mapwright-pack-XXXXXX" directory behind.
class UnnamedOutput {
 public:
  UnnamedOutput() {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") +
                          "/mapwright-pack-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) {
      throw ToolError(kExitFailure, fmt::format("pack: creating a temporary directory {}: {}",
                                                in_quotes(pattern), std::strerror(errno)));
    }
    directory_ = pattern;
    target_ = directory_ / "stdout.mwr";
  }
  ~UnnamedOutput() {
    if (fd_ >= 0) ::close(fd_);
    ::unlink(target_.c_str());  // only there if the published file could not be opened
    ::rmdir(directory_.c_str());
  }
  UnnamedOutput(const UnnamedOutput&) = delete;
  UnnamedOutput& operator=(const UnnamedOutput&) = delete;

  const std::filesystem::path& target() const { return target_; }

  // After publish(): opens the file and takes its name away at once.
  void take() {
    fd_ = ::open(target_.c_str(), O_RDONLY | O_CLOEXEC);
    const int err = errno;
    ::unlink(target_.c_str());
    ::rmdir(directory_.c_str());
    if (fd_ < 0) {
      throw ToolError(kExitFailure, fmt::format("pack: opening the wrapper built in {}: {}",
                                                in_quotes(target_.string()), std::strerror(err)));
    }
  }

  // Copies the file to standard output; a failure there is exit 3.
  void copy_to_stdout(std::uint64_t size) const {
    std::vector<char> buffer(1u << 20);
    for (std::uint64_t done = 0; done < size;) {
      const ssize_t got = ::pread(fd_, buffer.data(), buffer.size(), static_cast<off_t>(done));
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) {
        throw ToolError(kExitFailure, fmt::format("pack: reading back the wrapper built for "
                                                  "standard output: {}",
                                                  got == 0 ? "it ended early" : std::strerror(errno)));
      }
      if (const int err = write_all(STDOUT_FILENO, buffer.data(), static_cast<std::size_t>(got));
          err != 0) {
        throw ToolError(kExitFailure,
                        fmt::format("writing the wrapper to standard output: {}", std::strerror(err)));
      }
      done += static_cast<std::uint64_t>(got);
    }
  }

 private:
  std::filesystem::path directory_;
  std::filesystem::path target_;
  int fd_ = -1;
};

// EXE that already ends with a wrapper (often a packed program given instead of the bare
// one): the old wrapper is copied as part of EXE and the new one, after it, hides it. Allowed,
// but said, once, on stderr. Anything that does not open as a wrapper says nothing here; EXE's
// own failures (missing, not a regular file) are the writer's to report.
void warn_if_it_has_a_wrapper(const std::string& exe) {
  std::uint64_t offset = 0;
  std::uint64_t size = 0;
  try {
    const Wrapper old = Wrapper::open_embedded(exe);
    offset = old.offset();
    size = old.size();
  } catch (const Error&) {
    return;
  } catch (const ::kj::Exception&) {
    return;
  }
  const std::string line = fmt::format(
      "mapwright: warning: {} already ends with a wrapper ({} bytes at byte {}): it is copied "
      "as part of it and the new wrapper, after it, hides it (append to the program without "
      "one to replace it)\n",
      in_quotes(exe), size, offset);
  (void)write_all(STDERR_FILENO, line.data(), line.size());
}

int pack(const PackOptions& options, const std::vector<PackItem>& items) {
  const bool to_stdout = options.output == "-";
  // The percentage's denominator: streams have no size until they end.
  std::uint64_t total_bytes = 0;
  bool open_ended = false;
  for (const PackItem& item : items) {
    const std::optional<std::uint64_t> size = known_size(item);
    if (size) {
      total_bytes += *size;
    } else {
      open_ended = true;
    }
  }
  if (std::count_if(items.begin(), items.end(), is_stdin) > 1) {
    throw ToolError(kExitUsage, "pack: standard input ('-') can be read for one entry only");
  }
  const ProgressBar::Mode mode = options.progress      ? ProgressBar::Mode::kOn
                                 : options.no_progress ? ProgressBar::Mode::kOff
                                                       : ProgressBar::Mode::kAuto;
  ProgressBar bar(mode, total_bytes, open_ended);  // outlives the writer, which calls it

  WrapperWriterOptions writer_options;
  writer_options.producer = options.producer;
  writer_options.chunk_bytes = options.chunk_bytes;
  if (options.format == "flatbuffers") writer_options.format = WrapperFormat::kFlatBuffers;
  if (options.compress == "zstd") {
    writer_options.compression.method = EntryCompression::kZstd;
    writer_options.compression.frame_bytes = options.frame_bytes;
    writer_options.compression.level = options.level;
  }
  writer_options.prefix = options.append_to;
  // Standard output: the file is only a staging place, copied out and gone; no fsync.
  writer_options.durable = !options.no_sync && !to_stdout;
  if (mode != ProgressBar::Mode::kOff) {
    writer_options.progress = [&bar](const WriteProgress& progress) { bar.update(progress); };
  }
  if (!options.append_to.empty()) warn_if_it_has_a_wrapper(options.append_to);
  std::optional<UnnamedOutput> unnamed;
  if (to_stdout) unnamed.emplace();
  std::uint64_t wrapper_offset = 0;
  const auto write = [&] {
    WrapperWriter writer(to_stdout ? unnamed->target() : std::filesystem::path(options.output),
                         std::move(writer_options));
    wrapper_offset = writer.wrapper_offset();
    for (const PackItem& item : items) {
      if (is_stdin(item)) {
        if (item.library) {
          writer.add_library_stream(item.name, STDIN_FILENO, "standard input", item.depends);
        } else {
          writer.add_data_stream(item.name, STDIN_FILENO, "standard input");
        }
      } else if (item.library) {
        writer.add_library(item.name, item.path, item.depends);
      } else {
        writer.add_data(item.name, item.path);
      }
    }
    return writer.publish();
  };
  std::uint64_t file_size = 0;
  try {
    file_size = write();
  } catch (const Error& e) {
    if (!to_stdout) throw;
    // Name the output as it was given, not the private file it is built in.
    std::string message = e.what();
    const std::string hidden = "'" + unnamed->target().string() + "'";
    for (std::size_t at = message.find(hidden); at != std::string::npos;
         at = message.find(hidden, at)) {
      message.replace(at, hidden.size(), "'-' (standard output)");
    }
    throw ToolError(kExitFailure, message);
  }
  bar.finish();
  if (to_stdout) {
    unnamed->take();
    unnamed->copy_to_stdout(file_size);
    return kExitOk;
  }
  const std::string appended =
      options.append_to.empty()
          ? std::string()
          : fmt::format(" (a copy of {}, then the wrapper: {} bytes at byte {})",
                        in_quotes(options.append_to), file_size - wrapper_offset, wrapper_offset);
  fmt::print("wrote {}: {} {}, {} bytes{}\n", in_quotes(options.output), items.size(),
             items.size() == 1 ? "entry" : "entries", file_size, appended);
  return kExitOk;
}

}  // namespace

Subcommand add_pack(CLI::App& app) {
  CLI::App* command = app.add_subcommand(
      "pack", "Write a wrapper file holding shared libraries and data files, published atomically");
  auto options = std::make_shared<PackOptions>();
  command
      ->add_option("-o,--output", options->output,
                   "The wrapper file to write (replaced atomically, keeping its mode; a link "
                   "to a file replaces the file); - for standard output")
      ->required()
      ->type_name("OUT");
  CLI::Option* libraries =
      command
          ->add_option("--lib", options->libraries,
                       "A shared library entry NAME, from PATH, that needs the library entries "
                       "DEP,... loaded first (see below for PATHs with ':')")
          ->type_name("NAME=PATH[:DEP,...]")
          ->check(CLI::Validator(
              [](std::string& spec) { return check_spec(spec, "NAME=PATH[:DEP,...]"); }, "",
              "library entry"));
  CLI::Option* data =
      command->add_option("--data", options->data,
                          "A data entry NAME, from the file PATH (- for standard input; a "
                          "FIFO or /proc file is read until its end)")
          ->type_name("NAME=PATH")
          ->check(CLI::Validator([](std::string& spec) { return check_spec(spec, "NAME=PATH"); },
                                 "", "data entry"));
  CLI::Option* append_to =
      command
          ->add_option("--append-to", options->append_to,
                       "Write OUT as a copy of EXE with the wrapper appended (at the next "
                       "multiple of 4096), keeping EXE's permission bits: EXE still runs, and "
                       "finds the wrapper with Wrapper::open_embedded(\"/proc/self/exe\")")
          ->type_name("EXE");
  command->add_option("--producer", options->producer, "Recorded in the file; inspect shows it")
      ->capture_default_str()
      ->type_name("TEXT");
  command
      ->add_option("--chunk-size", options->chunk_bytes,
                   "Split entries into chunks of this many bytes: a multiple of 4096, at most "
                   "512 MiB - 4096 (suffixes k, m, g: powers of 1024)")
      ->capture_default_str()
      ->transform(CLI::Validator(
          [](std::string& value) -> std::string {
            // Strictly: CLI11's own size parsing takes "-4096" as 2^64 - 4096 and "0x1000" as
            // 0, and would blame either on the range.
            std::uint64_t bytes = 0;
            if (std::string error = parse_size(value, bytes); !error.empty()) return error;
            constexpr std::uint64_t kLargest = (512ull << 20) - 4096;
            if (bytes == 0 || bytes > kLargest) {
              return fmt::format("chunk size {} bytes is out of range: from 4096 to {} (512 MiB "
                                 "- 4096; a Cap'n Proto Data blob is less than 512 MiB)",
                                 bytes, kLargest);
            }
            if (bytes % 4096 != 0) {
              return fmt::format("chunk size {} bytes is not a multiple of 4096", bytes);
            }
            value = std::to_string(bytes);
            return {};
          },
          "", "chunk size"))
      ->type_name("BYTES");
  command
      ->add_option("--format", options->format,
                   "The file's form: capnp (one Cap'n Proto message; `capnp decode` reads it) or "
                   "flatbuffers (the entries' bytes, then their metadata as a FlatBuffer that "
                   "`flatc --json --raw-binary` decodes, with 64-bit offsets); mapwright reads both")
      ->capture_default_str()
      ->check(CLI::IsMember({"capnp", "flatbuffers"}))
      ->type_name("FORM");
  command->add_option("--compress", options->compress, "Store entries compressed: zstd, or none")
      ->capture_default_str()
      ->check(CLI::IsMember({"none", "zstd"}))
      ->type_name("METHOD");
  CLI::Option* frame_size =
      command
          ->add_option("--frame-size", options->frame_bytes,
                       "With --compress: uncompressed bytes per frame, the unit decoded on a "
                       "first touch: a multiple of 4096 from 4k to 64m (suffixes k, m)")
          ->capture_default_str()
          ->transform(CLI::Validator(
              [](std::string& value) -> std::string {
                std::uint64_t bytes = 0;
                if (std::string error = parse_size(value, bytes); !error.empty()) return error;
                if (bytes < 4096 || bytes > (64ull << 20) || bytes % 4096 != 0) {
                  return fmt::format(
                      "frame size {} bytes is not a multiple of 4096 from 4096 to {}", bytes,
                      64ull << 20);
                }
                value = std::to_string(bytes);
                return {};
              },
              "", "frame size"))
          ->type_name("BYTES");
  CLI::Option* level =
      command
          ->add_option("--level", options->level, "With --compress zstd: zstd's level, 1 to 19")
          ->capture_default_str()
          ->check(CLI::Range(1, 19))
          ->type_name("N");
  CLI::Option* on = command->add_flag(
      "--progress", options->progress,
      "Draw a progress bar on stderr even when it is not a terminal (default: when it is)");
  CLI::Option* off =
      command->add_flag("--no-progress", options->no_progress, "Never draw a progress bar");
  on->excludes(off);
  command->add_flag("--no-sync", options->no_sync,
                    "Do not wait for the disk before publishing (no fsync): still atomic if the "
                    "process dies, but not if the machine loses power");
  command->footer(std::string(kPackFooter) + "\n" + kExitCodesHelp);
  return {command, [options, command, libraries, data, append_to, frame_size, level] {
            // A frame size or level with nothing compressed would be silently ignored.
            if (options->compress != "zstd") {
              for (const CLI::Option* option : {frame_size, level}) {
                if (option->count() == 0) continue;
                throw ToolError(kExitUsage,
                                fmt::format("pack: {} only applies with --compress zstd ({} is "
                                            "left as it was)",
                                            option->get_name(), in_quotes(options->output)));
              }
            }
            // `--append-to ""` (often an unset variable) would otherwise be no --append-to
            // at all: a plain wrapper, not an executable, published at OUT.
            if (append_to->count() != 0 && options->append_to.empty()) {
              throw ToolError(kExitUsage,
                              fmt::format("pack: --append-to: the path is empty: give the "
                                          "executable to append the wrapper to ({} is left as "
                                          "it was)",
                                          in_quotes(options->output)));
            }
            std::vector<PackItem> items = items_in_order(*command, libraries, data);
            // An empty wrapper is never what was meant, and publishing one would replace an
            // existing file with nothing.
            if (items.empty()) {
              throw ToolError(kExitUsage,
                              fmt::format("pack: nothing to pack: give --lib NAME=PATH or --data "
                                          "NAME=PATH ({} is left as it was)",
                                          in_quotes(options->output)));
            }
            return pack(*options, items);
          }};
}

}  // namespace mapwright::tool
