// tests/loader_test.cc — load_library(): the three sources, each step of the ladder, the
// /proc/self/fd reuse hazard, a dependency pair with no file on disk, and the errors.
#include "mapwright/loader.h"

#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <stdlib.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "child.h"
#include "content.h"
#include "fixture_paths.h"
#include "mapwright/error.h"
#include "mapwright/region.h"
#include "mapwright/sealed_image.h"

namespace mapwright {
namespace {

using test::run_in_child;

const std::vector<std::byte>& fixture_a() {
  static const std::vector<std::byte> bytes = test::read_file_bytes(MAPWRIGHT_FIXTURE_A);
  return bytes;
}
const std::vector<std::byte>& fixture_b() {
  static const std::vector<std::byte> bytes = test::read_file_bytes(MAPWRIGHT_FIXTURE_B);
  return bytes;
}

SealedImage sealed(const std::vector<std::byte>& bytes) {
  Region region = Region::memfd("loader-test");
  region.ensure(bytes.size());
  std::memcpy(region.data(), bytes.data(), bytes.size());
  region.finish(bytes.size());
  return std::move(region).seal();
}

// A raw memfd holding `bytes`, unsealed; the caller closes it.
int raw_memfd(const std::vector<std::byte>& bytes) {
  const int fd = ::memfd_create("loader-test-raw", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return -1;
  if (::write(fd, bytes.data(), bytes.size()) != static_cast<ssize_t>(bytes.size())) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Names of every loaded object, as the dynamic linker knows them.
std::vector<std::string> loaded_names() {
  std::vector<std::string> names;
  dl_iterate_phdr(
      [](dl_phdr_info* info, std::size_t, void* data) -> int {
        static_cast<std::vector<std::string>*>(data)->emplace_back(
            info->dlpi_name != nullptr ? info->dlpi_name : "");
        return 0;
      },
      &names);
  return names;
}

bool fixture_a_loaded() {
  void* handle = dlopen("libmwfixture_a.so", RTLD_LAZY | RTLD_NOLOAD);
  if (handle != nullptr) dlclose(handle);
  return handle != nullptr;
}

bool directory_empty(const std::filesystem::path& dir) {
  return std::filesystem::directory_iterator(dir) == std::filesystem::directory_iterator();
}

// ---- the three sources ---------------------------------------------------------------------

TEST(Loader, SealedImageLoadsWithoutCopy) {
  const SealedImage image = sealed(fixture_a());
  const Library library = load_library(image);
  EXPECT_EQ(library.strategy(), LoadStrategy::kSealedMemfd);
  EXPECT_EQ(library.report().copy_method, CopyMethod::kNone);
  EXPECT_EQ(library.report().bytes_copied, 0u);
  EXPECT_EQ(library.report().bytes_written_to_disk, 0u);
  EXPECT_EQ(library.path(), "/proc/self/fd/" + std::to_string(library.fd()));
  EXPECT_NE(library.fd(), image.fd());  // its own fd, kept while loaded
  EXPECT_EQ(library.name(), "sealed image fd " + std::to_string(image.fd()));
  EXPECT_EQ(library.function<int()>("fixture_answer")(), 42);
}

TEST(Loader, SealedMemfdFdIsStepOne) {
  const SealedImage image = sealed(fixture_a());
  const Library library = load_library(image.fd(), 0, image.size());
  EXPECT_EQ(library.strategy(), LoadStrategy::kSealedMemfd);
  EXPECT_EQ(library.function<int()>("fixture_answer")(), 42);
}

TEST(Loader, RangeInsideALargerFileIsCopiedIntoAMemfd) {
  test::TempDir dir;
  const auto path = dir / "container.bin";
  const std::uint64_t offset = 12345;  // not page-aligned on purpose
  {
    std::ofstream out(path, std::ios::binary);
    out << std::string(offset, 'x');
    out.write(reinterpret_cast<const char*>(fixture_a().data()),
              static_cast<std::streamsize>(fixture_a().size()));
    out << std::string(777, 'y');
  }
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  LoadOptions options;
  options.name = "container.bin[lib a]";
  Library library = load_library(fd, offset, fixture_a().size(), options);
  ::close(fd);  // the caller's fd is not needed after the call
  EXPECT_EQ(library.strategy(), LoadStrategy::kMemfdCopy);
  EXPECT_EQ(library.report().bytes_copied, fixture_a().size());
  EXPECT_EQ(library.report().bytes_written_to_disk, 0u);
  // In the kernel, or (a range of at most 64 KiB, copy_file_range refused across file
  // systems) one pwrite of the loader's one read of the range.
  EXPECT_TRUE(library.report().copy_method == CopyMethod::kCopyFileRange ||
              library.report().copy_method == CopyMethod::kReadWrite)
      << to_string(library.report().copy_method);
  EXPECT_EQ(library.name(), "container.bin[lib a]");
  EXPECT_EQ(library.function<int()>("fixture_answer")(), 42);
}

TEST(Loader, UnsealedMemfdIsCopied) {
  const int fd = raw_memfd(fixture_a());
  ASSERT_GE(fd, 0);
  const Library library = load_library(fd, 0, fixture_a().size());
  ::close(fd);
  EXPECT_EQ(library.strategy(), LoadStrategy::kMemfdCopy);
  EXPECT_EQ(library.name(), "fd " + std::to_string(fd) + " at offset 0");
  EXPECT_EQ(library.function<int()>("fixture_answer")(), 42);
}

TEST(Loader, SpanIsWrittenIntoAMemfd) {
  const Library library = load_library(std::span<const std::byte>(fixture_a()));
  EXPECT_EQ(library.strategy(), LoadStrategy::kMemfdCopy);
  EXPECT_EQ(library.report().copy_method, CopyMethod::kFromMemory);
  EXPECT_EQ(library.report().bytes_copied, fixture_a().size());
  EXPECT_EQ(library.name(), "memory span");
  EXPECT_EQ(library.function<int()>("fixture_answer")(), 42);
}

TEST(Loader, SystemLibraryFromSpan) {
  std::string libm_path = "/lib/x86_64-linux-gnu/libm.so.6";
  if (void* handle = dlopen("libm.so.6", RTLD_LAZY | RTLD_NOLOAD); handle != nullptr) {
    link_map* map = nullptr;
    if (dlinfo(handle, RTLD_DI_LINKMAP, &map) == 0 && map != nullptr && map->l_name[0] != '\0') {
      libm_path = map->l_name;
    }
    dlclose(handle);
  }
  if (!std::filesystem::exists(libm_path)) GTEST_SKIP() << "no libm at " << libm_path;
  const std::vector<std::byte> bytes = test::read_file_bytes(libm_path);
  // libm.so.6 is loaded already (the test links it): a second copy beside it is refused
  // unless asked for (nothing here needs it by its SONAME).
  LoadOptions options;
  options.allow_duplicate_soname = true;
  const Library library = load_library(std::span<const std::byte>(bytes), options);
  EXPECT_EQ(library.strategy(), LoadStrategy::kMemfdCopy);
  auto* cosine = library.function<double(double)>("cos");
  EXPECT_EQ(cosine(0.0), 1.0);
  EXPECT_NEAR(cosine(M_PI), -1.0, 1e-12);
}

TEST(Loader, MemfdLoadsWriteNothingToDisk) {
  const SealedImage image = sealed(fixture_a());
  const long long before = test::proc_write_bytes();
  {
    const Library from_image = load_library(image);
    LoadOptions second_copy;
    second_copy.allow_duplicate_soname = true;  // fixture a is loaded already, from the image
    const Library from_span = load_library(std::span<const std::byte>(fixture_a()), second_copy);
    EXPECT_EQ(from_image.report().bytes_written_to_disk, 0u);
    EXPECT_EQ(from_span.report().bytes_written_to_disk, 0u);
    EXPECT_EQ(from_span.function<int()>("fixture_answer")(), 42);
  }
  const long long after = test::proc_write_bytes();
  if (before < 0 || after < 0) GTEST_SKIP() << "/proc/self/io is not readable here";
  // On tmpfs or overlay write_bytes may stay 0 for disk writes too; the report is the check
  // that does not depend on the filesystem.
  EXPECT_EQ(after, before);
}

// In children: a dlsym(RTLD_DEFAULT) that finds a symbol in a dlopen()ed library, made from
// the main program, makes glibc pin that library (NODELETE) for the rest of the process.
TEST(Loader, LoadOptionsChooseVisibility) {
  auto result = run_in_child([] {
    LoadOptions options;
    options.visibility = LoadOptions::Visibility::kGlobal;
    options.binding = LoadOptions::Binding::kLazy;
    const Library library = load_library(std::span<const std::byte>(fixture_a()), options);
    CHILD_CHECK(dlsym(RTLD_DEFAULT, "fixture_answer") != nullptr);
  });
  test::expect_clean_exit(result);
  result = run_in_child([] {
    const Library library = load_library(std::span<const std::byte>(fixture_a()));
    CHILD_CHECK(dlsym(RTLD_DEFAULT, "fixture_answer") == nullptr);  // RTLD_LOCAL by default
  });
  test::expect_clean_exit(result);
}

TEST(Loader, LibraryIsMoveOnly) {
  Library first = load_library(std::span<const std::byte>(fixture_a()));
  const int fd = first.fd();
  Library second = std::move(first);
  EXPECT_EQ(second.fd(), fd);
  EXPECT_EQ(first.handle(), nullptr);  // NOLINT(bugprone-use-after-move): the moved-from state
  EXPECT_EQ(first.fd(), -1);
  EXPECT_THROW(first.symbol("fixture_answer"), Error);
  EXPECT_EQ(second.function<int()>("fixture_answer")(), 42);
  LoadOptions second_copy;
  second_copy.allow_duplicate_soname = true;  // `second` is fixture a too
  Library third = load_library(std::span<const std::byte>(fixture_a()), second_copy);
  third = std::move(second);  // the old third is closed, its fd too
  EXPECT_EQ(third.fd(), fd);
  EXPECT_EQ(third.function<int()>("fixture_answer")(), 42);
}

// ---- the /proc/self/fd/N reuse hazard --------------------------------------------------------

// Without the loader: dlopen("/proc/self/fd/N"), close N, put another library at fd N, and
// dlopen the same path again: glibc matches the PATH and returns the first library.
TEST(Loader, ReusedProcPathReturnsThePreviousLibraryInRawDlopen) {
  const int fd_a = raw_memfd(fixture_a());
  ASSERT_GE(fd_a, 0);
  const std::string path = "/proc/self/fd/" + std::to_string(fd_a);
  void* a = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  ASSERT_NE(a, nullptr) << dlerror();
  ::close(fd_a);
  const int fd_b = raw_memfd(fixture_b());  // b needs a's soname: satisfied by a, loaded
  ASSERT_GE(fd_b, 0);
  if (fd_b != fd_a) {
    ::close(fd_b);
    dlclose(a);
    GTEST_SKIP() << "fd " << fd_a << " was not reused (got " << fd_b << ")";
  }
  void* b = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  EXPECT_EQ(b, a) << "glibc no longer matches by path: the hazard is gone";
  auto* name = reinterpret_cast<const char* (*)()>(dlsym(b, "fixture_name"));
  ASSERT_NE(name, nullptr);
  EXPECT_STREQ(name(), "a");  // b's bytes were never loaded
  if (b != nullptr) dlclose(b);
  dlclose(a);
  ::close(fd_b);
}

// The loader keeps the fd open while the library is loaded, so the next load cannot get the
// same number, hence not the same path.
TEST(Loader, KeptFdMakesTheNextLoadDistinct) {
  std::optional<Library> a;
  {
    const SealedImage image = sealed(fixture_a());
    a.emplace(load_library(image));
  }  // every other fd of a's image is closed; a stays loaded
  const int fd_b = raw_memfd(fixture_b());
  ASSERT_GE(fd_b, 0);
  const Library b = load_library(fd_b, 0, fixture_b().size());
  ::close(fd_b);
  EXPECT_NE(b.fd(), a->fd());
  EXPECT_NE(b.path(), a->path());
  EXPECT_NE(b.handle(), a->handle());
  EXPECT_STREQ(b.function<const char*()>("fixture_name")(), "b");
  EXPECT_STREQ(a->function<const char*()>("fixture_name")(), "a");
  EXPECT_EQ(b.function<int()>("fixture_b_answer")(), 43);
}

// Someone else's stale /proc/self/fd/N name: the loader sees it and moves to another fd.
TEST(Loader, StaleProcNameOfAnotherLoaderIsAvoided) {
  const int fd_a = raw_memfd(fixture_a());
  ASSERT_GE(fd_a, 0);
  const std::string path = "/proc/self/fd/" + std::to_string(fd_a);
  void* a = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  ASSERT_NE(a, nullptr) << dlerror();
  ::close(fd_a);  // the raw user's mistake: fd_a is free again
  {
    const Library b = load_library(std::span<const std::byte>(fixture_b()));
    EXPECT_NE(b.path(), path);
    EXPECT_STREQ(b.function<const char*()>("fixture_name")(), "b");
  }
  dlclose(a);
}

// ---- dependencies ----------------------------------------------------------------------------

TEST(Loader, DependentLoadsFromMemoryOnceItsDependencyIsLoaded) {
  ASSERT_FALSE(fixture_a_loaded());
  const Library a = load_library(sealed(fixture_a()));
  const Library b = load_library(std::span<const std::byte>(fixture_b()));
  EXPECT_EQ(b.function<int()>("fixture_b_answer")(), 43);
  EXPECT_STREQ(b.function<const char*()>("fixture_name")(), "b");
  for (const std::string& name : loaded_names()) {
    EXPECT_EQ(name.find("mwfixture"), std::string::npos) << name << " was loaded from disk";
  }
  EXPECT_EQ(a.report().bytes_written_to_disk + b.report().bytes_written_to_disk, 0u);
}

TEST(Loader, UnsatisfiedDependencyIsAnError) {
  ASSERT_FALSE(fixture_a_loaded());
  LoadOptions options;
  options.name = "fixture b alone";
  try {
    load_library(std::span<const std::byte>(fixture_b()), options);
    FAIL() << "loaded without its dependency";
  } catch (const Error& e) {
    EXPECT_EQ(e.error(), ENOEXEC);
    EXPECT_NE(std::string(e.what()).find("libmwfixture_a.so"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("fixture b alone"), std::string::npos) << e.what();
  }
}

// ---- errors ------------------------------------------------------------------------------------

void expect_load_error(std::span<const std::byte> bytes, int code, const std::string& text) {
  LoadOptions options;
  options.name = "bad image";
  try {
    load_library(bytes, options);
    ADD_FAILURE() << "loaded";
  } catch (const Error& e) {
    EXPECT_EQ(e.error(), code) << e.what();
    EXPECT_NE(std::string(e.what()).find("'bad image'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
  }
}

TEST(Loader, NotAnElf) {
  const std::string text = "this is not a shared library, only some text long enough to look at";
  expect_load_error(std::as_bytes(std::span(text)), ENOEXEC, "invalid ELF header");
}

TEST(Loader, EmptyImage) {
  expect_load_error(std::span<const std::byte>(), ENOEXEC, "too short");
}

TEST(Loader, TruncatedElf) {
  std::vector<std::byte> bytes = fixture_a();
  bytes.resize(bytes.size() / 2);
  expect_load_error(bytes, EINVAL, "truncated ELF");
  bytes.resize(40);  // shorter than the ELF header: glibc's own check
  expect_load_error(bytes, ENOEXEC, "too short");
}

TEST(Loader, WrongArchitecture) {
  std::vector<std::byte> bytes = fixture_a();
  auto* header = reinterpret_cast<ElfW(Ehdr)*>(bytes.data());
  header->e_machine = header->e_machine == EM_AARCH64 ? EM_X86_64 : EM_AARCH64;
  LoadOptions options;
  options.name = "aarch64 image";
  try {
    load_library(std::span<const std::byte>(bytes), options);
    FAIL() << "loaded a foreign library";
  } catch (const Error& e) {
    EXPECT_EQ(e.error(), ENOEXEC) << e.what();
    EXPECT_NE(std::string(e.what()).find("'aarch64 image'"), std::string::npos) << e.what();
    EXPECT_NE(e.detail().find("/proc/self/fd/"), std::string::npos) << e.what();  // dlerror()
    EXPECT_NE(e.detail().find("machine"), std::string::npos) << e.what();
  }
}

TEST(Loader, MissingSymbol) {
  const Library library = load_library(std::span<const std::byte>(fixture_a()));
  try {
    library.symbol("no_such_symbol");
    FAIL() << "found a symbol that is not there";
  } catch (const Error& e) {
    EXPECT_EQ(e.error(), ENOENT);
    EXPECT_NE(std::string(e.what()).find("no_such_symbol"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("memory span"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("undefined symbol"), std::string::npos) << e.what();
  }
}

TEST(Loader, SourceShorterThanTheRange) {
  const int fd = raw_memfd(fixture_a());
  ASSERT_GE(fd, 0);
  try {
    load_library(fd, 0, fixture_a().size() + 4096);
    ADD_FAILURE() << "loaded past the end of its source";
  } catch (const Error& e) {
    EXPECT_EQ(e.error(), EINVAL) << e.what();
  }
  ::close(fd);
}

// ---- forcing each step of the ladder (in children, under seccomp) -------------------------------

// Step 3 with O_TMPFILE: memfd_create refused.
TEST(LoaderLadder, MemfdRefusedFallsToAnUnnamedTempFile) {
  test::TempDir dir;
  const auto result = run_in_child([&] {
    ::setenv("TMPDIR", dir.path().c_str(), 1);
    CHILD_CHECK(test::deny_syscall(SYS_memfd_create, EPERM));
    const Library library = load_library(std::span<const std::byte>(fixture_a()));
    CHILD_CHECK(library.strategy() == LoadStrategy::kTempFile);
    CHILD_CHECK(library.report().bytes_written_to_disk == fixture_a().size());
    CHILD_CHECK_MSG(library.report().fallback_reason.find("memfd_create") != std::string::npos,
                    library.report().fallback_reason);
    CHILD_CHECK(library.function<int()>("fixture_answer")() == 42);
    CHILD_CHECK(directory_empty(dir.path()));  // never named
    std::error_code ec;
    const auto target = std::filesystem::read_symlink(library.path(), ec);
    CHILD_CHECK_MSG(target.string().find("(deleted)") != std::string::npos, target.string());
  });
  test::expect_clean_exit(result);
}

// Step 3 with mkstemp: memfd_create and O_TMPFILE refused. The file is unlinked after loading.
TEST(LoaderLadder, NoTmpfileFallsToANamedTempFileUnlinkedAfterLoading) {
  test::TempDir dir;
  const auto result = run_in_child([&] {
    ::setenv("TMPDIR", dir.path().c_str(), 1);
    CHILD_CHECK(test::deny_syscall(SYS_memfd_create, EPERM));
    CHILD_CHECK(test::deny_syscall(SYS_openat, EOPNOTSUPP, 2, O_TMPFILE & ~O_DIRECTORY));
    const Library library = load_library(std::span<const std::byte>(fixture_a()));
    CHILD_CHECK(library.strategy() == LoadStrategy::kTempFile);
    CHILD_CHECK(library.fd() == -1);
    CHILD_CHECK_MSG(library.path().rfind(dir.path().string(), 0) == 0, library.path());
    CHILD_CHECK(!std::filesystem::exists(library.path()));
    CHILD_CHECK(directory_empty(dir.path()));
    CHILD_CHECK(library.function<int()>("fixture_answer")() == 42);
  });
  test::expect_clean_exit(result);
}

// No /proc (simulated: access() fails): even a sealed image goes to a named temp file.
TEST(LoaderLadder, NoProcFallsToANamedTempFile) {
  test::TempDir dir;
  const SealedImage image = sealed(fixture_a());
  const auto result = run_in_child([&] {
    ::setenv("TMPDIR", dir.path().c_str(), 1);
    CHILD_CHECK(test::deny_syscall(SYS_access, ENOENT));
    CHILD_CHECK(test::deny_syscall(SYS_faccessat, ENOENT));
    CHILD_CHECK(test::deny_syscall(SYS_faccessat2, ENOENT));
    const Library library = load_library(image);
    CHILD_CHECK(library.strategy() == LoadStrategy::kTempFile);
    CHILD_CHECK_MSG(library.report().fallback_reason.find("/proc") != std::string::npos,
                    library.report().fallback_reason);
    CHILD_CHECK(library.fd() == -1);
    CHILD_CHECK(directory_empty(dir.path()));
    CHILD_CHECK(library.function<int()>("fixture_answer")() == 42);
  });
  test::expect_clean_exit(result);
}

// /proc unmounted after the loader last saw it (it asks only once): the dlopen() of
// /proc/self/fd/N fails, and the load goes on to a named temporary file, saying why.
TEST(LoaderLadder, ProcGoneAfterALoadFallsToANamedTempFile) {
  test::TempDir dir;
  const auto result = run_in_child([&] {
    ::setenv("TMPDIR", dir.path().c_str(), 1);
    { const Library first = load_library(std::span<const std::byte>(fixture_a())); }
    if (::unshare(CLONE_NEWNS) != 0 ||
        ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
        ::umount2("/proc", MNT_DETACH) != 0) {
      test::say("SKIP: cannot unmount /proc in a mount namespace of its own\n");
      return;
    }
    const Library library = load_library(std::span<const std::byte>(fixture_a()));
    CHILD_CHECK_MSG(library.strategy() == LoadStrategy::kTempFile, to_string(library.strategy()));
    CHILD_CHECK_MSG(library.report().fallback_reason.find("/proc not mounted") != std::string::npos,
                    library.report().fallback_reason);
    CHILD_CHECK(library.fd() == -1);
    CHILD_CHECK(directory_empty(dir.path()));
    CHILD_CHECK(library.function<int()>("fixture_answer")() == 42);
  });
  test::expect_clean_exit(result);
  if (result.output.find("SKIP:") != std::string::npos) GTEST_SKIP() << result.output;
}

// Step 2 without copy_file_range, by size of the range: up to 64 KiB the loader's one read
// of it is written (read/write); above that sendfile, and without sendfile pread/pwrite. Always a memfd. The fixture padded
// with zeros is still the fixture to dlopen().
TEST(LoaderLadder, CopyFileRangeRefusedStillCopiesIntoAMemfd) {
  struct Case {
    std::size_t size;
    bool deny_sendfile;
    CopyMethod expected;
  };
  const Case cases[] = {
      {fixture_a().size(), false, CopyMethod::kReadWrite},
      {128 << 10, false, CopyMethod::kSendfile},
      {128 << 10, true, CopyMethod::kReadWrite},
      {512 << 10, false, CopyMethod::kSendfile},
      {512 << 10, true, CopyMethod::kReadWrite},
  };
  for (const Case& c : cases) {
    std::vector<std::byte> bytes = fixture_a();
    bytes.resize(std::max(bytes.size(), c.size));
    const int fd = raw_memfd(bytes);
    ASSERT_GE(fd, 0);
    const auto result = run_in_child([&] {
      CHILD_CHECK(test::deny_syscall(SYS_copy_file_range, EXDEV));
      if (c.deny_sendfile) CHILD_CHECK(test::deny_syscall(SYS_sendfile, EINVAL));
      const Library library = load_library(fd, 0, bytes.size());
      CHILD_CHECK(library.strategy() == LoadStrategy::kMemfdCopy);
      CHILD_CHECK_MSG(library.report().copy_method == c.expected,
                      to_string(library.report().copy_method));
      CHILD_CHECK(library.report().bytes_copied == bytes.size());
      CHILD_CHECK(library.report().bytes_written_to_disk == 0);
      CHILD_CHECK_MSG(library.report().fallback_reason.find("copy_file_range") != std::string::npos,
                      library.report().fallback_reason);
      CHILD_CHECK(library.function<int()>("fixture_answer")() == 42);
    });
    SCOPED_TRACE(std::to_string(c.size) + " bytes, expecting " + to_string(c.expected));
    test::expect_clean_exit(result);
    ::close(fd);
  }
}

// A range that the file does not hold whole: sendfile says how far the source goes.
TEST(LoaderLadder, CopyOfARangePastTheEndReportsWhereTheSourceEnds) {
  std::vector<std::byte> bytes = fixture_a();
  bytes.resize(512 << 10);
  const int fd = raw_memfd(bytes);
  ASSERT_GE(fd, 0);
  const auto result = run_in_child([&] {
    CHILD_CHECK(test::deny_syscall(SYS_copy_file_range, EXDEV));
    try {
      (void)load_library(fd, 4096, bytes.size());
      CHILD_CHECK_MSG(false, "loaded a range past the end");
    } catch (const Error& e) {
      CHILD_CHECK(e.code().value() == EINVAL);
      CHILD_CHECK_MSG(std::string(e.what()).find("the source ends after " +
                                                 std::to_string(bytes.size() - 4096)) !=
                          std::string::npos,
                      e.what());
    }
  });
  test::expect_clean_exit(result);
  ::close(fd);
}

TEST(Loader, CheckSeesTheBytesDlopenWillReadAndCanRefuse) {
  const std::vector<std::byte>& bytes = fixture_a();
  std::vector<std::byte> seen;
  LoadOptions options;
  options.check = [&](std::span<const std::byte> copy) { seen.assign(copy.begin(), copy.end()); };
  {
    const Library library = load_library(std::span<const std::byte>(bytes), options);
    EXPECT_EQ(library.function<int()>("fixture_answer")(), 42);
  }
  EXPECT_EQ(seen, bytes);

  seen.clear();
  const SealedImage image = sealed(bytes);
  {
    const Library library = load_library(image, options);  // step 1: the image itself
    EXPECT_EQ(library.strategy(), LoadStrategy::kSealedMemfd);
  }
  EXPECT_EQ(seen, bytes);

  options.check = [](std::span<const std::byte>) { throw std::runtime_error("refused by check"); };
  EXPECT_THROW((void)load_library(image, options), std::runtime_error);
  EXPECT_THROW((void)load_library(std::span<const std::byte>(bytes), options), std::runtime_error);
}

}  // namespace
}  // namespace mapwright
