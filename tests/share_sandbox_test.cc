// share.h with real sandboxed processes: a child forked (never exec'd: the code it runs is
// this test's own) into a user, mount and PID namespace of its own, whose root is an empty
// tmpfs holding nothing but a fresh /proc, with no_new_privs, a Landlock ruleset (no host
// file can be opened even through /proc/self/exe) and a seccomp filter (libseccomp) that
// denies creating files and memfds. It receives a bundle, checks it, loads the libraries with
// no copy and calls a function of each. Then eight such children load the 8 MB fixture and
// the test reads their /proc/PID/smaps: they share one copy of its pages.
//
// Unprivileged: the same sandbox is made by a child that first drops to uid/gid 65534
// (nobody) — a user namespace is what lets it mount; where the system forbids unprivileged
// user namespaces (sysctl user.max_user_namespaces=0, kernel.unprivileged_userns_clone=0,
// AppArmor's restrict_unprivileged_userns) unshare() fails with EPERM or ENOSPC, and that
// test is skipped saying so.
#include <dirent.h>
#include <grp.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/landlock.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#if MAPWRIGHT_TEST_HAVE_LIBSECCOMP
#include <seccomp.h>
#endif

#include <cerrno>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "bundle_wire.h"
#include "child.h"
#include "fixture_paths.h"
#include "mapwright/error.h"
#include "mapwright/share.h"
#include "mapwright/wrapper.h"

namespace mapwright {
namespace {

using test::TempDir;

// ---- messages between the test and a sandbox: one seqpacket message each ------------------

void send_text(int socket, const std::string& text) {
  (void)::send(socket, text.data(), text.size(), MSG_NOSIGNAL);
}

// The next message, or "" at end of stream.
std::string receive_text(int socket) {
  char buffer[4096];
  ssize_t n = -1;
  do {
    n = ::recv(socket, buffer, sizeof buffer, 0);
  } while (n < 0 && errno == EINTR);
  return n > 0 ? std::string(buffer, static_cast<std::size_t>(n)) : std::string();
}

// Inside a sandbox a failed check reports to the test and ends the sandbox with exit code 1.
[[noreturn]] void sandbox_failed(int socket, const std::string& what) {
  const char* name = strerrorname_np(errno);
  send_text(socket, "fail " + what + " (errno " + (name != nullptr ? name : "0") + ")");
  ::_exit(1);
}
#define SANDBOX_CHECK(socket, condition)                                  \
  do {                                                                    \
    if (!(condition)) sandbox_failed((socket), #condition);               \
  } while (0)

bool write_file(const char* path, const std::string& text) {
  const int fd = ::open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ::close(fd);
  return ok;
}

// ---- entering the sandbox (in the process that is pid 1 of the new PID namespace) ----------

// A new root: a tmpfs holding an empty directory and a fresh /proc (of this PID namespace,
// so it shows the sandbox's processes only); the old root detached. The host's file system
// is then not reachable by any path.
void make_root(int socket) {
  SANDBOX_CHECK(socket, ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) == 0);
  SANDBOX_CHECK(socket, ::mount("sandbox", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=0755") == 0);
  SANDBOX_CHECK(socket, ::mkdir("/tmp/proc", 0555) == 0);
  SANDBOX_CHECK(socket, ::mkdir("/tmp/old", 0700) == 0);
  SANDBOX_CHECK(socket, ::mount("proc", "/tmp/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) == 0);
  SANDBOX_CHECK(socket, ::syscall(SYS_pivot_root, "/tmp", "/tmp/old") == 0);
  SANDBOX_CHECK(socket, ::chdir("/") == 0);
  SANDBOX_CHECK(socket, ::umount2("/old", MNT_DETACH) == 0);
  SANDBOX_CHECK(socket, ::rmdir("/old") == 0);
}

// Landlock: only reading directories (anywhere under the new root) and files under /proc.
// What a magic link of /proc leads to outside the new root — /proc/self/exe, the test's own
// binary on the host — is then refused too (EACCES); the memfds the libraries come in are on
// the kernel's internal mount, which Landlock leaves alone. Returns "" or why it is missing.
std::string restrict_with_landlock(int socket) {
  const long abi = ::syscall(SYS_landlock_create_ruleset, nullptr, 0, LANDLOCK_CREATE_RULESET_VERSION);
  if (abi < 1) return std::string("Landlock unavailable: ") + std::strerror(errno);
  landlock_ruleset_attr attr{};
  attr.handled_access_fs =
      LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_READ_FILE |
      LANDLOCK_ACCESS_FS_READ_DIR | LANDLOCK_ACCESS_FS_REMOVE_DIR | LANDLOCK_ACCESS_FS_REMOVE_FILE |
      LANDLOCK_ACCESS_FS_MAKE_CHAR | LANDLOCK_ACCESS_FS_MAKE_DIR | LANDLOCK_ACCESS_FS_MAKE_REG |
      LANDLOCK_ACCESS_FS_MAKE_SOCK | LANDLOCK_ACCESS_FS_MAKE_FIFO | LANDLOCK_ACCESS_FS_MAKE_BLOCK |
      LANDLOCK_ACCESS_FS_MAKE_SYM;
  const int ruleset = static_cast<int>(::syscall(SYS_landlock_create_ruleset, &attr, sizeof attr, 0));
  SANDBOX_CHECK(socket, ruleset >= 0);
  const auto allow = [&](const char* path, std::uint64_t access) {
    landlock_path_beneath_attr rule{};
    rule.allowed_access = access;
    rule.parent_fd = ::open(path, O_PATH | O_CLOEXEC);
    SANDBOX_CHECK(socket, rule.parent_fd >= 0);
    SANDBOX_CHECK(socket, ::syscall(SYS_landlock_add_rule, ruleset, LANDLOCK_RULE_PATH_BENEATH, &rule, 0) == 0);
    ::close(rule.parent_fd);
  };
  allow("/", LANDLOCK_ACCESS_FS_READ_DIR);
  allow("/proc", LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR);
  SANDBOX_CHECK(socket, ::syscall(SYS_landlock_restrict_self, ruleset, 0) == 0);
  ::close(ruleset);
  return "";
}

// seccomp: creating a file, a directory, a node, a link, a memfd, an unnamed O_TMPFILE file
// is EPERM; so are openat2 (its flags are behind a pointer the filter cannot read) and
// io_uring_setup (io_uring opens files without the system calls the filter sees).
void deny_creating_files(int socket) {
#if MAPWRIGHT_TEST_HAVE_LIBSECCOMP
  scmp_filter_ctx filter = seccomp_init(SCMP_ACT_ALLOW);
  SANDBOX_CHECK(socket, filter != nullptr);
  const std::uint32_t deny = SCMP_ACT_ERRNO(EPERM);
  constexpr scmp_datum_t kTmpfileBit = 020000000;  // __O_TMPFILE without O_DIRECTORY
  for (const scmp_datum_t bit : {scmp_datum_t{O_CREAT}, kTmpfileBit}) {
    SANDBOX_CHECK(socket, seccomp_rule_add(filter, deny, SCMP_SYS(open), 1, SCMP_A1(SCMP_CMP_MASKED_EQ, bit, bit)) == 0);
    SANDBOX_CHECK(socket, seccomp_rule_add(filter, deny, SCMP_SYS(openat), 1, SCMP_A2(SCMP_CMP_MASKED_EQ, bit, bit)) == 0);
  }
  for (const char* name : {"creat", "mknod", "mknodat", "mkdir", "mkdirat", "link", "linkat", "symlink",
                           "symlinkat", "rename", "renameat", "renameat2", "memfd_create",
                           "memfd_secret", "openat2", "io_uring_setup"}) {
    const int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR) continue;  // a libseccomp older than the call
    SANDBOX_CHECK(socket, seccomp_rule_add(filter, deny, nr, 0) == 0);
  }
  SANDBOX_CHECK(socket, seccomp_load(filter) == 0);
  seccomp_release(filter);
#else
  sandbox_failed(socket, "built without libseccomp (Debian: libseccomp-dev)");
#endif
}

// Everything but the socket (moved to fd 3) and stderr (a pipe under ctest; kept so that a
// crash can still say why) is closed: no fd of the test (its stdin, a file it had open)
// stays open in the sandbox to read a host file through.
int keep_only_socket(int socket) {
  if (socket != 3) {
    SANDBOX_CHECK(socket, ::dup2(socket, 3) == 3);
    socket = 3;
  }
  SANDBOX_CHECK(socket, ::close_range(4, ~0u, 0) == 0);
  ::close(0);
  ::close(1);
  return socket;
}

struct SandboxOptions {
  bool unprivileged = false;  // drop to uid/gid 65534 before making the namespaces
};

// A sandboxed process, as the test sees it. Destroyed without wait() (a failed assertion
// returned early), it closes its socket — the sandbox's next receive sees the end of the
// stream and exits — and waits for it.
struct Sandbox {
  pid_t pid = -1;       // the child forked here; it waits for the one inside and exits as it does
  pid_t inner = -1;     // pid 1 of the new PID namespace, as numbered in this one
  int socket = -1;      // the test's end; the sandbox's is its fd 3
  std::string skipped;  // why no sandbox could be made, if none could

  Sandbox() = default;
  Sandbox(Sandbox&& other) noexcept
      : pid(std::exchange(other.pid, -1)),
        inner(other.inner),
        socket(std::exchange(other.socket, -1)),
        skipped(std::move(other.skipped)) {}
  Sandbox& operator=(Sandbox&&) = delete;
  ~Sandbox() {
    if (pid > 0) wait();
  }

  // Waits for the sandbox to end: its exit code, or 128 + the signal that ended it.
  int wait() {
    if (socket >= 0) ::close(socket);
    socket = -1;
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    pid = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
};

// Forks a process that makes the namespaces, forks again (the PID namespace takes effect for
// children) and runs `body` inside, as pid 1, after the root, Landlock and seccomp are in
// place. The first messages on the socket are "pid N" (the inner process, numbered here)
// or "skip <why>", then "landlock on" or "landlock off <why>", then whatever `body` says.
Sandbox start_sandbox(const std::function<void(int socket)>& body, SandboxOptions options = {}) {
  int pair[2];
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair), 0);
  Sandbox sandbox;
  sandbox.pid = ::fork();
  if (sandbox.pid != 0) {
    ::close(pair[1]);
    sandbox.socket = pair[0];
    const std::string first = receive_text(sandbox.socket);
    if (first.rfind("pid ", 0) == 0) {
      sandbox.inner = std::stoi(first.substr(4));
    } else {
      sandbox.skipped = first.rfind("skip ", 0) == 0 ? first.substr(5) : "no sandbox: '" + first + "'";
    }
    return sandbox;
  }
  ::close(pair[0]);
  const int socket = pair[1];
  if (options.unprivileged) {
    SANDBOX_CHECK(socket, ::setgroups(0, nullptr) == 0);
    SANDBOX_CHECK(socket, ::setresgid(65534, 65534, 65534) == 0);
    SANDBOX_CHECK(socket, ::setresuid(65534, 65534, 65534) == 0);
    // Changing credentials made the process non-dumpable: its /proc/self files would belong
    // to root, and it could not write its own uid_map.
    SANDBOX_CHECK(socket, ::prctl(PR_SET_DUMPABLE, 1) == 0);
  }
  const uid_t uid = ::getuid();
  const gid_t gid = ::getgid();
  if (::unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID) != 0) {
    send_text(socket, std::string("skip unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID) as uid ") +
                          std::to_string(uid) + ": " + std::strerror(errno));
    ::_exit(0);
  }
  // Root inside, the same user outside: the namespace's capabilities (mount, pivot_root)
  // and none in the test's own namespace.
  SANDBOX_CHECK(socket, write_file("/proc/self/setgroups", "deny"));
  SANDBOX_CHECK(socket, write_file("/proc/self/uid_map", "0 " + std::to_string(uid) + " 1"));
  SANDBOX_CHECK(socket, write_file("/proc/self/gid_map", "0 " + std::to_string(gid) + " 1"));
  int go[2];
  SANDBOX_CHECK(socket, ::pipe2(go, O_CLOEXEC) == 0);
  const pid_t inner = ::fork();
  SANDBOX_CHECK(socket, inner >= 0);
  if (inner != 0) {
    ::close(go[0]);
    send_text(socket, "pid " + std::to_string(inner));
    ::close(go[1]);  // now the inner process may speak
    ::close(socket);
    int status = 0;
    while (::waitpid(inner, &status, 0) < 0 && errno == EINTR) {
    }
    ::_exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
  }
  ::close(go[1]);
  char ignored;
  while (::read(go[0], &ignored, 1) < 0 && errno == EINTR) {
  }
  ::close(go[0]);
  int s = socket;
  make_root(s);
  s = keep_only_socket(s);
  SANDBOX_CHECK(s, ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0);
  const std::string landlock = restrict_with_landlock(s);
  send_text(s, landlock.empty() ? "landlock on" : "landlock off " + landlock);
  deny_creating_files(s);
  try {
    body(s);
  } catch (const std::exception& e) {
    sandbox_failed(s, std::string("exception: ") + e.what());
  }
  ::_exit(0);
}

// ---- what the sandbox checks about itself --------------------------------------------------

bool open_fails(const char* path, int expected) {
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    ::close(fd);
    return false;
  }
  return errno == expected;
}

std::set<std::string> root_entries() {
  std::set<std::string> names;
  DIR* dir = ::opendir("/");
  if (dir == nullptr) return {"(opendir failed)"};
  while (const dirent* entry = ::readdir(dir)) {
    if (std::strcmp(entry->d_name, ".") != 0 && std::strcmp(entry->d_name, "..") != 0) names.insert(entry->d_name);
  }
  ::closedir(dir);
  return names;
}

void check_confinement(int socket, const std::string& host_binary, bool landlock) {
  SANDBOX_CHECK(socket, ::getpid() == 1);
  SANDBOX_CHECK(socket, ::prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1);
  // No host file by any path: the root holds /proc and nothing else.
  SANDBOX_CHECK(socket, root_entries() == std::set<std::string>{"proc"});
  SANDBOX_CHECK(socket, open_fails("/etc/passwd", ENOENT));
  SANDBOX_CHECK(socket, open_fails(host_binary.c_str(), ENOENT));
  SANDBOX_CHECK(socket, open_fails("/proc/1/root/etc/passwd", ENOENT));  // pid 1 is itself
  // Nor through /proc's links to the binary it was forked from (Landlock).
  if (landlock) {
    SANDBOX_CHECK(socket, open_fails("/proc/self/exe", EACCES));
  }
  // No file can be made (seccomp): the tmpfs root would take one otherwise.
  errno = 0;
  SANDBOX_CHECK(socket, ::open("/made", O_CREAT | O_WRONLY | O_CLOEXEC, 0600) == -1 && errno == EPERM);
  SANDBOX_CHECK(socket, ::syscall(SYS_creat, "/made", 0600) == -1 && errno == EPERM);
  SANDBOX_CHECK(socket, ::open("/", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600) == -1 && errno == EPERM);
  SANDBOX_CHECK(socket, ::mkdir("/made", 0700) == -1 && errno == EPERM);
  SANDBOX_CHECK(socket, ::mknod("/made", S_IFIFO | 0600, 0) == -1 && errno == EPERM);
  SANDBOX_CHECK(socket, ::memfd_create("made", MFD_CLOEXEC) == -1 && errno == EPERM);
  SANDBOX_CHECK(socket, root_entries() == std::set<std::string>{"proc"});
}

// The functions the fixture libraries define, and what they return.
struct Call {
  const char* symbol;
  int answer;
};
const std::map<std::string, Call> kCalls = {
    {"liba", {"fixture_answer", 42}},
    {"libb", {"fixture_b_answer", 43}},
    {"big", {"fixture_big_answer", 42}},
};

Wrapper write_wrapper(const TempDir& dir, bool with_small) {
  const auto path = dir / "shared.mwr";
  WrapperWriterOptions options;
  options.durable = false;
  {
    WrapperWriter writer(path, options);
    if (with_small) {
      writer.add_library("libb", MAPWRIGHT_FIXTURE_B, {"liba"});
      writer.add_library("liba", MAPWRIGHT_FIXTURE_A);
    }
    writer.add_library("big", MAPWRIGHT_FIXTURE_BIG);
    writer.publish();
  }
  return Wrapper::open(path);
}

std::string host_binary() {
  std::vector<char> path(4096);
  const ssize_t n = ::readlink("/proc/self/exe", path.data(), path.size() - 1);
  return n > 0 ? std::string(path.data(), static_cast<std::size_t>(n)) : std::string("/proc/self/exe");
}

// Runs the whole story in one sandbox and returns what it reported; fails the test on any
// failed check inside.
void receive_load_and_call(SandboxOptions options) {
  TempDir dir;
  const Wrapper wrapper = write_wrapper(dir, true);
  const LibraryBundle bundle = LibraryBundle::from_wrapper(wrapper);
  const std::string binary = host_binary();
  Sandbox sandbox = start_sandbox(
      [&](int socket) {
        check_confinement(socket, binary, true);
        // Who it is outside: root, or nobody (65534) for the unprivileged test.
        std::ifstream map("/proc/self/uid_map");
        std::uint64_t inside = 1, outside = 1;
        map >> inside >> outside;
        send_text(socket, "uid " + std::to_string(inside) + " is " + std::to_string(outside));
        send_text(socket, "ready");
        const LibraryBundle received = receive_bundle(socket);
        const LoadedLibraries loaded = received.load({.name = "sandbox"});
        for (std::size_t i = 0; i < loaded.size(); ++i) {
          const std::string& name = received.libraries()[i].name;
          const Library& library = loaded[i];
          SANDBOX_CHECK(socket, library.strategy() == LoadStrategy::kSealedMemfd);
          const int answer = library.function<int()>(kCalls.at(name).symbol)();
          send_text(socket, "call " + name + " " + std::to_string(answer));
        }
        send_text(socket, "done");
      },
      options);
  if (!sandbox.skipped.empty()) {
    sandbox.wait();
    GTEST_SKIP() << sandbox.skipped;
  }
  const std::string landlock = receive_text(sandbox.socket);
  if (landlock != "landlock on") {
    // Without it /proc/self/exe still opens the test's binary on the host: no sandbox that
    // can open no host file. Say so rather than pass (the sandbox fails that check).
    sandbox.wait();
    GTEST_SKIP() << landlock << ": without Landlock, /proc/self/exe still reaches the host's file";
  }
  EXPECT_EQ(receive_text(sandbox.socket), options.unprivileged ? "uid 0 is 65534" : "uid 0 is 0");
  const std::string ready = receive_text(sandbox.socket);
  ASSERT_EQ(ready, "ready");
  send_bundle(sandbox.socket, bundle);
  std::vector<std::string> reports;
  for (std::string m; !(m = receive_text(sandbox.socket)).empty() && m != "done";) reports.push_back(m);
  EXPECT_EQ(sandbox.wait(), 0);
  // Dependencies first, each library called inside the sandbox.
  EXPECT_EQ(reports, (std::vector<std::string>{"call liba 42", "call libb 43", "call big 42"}));
}

TEST(ShareSandbox, ASandboxThatCanOpenNoHostFileReceivesLoadsAndCallsEachLibrary) {
  receive_load_and_call({});
}

TEST(ShareSandbox, AnUnprivilegedProcessMakesTheSameSandbox) {
  receive_load_and_call({.unprivileged = true});
}

TEST(ShareSandbox, ASandboxRefusesABundleWhoseDigestDoesNotMatchItsBytes) {
  // The checks run inside the sandbox too: a message whose digest is not its fd's bytes.
  TempDir dir;
  const Wrapper wrapper = write_wrapper(dir, false);
  const LibraryBundle bundle = LibraryBundle::from_wrapper(wrapper);
  Sandbox sandbox = start_sandbox([](int socket) {
    send_text(socket, "ready");
    try {
      const LibraryBundle received = receive_bundle(socket);
      send_text(socket, "accepted");
    } catch (const Error& e) {
      send_text(socket, "refused " + std::to_string(e.error()));
    }
  });
  if (!sandbox.skipped.empty()) {
    sandbox.wait();
    GTEST_SKIP() << sandbox.skipped;
  }
  receive_text(sandbox.socket);  // landlock on/off: not needed here
  ASSERT_EQ(receive_text(sandbox.socket), "ready");
  // The bundle's own fd, announced with a digest one bit away from its bytes'.
  const BundledLibrary& big = bundle.libraries()[0];
  Digest wrong = big.digest;
  wrong.bytes[0] ^= std::byte{1};
  detail::send_bundle_message(sandbox.socket,
                              detail::encode_bundle({{big.name, wrong, big.image.size(), {}}}),
                              std::vector<int>{big.image.fd()});
  EXPECT_EQ(receive_text(sandbox.socket), "refused " + std::to_string(EBADMSG));
  EXPECT_EQ(sandbox.wait(), 0);
}

// ---- sharing: eight sandboxes, one copy ------------------------------------------------------

struct MappingUse {
  std::uint64_t rss_kib = 0;
  std::uint64_t pss_kib = 0;
  int mappings = 0;
};

// The Rss and Pss of every mapping of `pid` whose path contains `name`, from /proc/PID/smaps.
MappingUse mapping_use(pid_t pid, const std::string& name) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/smaps");
  MappingUse use;
  bool inside = false;
  for (std::string line; std::getline(in, line);) {
    // A mapping's first line: "start-end perms offset dev inode [path]"; its fields follow as
    // "Key:   value kB".
    const auto colon = line.find(':');
    const bool field = colon != std::string::npos && line.find(' ') > colon;
    if (!field) {
      inside = line.find(name) != std::string::npos;
      use.mappings += inside;
      continue;
    }
    if (!inside) continue;
    std::istringstream value(line.substr(colon + 1));
    std::uint64_t kib = 0;
    value >> kib;
    if (line.rfind("Rss:", 0) == 0) use.rss_kib += kib;
    if (line.rfind("Pss:", 0) == 0) use.pss_kib += kib;
  }
  return use;
}

TEST(ShareSandbox, EightSandboxesLoadingThe8MBLibraryShareOneCopyOfItsPages) {
  constexpr int kChildren = 8;
  TempDir dir;
  const Wrapper wrapper = write_wrapper(dir, false);
  const LibraryBundle bundle = LibraryBundle::from_wrapper(wrapper);
  const std::uint64_t size_kib = bundle.libraries()[0].image.size() / 1024;
  ASSERT_GT(size_kib, 8000u);
  const auto child = [](int socket) {
    send_text(socket, "ready");
    const LibraryBundle received = receive_bundle(socket);
    const LoadedLibraries loaded = received.load();
    SANDBOX_CHECK(socket, loaded[0].function<int()>("fixture_big_answer")() == 42);
    SANDBOX_CHECK(socket, receive_text(socket) == "touch");
    // Read every page of the 8 MiB blob, so that each is mapped in this process.
    const auto* blob = static_cast<const volatile unsigned char*>(loaded[0].symbol("fixture_big_blob"));
    unsigned sum = 0;
    for (std::size_t i = 0; i < (8u << 20); i += 4096) sum += blob[i];
    send_text(socket, "touched " + std::to_string(sum));
    SANDBOX_CHECK(socket, receive_text(socket) == "exit");
  };
  std::vector<Sandbox> sandboxes;
  for (int i = 0; i < kChildren; ++i) {
    sandboxes.push_back(start_sandbox(child));
    if (!sandboxes.back().skipped.empty()) {
      const std::string why = sandboxes.back().skipped;
      for (Sandbox& s : sandboxes) s.wait();
      GTEST_SKIP() << why;
    }
    receive_text(sandboxes.back().socket);  // landlock on/off
  }
  for (Sandbox& s : sandboxes) {
    ASSERT_EQ(receive_text(s.socket), "ready");
    send_bundle(s.socket, bundle);
    send_text(s.socket, "touch");
  }
  for (Sandbox& s : sandboxes) ASSERT_EQ(receive_text(s.socket), "touched 1");
  // All eight alive, each having read the whole blob: their smaps, while they wait.
  MappingUse total;
  std::ostringstream each;
  for (const Sandbox& s : sandboxes) {
    const MappingUse use = mapping_use(s.inner, "/memfd:mapwright-bundle:big");
    EXPECT_GT(use.mappings, 0) << "pid " << s.inner;
    // Each maps the whole library: its resident set holds all of it...
    EXPECT_GE(use.rss_kib, 8u << 10) << "pid " << s.inner;
    total.rss_kib += use.rss_kib;
    total.pss_kib += use.pss_kib;
    each << " " << use.pss_kib;
  }
  for (Sandbox& s : sandboxes) send_text(s.socket, "exit");
  for (Sandbox& s : sandboxes) EXPECT_EQ(s.wait(), 0);
  // ...but the pages are the same ones: the proportional share of all eight adds up to about
  // one copy (8 copies would be 8x), where the eight resident sets add up to eight.
  std::cout << "library " << size_kib << " KiB; " << kChildren << " sandboxes: Rss sum " << total.rss_kib
            << " KiB, Pss sum " << total.pss_kib << " KiB (each:" << each.str() << ")\n";
  EXPECT_GE(total.rss_kib, kChildren * (8u << 10));
  EXPECT_LT(total.pss_kib, 2 * size_kib);
  EXPECT_GT(total.pss_kib, size_kib / 2);
}

}  // namespace
}  // namespace mapwright
