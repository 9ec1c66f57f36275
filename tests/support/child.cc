#include "child.h"

#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <stdexcept>

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

TempDir::TempDir() {
  std::string pattern = (std::filesystem::temp_directory_path() / "mapwright-test-XXXXXX").string();
  if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = pattern;
}

TempDir::~TempDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

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
  sock_fprog program{};
  if (arg < 0) {
    program.len = sizeof always / sizeof always[0];
    program.filter = always;
  } else {
    program.len = sizeof masked / sizeof masked[0];
    program.filter = masked;
  }
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return false;
  return ::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &program) == 0;
}

}  // namespace mapwright::test
