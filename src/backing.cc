#include "backing.h"

#include <fcntl.h>
#include <limits.h>
#include <unistd.h>

#include <atomic>
#include <utility>

#include "mapwright/error.h"
#include "os/os.h"

namespace mapwright::detail {
namespace {

std::filesystem::path directory_of(const std::filesystem::path& target) {
  std::filesystem::path dir = target.parent_path();
  return dir.empty() ? std::filesystem::path(".") : dir;
}

// ".<target>.mapwright-<pid>-<n>" beside the target: the one hidden name staging uses.
std::filesystem::path hidden_name(const std::filesystem::path& target) {
  static std::atomic<unsigned> counter{0};
  return directory_of(target) / ("." + target.filename().string() + ".mapwright-" +
                                 std::to_string(os::process_id()) + "-" + std::to_string(counter++));
}

int open_or_throw(const std::filesystem::path& path, int flags, const char* operation) {
  int fd = -1;
  if (const int err = os::open(path.c_str(), flags, 0666, &fd); err != 0) {
    throw Error(err, operation, path.string());
  }
  return fd;
}

void fsync_directory(const std::filesystem::path& directory, const std::string& name) {
  int dir = -1;
  if (const int err = os::open(directory.c_str(), O_RDONLY | O_DIRECTORY, 0, &dir); err != 0) {
    throw Error(err, "publishing region", name, "(opening its directory to fsync it)");
  }
  const int err = os::fsync(dir);
  os::close(dir);
  if (err != 0 && err != EINVAL) {  // some filesystems cannot fsync a directory
    throw Error(err, "publishing region", name, "(fsync of its directory)");
  }
}

[[noreturn]] void refuse_kind(const std::string& operation, const std::filesystem::path& target,
                              os::FileType type, const char* via) {
  // The detail is the cause: "Invalid argument" after it would only mislead.
  throw Error(type == os::FileType::kDirectory ? EISDIR : EINVAL, operation, target.string(),
              std::string("(not a regular file: ") + via + "a " + os::to_string(type) +
                  "; nothing written)",
              Error::DetailIsCause{});
}

}  // namespace

std::filesystem::path check_publish_target(const std::filesystem::path& target,
                                           const std::string& operation) {
  os::FileStatus link;
  const int err = os::path_status(target.c_str(), false, &link);
  if (err == ENOENT && !target.has_filename()) {
    throw Error(ENOENT, operation, target.string(), "(no such directory)");
  }
  if (err == ENOENT) return target;  // a new file: its directory is checked when staging
  if (err != 0) throw Error(err, operation, target.string(), "(lstat)");
  if (link.type == os::FileType::kRegular) return target;
  if (link.type != os::FileType::kSymlink) refuse_kind(operation, target, link.type, "");
  os::FileStatus file;
  if (const int serr = os::path_status(target.c_str(), true, &file); serr != 0) {
    throw Error(serr, operation, target.string(),
                serr == ENOENT ? "(a symbolic link to nothing; nothing written)"
                               : "(stat of the file the symbolic link names)");
  }
  if (file.type != os::FileType::kRegular) {
    refuse_kind(operation, target, file.type, "a symbolic link to ");
  }
  char resolved[PATH_MAX];
  if (const int rerr = os::real_path(target.c_str(), resolved); rerr != 0) {
    throw Error(rerr, operation, target.string(), "(resolving the symbolic link)");
  }
  return std::filesystem::path(resolved);
}

Backing Backing::memfd(const std::string& name) {
  int fd = -1;
  if (const int err = os::memfd_create(name.c_str(), &fd); err != 0) {
    throw Error(err, "creating memfd for region", name);
  }
  return Backing(BackingKind::kMemfd, name, fd);
}

Backing Backing::create_file(const std::filesystem::path& path) {
  return Backing(BackingKind::kFile, path.string(),
                 open_or_throw(path, O_RDWR | O_CREAT | O_TRUNC, "creating region file"));
}

Backing Backing::open_file(const std::filesystem::path& path) {
  return Backing(BackingKind::kFile, path.string(),
                 open_or_throw(path, O_RDWR, "opening region file"));
}

Backing Backing::staged(const std::filesystem::path& requested) {
  const std::filesystem::path target =
      check_publish_target(requested, "creating staging file for region");
  const std::filesystem::path dir = directory_of(target);
  int fd = -1;
  int err = os::open_tmpfile(dir.c_str(), 0666, &fd);
  if (err == 0) {
    Backing backing(BackingKind::kStagedUnnamed, requested.string(), fd);
    backing.target_ = target;
    return backing;
  }
  if (err != EOPNOTSUPP && err != EISDIR) {
    throw Error(err, "creating staging file for region", requested.string(),
                "(O_TMPFILE in " + dir.string() + ")");
  }
  // No O_TMPFILE on this filesystem: a hidden named file beside the target, O_EXCL with
  // mode 0666 (less the umask), as O_TMPFILE and create_file() make files.
  std::filesystem::path temp;
  err = EEXIST;
  for (int attempt = 0; err == EEXIST && attempt < 100; ++attempt) {
    temp = hidden_name(target);
    err = os::open(temp.c_str(), O_RDWR | O_CREAT | O_EXCL, 0666, &fd);
  }
  if (err != 0) {
    throw Error(err, "creating staging file for region", requested.string(),
                "in " + dir.string());
  }
  Backing backing(BackingKind::kStagedNamed, requested.string(), fd);
  backing.target_ = target;
  backing.temp_path_ = temp;
  return backing;
}

Backing::Backing(Backing&& other) noexcept
    : kind_(other.kind_),
      name_(std::move(other.name_)),
      fd_(std::exchange(other.fd_, -1)),
      target_(std::move(other.target_)),
      temp_path_(std::exchange(other.temp_path_, {})) {}

Backing& Backing::operator=(Backing&& other) noexcept {
  if (this != &other) {
    this->~Backing();
    new (this) Backing(std::move(other));
  }
  return *this;
}

Backing::~Backing() {
  if (fd_ >= 0) os::close(fd_);
  fd_ = -1;
  if (kind_ == BackingKind::kStagedNamed && !temp_path_.empty()) os::unlink(temp_path_.c_str());
  temp_path_.clear();
}

std::uint64_t Backing::size() const {
  std::uint64_t size = 0;
  if (const int err = os::file_size(fd_, &size); err != 0) {
    throw Error(err, "opening region file", name_, "(fstat)");
  }
  return size;
}

void Backing::fsync() const {
  if (const int err = os::fsync(fd_); err != 0) {
    throw Error(err, "syncing region", name_, "(fsync)");
  }
}

void Backing::publish(bool durable, int mode) {
  if (!staged()) {
    throw Error(EINVAL, "publishing region", name_,
                "(only a staged region that is not yet published can be published)");
  }
  keep_target_attributes();
  if (mode >= 0) {
    if (const int err = os::change_mode(fd_, static_cast<mode_t>(mode) & 07777); err != 0) {
      throw Error(err, "publishing region", name_, "(setting the new file's mode)");
    }
  }
  if (kind_ == BackingKind::kStagedUnnamed) {
    // linkat cannot replace an existing name: link under a fresh hidden name, then rename.
    std::filesystem::path temp;
    int err = EEXIST;
    for (int attempt = 0; err == EEXIST && attempt < 100; ++attempt) {
      temp = hidden_name(target_);
      err = os::link_fd(fd_, temp.c_str());
    }
    if (err != 0) throw Error(err, "publishing region", name_, "(linking the staged file)");
    if (const int rerr = os::rename(temp.c_str(), target_.c_str()); rerr != 0) {
      // The O_TMPFILE inode cannot be linked a second time once this name goes (it lost
      // I_LINKABLE): keep the name as a named staging file, for a retry or the destructor.
      kind_ = BackingKind::kStagedNamed;
      temp_path_ = temp;
      throw Error(rerr, "publishing region", name_, "(renaming over the target)");
    }
  } else {
    if (const int err = os::rename(temp_path_.c_str(), target_.c_str()); err != 0) {
      throw Error(err, "publishing region", name_, "(renaming over the target)");
    }
    temp_path_.clear();
  }
  kind_ = BackingKind::kFile;
  if (durable) fsync_directory(directory_of(target_), name_);
}

void Backing::keep_target_attributes() {
  os::FileStatus old;
  const int err = os::path_status(target_.c_str(), false, &old);
  if (err == ENOENT) return;  // nothing to replace
  if (err != 0) throw Error(err, "publishing region", name_, "(lstat of the target)");
  // A directory that took the name meanwhile: rename(2) refuses to replace it (EISDIR,
  // ENOTEMPTY), and a retry can follow once it is gone. Anything else it would replace.
  if (old.type == os::FileType::kDirectory) return;
  if (old.type != os::FileType::kRegular) {
    throw Error(EINVAL, "publishing region", name_,
                std::string("(the target is now a ") + os::to_string(old.type) +
                    ", not a regular file; it was left alone)",
                Error::DetailIsCause{});
  }
  // Owner first: chown clears the set-user-ID and set-group-ID bits that chmod then sets.
  // Best effort: only root (or a member of the group) may give the file away.
  (void)os::change_owner(fd_, old.uid, old.gid);
  if (const int merr = os::change_mode(fd_, old.mode); merr != 0) {
    throw Error(merr, "publishing region", name_, "(giving the new file the old one's mode)");
  }
}

int Backing::add_seals(int seals) const noexcept { return os::add_seals(fd_, seals); }

int Backing::release_fd() noexcept { return std::exchange(fd_, -1); }

}  // namespace mapwright::detail
