// tests/support/child.h — running a piece of a test in a child process, and the tools such
// children need: checks that end the child, a small tmpfs, a seccomp filter, a scratch
// directory; and the parent's checks of a child's output and exit.
//
// Signal outcomes (death by SIGBUS, a chained handler running, an rlimit) are observed in a
// forked child so that the test process itself is never changed by them.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <string>
#include <utility>
#include <vector>

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

// ---- in a child -------------------------------------------------------------------------

// A failed gtest assertion inside run_in_child's body does not reach the parent. CHILD_CHECK
// and CHILD_CHECK_MSG instead print "<file>:<line>: child check failed: <condition> (errno
// <name>)", and " -- <extra>" if given, to stderr and end the child with _exit(1).
[[noreturn]] void child_failed(const char* file, int line, const char* condition,
                               const std::string& extra = {});

#define CHILD_CHECK(condition)                                                         \
  do {                                                                                 \
    if (!(condition)) ::mapwright::test::child_failed(__FILE__, __LINE__, #condition); \
  } while (0)

#define CHILD_CHECK_MSG(condition, extra)                                                       \
  do {                                                                                          \
    if (!(condition)) ::mapwright::test::child_failed(__FILE__, __LINE__, #condition, (extra)); \
  } while (0)

// Writes `text` to stderr with write(2): async-signal-safe and unbuffered, so still visible
// when the child dies right after.
void say(const char* text);

// For a child that is meant to die by a signal: no core file (RLIMIT_CORE 0, not dumpable).
void no_core_dumps();

// A 4 KiB alternate signal stack with an inaccessible page right below it, for the calling
// thread: a handler path that needs more (as lazy binding of libc symbols inside the handler
// did) dies by SIGSEGV.
void use_small_altstack();

// Whether the running kernel's release (uname) is at least major.minor.
bool kernel_at_least(int major, int minor);

// ---- in the parent ------------------------------------------------------------------------

// The lines of `output` that start with `prefix`.
std::vector<std::string> lines_starting_with(const std::string& output, const std::string& prefix);

// The child neither timed out nor failed: it exited with code 0.
void expect_clean_exit(const ChildResult& result);

// The child died of SIGSEGV; under a sanitizer, which catches it, reports "SEGV" and exits,
// that report and a failing exit instead.
void expect_segv(const ChildResult& result);

// expect_clean_exit(), and no "mapwright:" line in the output: mapwright's handler reported
// nothing (a failure inside guarded() is the caller's to report).
void expect_clean_exit_unreported(const ChildResult& result);

// ---- scratch space ------------------------------------------------------------------------

// A directory that is removed with its contents on destruction: the base of TempDir and
// DiskDir, which differ in where they make it.
class ScratchDir {
 public:
  ~ScratchDir();
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 protected:
  explicit ScratchDir(std::filesystem::path path) : path_(std::move(path)) {}

 private:
  std::filesystem::path path_;
};

// A fresh directory under the system temp dir (which may be a tmpfs). Throws if it cannot be
// made.
class TempDir : public ScratchDir {
 public:
  TempDir();
};

// A fresh directory on a real disk filesystem (not tmpfs, where fallocate, sparse files and
// O_TMPFILE behave differently): under the system temp dir when that is on disk, else
// /var/tmp, else the working directory (the build tree under ctest). ok() is false (and the
// path empty) if it could not be made.
class DiskDir : public ScratchDir {
 public:
  DiskDir();
  bool ok() const { return !path().empty(); }
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
// deny_syscall(nr, error) on every thread of the process (SECCOMP_FILTER_FLAG_TSYNC), for
// threads that already run (a filter is otherwise inherited only by threads made after it).
bool deny_syscall_in_all_threads(long nr, int error);
// The same as deny_syscall, only when argument[arg]'s low 32 bits EQUAL `value`: e.g. madvise with
// MADV_POPULATE_WRITE failing with EINVAL, as on kernels before 5.14.
bool deny_syscall_when(long nr, int error, int arg, unsigned value);

}  // namespace mapwright::test
