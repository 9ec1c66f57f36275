// Sealed images handed to another process (a real one: fork + exec of image_receiver) over a
// Unix socket: the receiver verifies the seals itself, and nothing can change the image.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <string>

#include "image_transfer.h"
#include "mapwright/error.h"
#include "mapwright/region.h"
#include "mapwright/sealed_image.h"

#ifndef MAPWRIGHT_IMAGE_RECEIVER
#error "MAPWRIGHT_IMAGE_RECEIVER must name the image_receiver program"
#endif

namespace mapwright {
namespace {

std::uint64_t fnv64(const std::byte* p, std::uint64_t n) {
  std::uint64_t h = 1469598103934665603ull;
  for (std::uint64_t i = 0; i < n; ++i) h = (h ^ static_cast<std::uint8_t>(p[i])) * 1099511628211ull;
  return h;
}

SealedImage make_image(std::uint64_t size) {
  Region region = Region::memfd("transfer");
  auto* bytes = reinterpret_cast<unsigned char*>(region.data());
  for (std::uint64_t i = 0; i < size; ++i) bytes[i] = static_cast<unsigned char>(i * 31 + 7);
  region.finish(size);
  return std::move(region).seal();
}

struct Receiver {
  pid_t pid = -1;
  int socket = -1;  // our end
  int read_output = -1;
};

// Starts image_receiver with the other end of a socketpair; its stdout comes back in a pipe.
Receiver start_receiver(std::uint64_t checksum, const char* mode) {
  int pair[2];
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair), 0);
  int out[2];
  EXPECT_EQ(::pipe2(out, O_CLOEXEC), 0);
  char hex[32];
  std::snprintf(hex, sizeof hex, "%llx", static_cast<unsigned long long>(checksum));
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(out[1], STDOUT_FILENO);
    ::dup2(out[1], STDERR_FILENO);
    const int child_socket = ::dup(pair[1]);  // without CLOEXEC: inherited across exec
    const std::string fd = std::to_string(child_socket);
    ::execl(MAPWRIGHT_IMAGE_RECEIVER, "image_receiver", fd.c_str(), hex, mode, nullptr);
    ::_exit(127);
  }
  ::close(pair[1]);
  ::close(out[1]);
  return {pid, pair[0], out[0]};
}

std::string finish(Receiver& r, int* status) {
  ::close(r.socket);
  std::string output;
  char buffer[4096];
  ssize_t n = 0;
  while ((n = ::read(r.read_output, buffer, sizeof buffer)) > 0) output.append(buffer, static_cast<std::size_t>(n));
  ::close(r.read_output);
  ::waitpid(r.pid, status, 0);
  return output;
}

TEST(ImageTransfer, AnotherProcessReceivesVerifiesAndCannotChangeIt) {
  const SealedImage image = make_image(3 * 4096 + 123);
  const std::uint64_t checksum = fnv64(image.map().data(), image.size());
  Receiver receiver = start_receiver(checksum, "verify");
  send_image(receiver.socket, image);
  int status = 0;
  const std::string output = finish(receiver, &status);
  ASSERT_TRUE(WIFEXITED(status)) << output;
  EXPECT_EQ(WEXITSTATUS(status), 0) << output;
  EXPECT_NE(output.find("ok checksum matches"), std::string::npos) << output;
  EXPECT_NE(output.find("ok mprotect to writable is refused"), std::string::npos) << output;
  EXPECT_EQ(output.find("FAILED"), std::string::npos) << output;
  // And the sender's view is unchanged too.
  EXPECT_EQ(fnv64(image.map().data(), image.size()), checksum);
}

TEST(ImageTransfer, AnUnsealedFdIsRefusedByTheReceiver) {
  // A plain memfd sent with the same framing: the receiver must check and refuse it.
  const int plain = ::memfd_create("unsealed", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  ASSERT_GE(plain, 0);
  ASSERT_EQ(::ftruncate(plain, 4096), 0);
  Receiver receiver = start_receiver(0, "refuse");
  detail::send_image_fd(receiver.socket, plain, 4096);  // same framing, no seals
  int status = 0;
  const std::string output = finish(receiver, &status);
  ASSERT_TRUE(WIFEXITED(status)) << output;
  EXPECT_EQ(WEXITSTATUS(status), 0) << output;
  EXPECT_NE(output.find("ok refused"), std::string::npos) << output;
  EXPECT_NE(output.find("missing F_SEAL_SEAL"), std::string::npos) << output;
  ::close(plain);
}

TEST(ImageTransfer, ReceiveRefusesAClosedPeerAndAMessageWithoutFd) {
  int pair[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair), 0);
  ASSERT_EQ(::send(pair[0], "hello, not an image", 19, 0), 19);
  try {
    receive_image(pair[1]);
    FAIL() << "accepted a message without an fd";
  } catch (const Error& e) {
    EXPECT_EQ(e.error(), EPROTO) << e.what();
  }
  ::close(pair[0]);
  try {
    receive_image(pair[1]);
    FAIL() << "accepted end of stream";
  } catch (const Error& e) {
    EXPECT_EQ(e.error(), ECONNRESET) << e.what();
  }
  ::close(pair[1]);
}

TEST(ImageTransfer, ReceiveRefusesAMessageLongerThanAnImageMessage) {
  // On a seqpacket socket the receiver reads 16 bytes; a longer message is cut (MSG_TRUNC)
  // and must not pass for an image message because its first 16 bytes would.
  const SealedImage image = make_image(4096);
  int pair[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair), 0);
  detail::send_image_fd(pair[0], image.fd(), image.size(), 8);
  try {
    receive_image(pair[1]);
    FAIL() << "accepted a truncated message";
  } catch (const Error& e) {
    EXPECT_EQ(e.error(), EPROTO) << e.what();
    EXPECT_NE(std::string(e.what()).find("longer"), std::string::npos) << e.what();
  }
  detail::send_image_fd(pair[0], image.fd(), image.size());  // the exact form still works
  EXPECT_EQ(receive_image(pair[1]).size(), image.size());
  ::close(pair[0]);
  ::close(pair[1]);
}

TEST(ImageTransfer, InProcessRoundTripKeepsTheBytes) {
  const SealedImage image = make_image(100'000);
  int pair[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair), 0);
  send_image(pair[0], image);
  const SealedImage received = receive_image(pair[1]);
  EXPECT_NE(received.fd(), image.fd());
  EXPECT_EQ(received.size(), image.size());
  EXPECT_EQ(std::memcmp(received.map().data(), image.map().data(), image.size()), 0);
  EXPECT_EQ(::fcntl(received.fd(), F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
  ::close(pair[0]);
  ::close(pair[1]);
}

// A receiver out of fds: the kernel drops the fd and says only MSG_CTRUNC; that is EMFILE, not
// a protocol error of the sender's.
TEST(ImageTransfer, AReceiverOutOfFdsIsToldSo) {
  const SealedImage image = make_image(4096);
  int pair[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
  send_image(pair[0], image);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    rlimit limit{256, 256};
    if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) ::_exit(2);
    int last = -1;
    for (int fd = ::dup(0); fd >= 0; fd = ::dup(0)) last = fd;
    try {
      (void)receive_image(pair[1]);
      ::_exit(3);
    } catch (const Error& e) {
      // Fds to spare before looking at the error: UBSan's vptr check opens a pipe.
      ::close(last);
      ::close(last - 1);
      const bool named = std::string(e.what()).find("out of fds") != std::string::npos;
      ::_exit(e.error() == EMFILE && named ? 0 : 4);
    }
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
  ::close(pair[0]);
  ::close(pair[1]);
}

}  // namespace
}  // namespace mapwright
