#include "mapwright/loader.h"

#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "elf_info.h"
#include "mapwright/error.h"
#include "memfd_pool_internal.h"
#include "os/os.h"

namespace mapwright {

const char* to_string(LoadStrategy strategy) noexcept {
  switch (strategy) {
    case LoadStrategy::kSealedMemfd: return "sealed memfd";
    case LoadStrategy::kMemfdCopy: return "memfd copy";
    case LoadStrategy::kTempFile: return "temporary file";
  }
  return "?";
}

const char* to_string(PoolUse use) noexcept {
  switch (use) {
    case PoolUse::kNotReserved: return "not reserved";
    case PoolUse::kPrepared: return "prepared";
    case PoolUse::kNoneReady: return "none ready";
  }
  return "?";
}

const char* to_string(CopyMethod method) noexcept {
  switch (method) {
    case CopyMethod::kNone: return "none";
    case CopyMethod::kCopyFileRange: return "copy_file_range";
    case CopyMethod::kSendfile: return "sendfile";
    case CopyMethod::kReadWrite: return "read/write";
    case CopyMethod::kFromMemory: return "from memory";
  }
  return "?";
}

// Builds Library objects; the only friend of its private constructor.
struct LibraryAccess {
  static Library make(void* handle, int fd, std::string path, std::string name,
                      LoadReport report) {
    Library library;
    library.handle_ = handle;
    Lmid_t lmid = LM_ID_BASE;
    if (dlinfo(handle, RTLD_DI_LMID, &lmid) != 0) dlerror();
    library.namespace_id_ = static_cast<long>(lmid);
    library.fd_ = fd;
    library.path_ = std::move(path);
    library.name_ = std::move(name);
    library.report_ = std::move(report);
    return library;
  }
};

namespace {

// Where the bytes come from: a range of an fd, or a span.
struct Source {
  int fd = -1;
  std::uint64_t offset = 0;
  std::uint64_t size = 0;
  const std::byte* bytes = nullptr;
  bool is_span = false;
  // The span holds the fd's range, read by the loader (a small source, read in one pread).
  bool buffered = false;
  // Appended to dlerror()'s text: glibc says "No such file or directory" for an ELF built
  // for another machine.
  std::string hint;
  // What check_elf() read: the SONAME, for the collision check before dlopen().
  detail::ElfInfo elf;
};

using os::kAllSeals;
using os::kContentSeals;

std::string proc_path(int fd) { return "/proc/self/fd/" + std::to_string(fd); }

std::string describe(const char* call, int err) {
  return std::string(call) + ": " + std::strerror(err);
}

// Up to this size, load_library(fd, offset, size) reads the range into memory once.
constexpr std::uint64_t kBufferedMax = 64 << 10;

// Reads up to `length` bytes of the source at `position`; returns how many.
std::size_t read_source(const Source& source, std::uint64_t position, void* buffer,
                        std::size_t length, const std::string& name) {
  if (position >= source.size) return 0;
  if (length > source.size - position) length = static_cast<std::size_t>(source.size - position);
  if (source.is_span) {
    std::memcpy(buffer, source.bytes + position, length);
    return length;
  }
  std::size_t got = 0;
  const int err = os::pread_full(source.fd, buffer, length, source.offset + position, &got);
  if (err != 0) throw Error(err, "reading library", name);
  return got;
}

// Reads the image's ELF headers (elf_info.h) into source.elf. Refuses an image whose
// program headers, loadable segments or dynamic section lie past its end: the dynamic linker
// would map them and fault (SIGBUS) on the first touch. Everything else that dlopen() refuses
// is left to dlopen() to describe, with a hint for a foreign machine.
void check_elf(Source& source, const std::string& name) {
  source.elf = detail::read_elf(source.size, [&](std::uint64_t offset, void* buffer,
                                                 std::size_t length) {
    return read_source(source, offset, buffer, length, name);
  });
  switch (source.elf.problem) {
    case detail::ElfProblem::kTruncated:
      throw Error(EINVAL, "loading library", name, "(" + source.elf.reason + ")");
    case detail::ElfProblem::kWrongMachine:
      source.hint = "; the ELF header says it was " + source.elf.reason;
      break;
    default: break;
  }
}

bool is_refusal(int err) { return os::is_copy_refusal(err); }

// After a refused copy_file_range (across file systems: EXDEV), sendfile: into a memfd whose
// pages are allocated (MemfdPool), 8 MiB from ext4 in 0.92-0.98 ms against 1.2-1.8 ms for one
// pwrite from a populated read-only mapping of the source, and 16 us against 104 us for
// 256 KiB, which the mapping's setup and unmapping dominate (a probe on the 2-core test VM,
// kernel 6.18, medians of 41-101; an earlier probe on a busy machine had favoured the mapping,
// and the loader_bench rows moved with this change: README, "Loading").
// Copies the whole source into `out` (from its offset 0). Throws Error on failure, or if the
// source ends early.
void fill(int out, const Source& source, LoadReport& report, const std::string& name) {
  std::uint64_t copied = 0;
  int err = 0;
  const auto write_span = [&](CopyMethod method) {
    err = os::pwrite_all(out, source.bytes, static_cast<std::size_t>(source.size), 0);
    if (err != 0) throw Error(err, "copying library", name, "(pwrite)");
    report.copy_method = method;
    report.bytes_copied = source.size;
  };
  if (source.is_span && !source.buffered) return write_span(CopyMethod::kFromMemory);
  err = os::copy_file_range(source.fd, source.offset, out, 0, source.size, &copied);
  report.copy_method = CopyMethod::kCopyFileRange;
  if (err != 0 && is_refusal(err)) {
    if (!report.fallback_reason.empty()) report.fallback_reason += "; ";
    report.fallback_reason += describe("copy_file_range", err);
    // A small range was read already: write that (the pread of pread/pwrite is done).
    if (source.buffered) return write_span(CopyMethod::kReadWrite);
    // Start again from scratch: a refused call may have copied part of the range.
    err = os::seek(out, 0);
    if (err == 0) err = os::sendfile(out, source.fd, source.offset, source.size, &copied);
    report.copy_method = CopyMethod::kSendfile;
    if (err != 0 && is_refusal(err)) {
      report.fallback_reason += "; " + describe("sendfile", err);
      report.copy_method = CopyMethod::kReadWrite;
      std::vector<char> buffer(1 << 16);
      copied = 0;
      err = 0;
      while (copied < source.size) {
        const std::size_t want = static_cast<std::size_t>(
            std::min<std::uint64_t>(buffer.size(), source.size - copied));
        std::size_t got = 0;
        err = os::pread_full(source.fd, buffer.data(), want, source.offset + copied, &got);
        if (err == 0 && got > 0) err = os::pwrite_all(out, buffer.data(), got, copied);
        if (err != 0 || got == 0) break;
        copied += got;
      }
    }
  }
  if (err != 0) throw Error(err, "copying library", name, std::string("(") +
                                                              to_string(report.copy_method) + ")");
  if (copied != source.size) {
    throw Error(EINVAL, "copying library", name,
                "(the source ends after " + std::to_string(copied) + " of " +
                    std::to_string(source.size) + " bytes)");
  }
  report.bytes_copied = copied;
}

// The namespace a load goes into, and where to look for objects already loaded there.
struct Target {
  LoadOptions::Namespace kind = LoadOptions::Namespace::kDefault;
  Lmid_t lmid = LM_ID_BASE;     // kBeside: the namespace of `beside`
  void* beside_handle = nullptr;  // kBeside: a handle in that namespace
};

Target target_of(const LoadOptions& options, const std::string& name) {
  Target target;
  target.kind = options.link_namespace;
  if (target.kind != LoadOptions::Namespace::kDefault &&
      options.visibility == LoadOptions::Visibility::kGlobal) {
    // glibc's dlmopen() refuses RTLD_GLOBAL outside the base namespace ("invalid mode").
    throw Error(EINVAL, "loading library", name,
                "(Visibility::kGlobal is only for the default namespace: glibc refuses "
                "RTLD_GLOBAL in a namespace of its own)");
  }
  if (target.kind == LoadOptions::Namespace::kBeside) {
    if (options.beside == nullptr || options.beside->handle() == nullptr) {
      throw Error(EINVAL, "loading library", name,
                  "(Namespace::kBeside needs LoadOptions::beside, a loaded Library)");
    }
    target.lmid = options.beside->namespace_id();
    target.beside_handle = options.beside->handle();
  }
  return target;
}

// Whether some loaded object of the target namespace already has `path` as its name: dlopen
// of `path` would return it. A new namespace holds nothing yet.
bool name_in_use(const std::string& path, const Target& target) {
  if (target.kind == LoadOptions::Namespace::kNew) return false;
  if (target.kind == LoadOptions::Namespace::kBeside) {
    // dl_iterate_phdr() shows the caller's namespace only: walk the other one's link map.
    link_map* map = nullptr;
    if (dlinfo(target.beside_handle, RTLD_DI_LINKMAP, &map) != 0 || map == nullptr) return false;
    while (map->l_prev != nullptr) map = map->l_prev;
    for (; map != nullptr; map = map->l_next) {
      if (map->l_name != nullptr && path == map->l_name) return true;
    }
    return false;
  }
  struct Search {
    const std::string* path;
    bool found;
  } search{&path, false};
  dl_iterate_phdr(
      [](dl_phdr_info* info, std::size_t, void* data) -> int {
        auto* s = static_cast<Search*>(data);
        if (info->dlpi_name != nullptr && *s->path == info->dlpi_name) {
          s->found = true;
          return 1;
        }
        return 0;
      },
      &search);
  return search.found;
}

int dlopen_flags(const LoadOptions& options) {
  return (options.binding == LoadOptions::Binding::kNow ? RTLD_NOW : RTLD_LAZY) |
         (options.visibility == LoadOptions::Visibility::kGlobal ? RTLD_GLOBAL : RTLD_LOCAL);
}

// The object of the target namespace that dlopen(`name`) would return without loading
// anything (RTLD_NOLOAD: the dynamic linker's own lookup of names and SONAMEs of loaded
// objects, then of a file of that name already loaded), with a reference taken: dlclose() it.
// nullptr if none; a new namespace holds nothing yet.
void* find_loaded(const std::string& name, const Target& target) {
  if (target.kind == LoadOptions::Namespace::kNew) return nullptr;
  void* handle = target.kind == LoadOptions::Namespace::kBeside
                     ? dlmopen(target.lmid, name.c_str(), RTLD_LAZY | RTLD_NOLOAD)
                     : dlopen(name.c_str(), RTLD_LAZY | RTLD_NOLOAD);
  if (handle == nullptr) dlerror();
  return handle;
}

// The SONAME (DT_SONAME) of a loaded object, read from its dynamic section in memory;
// nullptr if it has none. `known` is false when the string table's address cannot be told
// apart: glibc relocates the DT_STRTAB entry in place unless the dynamic section is read-only
// (the vDSO), so the value is taken as an address if it lies in one of the object's loaded
// segments, else as an offset from its load address if that lies in one.
const char* loaded_soname_of(const dl_phdr_info& info, bool* known) {
  *known = true;
  const ElfW(Phdr)* dynamic = nullptr;
  for (ElfW(Half) i = 0; i < info.dlpi_phnum; ++i) {
    if (info.dlpi_phdr[i].p_type == PT_DYNAMIC) dynamic = &info.dlpi_phdr[i];
  }
  if (dynamic == nullptr) return nullptr;
  ElfW(Addr) strtab = 0;
  ElfW(Xword) soname = 0;
  bool has_soname = false;
  for (auto* d = reinterpret_cast<const ElfW(Dyn)*>(info.dlpi_addr + dynamic->p_vaddr);
       d->d_tag != DT_NULL; ++d) {
    if (d->d_tag == DT_STRTAB) strtab = d->d_un.d_ptr;
    if (d->d_tag == DT_SONAME) {
      soname = d->d_un.d_val;
      has_soname = true;
    }
  }
  if (!has_soname) return nullptr;
  const auto in_segment = [&](ElfW(Addr) address, ElfW(Addr) base) {
    for (ElfW(Half) i = 0; i < info.dlpi_phnum; ++i) {
      const ElfW(Phdr)& ph = info.dlpi_phdr[i];
      if (ph.p_type == PT_LOAD && address >= base + ph.p_vaddr &&
          address - (base + ph.p_vaddr) < ph.p_memsz) {
        return true;
      }
    }
    return false;
  };
  if (in_segment(strtab, info.dlpi_addr)) return reinterpret_cast<const char*>(strtab + soname);
  if (in_segment(strtab, 0)) {
    return reinterpret_cast<const char*>(info.dlpi_addr + strtab + soname);
  }
  *known = false;
  return nullptr;
}

// Whether an object of the caller's namespace may be the one the dynamic linker would match
// to `soname`: one whose SONAME or file name is `soname`, or one whose SONAME cannot be read.
// Read in memory (dl_iterate_phdr holds the loader's lock, so no object goes away meanwhile):
// ~0.1 µs, where the exact lookup (dlopen RTLD_NOLOAD) searches the library path on disk
// when nothing matches, ~25 µs (a probe timing both over the 16 KiB fixture, medians of 2000).
bool soname_may_be_loaded(const std::string& soname) {
  struct Search {
    const std::string* soname;
    bool found;
  } search{&soname, false};
  dl_iterate_phdr(
      [](dl_phdr_info* info, std::size_t, void* data) -> int {
        auto* s = static_cast<Search*>(data);
        if (info->dlpi_name != nullptr && info->dlpi_name[0] != '\0') {
          const char* slash = std::strrchr(info->dlpi_name, '/');
          if (*s->soname == (slash != nullptr ? slash + 1 : info->dlpi_name)) s->found = true;
        }
        bool known = true;
        const char* name = loaded_soname_of(*info, &known);
        if (!known || (name != nullptr && *s->soname == name)) s->found = true;
        return s->found ? 1 : 0;
      },
      &search);
  return search.found;
}

// The path of the object of the target namespace whose SONAME (or name) is `soname`, as the
// dynamic linker matches a DT_NEEDED entry; empty if there is none.
std::string loaded_soname_path(const std::string& soname, const Target& target) {
  if (target.kind == LoadOptions::Namespace::kDefault && !soname_may_be_loaded(soname)) return {};
  void* handle = find_loaded(soname, target);
  if (handle == nullptr) return {};
  std::string path = soname;
  link_map* map = nullptr;
  if (dlinfo(handle, RTLD_DI_LINKMAP, &map) == 0 && map != nullptr && map->l_name != nullptr &&
      map->l_name[0] != '\0') {
    path = map->l_name;
  }
  dlclose(handle);
  return path;
}

// Whether the file behind `path` is itself loaded in the target namespace (under another
// name: the same sealed image loaded twice): dlopen() would return that object again, so its
// SONAME is no collision.
bool same_file_loaded(const std::string& path, const Target& target) {
  void* handle = find_loaded(path, target);
  if (handle == nullptr) return false;
  dlclose(handle);
  return true;
}

[[noreturn]] void throw_dlerror(const std::string& call, const std::string& name,
                                const std::string& hint) {
  const char* text = dlerror();
  throw Error(ENOEXEC, "loading library", name,
              std::string("failed in ") + call + ": " + (text != nullptr ? text : "no reason given") +
                  hint,
              Error::DetailIsCause{});
}

// dlopen()/dlmopen() of `path` into the target namespace, after refusing a SONAME that an
// object already loaded there has (see loader.h). Throws with dlerror()'s text.
void* open_handle(const std::string& path, const Source& source, const LoadOptions& options,
                  const Target& target, const std::string& name) {
  if (source.elf.has_soname && !options.allow_duplicate_soname) {
    if (const std::string loaded = loaded_soname_path(source.elf.soname, target);
        !loaded.empty() && !same_file_loaded(path, target)) {
      throw Error(EEXIST, "loading library", name,
                  "(its SONAME " + source.elf.soname + " is already loaded" +
                      (loaded != source.elf.soname ? " from " + loaded : std::string()) +
                      (target.kind == LoadOptions::Namespace::kDefault
                           ? " in this namespace: the dynamic linker would bind whatever needs "
                             "it to that object; load it in a namespace of its own "
                             "(LoadOptions::Namespace::kNew))"
                           : " in the namespace it goes into)"));
    }
  }
  dlerror();
  void* handle = nullptr;
  std::string call = "dlopen";
  if (target.kind == LoadOptions::Namespace::kDefault) {
    handle = dlopen(path.c_str(), dlopen_flags(options));
  } else {
    const bool fresh = target.kind == LoadOptions::Namespace::kNew;
    handle = dlmopen(fresh ? LM_ID_NEWLM : target.lmid, path.c_str(), dlopen_flags(options));
    call = fresh ? "dlmopen (a new namespace)"
                 : "dlmopen (namespace " + std::to_string(target.lmid) + ")";
  }
  if (handle == nullptr) throw_dlerror(call, name, source.hint);
  return handle;
}

// LoadOptions::check over `size` bytes of `fd` from offset 0, mapped read-only for the call.
void run_check(int fd, std::uint64_t size, const LoadOptions& options, const std::string& name) {
  if (!options.check) return;
  const void* address = nullptr;
  if (const int err = os::map_readonly(fd, size, &address); err != 0) {
    throw Error(err, "checking library", name, "(mmap of the copy)");
  }
  struct Unmap {
    const void* address;
    std::uint64_t size;
    ~Unmap() { os::munmap(address, size); }
  } unmap{address, size};
  // One call maps every page, instead of a fault per 64 KiB as the check reads (a speed-up
  // only: on a kernel without it the reads fault the pages in).
  (void)os::madvise(const_cast<void*>(address), size, os::kMadvPopulateRead);
  options.check(std::span<const std::byte>(static_cast<const std::byte*>(address), size));
}

// Thrown by open_through_proc() when dlopen() of "/proc/self/fd/N" failed because /proc is
// no longer there: the caller goes on to a temporary file.
struct ProcMissing {};

// Whether a "/proc/self/fd/N" path resolved when last asked. access() of one costs a walk
// through procfs with a permission check on each load (~6% of the 16 KiB fixture's load, perf
// of loader_bench), so a yes is kept: asked again only after a dlopen() of such a path fails,
// and afresh in a child after fork() (which may be a sandbox about to lose /proc).
constinit std::atomic<bool> g_proc_seen{false};

void forget_proc() noexcept { g_proc_seen.store(false, std::memory_order_relaxed); }

bool proc_usable(int fd) {
  if (g_proc_seen.load(std::memory_order_relaxed)) return true;
  static const bool forgotten_at_fork = os::at_fork(nullptr, nullptr, forget_proc) == 0;
  const bool usable = os::path_exists(proc_path(fd).c_str()) == 0;
  if (usable && forgotten_at_fork) g_proc_seen.store(true, std::memory_order_relaxed);
  return usable;
}

// dlopen("/proc/self/fd/N") of an fd the caller owns; the fd goes to the Library.
Library open_through_proc(os::OwnedFd fd, const Source& source, const LoadOptions& options,
                          const std::string& name, LoadReport report) {
  const Target target = target_of(options, name);
  std::string path = proc_path(fd.get());
  // A stale name left by someone who closed the fd of a still-loaded library: move up.
  while (name_in_use(path, target)) {
    int higher = -1;
    const int err = os::dup_cloexec(fd.get(), fd.get() + 1, &higher);
    if (err != 0) throw Error(err, "loading library", name, "(dup)");
    fd.reset(higher);
    path = proc_path(fd.get());
  }
  run_check(fd.get(), source.size, options, name);
  void* handle = nullptr;
  try {
    handle = open_handle(path, source, options, target, name);
  } catch (const Error& e) {
    if (e.code().value() == ENOEXEC && g_proc_seen.load(std::memory_order_relaxed) &&
        os::path_exists(path.c_str()) != 0) {
      forget_proc();
      throw ProcMissing{};
    }
    throw;
  }
  return LibraryAccess::make(handle, fd.release(), std::move(path), name, std::move(report));
}

// Step 3.
Library load_from_temp_file(const Source& source, const LoadOptions& options,
                            const std::string& name, LoadReport report) {
  report.strategy = LoadStrategy::kTempFile;
  std::vector<std::string> dirs;
  if (const char* tmpdir = ::getenv("TMPDIR"); tmpdir != nullptr && *tmpdir != '\0') {
    dirs.emplace_back(tmpdir);
  }
  dirs.insert(dirs.end(), {"/tmp", "/var/tmp", "."});
  const Target target = target_of(options, name);
  std::string why;
  int last_error = ENOENT;
  for (const std::string& dir : dirs) {
    bool noexec = false;
    if (int err = os::dir_is_noexec(dir.c_str(), &noexec); err != 0 || noexec) {
      if (err != 0) last_error = err;
      why += "; " + dir + (err != 0 ? ": " + std::string(std::strerror(err)) : ": noexec");
      continue;
    }
    // An unnamed file, loaded through /proc: nothing is ever visible in the directory.
    int raw = -1;
    if (int err = os::open_tmpfile(dir.c_str(), 0700, &raw); err == 0) {
      os::OwnedFd fd(raw);
      if (os::path_exists(proc_path(fd.get()).c_str()) == 0) {
        fill(fd.get(), source, report, name);
        report.bytes_written_to_disk = report.bytes_copied;
        return open_through_proc(std::move(fd), source, options, name, std::move(report));
      }
    }
    // A named file, unlinked as soon as dlopen() returns.
    for (int attempt = 0; attempt < 8; ++attempt) {
      std::string path = dir + "/.mapwright-lib-XXXXXX";
      if (int err = os::make_temp_file(path.data(), &raw); err != 0) {
        last_error = err;
        why += "; " + dir + ": " + std::strerror(err);
        break;
      }
      os::OwnedFd fd(raw);
      if (name_in_use(path, target)) {  // a deleted earlier file's name, still loaded under it
        os::unlink(path.c_str());
        continue;
      }
      try {
        fill(fd.get(), source, report, name);
      } catch (...) {
        os::unlink(path.c_str());
        throw;
      }
      report.bytes_written_to_disk = report.bytes_copied;
      try {
        run_check(fd.get(), source.size, options, name);
      } catch (...) {
        os::unlink(path.c_str());
        throw;
      }
      void* handle = nullptr;
      try {
        handle = open_handle(path, source, options, target, name);
      } catch (...) {
        os::unlink(path.c_str());
        throw;
      }
      os::unlink(path.c_str());
      return LibraryAccess::make(handle, -1, std::move(path), name, std::move(report));
    }
  }
  throw Error(last_error, "loading library", name,
              "(no memfd and no usable temporary directory: " + report.fallback_reason + why +
                  ")");
}

void add_reason(LoadReport& report, const std::string& reason) {
  if (!report.fallback_reason.empty()) report.fallback_reason += "; ";
  report.fallback_reason += reason;
}

// open_through_proc(), or the temporary file if /proc went away since it was last seen.
Library open_through_proc_or_temp(os::OwnedFd fd, const Source& source, const LoadOptions& options,
                                  const std::string& name, LoadReport report) {
  LoadReport before = report;
  try {
    return open_through_proc(std::move(fd), source, options, name, std::move(report));
  } catch (const ProcMissing&) {
    add_reason(before, "/proc not mounted");
    return load_from_temp_file(source, options, name, std::move(before));
  }
}

// Step 2, then 3.
Library load_copy(const Source& source, const LoadOptions& options, const std::string& name,
                  LoadReport report) {
  const detail::PreparedMemfd prepared = detail::take_prepared_memfd(source.size, &report.pool);
  os::OwnedFd fd(prepared.fd);
  if (fd.get() < 0) {
    int raw = -1;
    if (int err = os::memfd_create("mapwright-library", &raw); err != 0) {
      add_reason(report, describe("memfd_create", err));
      return load_from_temp_file(source, options, name, std::move(report));
    }
    fd.reset(raw);
  }
  if (!proc_usable(fd.get())) {
    add_reason(report, "/proc not mounted");
    return load_from_temp_file(source, options, name, std::move(report));
  }
  report.strategy = LoadStrategy::kMemfdCopy;
  fill(fd.get(), source, report, name);
  // A prepared memfd is as large as its reservation: a smaller image is cut to its size
  // (which also zeroes the rest of its last page), before the seals forbid it; a larger one
  // grew it as it was written.
  if (prepared.fd >= 0 && prepared.size > source.size) {
    if (int err = os::ftruncate(fd.get(), source.size); err != 0) {
      throw Error(err, "sizing prepared library memfd", name);
    }
  }
  if (int err = os::add_seals(fd.get(), kAllSeals); err != 0) {
    throw Error(err, "sealing library memfd", name);
  }
  return open_through_proc_or_temp(std::move(fd), source, options, name, std::move(report));
}

// Step 1 for a memfd that is write-sealed and used whole, else step 2.
Library load_fd(Source source, bool whole_sealed, const LoadOptions& options,
                const std::string& name) {
  check_elf(source, name);
  LoadReport report;
  if (whole_sealed) {
    int raw = -1;
    if (int err = os::dup_cloexec(source.fd, 3, &raw); err != 0) {
      throw Error(err, "loading library", name, "(dup)");
    }
    os::OwnedFd fd(raw);
    if (proc_usable(fd.get())) {
      report.strategy = LoadStrategy::kSealedMemfd;
      return open_through_proc_or_temp(std::move(fd), source, options, name, std::move(report));
    }
    add_reason(report, "/proc not mounted");
    return load_from_temp_file(source, options, name, std::move(report));
  }
  return load_copy(source, options, name, std::move(report));
}

}  // namespace

Library::Library(Library&& other) noexcept
    : handle_(std::exchange(other.handle_, nullptr)),
      namespace_id_(other.namespace_id_),
      fd_(std::exchange(other.fd_, -1)),
      path_(std::move(other.path_)),
      name_(std::move(other.name_)),
      report_(std::move(other.report_)) {}

Library& Library::operator=(Library&& other) noexcept {
  if (this != &other) {
    reset();
    handle_ = std::exchange(other.handle_, nullptr);
    namespace_id_ = other.namespace_id_;
    fd_ = std::exchange(other.fd_, -1);
    path_ = std::move(other.path_);
    name_ = std::move(other.name_);
    report_ = std::move(other.report_);
  }
  return *this;
}

Library::~Library() { reset(); }

void Library::reset() noexcept {
  // dlclose first: the fd must outlive the loaded object (see the header's first hazard).
  if (handle_ != nullptr) dlclose(handle_);
  handle_ = nullptr;
  // A copy's memfd is freed with its last fd (~1.2 ms for 8 MiB): the pool's thread does it
  // when the pool runs. Any other fd closes here.
  if (fd_ >= 0) {
    if (report_.strategy == LoadStrategy::kMemfdCopy) {
      detail::dispose_memfd(fd_, report_.bytes_copied);
    } else {
      os::close(fd_);
    }
  }
  fd_ = -1;
}

void* Library::symbol(const char* symbol_name) const {
  if (handle_ == nullptr) {
    throw Error(EINVAL, "looking up symbol", name_,
                std::string("'") + symbol_name + "' (library moved from)");
  }
  dlerror();
  void* address = dlsym(handle_, symbol_name);
  if (address == nullptr) {
    if (const char* text = dlerror(); text != nullptr) {
      throw Error(ENOENT, "looking up symbol", name_, std::string("'") + symbol_name + "': " + text,
                  Error::DetailIsCause{});
    }
  }
  return address;
}

Library load_library(const SealedImage& image, const LoadOptions& options) {
  const std::string name =
      options.name.empty() ? "sealed image fd " + std::to_string(image.fd()) : options.name;
  return load_fd(Source{image.fd(), 0, image.size(), nullptr, false, false, {}, {}}, true, options,
                 name);
}

Library load_library(int fd, std::uint64_t offset, std::uint64_t size,
                     const LoadOptions& options) {
  const std::string name = options.name.empty() ? "fd " + std::to_string(fd) + " at offset " +
                                                      std::to_string(offset)
                                                : options.name;
  bool whole_sealed = false;
  if (int seals = 0; offset == 0 && os::get_seals(fd, &seals) == 0 &&
                     (seals & kContentSeals) == kContentSeals) {
    std::uint64_t file_size = 0;
    whole_sealed = os::file_size(fd, &file_size) == 0 && file_size == size;
  }
  if (whole_sealed || size > kBufferedMax) {
    return load_fd(Source{fd, offset, size, nullptr, false, false, {}, {}}, whole_sealed, options,
                   name);
  }
  // A small range is read once: its ELF headers are checked in that copy, and when
  // copy_file_range is refused (across file systems) that copy is written with one pwrite —
  // 3 system calls instead of 5 preads, copy_file_range, lseek and sendfile.
  std::vector<std::byte> buffer(static_cast<std::size_t>(size));
  std::size_t got = 0;
  if (const int err = os::pread_full(fd, buffer.data(), buffer.size(), offset, &got); err != 0) {
    throw Error(err, "reading library", name);
  }
  if (got != size) {
    throw Error(EINVAL, "copying library", name,
                "(the source ends after " + std::to_string(got) + " of " + std::to_string(size) +
                    " bytes)");
  }
  return load_fd(Source{fd, offset, size, buffer.data(), true, true, {}, {}}, false, options,
                 name);
}

Library load_library(std::span<const std::byte> bytes, const LoadOptions& options) {
  const std::string name = options.name.empty() ? "memory span" : options.name;
  Source source{-1, 0, bytes.size(), bytes.data(), true, false, {}, {}};
  check_elf(source, name);
  return load_copy(source, options, name, LoadReport{});
}

}  // namespace mapwright
