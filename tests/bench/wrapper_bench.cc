// wrapper_bench — wrapper files: packing a large data file five ways, and startup (open,
// verify, load a library from the wrapper) against a plain dlopen() of the library's file.
//
// Packing: one data file of MAPWRIGHT_BENCH_BYTES (default 1 GiB) of pseudo-random bytes in
// MAPWRIGHT_BENCH_DIR (default: the current directory), made once per process, fsynced (so
// that no write-back of it overlaps the runs) and left warm in the page cache. Every variant
// writes its output beside it, on the same file system:
//
//   pack/cli/<S>           (a) `mapwright pack -o OUT --data blob=IN`: the real tool as a child
//                              process (posix_spawn + waitpid), when tools/ builds it.
//   pack/inprocess/<S>     (b) WrapperWriter(OUT), add_data("blob", IN), publish(): what (a)
//                              does, without the process.
//   pack/inprocess_nosync/<S>  (b') the same with WrapperWriterOptions::durable = false: no
//                              fsync, like (c).
//   pack/cp/<S>            (c) `cp IN OUT` as a child process: the limit. No fsync: the copy
//                              ends in the page cache.
//   pack/cp_fsync/<S>      (c') the same, then fsync(OUT) and fsync of its directory: the same
//                              durability as publish(), which fsyncs the file and the directory
//                              (it also links and renames; cp does not).
//   pack/malloc_write/<S>  (d) what a user would otherwise write: capnp::MallocMessageBuilder
//                              building the same WrapperFile message (schema wrapper.capnp:
//                              one data entry, 256 MiB chunks as Data blobs, each init()ed and
//                              filled by pread(2) from IN, hashed with the same XXH3-128), then
//                              capnp::writeMessageToFd into "OUT.tmp", fsync, rename over OUT,
//                              fsync of the directory.
//
// Timed (manual time, steady_clock, one iteration per repetition): from nothing to OUT in
// place (the process's whole life for (a) and (c)). Not timed: making IN; a sync(2) before
// each iteration (no write-back of an earlier output overlaps it); removing OUT after
// each iteration; for (d) freeing the builder's 1 GiB of heap; one check per variant and
// process, after its first iteration, that OUT holds IN: (a), (b) Wrapper::open + the entry's
// size and digest + verify_entry(); (c), (c') the digest of OUT; (d) a stock
// FlatArrayMessageReader over OUT: the entry's size, digest, and the digest of its chunks.
// (d)'s chunks are not 4096-byte aligned in the file, which Wrapper::open requires: its label
// says whether Wrapper::open accepts the file.
//
// Peak resident set, a figure, never timed: each pack row shows peak_rss_MiB beside
// input_MiB, measured once per variant and process, untimed, by one more pack in a child:
// for (a) and (c) the command in a fork()ed child (wait4's ru_maxrss; not posix_spawn, whose
// child shares this process's memory until exec, and the kernel then carries this process's
// own peak into the child's ru_maxrss); for (b), (b') and (d) the same code in a forked child
// that reads getrusage(RUSAGE_SELF).ru_maxrss at its end — which includes what it inherited
// mapped from this process, shown as rss_at_fork_MiB.
//
// RATIO rows: cli and inprocess over cp and over cp_fsync (the target: pack at
// >= 0.9x the speed of cp, i.e. time x <= 1.111), inprocess_nosync over cp (both without
// fsync), inprocess over malloc_write, cli over inprocess (the cost of the process).
//
// Startup: a wrapper (made once per process, in MAPWRIGHT_BENCH_DIR, warm) holding the fixture
// libraries libmwfixture_a.so (~16 KB) and libmwfixture_big.so (~8 MB) and a 64 MiB data entry
// (the smaller of that and MAPWRIGHT_BENCH_BYTES), opened as a program would at startup:
//
//   startup/open               Wrapper::open (map, check the structure)
//   startup/open_verify        + verify(): every entry hashed (~72 MiB)
//   startup/open_load          + load_library("big") + fixture_big_answer(), no verify
//   startup/open_verify_load   + verify() + load_library("big") + fixture_big_answer()
//   startup/open_verify_big_load  + verify_entry() of "big" only + load_library("big") + call
//   startup/plain_dlopen       dlopen(libmwfixture_big.so's own file) + dlsym + call: the floor
//
// Timed: what the name says. Not timed: destroying the Wrapper and the Library (munmap,
// dlclose, closing the memfd), and the per-iteration check that the load was real: the answer
// must be 42, the loaded objects (dl_iterate_phdr) one more while loaded and back after the
// unload, else the benchmark fails. io_write_B: /proc/self/io write_bytes per iteration (bytes
// dirtied in a disk file's page cache; must be 0). RATIO rows: each over plain_dlopen.
#include <dlfcn.h>
#include <fcntl.h>
#include <link.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <mapwright/mapwright.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include "bench_main.h"
#include "digest.h"         // detail::DigestStream: XXH3-128 over pieces (src/, internal)
#include "wrapper.capnp.h"  // the generated schema (build/<dir>/generated/schema)

#ifndef MAPWRIGHT_BENCH_FIXTURE_SMALL
#error "MAPWRIGHT_BENCH_FIXTURE_SMALL (path of libmwfixture_a.so) must be defined"
#endif
#ifndef MAPWRIGHT_BENCH_FIXTURE_BIG
#error "MAPWRIGHT_BENCH_FIXTURE_BIG (path of libmwfixture_big.so) must be defined"
#endif

extern char** environ;

namespace mapwright::bench {
namespace {

using SteadyClock = std::chrono::steady_clock;

constexpr std::uint64_t kStartupData = 64ull << 20;
constexpr int kAnswer = 42;

double seconds_since(SteadyClock::time_point start) {
  return std::chrono::duration<double>(SteadyClock::now() - start).count();
}

[[noreturn]] void fail(const std::string& what) { throw std::runtime_error(what); }

[[noreturn]] void fail_errno(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

std::string size_name(std::uint64_t bytes) {
  if (bytes % (1ull << 30) == 0) return std::to_string(bytes >> 30) + "GiB";
  if (bytes % (1ull << 20) == 0) return std::to_string(bytes >> 20) + "MiB";
  return std::to_string(bytes) + "B";
}

// An open fd, closed at scope exit.
struct Fd {
  int fd = -1;
  Fd(const std::filesystem::path& path, int flags, mode_t mode = 0666)
      : fd(::open(path.c_str(), flags | O_CLOEXEC, mode)) {
    if (fd < 0) fail_errno("open " + path.string());
  }
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
};

void fsync_or_throw(int fd, const std::string& what) {
  if (::fsync(fd) != 0) fail_errno("fsync " + what);
}

void fsync_path(const std::filesystem::path& path, int flags = O_RDONLY) {
  const Fd file(path, flags);
  fsync_or_throw(file.fd, path.string());
}

std::filesystem::path directory_of(const std::filesystem::path& path) {
  return path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
}

void pread_all(int fd, std::byte* into, std::uint64_t length, std::uint64_t offset) {
  for (std::uint64_t done = 0; done < length;) {
    const ssize_t n = ::pread(fd, into + done, length - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = EIO;
      fail_errno("pread");
    }
    done += static_cast<std::uint64_t>(n);
  }
}

// Pseudo-random bytes (splitmix64) from a running state: `count` words.
void random_words(std::uint64_t* words, std::size_t count, std::uint64_t* state) {
  for (std::size_t i = 0; i < count; ++i) {
    std::uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    words[i] = z ^ (z >> 31);
  }
}

// The digest of a whole file, through a read-only mapping.
Digest digest_file(const std::filesystem::path& path, std::uint64_t* size) {
  const Fd file(path, O_RDONLY);
  struct stat st {};
  if (::fstat(file.fd, &st) != 0) fail_errno("fstat " + path.string());
  *size = static_cast<std::uint64_t>(st.st_size);
  detail::DigestStream digest;
  if (*size > 0) {
    void* map = ::mmap(nullptr, *size, PROT_READ, MAP_SHARED, file.fd, 0);
    if (map == MAP_FAILED) fail_errno("mmap " + path.string());
    digest.update(static_cast<const std::byte*>(map), *size);
    ::munmap(map, *size);
  }
  return digest.finish();
}

// Removes a file at scope exit, whatever happened.
struct RemoveOnExit {
  std::filesystem::path path;
  ~RemoveOnExit() {
    std::error_code ignored;
    std::filesystem::remove(path, ignored);
  }
};

// ---- packing -----------------------------------------------------------------------------

// The input file: made on first use, removed at exit.
struct PackInput {
  std::filesystem::path path;
  std::uint64_t size = 0;
  Digest digest;

  PackInput() : path(scratch_path("wrapper-in")), size(bench_bytes()) {
    RemoveOnExit on_failure{path};
    const Fd file(path, O_WRONLY | O_CREAT | O_TRUNC);
    std::vector<std::uint64_t> buffer((8u << 20) / 8);
    std::uint64_t state = 0x6D617077726967ull;
    detail::DigestStream stream;
    for (std::uint64_t done = 0; done < size;) {
      const std::uint64_t piece = std::min<std::uint64_t>(buffer.size() * 8, size - done);
      random_words(buffer.data(), buffer.size(), &state);
      stream.update(reinterpret_cast<const std::byte*>(buffer.data()), piece);
      write_all(file.fd, buffer.data(), piece);
      done += piece;
    }
    fsync_or_throw(file.fd, path.string());  // clean, still cached: no write-back during runs
    digest = stream.finish();
    on_failure.path.clear();
  }
  ~PackInput() {
    std::error_code ignored;
    std::filesystem::remove(path, ignored);
  }
};

const PackInput& pack_input() {
  static const PackInput input;
  return input;
}

// Runs argv[0] (searched in PATH) with stdout and stderr into `log`; throws unless it exits 0.
void run(const std::vector<std::string>& args, const std::filesystem::path& log) {
  std::vector<char*> argv;
  for (const std::string& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  pid_t pid = -1;
  const int err = ::posix_spawnp(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (err != 0) throw std::system_error(err, std::generic_category(), "posix_spawn " + args[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) fail_errno("waitpid");
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::ifstream in(log);
    const std::string output((std::istreambuf_iterator<char>(in)),
                             std::istreambuf_iterator<char>());
    std::string command;
    for (const std::string& arg : args) command += (command.empty() ? "" : " ") + arg;
    fail(command + ": exit status " + std::to_string(status) + ": " + output);
  }
}

// ru_maxrss of this process, in KiB.
long self_max_rss_kib() {
  rusage usage {};
  ::getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss;
}

// A child's peak resident set, and what it had at the fork when it did not exec (this
// process's mappings, which it shares until it exits, count in its resident set), in KiB.
struct ChildRss {
  long peak_kib = 0;
  long at_fork_kib = 0;
};

// Runs `args` (argv[0] searched in PATH, output to `log`) in a fork()ed child and returns its
// ru_maxrss (wait4). Not posix_spawn: its child shares this process's memory until exec, and
// the kernel carries that memory's peak into the child's ru_maxrss. Throws unless it exits 0.
ChildRss peak_rss_of_command(const std::vector<std::string>& args,
                             const std::filesystem::path& log) {
  std::vector<char*> argv;
  for (const std::string& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);
  ChildRss rss;  // at_fork_kib stays 0: exec leaves nothing of this process in the child
  const pid_t pid = ::fork();
  if (pid < 0) fail_errno("fork");
  if (pid == 0) {
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || ::dup2(fd, STDOUT_FILENO) < 0 || ::dup2(fd, STDERR_FILENO) < 0) ::_exit(127);
    ::execvp(argv[0], argv.data());
    ::_exit(127);
  }
  int status = 0;
  rusage usage {};
  while (::wait4(pid, &status, 0, &usage) < 0) {
    if (errno != EINTR) fail_errno("wait4");
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    fail(args[0] + " (for its resident set): exit status " + std::to_string(status));
  }
  rss.peak_kib = usage.ru_maxrss;
  return rss;
}

// Runs `pack()` in a forked child and returns the child's ru_maxrss at its end. Throws if the
// child fails.
template <class Pack>
ChildRss peak_rss_in_child(Pack&& pack) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) fail_errno("pipe2");
  const pid_t pid = ::fork();
  if (pid < 0) fail_errno("fork");
  if (pid == 0) {
    ChildRss rss;
    rss.at_fork_kib = self_max_rss_kib();
    try {
      pack();
    } catch (...) {
      ::_exit(1);
    }
    rss.peak_kib = self_max_rss_kib();
    const bool sent = ::write(fds[1], &rss, sizeof rss) == static_cast<ssize_t>(sizeof rss);
    ::_exit(sent ? 0 : 1);
  }
  ::close(fds[1]);
  ChildRss rss;
  const ssize_t n = ::read(fds[0], &rss, sizeof rss);
  ::close(fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) fail_errno("waitpid");
  }
  if (n != static_cast<ssize_t>(sizeof rss) || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    fail("the pack in a forked child failed (status " + std::to_string(status) + ")");
  }
  return rss;
}

double mib(long kib) { return static_cast<double>(kib) / 1024.0; }

// OUT must be a wrapper with one entry "blob" that holds exactly IN.
void check_wrapper(const PackInput& in, const std::filesystem::path& out) {
  const Wrapper wrapper = Wrapper::open(out);
  const WrapperEntry& blob = wrapper.entry("blob");
  if (wrapper.entries().size() != 1 || blob.size != in.size || blob.digest != in.digest ||
      !wrapper.verify_entry(blob)) {
    fail(out.string() + ": the wrapper does not hold the input");
  }
}

void check_copy(const PackInput& in, const std::filesystem::path& out) {
  std::uint64_t size = 0;
  if (digest_file(out, &size) != in.digest || size != in.size) {
    fail(out.string() + ": the copy differs from the input");
  }
}

// (d)'s file, read with stock Cap'n Proto: the message fills the file, and its entry holds IN.
// Returns what Wrapper::open says about it.
std::string check_malloc_message(const PackInput& in, const std::filesystem::path& out) {
  const Fd file(out, O_RDONLY);
  struct stat st {};
  if (::fstat(file.fd, &st) != 0) fail_errno("fstat " + out.string());
  const auto size = static_cast<std::uint64_t>(st.st_size);
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, file.fd, 0);
  if (map == MAP_FAILED) fail_errno("mmap " + out.string());
  struct Unmap {
    void* p;
    std::uint64_t n;
    ~Unmap() { ::munmap(p, n); }
  } unmap{map, size};
  try {
    const kj::ArrayPtr<const ::capnp::word> words(static_cast<const ::capnp::word*>(map), size / 8);
    ::capnp::ReaderOptions options;
    options.traversalLimitInWords = std::numeric_limits<std::uint64_t>::max();
    ::capnp::FlatArrayMessageReader reader(words, options);
    if (reader.getEnd() != words.end()) fail(out.string() + ": the message does not fill the file");
    const auto root = reader.getRoot<schema::WrapperFile>();
    const auto entry = root.getEntries()[0];
    detail::DigestStream digest;
    for (const auto chunk : entry.getChunks()) {
      digest.update(reinterpret_cast<const std::byte*>(chunk.begin()), chunk.size());
    }
    Digest stored;
    const auto field = entry.getDigest();
    if (field.size() == stored.bytes.size())
      std::memcpy(stored.bytes.data(), field.begin(), field.size());
    if (root.getMagic() != kWrapperMagic || root.getEntries().size() != 1 ||
        entry.getSize() != in.size || stored != in.digest || digest.finish() != in.digest) {
      fail(out.string() + ": the message does not hold the input");
    }
  } catch (const kj::Exception& e) {
    fail(out.string() + ": Cap'n Proto refused the message: " + e.getDescription().cStr());
  }
  try {
    (void)Wrapper::open(out);
    return "Wrapper::open accepts it";
  } catch (const Error& e) {
    return "Wrapper::open refuses it: " + e.detail();
  }
}

// The loop every packing variant shares: `pack(in, out)` timed; then, untimed, what it
// returned is destroyed, the check runs once, and OUT is removed. Then, untimed and once per
// variant and process, `measure(in, out)` gives the peak resident set of one more pack in a
// child process (OUT is removed after it).
template <class Pack, class Check, class Measure>
void pack_loop(benchmark::State& state, const char* variant, Pack&& pack, Check&& check,
               Measure&& measure) {
  skip_on_error(state, [&] {
    const PackInput& in = pack_input();
    const std::filesystem::path out = scratch_path(std::string("wrapper-out-") + variant);
    const RemoveOnExit cleanup{out};
    static std::map<std::string, std::string> labels;  // one check per variant and process
    static std::map<std::string, ChildRss> rss;        // one measure, likewise
    for (auto _ : state) {
      // Untimed: the write-back of earlier iterations' outputs (removed, but their I/O may still
      // be in flight) and of anything else dirty ends before the clock starts, so that no
      // variant pays for the one before it.
      ::sync();
      {
        const auto start = SteadyClock::now();
        [[maybe_unused]] const auto leftover = pack(in, out);
        state.SetIterationTime(seconds_since(start));
      }  // `leftover` goes here, after the clock stopped
      if (labels.count(variant) == 0) labels[variant] = check(in, out);
      std::filesystem::remove(out);
    }
    if (!labels[variant].empty()) state.SetLabel(labels[variant]);
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * in.size));
    if (rss.count(variant) == 0) {
      rss[variant] = measure(in, out);
      std::filesystem::remove(out);
    }
    state.counters["input_MiB"] = static_cast<double>(in.size >> 20);
    state.counters["peak_rss_MiB"] = mib(rss[variant].peak_kib);
    if (rss[variant].at_fork_kib != 0) {
      state.counters["rss_at_fork_MiB"] = mib(rss[variant].at_fork_kib);
    }
  });
}

// The measure of a variant that runs in this process: the same pack in a forked child.
template <class Pack>
auto forked(Pack pack) {
  return [pack](const PackInput& in, const std::filesystem::path& out) {
    return peak_rss_in_child([&] { (void)pack(in, out); });
  };
}

#ifdef MAPWRIGHT_BENCH_CLI
// (a), (a') The tool, durable (the default) or with --no-sync.
void pack_cli(benchmark::State& state, bool durable) {
  const std::filesystem::path log = scratch_path("wrapper-cli-log");
  const RemoveOnExit cleanup{log};
  const auto command = [durable](const PackInput& in, const std::filesystem::path& out) {
    std::vector<std::string> args{MAPWRIGHT_BENCH_CLI, "pack", "-o", out.string(), "--data",
                                  "blob=" + in.path.string()};
    if (!durable) args.emplace_back("--no-sync");
    return args;
  };
  pack_loop(
      state, durable ? "cli" : "cli_nosync",
      [&](const PackInput& in, const std::filesystem::path& out) {
        run(command(in, out), log);
        return 0;
      },
      [](const PackInput& in, const std::filesystem::path& out) {
        check_wrapper(in, out);
        return std::string();
      },
      [&](const PackInput& in, const std::filesystem::path& out) {
        return peak_rss_of_command(command(in, out), log);
      });
}
#endif

// (b), (b') WrapperWriter in this process, durable (the default) or not.
void pack_inprocess(benchmark::State& state, bool durable) {
  const auto pack = [durable](const PackInput& in, const std::filesystem::path& out) {
    WrapperWriterOptions options;
    options.durable = durable;
    WrapperWriter writer(out, std::move(options));
    writer.add_data("blob", in.path);
    writer.publish();
    return 0;
  };
  pack_loop(
      state, durable ? "inprocess" : "inprocess_nosync", pack,
      [](const PackInput& in, const std::filesystem::path& out) {
        check_wrapper(in, out);
        return std::string();
      },
      forked(pack));
}

// (c), (c') cp, with or without fsync of the copy and its directory.
void pack_cp(benchmark::State& state, bool durable) {
  const std::filesystem::path log = scratch_path("wrapper-cp-log");
  const RemoveOnExit cleanup{log};
  pack_loop(
      state, durable ? "cp_fsync" : "cp",
      [&](const PackInput& in, const std::filesystem::path& out) {
        run({"cp", in.path.string(), out.string()}, log);
        if (durable) {
          fsync_path(out);
          fsync_path(directory_of(out), O_RDONLY | O_DIRECTORY);
        }
        return 0;
      },
      [](const PackInput& in, const std::filesystem::path& out) {
        check_copy(in, out);
        return std::string();
      },
      [&](const PackInput& in, const std::filesystem::path& out) {
        return peak_rss_of_command({"cp", in.path.string(), out.string()}, log);
      });
}

// (d) MallocMessageBuilder, pread into the chunks, writeMessageToFd, fsync, rename.
void pack_malloc_write(benchmark::State& state) {
  const auto pack = [](const PackInput& in, const std::filesystem::path& out) {
    // Returned, so that its heap is freed after the clock stops.
    auto builder = std::make_unique<::capnp::MallocMessageBuilder>();
    auto root = builder->initRoot<schema::WrapperFile>();
    root.setMagic(kWrapperMagic);
    root.setFormatVersion(kWrapperFormatVersion);
    root.setProducer("wrapper_bench malloc_write");
    auto entry = root.initEntries(1)[0];
    entry.setName("blob");
    entry.setKind(schema::Kind::DATA);
    entry.setSize(in.size);
    entry.setDigestAlgorithm(schema::DigestAlgorithm::XXH3X128);
    const std::uint64_t count = (in.size + kDefaultChunkBytes - 1) / kDefaultChunkBytes;
    auto chunks = entry.initChunks(static_cast<::capnp::uint>(count));
    detail::DigestStream digest;
    const Fd input(in.path, O_RDONLY);
    for (std::uint64_t c = 0; c < count; ++c) {
      const std::uint64_t offset = c * kDefaultChunkBytes;
      const std::uint64_t length = std::min(kDefaultChunkBytes, in.size - offset);
      auto data =
          chunks.init(static_cast<::capnp::uint>(c), static_cast<::capnp::uint>(length));
      auto* bytes = reinterpret_cast<std::byte*>(data.begin());
      pread_all(input.fd, bytes, length, offset);
      digest.update(bytes, length);
    }
    const Digest d = digest.finish();
    entry.setDigest(::capnp::Data::Reader(reinterpret_cast<const kj::byte*>(d.bytes.data()),
                                          d.bytes.size()));
    std::filesystem::path temporary = out;
    temporary += ".tmp";
    {
      const Fd file(temporary, O_WRONLY | O_CREAT | O_TRUNC);
      ::capnp::writeMessageToFd(file.fd, *builder);
      fsync_or_throw(file.fd, temporary.string());
    }
    if (::rename(temporary.c_str(), out.c_str()) != 0)
      fail_errno("rename " + temporary.string());
    fsync_path(directory_of(out), O_RDONLY | O_DIRECTORY);
    return builder;
  };
  pack_loop(state, "malloc_write", pack, check_malloc_message, forked(pack));
}

// ---- startup -----------------------------------------------------------------------------

// The startup wrapper: made on first use, removed at exit.
struct StartupWrapper {
  std::filesystem::path path;
  std::uint64_t data_size = std::min(kStartupData, bench_bytes());

  StartupWrapper() : path(scratch_path("wrapper-startup")) {
    WrapperWriter writer(path);
    writer.add_library("small", std::filesystem::path(MAPWRIGHT_BENCH_FIXTURE_SMALL));
    writer.add_library("big", std::filesystem::path(MAPWRIGHT_BENCH_FIXTURE_BIG));
    writer.add_data("data", data_size, [](std::span<std::byte> chunk, std::uint64_t offset) {
      std::uint64_t state = offset;
      random_words(reinterpret_cast<std::uint64_t*>(chunk.data()), chunk.size() / 8, &state);
    });
    writer.publish();
  }
  ~StartupWrapper() {
    std::error_code ignored;
    std::filesystem::remove(path, ignored);
  }
};

const StartupWrapper& startup_wrapper() {
  static const StartupWrapper wrapper;
  return wrapper;
}

std::optional<std::uint64_t> io_write_bytes() {
  std::ifstream in("/proc/self/io");
  std::string key;
  std::uint64_t value = 0;
  while (in >> key >> value) {
    if (key == "write_bytes:") return value;
  }
  return std::nullopt;
}

enum class Step {
  kOpen,
  kOpenVerify,
  kOpenLoad,
  kOpenVerifyLoad,
  kOpenVerifyBigLoad,
  kPlainDlopen
};

// One startup, timed up to and including the call; then, untimed, the proof that a library
// was really loaded, and the unload.
void startup(benchmark::State& state, Step step) {
  skip_on_error(state, [&] {
    const StartupWrapper& file = startup_wrapper();
    const bool loads = step != Step::kOpen && step != Step::kOpenVerify;
    const std::size_t baseline = loaded_objects();
    const auto io_before = io_write_bytes();
    std::string label;
    for (auto _ : state) {
      int answer = kAnswer;
      std::optional<Wrapper> wrapper;
      std::optional<Library> library;
      void* handle = nullptr;
      const auto start = SteadyClock::now();
      if (step == Step::kPlainDlopen) {
        // RTLD_NOW | RTLD_LOCAL: LoadOptions' defaults.
        handle = ::dlopen(MAPWRIGHT_BENCH_FIXTURE_BIG, RTLD_NOW | RTLD_LOCAL);
        if (handle == nullptr) fail(std::string("dlopen: ") + ::dlerror());
        void* symbol = ::dlsym(handle, "fixture_big_answer");
        answer = symbol != nullptr ? reinterpret_cast<int (*)()>(symbol)() : -1;
      } else {
        wrapper.emplace(Wrapper::open(file.path));
        if (step == Step::kOpenVerify || step == Step::kOpenVerifyLoad) wrapper->verify();
        if (step == Step::kOpenVerifyBigLoad && !wrapper->verify_entry(wrapper->entry("big"))) {
          fail("entry 'big': the digest does not match");
        }
        if (loads) {
          library.emplace(wrapper->load_library("big"));
          answer = library->function<int()>("fixture_big_answer")();
        }
      }
      state.SetIterationTime(seconds_since(start));

      const std::size_t during = loaded_objects();
      if (library && label.empty()) {
        label = std::string(to_string(library->strategy())) + ", " +
                to_string(library->report().copy_method);
      }
      library.reset();
      wrapper.reset();
      if (handle != nullptr && ::dlclose(handle) != 0) fail(std::string("dlclose: ") + ::dlerror());
      const std::size_t after = loaded_objects();
      const bool loaded = loads || step == Step::kPlainDlopen;
      if (answer != kAnswer || during != baseline + (loaded ? 1 : 0) || after != baseline) {
        fail("not a fresh load and unload: answer " + std::to_string(answer) + ", objects " +
             std::to_string(baseline) + " -> " + std::to_string(during) + " -> " +
             std::to_string(after));
      }
    }
    const auto io_after = io_write_bytes();
    if (io_before && io_after) {
      state.counters["io_write_B"] = benchmark::Counter(static_cast<double>(*io_after - *io_before),
                                                        benchmark::Counter::kAvgIterations);
    }
    if (!label.empty()) state.SetLabel(label);
  });
}

}  // namespace

void register_benchmarks() {
  const std::uint64_t bytes = bench_bytes();
  const std::string rest = "/" + size_name(bytes);
  auto pack = [&](const std::string& name, auto function, auto... args) {
    benchmark::RegisterBenchmark(("pack/" + name + rest).c_str(), function, args...)
        ->UseManualTime()
        ->Iterations(1)
        ->Unit(benchmark::kMillisecond);
  };
#ifdef MAPWRIGHT_BENCH_CLI
  pack("cli", pack_cli, true);
  pack("cli_nosync", pack_cli, false);
  compare("pack/cli_nosync", "pack/cp");
  compare("pack/cli", "pack/cp");
  compare("pack/cli", "pack/cp_fsync");
  compare("pack/cli", "pack/inprocess");
#endif
  pack("inprocess", pack_inprocess, true);
  pack("inprocess_nosync", pack_inprocess, false);
  pack("cp", pack_cp, false);
  pack("cp_fsync", pack_cp, true);
  pack("malloc_write", pack_malloc_write);
  compare("pack/inprocess", "pack/cp");
  compare("pack/inprocess", "pack/cp_fsync");
  compare("pack/inprocess_nosync", "pack/cp");
  compare("pack/inprocess", "pack/malloc_write");

  const struct {
    const char* name;
    Step step;
  } steps[] = {{"open", Step::kOpen},
               {"open_verify", Step::kOpenVerify},
               {"open_load", Step::kOpenLoad},
               {"open_verify_load", Step::kOpenVerifyLoad},
               {"open_verify_big_load", Step::kOpenVerifyBigLoad},
               {"plain_dlopen", Step::kPlainDlopen}};
  for (const auto& s : steps) {
    const std::string name = std::string("startup/") + s.name;
    benchmark::RegisterBenchmark(name.c_str(), startup, s.step)
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond);
    if (s.step != Step::kPlainDlopen) compare(name, "startup/plain_dlopen");
  }
}

}  // namespace mapwright::bench
