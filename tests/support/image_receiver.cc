// image_receiver — the other process of tests/image_transfer_test.cc, started with fork+exec.
//
//     image_receiver SOCKET_FD EXPECTED_FNV64 (verify | refuse)
//
// verify: receives an image, checks its checksum, then tries every way to change it and
// requires each to fail; prints one line per check; exits 0 only if all held.
// refuse: expects receive_image() to refuse what arrives (an unsealed fd); exits 0 if it did.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "mapwright/error.h"
#include "mapwright/sealed_image.h"

namespace {

int failures = 0;

void check(bool ok, const char* what) {
  std::printf("%s %s (errno %s)\n", ok ? "ok" : "FAILED", what, strerrorname_np(errno) ? strerrorname_np(errno) : "0");
  if (!ok) ++failures;
}

std::uint64_t fnv64(const std::byte* p, std::uint64_t n) {
  std::uint64_t h = 1469598103934665603ull;
  for (std::uint64_t i = 0; i < n; ++i) h = (h ^ static_cast<std::uint8_t>(p[i])) * 1099511628211ull;
  return h;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) return 2;
  const int socket = std::atoi(argv[1]);
  const std::uint64_t expected = std::strtoull(argv[2], nullptr, 16);
  const std::string mode = argv[3];
  if (mode == "refuse") {
    try {
      mapwright::receive_image(socket);
      std::printf("FAILED an unsealed fd was accepted\n");
      return 1;
    } catch (const mapwright::Error& e) {
      std::printf("ok refused: %s\n", e.what());
      return e.error() == EPERM ? 0 : 1;
    }
  }
  try {
    const mapwright::SealedImage image = mapwright::receive_image(socket);
    const auto bytes = image.map();
    check(fnv64(bytes.data(), bytes.size()) == expected, "checksum matches");
    const int fd = image.fd();
    const std::uint64_t size = image.size();

    errno = 0;
    check(::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) == MAP_FAILED,
          "a writable shared mapping is refused");
    void* ro = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
    check(ro != MAP_FAILED, "a read-only shared mapping works");
    errno = 0;
    check(::mprotect(ro, size, PROT_READ | PROT_WRITE) != 0, "mprotect to writable is refused");
    errno = 0;
    check(::ftruncate(fd, static_cast<off_t>(size + 4096)) != 0, "ftruncate up is refused");
    errno = 0;
    check(::ftruncate(fd, 0) != 0, "ftruncate down is refused");
    errno = 0;
    check(::pwrite(fd, "x", 1, 0) < 0, "pwrite is refused");
    errno = 0;
    check(::write(fd, "x", 1) < 0, "write is refused");
    errno = 0;
    check(::fallocate(fd, 0, 0, static_cast<off_t>(size + 4096)) != 0, "fallocate is refused");
    errno = 0;
    check(::fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE) != 0, "adding seals is refused (F_SEAL_SEAL)");
    // Seals cannot be removed at all: there is no such fcntl. Re-read them to be sure.
    check(::fcntl(fd, F_GET_SEALS) == (F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE) ||
              (::fcntl(fd, F_GET_SEALS) & mapwright::kImageSeals) == mapwright::kImageSeals,
          "all four seals are still there");
    // A private writable mapping is allowed (copy-on-write), and changes nothing in the image.
    void* priv = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    check(priv != MAP_FAILED, "a private copy-on-write mapping works");
    if (priv != MAP_FAILED) static_cast<char*>(priv)[0] ^= 0x55;
    check(fnv64(bytes.data(), bytes.size()) == expected, "checksum unchanged after all that");
  } catch (const mapwright::Error& e) {
    std::printf("FAILED %s\n", e.what());
    return 1;
  }
  return failures == 0 ? 0 : 1;
}
