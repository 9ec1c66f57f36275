// src/backing.h — the file under a region: which kind, its fd, and its lifecycle (create,
// seal, publish). One concern: the file. It knows nothing of mappings or faults; Region
// (and later the pool and FlatBuffers builders) compose it with a Reservation and an owner.
//
//   kind            made by                     ends as
//   kMemfd          memfd()                     closed, or a SealedImage (release_fd())
//   kFile           create_file() / open_file() closed; the file stays
//   kStagedUnnamed  staged(): O_TMPFILE         publish() links it at the target; else gone
//   kStagedNamed    staged() where O_TMPFILE    publish() renames it over the target; else
//                   is missing: a hidden        the destructor unlinks it (a killed process
//                   ".<name>.mapwright-PID-N"   leaves it behind; the target is safe)
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

namespace mapwright::detail {

enum class BackingKind { kMemfd, kFile, kStagedUnnamed, kStagedNamed };

// Where a file that will replace `target` by rename goes: `target` itself when it does not
// exist or is a regular file; the regular file it finally names when it is a symbolic link
// (so that the link is kept and the file it points to is replaced). Anything else is refused
// with Error(operation, target): a directory (EISDIR; also "dir/"), a FIFO, socket or device
// or a link to one (EINVAL, "not a regular file"), a dangling link (ENOENT), and whatever
// lstat(2) says (ENOTDIR for "file/"...). Nothing is created or changed.
std::filesystem::path check_publish_target(const std::filesystem::path& target,
                                           const std::string& operation);

class Backing {
 public:
  // Each throws Error naming the operation and the path; nothing is left behind on failure.
  // Not async-signal-safe, nor is anything here.
  static Backing memfd(const std::string& name);
  static Backing create_file(const std::filesystem::path& path);  // O_CREAT | O_TRUNC, 0666
  static Backing open_file(const std::filesystem::path& path);    // keeps the contents
  // The target is checked first (check_publish_target): one that is not a regular file is
  // refused before anything is created; a symbolic link to a regular file is staged beside
  // the file it points to, which publish() replaces (the link stays).
  static Backing staged(const std::filesystem::path& target);

  Backing(Backing&& other) noexcept;
  Backing& operator=(Backing&& other) noexcept;
  Backing(const Backing&) = delete;
  Backing& operator=(const Backing&) = delete;
  // Closes the fd; an unpublished named staging file is unlinked.
  ~Backing();

  int fd() const noexcept { return fd_; }
  BackingKind kind() const noexcept { return kind_; }
  bool staged() const noexcept {
    return kind_ == BackingKind::kStagedUnnamed || kind_ == BackingKind::kStagedNamed;
  }
  // The memfd name or the path, for messages.
  const std::string& name() const noexcept { return name_; }
  // The file's size now (fstat). Throws Error.
  std::uint64_t size() const;

  // fsync(2). Throws Error.
  void fsync() const;
  // Staged only: links (O_TMPFILE) or renames (named) the file over the target, atomically;
  // with `durable`, fsyncs the directory after. The caller makes the bytes durable first.
  // On failure throws Error and the target is untouched. Afterwards kind() is kFile.
  // A file it replaces gives the new one its permission bits (and, where allowed: root, or
  // a group of the caller's, its owner and group; failures to chown are ignored); a target
  // that has become a FIFO, device, socket or link meanwhile is refused (EINVAL); rename(2)
  // refuses a directory (EISDIR). `mode` >= 0: the new file gets these permission bits
  // instead (fchmod before the rename).
  void publish(bool durable, int mode = -1);
  // Adds seals (F_ADD_SEALS). Returns 0 or the errno.
  int add_seals(int seals) const noexcept;
  // Gives the fd away (to a SealedImage); the Backing is empty afterwards.
  int release_fd() noexcept;

 private:
  Backing(BackingKind kind, std::string name, int fd) noexcept
      : kind_(kind), name_(std::move(name)), fd_(fd) {}
  // publish(): the replaced file's mode (and owner, best effort) onto the new one.
  void keep_target_attributes();

  BackingKind kind_;
  std::string name_;
  int fd_ = -1;
  std::filesystem::path target_;     // staged: where publish() puts the file
  std::filesystem::path temp_path_;  // kStagedNamed: the hidden file's name
};

}  // namespace mapwright::detail
