// mapwright/loader.h — loading a shared library from a sealed image, a file range, or memory,
// without writing it to disk when the system allows.
//
// The contract. load_library() gives a Library: a dlopen() handle plus the one file
// descriptor the dynamic linker opened the library through. The strategies, in order, each
// used only when the one before cannot serve (LoadStrategy):
//
//   1. kSealedMemfd: the source is a memfd carrying F_SEAL_WRITE | F_SEAL_SHRINK |
//      F_SEAL_GROW, read from offset 0 to its end (always so for a SealedImage). The fd is
//      dup()ed and dlopen()ed as "/proc/self/fd/N". Nothing is copied.
//   2. kMemfdCopy: anything else. A new memfd (os::memfd_create) — or one prepared ahead of
//      time by the MemfdPool when a reservation fits (memfd_pool.h; LoadReport::pool) — is
//      filled in the kernel with copy_file_range(2) from a source fd, falling back — when
//      the kernel refuses (EXDEV, ENOSYS, EPERM, EOPNOTSUPP, EINVAL) — to pread/pwrite for a
//      range of at most 64 KiB (read once, before the copy: its ELF headers are checked in
//      that read), to one pwrite(2) from a read-only mapping of the range (256 KiB and more,
//      when the fd can be mapped and holds the whole range), to sendfile(2) and then to
//      pread/pwrite; or written from a span; then sealed, then loaded as in step 1.
//      Nothing touches a disk. While the pool runs, ~Library hands the memfd's last fd to the
//      pool's thread, which frees its pages after the unload.
//   3. kTempFile: only when memfd_create is refused, or /proc is not mounted (detected by
//      access("/proc/self/fd/N") failing: dlopen of that path could not work; asked once per
//      process — and once more in a child after fork() — then again only when a dlopen() of
//      such a path fails, which is then retried here). A file is made
//      in the first of $TMPDIR, /tmp, /var/tmp and the current directory that is not on a
//      filesystem mounted noexec (statvfs ST_NOEXEC): an unnamed O_TMPFILE file loaded as
//      /proc/self/fd/N when /proc exists, else a mkstemp() file loaded by its name and
//      unlinked as soon as dlopen() returns. The only step that writes to a file system; the
//      report says how many bytes it wrote.
//
// A failure of dlopen() itself (not an ELF, wrong architecture, a missing dependency) does
// not fall down the ladder: it is thrown at once.
//
// Namespaces (LoadOptions::Namespace). glibc keeps loaded objects in link-map namespaces:
// a DT_NEEDED name is matched against the names and SONAMEs of the objects already loaded IN
// THE SAME NAMESPACE (then searched for on disk), and undefined symbols are bound to them.
//   * kDefault: dlopen(), into the caller's namespace — the program and every library it
//     linked (libstdc++, libkj, libfmt...). A library whose SONAME is already taken there is
//     refused before dlopen() (EEXIST, naming the object that has it: "its SONAME
//     libkj-0.9.2.so is already loaded from /lib/.../libkj-0.9.2.so"): it would load as a
//     second copy, and whatever needs that SONAME would bind to the first one — "undefined
//     symbol", or worse, the wrong code. LoadOptions::allow_duplicate_soname loads it anyway.
//     The same file loaded twice (a SealedImage) is no duplicate: dlopen() returns it again.
//     The loaded objects' file names and DT_SONAMEs are compared in memory first
//     (dl_iterate_phdr); only if one may match does the loader ask the dynamic linker itself
//     (dlopen RTLD_NOLOAD), whose search for a name it does not find goes through the library
//     path on disk (~25 µs). So an object is seen by its SONAME and by the file name of its
//     path, not by another name it was once dlopen()ed by (glibc's private l_libname list:
//     dlopen("libfoo.so") of a file whose SONAME is libfoo.so.1 does not block a library
//     whose SONAME is libfoo.so), nor by a file of that name elsewhere on the library path
//     that is the same inode.
//   * kNew: dlmopen(LM_ID_NEWLM): a namespace of its own, where it sees nothing of the
//     program's libraries; what it needs is loaded there — from earlier kBeside loads, else
//     from disk. Library::namespace_id() says which namespace; load its dependents with
//     kBeside (Wrapper::load_with_dependencies() and load_all() put one call's libraries in
//     one new namespace that way).
//   * kBeside: dlmopen() into the namespace of LoadOptions::beside.
// What a namespace costs and forbids (glibc 2.36, Debian 12):
//   * at most 16 namespaces per process, the program's own included (DL_NNS); when they run
//     out, dlmopen()'s text says "no more namespaces available for dlmopen()". A namespace is
//     free again once everything in it is unloaded.
//   * every namespace that needs the C library loads ITS OWN COPY of libc (and libstdc++,
//     libm...): its own malloc heap, stdio buffers (its stdout is not flushed by the
//     program's exit(): call its fflush, as `mapwright run` does), errno, locale and atexit
//     list. Never free() in one namespace what was malloc()ed in another, and never pass a
//     FILE*, a std::string or any object that owns memory across.
//   * each copy of libc takes static TLS, of which glibc reserves room for a few namespaces
//     only (the glibc.rtld.nns tunable, default 4): beyond that, or with libraries that use
//     initial-exec TLS, dlmopen() can fail with "cannot allocate memory in static TLS block".
//   * RTLD_GLOBAL is refused in a namespace of its own (Visibility::kGlobal is EINVAL there).
//   * a library linked with a sanitizer runtime (-fsanitize=address: DT_NEEDED libasan) loads
//     that runtime again in the new namespace, and a sanitized process aborts ("ASan runtime
//     does not come first"); TSan's finds no static TLS. Libraries without one load fine.
//   * dl_iterate_phdr() shows only the caller's namespace; the stale-name check below walks
//     the other namespace's link map instead (dlinfo RTLD_DI_LINKMAP of `beside`).
//
// Hazards, plainly:
//   * glibc recognises an already loaded library by the PATH it was opened with (before it
//     even opens the file), and a loaded object's path never changes. "/proc/self/fd/N" names
//     whatever fd N is NOW: if the fd behind a loaded library were closed and N reused for
//     another image, dlopen("/proc/self/fd/N") would hand back the OLD library, silently.
//     So a Library keeps its fd open until it is dlclose()d — as long as it lives, no other
//     load can get that number — and before each dlopen() the loader also checks the path
//     against every loaded object's name (dl_iterate_phdr) and moves to a higher fd number
//     if someone else left a stale /proc/self/fd/N behind. Do not close() a Library's fd().
//   * glibc also matches DT_NEEDED entries against the SONAMEs of libraries already loaded.
//     That is how a dependent image loads with no file on disk: load the dependency first,
//     keep its Library alive, then load the dependent. Without that, the dependency is
//     searched for on disk as usual (LD_LIBRARY_PATH, RUNPATH, the cache) and, if absent,
//     load_library() throws with dlerror()'s "cannot open shared object file" text.
//   * dlclose() of a library whose symbols are still used (function pointers, thread-local
//     destructors, atexit handlers it registered) is undefined behaviour, as with any
//     dlopen(): a pointer from symbol() or function() is valid only while its Library lives.
//     glibc may also keep a library loaded after dlclose() (RTLD_NODELETE, unique symbols),
//     and it pins one for good (NODELETE) when the main program or another non-dlopen()ed
//     object looks a symbol of it up with dlsym(RTLD_DEFAULT/RTLD_NEXT, ...) — symbol() uses
//     the handle and does not. A pinned library also keeps its soname visible to later loads.
//   * The image is checked before dlopen(): a truncated ELF (program headers, a loadable
//     segment or the dynamic section past the end of the image) is refused with EINVAL,
//     because the dynamic linker would map past the end of the file and die by SIGBUS on the
//     first touch. Other defects are left to dlopen() to report. Its SONAME is read then too,
//     for the namespace check above.
//   * Constructors in the library (and in its dependencies) run inside load_library(), and
//     destructors inside ~Library, on the calling thread.
//   * With the memfd strategies each Library holds one fd and a memfd's worth of memory
//     (the image's size, shared with the SealedImage in step 1).
//
// Errors: everything is a mapwright::Error naming the image (LoadOptions::name, or a default
// "sealed image fd N", "fd N at offset O", "memory span"). dlopen()/dlmopen() failures have
// code ENOEXEC and a missing symbol ENOENT; both end with dlerror()'s own text ("failed in
// dlopen: libfoo.so: cannot open shared object file: No such file or directory", "'f':
// /proc/self/fd/5: undefined symbol: f"), with no errno text after it (Error::DetailIsCause).
// A SONAME already loaded is EEXIST; system-call failures have their errno.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>

#include "mapwright/sealed_image.h"

namespace mapwright {

enum class LoadStrategy {
  kSealedMemfd,  // step 1: the source memfd itself, no copy
  kMemfdCopy,    // step 2: copied into a new sealed memfd
  kTempFile,     // step 3: copied into a temporary file, unlinked (or never named)
};
// "sealed memfd", "memfd copy", "temporary file".
const char* to_string(LoadStrategy strategy) noexcept;

// How step 2 or 3 copied the bytes.
enum class CopyMethod {
  kNone,           // step 1: nothing copied
  kCopyFileRange,  // copy_file_range(2), in the kernel
  kSendfile,       // sendfile(2), in the kernel
  kReadWrite,      // pread/pwrite through a buffer
  kFromMemory,     // pwrite from the caller's span
};
const char* to_string(CopyMethod method) noexcept;

// Whether step 2 used a memfd prepared ahead of time by the MemfdPool (memfd_pool.h).
enum class PoolUse {
  kNotReserved,  // no reservation fits the size (or no pool): a new memfd, as always
  kPrepared,     // a prepared memfd: its pages were allocated before the load
  kNoneReady,    // a reservation fits, but all of its memfds were taken or still being
                 // prepared (the pool's limit): a new memfd, as without a pool
};
// "not reserved", "prepared", "none ready".
const char* to_string(PoolUse use) noexcept;

class Library;

struct LoadOptions {
  enum class Binding { kLazy, kNow };        // RTLD_LAZY / RTLD_NOW
  enum class Visibility { kLocal, kGlobal };  // RTLD_LOCAL / RTLD_GLOBAL
  Binding binding = Binding::kNow;
  // kGlobal only with Namespace::kDefault (glibc refuses RTLD_GLOBAL elsewhere: EINVAL).
  Visibility visibility = Visibility::kLocal;
  // The link-map namespace the library goes into: which loaded objects its DT_NEEDED entries
  // are matched against (by SONAME) and its undefined symbols bound to. See "Namespaces" at
  // the top of this file.
  enum class Namespace {
    // dlopen(): the caller's namespace, beside the program and every library it linked.
    // Refused (EEXIST, before dlopen) if an object with the library's SONAME is already
    // loaded there: whatever needs that SONAME would bind to the other object.
    kDefault,
    // dlmopen(LM_ID_NEWLM): a new namespace, holding this library and what it needs.
    kNew,
    // dlmopen() into the namespace of `beside` (a Library loaded with kNew or kBeside),
    // refused (EEXIST) like kDefault if an object there has the library's SONAME.
    kBeside,
  };
  Namespace link_namespace = Namespace::kDefault;
  // For kBeside: a loaded Library, alive for the call (the loaded one does not refer to it).
  const Library* beside = nullptr;
  // Load even if an object with the library's SONAME is already loaded in the namespace
  // (kDefault, kBeside): a second copy, which is fine for a library nothing else needs by
  // that SONAME — whatever does binds to the first. Loading the same SealedImage twice is no
  // duplicate: dlopen() returns the loaded object again.
  bool allow_duplicate_soname = false;
  // Used in error messages; empty gives "sealed image fd N", "fd N at offset O", "memory span".
  std::string name;
  // Called with the bytes exactly as dlopen() will read them — the sealed memfd (the image
  // itself in step 1, the sealed copy in step 2) or the temporary file (step 3), mapped
  // read-only — just before dlopen(). Throw to refuse the load; the exception propagates
  // and nothing is loaded. With a sealed memfd the bytes cannot change between the check and
  // the load; a step-3 file is private to this user but not sealed. Wrapper::load_library()
  // checks the entry's digest here. (If /proc disappears after the loader last saw it, the
  // dlopen() of the memfd fails and the load goes on to step 3: `check` runs again there.)
  std::function<void(std::span<const std::byte> bytes)> check = nullptr;
};

struct LoadReport {
  LoadStrategy strategy = LoadStrategy::kSealedMemfd;
  CopyMethod copy_method = CopyMethod::kNone;
  std::uint64_t bytes_copied = 0;           // into a memfd or a file (0 in step 1)
  std::uint64_t bytes_written_to_disk = 0;  // step 3 only
  // Why a step was passed over ("memfd_create: Operation not permitted", "/proc not
  // mounted", "copy_file_range: Invalid cross-device link"), empty if none was.
  std::string fallback_reason;
  // Step 2 only: whether the memfd came from the MemfdPool (kNotReserved otherwise).
  PoolUse pool = PoolUse::kNotReserved;
};

class Library {
 public:
  Library(Library&& other) noexcept;
  Library& operator=(Library&& other) noexcept;
  Library(const Library&) = delete;
  Library& operator=(const Library&) = delete;
  // dlclose(), then closes fd(). A library still referenced elsewhere (loaded twice, or a
  // dependency of another) stays loaded until its last reference goes.
  ~Library();

  // The symbol's address. Throws Error (ENOENT, with dlerror()'s text) if it is not defined.
  // Valid only while this Library lives.
  void* symbol(const char* name) const;
  // symbol() cast to a function type: lib.function<int(void)>("fixture_answer").
  template <class F>
  F* function(const char* name) const {
    return reinterpret_cast<F*>(symbol(name));
  }

  void* handle() const noexcept { return handle_; }
  // The link-map namespace it was loaded into (dlinfo RTLD_DI_LMID): 0 (LM_ID_BASE) for the
  // program's own, else the one Namespace::kNew made. Libraries loaded with kBeside of this
  // one share it.
  long namespace_id() const noexcept { return namespace_id_; }
  // The fd the library was opened through (-1 for a named temporary file, already closed).
  int fd() const noexcept { return fd_; }
  // The path given to dlopen(): "/proc/self/fd/N", or the (now unlinked) temporary file name.
  const std::string& path() const noexcept { return path_; }
  const std::string& name() const noexcept { return name_; }
  LoadStrategy strategy() const noexcept { return report_.strategy; }
  const LoadReport& report() const noexcept { return report_; }

 private:
  friend struct LibraryAccess;
  Library() = default;
  void reset() noexcept;

  void* handle_ = nullptr;
  long namespace_id_ = 0;
  int fd_ = -1;
  std::string path_;
  std::string name_;
  LoadReport report_;
};

// The whole image, from step 1.
Library load_library(const SealedImage& image, const LoadOptions& options = {});
// `size` bytes of `fd` from `offset`. The fd is not consumed: the caller may close it after.
// Step 1 when `fd` is a write-sealed memfd, offset is 0 and size its whole size; else step 2.
Library load_library(int fd, std::uint64_t offset, std::uint64_t size,
                     const LoadOptions& options = {});
// A copy of `bytes` (step 2, or 3). The span may be released after the call.
Library load_library(std::span<const std::byte> bytes, const LoadOptions& options = {});

}  // namespace mapwright
