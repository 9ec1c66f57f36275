// tests/support/cli.h — running the `mapwright` tool as a child process the way a person or a
// script runs it, and what its tests share: the outcome of a run, checks of exit codes and error
// lines, small file helpers, a strict JSON reader, and the CliTest fixture with the standard
// wrapper. Used by every tests/cli*_test.cc; the tool's path comes from MAPWRIGHT_CLI, defined
// for those programs by tests/CMakeLists.txt.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "child.h"
#include "content.h"
#include "fixture_paths.h"

extern char** environ;

namespace mapwright::cli_test {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

#ifdef MAPWRIGHT_CLI
inline constexpr const char* kTool = MAPWRIGHT_CLI;
#else
inline constexpr const char* kTool = nullptr;  // built without tools/ (MAPWRIGHT_BUILD_TOOLS=OFF)
#endif
#ifndef MAPWRIGHT_VERSION
#define MAPWRIGHT_VERSION "unknown"
#endif

// ---- running a program ------------------------------------------------------------------

struct Outcome {
  bool exited = false;
  int exit_code = -1;
  int signal = 0;
  std::string out;
  std::string err;
  long max_rss_kib = 0;  // the program's peak resident set (wait4's ru_maxrss)

  std::string describe() const {
    std::string what = exited ? "exited " + std::to_string(exit_code)
                              : std::string("killed by signal ") + std::to_string(signal);
    return what + "\n--- stdout:\n" + out + "\n--- stderr:\n" + err;
  }
};

// The environment for the tool: the sanitizer runtimes (in the asan and tsan builds) must
// leave SIGBUS to mapwright, whose regions grow on it; see tests/support/sanitizer_options.cc.
inline std::vector<std::string> child_environment() {
  static const std::map<std::string, std::string> kDefaults = {
      {"ASAN_OPTIONS", "handle_sigbus=0:allow_user_segv_handler=1"},
      {"TSAN_OPTIONS", "handle_sigbus=0:halt_on_error=1"},
      {"UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1"}};
  std::vector<std::string> environment;
  std::map<std::string, std::string> pending = kDefaults;
  for (char** variable = environ; *variable != nullptr; ++variable) {
    std::string entry = *variable;
    const std::string name = entry.substr(0, entry.find('='));
    if (auto it = pending.find(name); it != pending.end()) {
      // Ours first, so that the caller's own options (after them) win.
      entry = name + "=" + it->second + ":" + entry.substr(name.size() + 1);
      pending.erase(it);
    }
    environment.push_back(std::move(entry));
  }
  for (const auto& [name, value] : pending) environment.push_back(name + "=" + value);
  return environment;
}

// Called with the program's pid and its stderr so far, each time more of it arrives.
using OnStderr = std::function<void(pid_t pid, const std::string& err)>;

// Runs `program` with `args` (stdin from /dev/null), collecting stdout and stderr apart; a
// program still running after 60 s is killed.
inline Outcome run_program(const std::string& program, const std::vector<std::string>& args,
                    const OnStderr& on_stderr = {}) {
  int out_pipe[2];
  int err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0 || ::pipe2(err_pipe, O_CLOEXEC) != 0) {
    throw std::runtime_error("pipe2 failed");
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, out_pipe[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, err_pipe[1], STDERR_FILENO);

  std::vector<std::string> argv_strings = {program};
  argv_strings.insert(argv_strings.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& s : argv_strings) argv.push_back(s.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_strings = child_environment();
  std::vector<char*> envp;
  for (std::string& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);

  pid_t pid = -1;
  const int spawned =
      ::posix_spawn(&pid, program.c_str(), &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  if (spawned != 0) {
    ::close(out_pipe[0]);
    ::close(err_pipe[0]);
    throw std::runtime_error("posix_spawn " + program + ": " + std::strerror(spawned));
  }

  Outcome outcome;
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  std::string* sinks[2] = {&outcome.out, &outcome.err};
  int open_pipes = 2;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (open_pipes > 0) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      ::kill(pid, SIGKILL);
      break;
    }
    if (::poll(fds, 2, static_cast<int>(left.count())) < 0 && errno != EINTR) break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      char buffer[65536];
      const ssize_t n = ::read(fds[i].fd, buffer, sizeof buffer);
      if (n > 0) {
        sinks[i]->append(buffer, static_cast<std::size_t>(n));
        if (i == 1 && on_stderr) on_stderr(pid, outcome.err);
      } else if (n == 0 || errno != EINTR) {
        ::close(fds[i].fd);
        fds[i].fd = -1;
        --open_pipes;
      }
    }
  }
  for (const pollfd& p : fds) {
    if (p.fd >= 0) ::close(p.fd);
  }
  int status = 0;
  rusage usage {};
  while (::wait4(pid, &status, 0, &usage) < 0 && errno == EINTR) {
  }
  outcome.max_rss_kib = usage.ru_maxrss;
  outcome.exited = WIFEXITED(status);
  outcome.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  outcome.signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
  return outcome;
}

inline Outcome tool(const std::vector<std::string>& args) { return run_program(kTool, args); }

// `program` on $PATH, or "" if it is not there.
inline std::string find_on_path(const std::string& program) {
  const char* path = std::getenv("PATH");
  std::string_view dirs = path != nullptr ? path : "/usr/bin:/bin";
  while (!dirs.empty()) {
    const std::size_t colon = dirs.find(':');
    const fs::path candidate = fs::path(dirs.substr(0, colon)) / program;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    if (colon == std::string_view::npos) break;
    dirs.remove_prefix(colon + 1);
  }
  return {};
}

// The outcome is an exit with `code` (the whole outcome in the message otherwise).
inline ::testing::AssertionResult exits_with(const Outcome& outcome, int code) {
  if (outcome.exited && outcome.exit_code == code) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "expected exit " << code << ", got " << outcome.describe();
}
#define EXPECT_EXIT_CODE(outcome, code) EXPECT_TRUE(exits_with((outcome), (code)))

// stderr is exactly one line, "mapwright: ...", containing each of `parts`.
inline void expect_one_error_line(const Outcome& outcome, const std::vector<std::string>& parts) {
  const std::string& err = outcome.err;
  EXPECT_TRUE(err.starts_with("mapwright: ")) << outcome.describe();
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << outcome.describe();
  EXPECT_TRUE(err.ends_with("\n")) << outcome.describe();
  for (const std::string& part : parts) EXPECT_THAT(err, HasSubstr(part)) << outcome.describe();
}

inline std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::size_t start = 0;
  while (start < text.size()) {
    const std::size_t end = text.find('\n', start);
    lines.push_back(text.substr(start, end - start));
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return lines;
}

// ---- files --------------------------------------------------------------------------------

inline std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path.string());
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

inline void write_file(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path.string());
}

inline std::string random_bytes(std::size_t size, std::uint64_t seed) {
  std::mt19937_64 engine(seed);
  std::string bytes(size, '\0');
  for (char& c : bytes) c = static_cast<char>(engine() & 0xFF);
  return bytes;
}

// Flips every bit of the byte at `offset` of `path`, in place.
inline void flip_byte(const fs::path& path, std::uint64_t offset) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0) << path;
  unsigned char byte = 0;
  ASSERT_EQ(::pread(fd, &byte, 1, static_cast<off_t>(offset)), 1);
  byte ^= 0xFF;
  ASSERT_EQ(::pwrite(fd, &byte, 1, static_cast<off_t>(offset)), 1);
  ::close(fd);
}

// ---- a small JSON reader, strict enough to catch bad escaping ---------------------------

struct Json {
  enum class Type { kNull, kBool, kNumber, kString, kArray, kObject };
  Type type = Type::kNull;
  bool boolean = false;
  std::uint64_t number = 0;  // the tool prints only non-negative integers
  std::string string;
  std::vector<Json> array;
  // An object: keys[i] names values[i] (a std::pair would need Json complete here).
  std::vector<std::string> keys;
  std::vector<Json> values;

  const Json& operator[](std::string_view key) const {
    for (std::size_t i = 0; i < keys.size(); ++i) {
      if (keys[i] == key) return values[i];
    }
    throw std::runtime_error("JSON: no key '" + std::string(key) + "'");
  }
  bool has(std::string_view key) const {
    return std::find(keys.begin(), keys.end(), key) != keys.end();
  }
};

class JsonReader {
 public:
  explicit JsonReader(std::string_view text) : text_(text) {}

  Json read_document() {
    Json value = read_value();
    skip_space();
    if (at_ != text_.size()) fail("trailing characters");
    return value;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw std::runtime_error("JSON: " + what + " at offset " + std::to_string(at_));
  }
  void skip_space() {
    while (at_ < text_.size() && std::strchr(" \t\r\n", text_[at_]) != nullptr) ++at_;
  }
  bool consume(std::string_view word) {
    if (text_.substr(at_, word.size()) != word) return false;
    at_ += word.size();
    return true;
  }
  void expect(char c) {
    skip_space();
    if (at_ >= text_.size() || text_[at_] != c) fail(std::string("expected '") + c + "'");
    ++at_;
  }

  Json read_value() {
    skip_space();
    if (at_ >= text_.size()) fail("unexpected end");
    Json value;
    const char c = text_[at_];
    if (c == '{') {
      value.type = Json::Type::kObject;
      ++at_;
      skip_space();
      if (consume("}")) return value;
      do {
        skip_space();
        value.keys.push_back(read_string());
        expect(':');
        value.values.push_back(read_value());
        skip_space();
      } while (consume(","));
      expect('}');
    } else if (c == '[') {
      value.type = Json::Type::kArray;
      ++at_;
      skip_space();
      if (consume("]")) return value;
      do {
        value.array.push_back(read_value());
        skip_space();
      } while (consume(","));
      expect(']');
    } else if (c == '"') {
      value.type = Json::Type::kString;
      value.string = read_string();
    } else if (consume("true") || consume("false")) {
      value.type = Json::Type::kBool;
      value.boolean = text_[at_ - 1] == 'e' && text_[at_ - 2] == 'u';
    } else if (consume("null")) {
      value.type = Json::Type::kNull;
    } else if (c >= '0' && c <= '9') {
      value.type = Json::Type::kNumber;
      while (at_ < text_.size() && text_[at_] >= '0' && text_[at_] <= '9') {
        value.number = value.number * 10 + static_cast<std::uint64_t>(text_[at_++] - '0');
      }
      if (at_ < text_.size() && std::strchr(".eE", text_[at_]) != nullptr) fail("not an integer");
    } else {
      fail(std::string("unexpected '") + c + "'");
    }
    return value;
  }

  unsigned read_hex4() {
    if (text_.size() - at_ < 4) fail("short \\u escape");
    unsigned value = 0;
    for (int i = 0; i < 4; ++i) {
      const char h = text_[at_++];
      value <<= 4;
      if (h >= '0' && h <= '9') {
        value |= static_cast<unsigned>(h - '0');
      } else if (h >= 'a' && h <= 'f') {
        value |= static_cast<unsigned>(h - 'a' + 10);
      } else if (h >= 'A' && h <= 'F') {
        value |= static_cast<unsigned>(h - 'A' + 10);
      } else {
        fail("bad hex digit");
      }
    }
    return value;
  }

  static void append_utf8(std::string& out, char32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  std::string read_string() {
    if (at_ >= text_.size() || text_[at_] != '"') fail("expected a string");
    ++at_;
    std::string out;
    while (true) {
      if (at_ >= text_.size()) fail("unterminated string");
      const char c = text_[at_++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) fail("raw control character in a string");
      if (c != '\\') {
        out += c;
        continue;
      }
      if (at_ >= text_.size()) fail("unterminated escape");
      const char e = text_[at_++];
      switch (e) {
        case '"':
          out += '"';
          break;
        case '\\':
          out += '\\';
          break;
        case '/':
          out += '/';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'u': {
          char32_t cp = read_hex4();
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (!consume("\\u")) fail("lone high surrogate");
            const char32_t low = read_hex4();
            if (low < 0xDC00 || low > 0xDFFF) fail("bad low surrogate");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          }
          append_utf8(out, cp);
          break;
        }
        default:
          fail(std::string("bad escape \\") + e);
      }
    }
  }

  std::string_view text_;
  std::size_t at_ = 0;
};

inline Json parse_json(const std::string& text) { return JsonReader(text).read_document(); }

// ---- the fixture --------------------------------------------------------------------------

// One entry as packed: its name, kind and source file.
struct Source {
  std::string name;
  std::string kind;  // "library" or "data"
  fs::path path;
  std::vector<std::string> dependencies;
};

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (kTool == nullptr) GTEST_SKIP() << "the tool is not built (MAPWRIGHT_BUILD_TOOLS=OFF)";
  }

  fs::path path(const std::string& name) const { return dir_ / name; }

  // The standard wrapper: both fixture libraries (b needs a), 300 KiB of pseudo-random bytes,
  // an empty file, and a data entry whose name needs escaping in JSON; interleaved, to check
  // that entries keep the command line's order.
  fs::path pack_standard(const std::string& name = "w.mwr") {
    sources_ = {
        {"liba", "library", MAPWRIGHT_FIXTURE_A, {}},
        {"blob", "data", path("blob.bin"), {}},
        {"libb", "library", MAPWRIGHT_FIXTURE_B, {"liba"}},
        {"empty", "data", path("empty.bin"), {}},
        {kOddName, "data", path("odd.bin"), {}},
    };
    write_file(path("blob.bin"), random_bytes(300 * 1024 + 17, 1));
    write_file(path("empty.bin"), "");
    write_file(path("odd.bin"), random_bytes(5000, 2));
    const fs::path wrapper = path(name);
    const Outcome packed =
        tool({"pack", "-o", wrapper, "--lib", "liba=" MAPWRIGHT_FIXTURE_A, "--data",
              "blob=" + path("blob.bin").string(), "--lib", "libb=" MAPWRIGHT_FIXTURE_B ":liba",
              "--data", "empty=" + path("empty.bin").string(), "--data",
              kOddName + "=" + path("odd.bin").string(), "--producer", kProducer, "--no-progress"});
    EXPECT_EXIT_CODE(packed, 0);
    EXPECT_EQ(packed.err, "");
    return wrapper;
  }

  Json inspect_json(const fs::path& wrapper) {
    const Outcome inspected = tool({"inspect", "--json", wrapper});
    EXPECT_EXIT_CODE(inspected, 0);
    return parse_json(inspected.out);
  }

  // Quote, backslash, a control character, a newline and non-ASCII letters.
  inline static const std::string kOddName =
      "odd \"name\" with \\back\\slash\x01\n and \u00fcnicode \u2603";
  inline static const std::string kProducer = "cli_test \"producer\" \\ \u00e9";

  test::TempDir dir_;
  std::vector<Source> sources_;
};

}  // namespace mapwright::cli_test
