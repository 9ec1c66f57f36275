#include "child.h"

#include <fcntl.h>
#include <linux/filter.h>
#include <linux/magic.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <system_error>

#include <gtest/gtest.h>

#include "sanitizers.h"

namespace mapwright::test {

std::string ChildResult::describe() const {
  if (timed_out) return "timed out";
  if (exited) return "exited " + std::to_string(exit_code) + "; output: " + output;
  return std::string("killed by ") + (sigabbrev_np(signal) ? sigabbrev_np(signal) : "?") +
         "; output: " + output;
}

ChildResult run_in_child(const std::function<void()>& body, std::chrono::milliseconds timeout) {
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    const rlimit no_core{0, 0};  // children that die by a signal on purpose leave no core file
    ::setrlimit(RLIMIT_CORE, &no_core);
    ::dup2(pipe_fds[1], STDOUT_FILENO);
    ::dup2(pipe_fds[1], STDERR_FILENO);
    try {
      body();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "uncaught exception: %s\n", e.what());
      std::fflush(nullptr);
      ::_exit(99);
    }
    std::fflush(nullptr);
    ::_exit(0);
  }
  ::close(pipe_fds[1]);
  ChildResult result;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  char buffer[4096];
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      ::kill(pid, SIGKILL);
      result.timed_out = true;
      break;
    }
    pollfd p{pipe_fds[0], POLLIN, 0};
    const int ready = ::poll(&p, 1, static_cast<int>(left.count()));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) continue;
    const ssize_t n = ::read(pipe_fds[0], buffer, sizeof buffer);
    if (n <= 0) break;  // every writer closed: the child is ending
    result.output.append(buffer, static_cast<std::size_t>(n));
  }
  ::close(pipe_fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!result.timed_out) {
    if (WIFEXITED(status)) {
      result.exited = true;
      result.exit_code = WEXITSTATUS(status);
    } else if (WIFSIGNALED(status)) {
      result.signal = WTERMSIG(status);
    }
  }
  return result;
}

void child_failed(const char* file, int line, const char* condition, const std::string& extra) {
  const int error = errno;
  const char* error_name = error == 0 ? "0" : strerrorname_np(error);
  std::fprintf(stderr, "%s:%d: child check failed: %s (errno %s)%s%s\n", file, line, condition,
               error_name != nullptr ? error_name : "?", extra.empty() ? "" : " -- ",
               extra.c_str());
  std::fflush(nullptr);
  ::_exit(1);
}

void say(const char* text) {
  const std::size_t length = std::strlen(text);
  std::size_t done = 0;
  while (done < length) {
    const ssize_t n = ::write(STDERR_FILENO, text + done, length - done);
    if (n <= 0) return;
    done += static_cast<std::size_t>(n);
  }
}

void no_core_dumps() {
  const rlimit none{0, 0};
  ::setrlimit(RLIMIT_CORE, &none);
  ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}

bool kernel_at_least(int major, int minor) {
  utsname name{};
  if (::uname(&name) != 0) return false;
  int have_major = 0;
  int have_minor = 0;
  if (std::sscanf(name.release, "%d.%d", &have_major, &have_minor) != 2) return false;
  return have_major > major || (have_major == major && have_minor >= minor);
}

void use_small_altstack() {
  const auto page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  void* p = ::mmap(nullptr, 2 * page + 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  CHILD_CHECK(p != MAP_FAILED);
  auto* base = static_cast<unsigned char*>(p);
  CHILD_CHECK(::mprotect(base, page, PROT_NONE) == 0);
  stack_t stack{};
  stack.ss_sp = base + page;
  stack.ss_size = 4096;
  CHILD_CHECK(::sigaltstack(&stack, nullptr) == 0);
}

std::vector<std::string> lines_starting_with(const std::string& output, const std::string& prefix) {
  std::vector<std::string> lines;
  std::size_t start = 0;
  while (start < output.size()) {
    std::size_t end = output.find('\n', start);
    if (end == std::string::npos) end = output.size();
    const std::string line = output.substr(start, end - start);
    if (line.rfind(prefix, 0) == 0) lines.push_back(line);
    start = end + 1;
  }
  return lines;
}

void expect_clean_exit(const ChildResult& result) {
  EXPECT_FALSE(result.timed_out) << result.describe();
  EXPECT_TRUE(result.exited && result.exit_code == 0) << result.describe();
}

void expect_segv(const ChildResult& result) {
#if MAPWRIGHT_TEST_ASAN || MAPWRIGHT_TEST_TSAN
  EXPECT_TRUE(result.signal == SIGSEGV || (result.exited && result.exit_code != 0))
      << result.describe();
  EXPECT_NE(result.output.find("SEGV"), std::string::npos) << result.describe();
#else
  EXPECT_EQ(result.signal, SIGSEGV) << result.describe();
#endif
}

void expect_clean_exit_unreported(const ChildResult& result) {
  expect_clean_exit(result);
  EXPECT_TRUE(lines_starting_with(result.output, "mapwright:").empty()) << result.describe();
}

namespace {

// mkdtemp() of "mapwright-test-XXXXXX" in `parent`: the new directory, or "" if it failed.
std::filesystem::path make_directory_in(const std::filesystem::path& parent) {
  std::string pattern = (parent / "mapwright-test-XXXXXX").string();
  if (::mkdtemp(pattern.data()) == nullptr) return {};
  return pattern;
}

// The first of the system temp dir, /var/tmp and the working directory that is writable and
// not a tmpfs; the working directory if none is.
std::filesystem::path disk_parent() {
  for (const std::filesystem::path& candidate :
       {std::filesystem::temp_directory_path(), std::filesystem::path("/var/tmp"),
        std::filesystem::current_path()}) {
    struct statfs fs {};
    if (::statfs(candidate.c_str(), &fs) == 0 && fs.f_type != TMPFS_MAGIC &&
        ::access(candidate.c_str(), W_OK) == 0) {
      return candidate;
    }
  }
  return std::filesystem::current_path();
}

std::filesystem::path make_temp_directory() {
  std::filesystem::path path = make_directory_in(std::filesystem::temp_directory_path());
  if (path.empty()) throw std::runtime_error("mkdtemp failed");
  return path;
}

}  // namespace

ScratchDir::~ScratchDir() {
  std::error_code ignored;
  if (!path_.empty()) std::filesystem::remove_all(path_, ignored);
}

TempDir::TempDir() : ScratchDir(make_temp_directory()) {}

DiskDir::DiskDir() : ScratchDir(make_directory_in(disk_parent())) {}

SmallTmpfs::SmallTmpfs(std::uint64_t bytes) {
  const std::string options = "size=" + std::to_string(bytes);
  if (::mount("mapwright-test", dir_.path().c_str(), "tmpfs", MS_NOSUID | MS_NODEV,
              options.c_str()) == 0) {
    mounted_ = true;
  } else {
    reason_ = std::string("cannot mount a small tmpfs here (") + std::strerror(errno) +
              "); run the suite as root to test a full filesystem";
  }
}

SmallTmpfs::~SmallTmpfs() {
  if (mounted_) ::umount2(dir_.path().c_str(), MNT_DETACH);
}

namespace {

// Installs a seccomp filter program on the calling thread (no_new_privs first), or with
// `flags` = SECCOMP_FILTER_FLAG_TSYNC on every thread of the process.
bool install_filter(sock_filter* filter, std::size_t length, unsigned flags = 0) {
  sock_fprog program{};
  program.len = static_cast<unsigned short>(length);
  program.filter = filter;
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return false;
  return ::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &program) == 0;
}

}  // namespace

bool deny_syscall(long nr, int error, int arg, unsigned long mask) {
  const unsigned kErrno = SECCOMP_RET_ERRNO | (static_cast<unsigned>(error) & SECCOMP_RET_DATA);
  const auto low = static_cast<unsigned>(mask & 0xffffffffu);
  const unsigned arg_offset =
      arg < 0 ? 0 : static_cast<unsigned>(offsetof(seccomp_data, args) + 8 * arg);
  sock_filter always[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, static_cast<unsigned>(nr), 0, 1),
      BPF_STMT(BPF_RET | BPF_K, kErrno),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  sock_filter masked[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, static_cast<unsigned>(nr), 0, 3),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, arg_offset),  // low 32 bits (little-endian)
      BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, low, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, kErrno),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  if (arg < 0) return install_filter(always, sizeof always / sizeof always[0]);
  return install_filter(masked, sizeof masked / sizeof masked[0]);
}

bool deny_syscall_in_all_threads(long nr, int error) {
  const unsigned kErrno = SECCOMP_RET_ERRNO | (static_cast<unsigned>(error) & SECCOMP_RET_DATA);
  sock_filter always[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, static_cast<unsigned>(nr), 0, 1),
      BPF_STMT(BPF_RET | BPF_K, kErrno),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  return install_filter(always, sizeof always / sizeof always[0], SECCOMP_FILTER_FLAG_TSYNC);
}

bool deny_syscall_when(long nr, int error, int arg, unsigned value) {
  const unsigned kErrno = SECCOMP_RET_ERRNO | (static_cast<unsigned>(error) & SECCOMP_RET_DATA);
  const auto arg_offset = static_cast<unsigned>(offsetof(seccomp_data, args) + 8 * arg);
  sock_filter equal[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, static_cast<unsigned>(nr), 0, 3),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, arg_offset),  // low 32 bits (little-endian)
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, value, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, kErrno),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  return install_filter(equal, sizeof equal / sizeof equal[0]);
}

}  // namespace mapwright::test
