// tests/support/child.h — running a piece of a test in a child process, and the tools such
// children need: a small tmpfs, a seccomp filter, a scratch directory.
//
// Signal outcomes (death by SIGBUS, a chained handler running, an rlimit) are observed in a
// forked child so that the test process itself is never changed by them.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <string>

namespace mapwright::test {

struct ChildResult {
  bool exited = false;     // ended by _exit/exit; exit_code is valid
  int exit_code = -1;
  int signal = 0;          // killed by this signal (0 if it exited)
  bool timed_out = false;  // still running at the deadline; it was then SIGKILLed
  std::string output;      // everything it wrote to stderr (and stdout)

  // "exited 3", "killed by SIGBUS", "timed out": for assertion messages.
  std::string describe() const;
};

// Forks; the child runs `body` with stdout and stderr going to a pipe and then _exit(0)s (an
// uncaught exception exits 99 after printing what() to stderr; a failed gtest assertion
// inside `body` does not reach the parent — report through the exit code instead). The parent
// collects the output and waits at most `timeout`.
ChildResult run_in_child(const std::function<void()>& body,
                         std::chrono::milliseconds timeout = std::chrono::seconds(60));

// A fresh directory under the system temp dir, removed with its contents on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

// A tmpfs of `bytes` mounted on a fresh directory, for ENOSPC tests. Needs root (or
// CAP_SYS_ADMIN); when mounting is refused, ok() is false and reason() says why, so that the
// test can GTEST_SKIP() << reason(). Unmounted (lazily) on destruction.
class SmallTmpfs {
 public:
  explicit SmallTmpfs(std::uint64_t bytes);
  ~SmallTmpfs();
  SmallTmpfs(const SmallTmpfs&) = delete;
  SmallTmpfs& operator=(const SmallTmpfs&) = delete;
  bool ok() const { return mounted_; }
  const std::string& reason() const { return reason_; }
  const std::filesystem::path& path() const { return dir_.path(); }

 private:
  TempDir dir_;
  bool mounted_ = false;
  std::string reason_;
};

// Installs a seccomp filter on the calling process (use it in a child): system call `nr`
// fails with `error` — always when `arg` is negative, else only when
// (argument[arg] & mask) != 0. Returns false (with errno) if the kernel refused the filter.
bool deny_syscall(long nr, int error, int arg = -1, unsigned long mask = 0);

}  // namespace mapwright::test
