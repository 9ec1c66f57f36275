// mapwright::Error's message shape, and the handler's allocation-free formatter.
#include <gtest/gtest.h>

#include <cerrno>
#include <string>

#include "line.h"
#include "mapwright/error.h"

namespace mapwright {
namespace {

TEST(Error, NamesOperationSubjectDetailAndCause) {
  const Error e(ENOSPC, "growing region", "wrapper.mwr", "to 8 GiB");
  EXPECT_STREQ(e.what(), "growing region 'wrapper.mwr' to 8 GiB: No space left on device");
  EXPECT_EQ(e.code(), std::errc::no_space_on_device);
  EXPECT_EQ(e.error(), ENOSPC);
  EXPECT_EQ(e.operation(), "growing region");
  EXPECT_EQ(e.subject(), "wrapper.mwr");
  EXPECT_EQ(e.detail(), "to 8 GiB");
}

TEST(Error, OmitsEmptyParts) {
  EXPECT_STREQ(Error(EINVAL, "installing the SIGBUS handler", "").what(),
               "installing the SIGBUS handler: Invalid argument");
}

TEST(LineWriter, FormatsNumbersSizesAndErrors) {
  char buffer[128];
  detail::LineWriter line(buffer, sizeof buffer);
  line.text("n=").number(0).text(" ").number(18446744073709551615ull).text(" ")
      .bytes(8ull << 30).text(" ").bytes(3ull << 20).text(" ").bytes(12 << 10).text(" ")
      .bytes(12345).text(" ").bytes(0).text(": ").error_text(EFBIG);
  EXPECT_STREQ(line.c_str(),
               "n=0 18446744073709551615 8 GiB 3 MiB 12 KiB 12345 bytes 0 bytes: File too large");
  EXPECT_EQ(line.size(), std::string(buffer).size());
}

TEST(LineWriter, TruncatesAndStaysTerminated) {
  char buffer[8];
  detail::LineWriter line(buffer, sizeof buffer);
  line.text("0123456789").number(42);
  EXPECT_STREQ(line.c_str(), "0123456");
  EXPECT_EQ(line.size(), 7u);
}

}  // namespace
}  // namespace mapwright
