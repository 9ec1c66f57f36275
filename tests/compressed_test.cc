// Compressed wrapper entries (wrapper.h: WrapperCompression, Wrapper::lazy): written from
// every kind of source, read back exactly by every reader (verify, read_entry, image, lazy,
// load_library), one frame decoded per first touch, several threads in random orders, a
// corrupt frame an Error inside guarded() and one line outside it, hostile frame tables
// refused at open(), the eager fallback, a siglongjmp timeout amid decodes, a 4 KiB
// sigaltstack.
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/time.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <gtest/gtest.h>

#include "child.h"
#include "content.h"
#include "fixture_paths.h"
#include "lazy_helpers.h"
#include "mapwright/error.h"
#include "mapwright/fault.h"
#include "mapwright/lazy.h"
#include "mapwright/wrapper.h"
#include "sanitizers.h"
#include "wrapper.capnp.h"
#include "wrapper_helpers.h"
#include "wrapper_integrity.h"
#include "zstd_frames.h"

namespace mapwright {
namespace {

using test::run_in_child;
using Bytes = std::vector<std::byte>;

const std::uint64_t kPage = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
constexpr std::uint64_t kFrame = 64 << 10;

// Bytes zstd can compress (text-like runs with noise), so frames are smaller than their
// bytes, as in real use; each 4 KiB differs from the next.
Bytes compressible(std::size_t size, unsigned seed) {
  Bytes bytes(size);
  const Bytes noise = test::pattern_bytes(size / 16 + 1, seed);
  for (std::size_t i = 0; i < size; ++i) {
    bytes[i] = static_cast<std::byte>('a' + (i / 7 + seed) % 23);
    if (i % 16 == 0) bytes[i] = noise[i / 16];
  }
  return bytes;
}

WrapperWriterOptions compressed_options(std::uint64_t frame = kFrame) {
  WrapperWriterOptions options;
  options.durable = false;
  options.compression.method = EntryCompression::kZstd;
  options.compression.frame_bytes = frame;
  options.compression.level = 1;
  return options;
}

// The entry's bytes as read_entry() hands them.
Bytes read_all(const Wrapper& wrapper, const WrapperEntry& entry) {
  Bytes out;
  wrapper.read_entry(entry, [&](std::span<const std::byte> piece, std::uint64_t at) {
    EXPECT_EQ(at, out.size());
    out.insert(out.end(), piece.begin(), piece.end());
  });
  return out;
}

// "" when `image` holds exactly `bytes`, zeros after them to the page's end.
std::string differences(const LazyImage& image, const Bytes& bytes) {
  if (image.size() != bytes.size()) return "size " + std::to_string(image.size());
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    if (image.data()[i] != bytes[i]) return "byte " + std::to_string(i);
  }
  const std::uint64_t end = (bytes.size() + kPage - 1) / kPage * kPage;
  for (std::uint64_t i = bytes.size(); i < end; ++i) {
    if (image.data()[i] != std::byte{0}) return "tail byte " + std::to_string(i);
  }
  return "";
}

struct Written {
  std::filesystem::path path;
  Bytes span, file, stream, fill, odd;
};

// One entry from each kind of source: a span, a file, a stream (a pipe), a fill function,
// and sizes that are no multiple of a frame or a page.
Written write_every_kind(const test::TempDir& dir, WrapperWriterOptions options) {
  Written w;
  w.path = dir / "compressed.mwr";
  w.span = compressible(10 * kFrame, 1);
  w.file = compressible(3 * kFrame + 5000, 2);
  w.stream = compressible(2 * kFrame + 77, 3);
  w.fill = compressible(5 * kFrame + kPage, 4);
  w.odd = test::pattern_bytes(1, 5);  // one byte, incompressible
  test::write_file(dir / "file.bin", w.file);
  WrapperWriter writer(w.path, std::move(options));
  writer.add_data("span", w.span);
  writer.add_data("file", dir / "file.bin");
  int pipe_fds[2];
  EXPECT_EQ(::pipe(pipe_fds), 0);
  std::thread feeder([&] {
    (void)!::write(pipe_fds[1], w.stream.data(), w.stream.size());
    ::close(pipe_fds[1]);
  });
  writer.add_data_stream("stream", pipe_fds[0], "a pipe");
  feeder.join();
  ::close(pipe_fds[0]);
  writer.add_data("fill", w.fill.size(), [&](std::span<std::byte> chunk, std::uint64_t at) {
    std::memcpy(chunk.data(), w.fill.data() + at, chunk.size());
  });
  writer.add_data("odd", w.odd);
  writer.add_data("empty", std::span<const std::byte>());
  writer.publish();
  return w;
}

TEST(CompressedEntries, EveryKindOfSourceReadsBackExactlyThroughEveryReader) {
  test::TempDir dir;
  const Written w = write_every_kind(dir, compressed_options());
  const Wrapper wrapper = Wrapper::open(w.path);
  EXPECT_EQ(wrapper.format_version(), kWrapperCompressedFormatVersion);
  EXPECT_NO_THROW(wrapper.verify());
  const std::vector<std::pair<std::string, const Bytes*>> expected = {
      {"span", &w.span}, {"file", &w.file}, {"stream", &w.stream}, {"fill", &w.fill}, {"odd", &w.odd}};
  for (const auto& [name, bytes] : expected) {
    SCOPED_TRACE(name);
    const WrapperEntry& entry = wrapper.entry(name);
    EXPECT_EQ(entry.compression, EntryCompression::kZstd);
    EXPECT_EQ(entry.size, bytes->size());
    EXPECT_EQ(entry.frame_bytes, kFrame);
    EXPECT_EQ(entry.frame_ends.size(), (bytes->size() + kFrame - 1) / kFrame);
    EXPECT_EQ(entry.digest, digest_of(*bytes)) << "the digest is of the uncompressed bytes";
    EXPECT_TRUE(wrapper.verify_entry(entry));
    EXPECT_TRUE(entry.contiguous());
    if (name != "odd") {
      EXPECT_LT(entry.stored_size, entry.size / 2) << "compressed";
    }
    EXPECT_THROW((void)entry.bytes(), Error) << "bytes() of a compressed entry";
    EXPECT_EQ(read_all(wrapper, entry), *bytes);
    const SealedImage image = wrapper.image(name);
    EXPECT_TRUE(std::equal(image.map().begin(), image.map().end(), bytes->begin(), bytes->end()));
  }
  const WrapperEntry& empty = wrapper.entry("empty");
  EXPECT_EQ(empty.size, 0u);
  EXPECT_TRUE(empty.frame_ends.empty());
  EXPECT_TRUE(read_all(wrapper, empty).empty());
  if (!test::lazy_unavailable().empty()) GTEST_SKIP() << "lazy part: no userfaultfd: " << test::lazy_unavailable();
  for (const auto& [name, bytes] : expected) {
    SCOPED_TRACE(name);
    LazyImage lazy = wrapper.lazy(name);
    EXPECT_EQ(lazy.mode(), LazyMode::kUserfaultfd);
    EXPECT_EQ(differences(lazy, *bytes), "");
  }
}

// Files without a compressed entry stay format version 2, readable by older readers.
TEST(CompressedEntries, OnlyFilesWithACompressedEntryAreFormatVersion3) {
  test::TempDir dir;
  WrapperWriterOptions plain;
  plain.durable = false;
  WrapperWriter writer(dir / "plain.mwr", plain);
  writer.add_data("a", compressible(kFrame, 1));
  writer.publish();
  const Wrapper wrapper = Wrapper::open(dir / "plain.mwr");
  EXPECT_EQ(wrapper.format_version(), kWrapperFormatVersion);
  EXPECT_EQ(wrapper.entry("a").compression, EntryCompression::kNone);
  EXPECT_EQ(wrapper.entry("a").stored_size, kFrame);
  EXPECT_EQ(wrapper.entry("a").bytes().size(), kFrame);
}

TEST(CompressedEntries, TouchingOnePageDecodesOneFrame) {
  SKIP_WITHOUT_USERFAULTFD();
  test::TempDir dir;
  const Bytes bytes = compressible(64 * kFrame, 7);  // 4 MiB
  WrapperWriter writer(dir / "big.mwr", compressed_options());
  writer.add_data("big", bytes);
  writer.publish();
  Wrapper wrapper = Wrapper::open(dir / "big.mwr");
  LazyImage image = wrapper.lazy("big");
  const std::uint64_t at = 40 * kFrame + 3 * kPage + 17;
  EXPECT_EQ(image.data()[at], bytes[at]);
  LazyStats stats = image.stats();
  EXPECT_EQ(stats.faults, 1u);
  EXPECT_EQ(stats.pages_filled, kFrame / kPage) << "the whole frame, and nothing else";
  // Every page of that frame is there now; the next frame is not.
  EXPECT_EQ(image.data()[40 * kFrame], bytes[40 * kFrame]);
  EXPECT_EQ(image.data()[41 * kFrame - 1], bytes[41 * kFrame - 1]);
  EXPECT_EQ(image.stats().faults, 1u);
  EXPECT_EQ(image.data()[41 * kFrame], bytes[41 * kFrame]);
  EXPECT_EQ(image.stats().faults, 2u);
  // prefetch() decodes the frames of a range with a missing page, once each.
  image.prefetch(kFrame / 2, 3 * kFrame);
  stats = image.stats();
  EXPECT_EQ(stats.pages_filled, 6 * kFrame / kPage);
  image.prefetch(0, 4 * kFrame);  // frames 0-3 are there: nothing decoded again
  EXPECT_EQ(image.stats().pages_filled, 6 * kFrame / kPage);
  // A write, then reset(): the page is the source's again.
  image.data()[5] = std::byte{0x7f};
  image.reset();
  EXPECT_EQ(image.data()[5], bytes[5]);
  EXPECT_EQ(differences(image, bytes), "");
  // The image maps the file itself: it outlives the Wrapper.
  LazyImage kept = wrapper.lazy("big", {.name = "kept"});
  {
    const Wrapper gone = std::move(wrapper);
  }
  EXPECT_EQ(differences(kept, bytes), "");
}

// Two images of one entry at once (they share its decoder slots, fewer than the threads on a
// small machine), each touched by two threads in random orders.
TEST(CompressedEntries, SeveralThreadsInRandomOrdersReadExactlyTheSourceBytes) {
  SKIP_WITHOUT_USERFAULTFD();
  test::TempDir dir;
  const Bytes bytes = compressible(32 * 16384 + 999, 9);
  WrapperWriter writer(dir / "threads.mwr", compressed_options(16384));
  writer.add_data("t", bytes);
  writer.publish();
  const Wrapper wrapper = Wrapper::open(dir / "threads.mwr");
  for (int round = 0; round < 3; ++round) {
    std::array<LazyImage, 2> images = {wrapper.lazy("t"), wrapper.lazy("t")};
    const std::uint64_t pages = (bytes.size() + kPage - 1) / kPage;
    std::atomic<int> wrong{0};
    std::vector<std::thread> threads;
    for (unsigned t = 0; t < 4; ++t) {
      threads.emplace_back([&, t] {
        const LazyImage& image = images[t % 2];
        std::vector<std::uint64_t> order(pages);
        std::iota(order.begin(), order.end(), 0);
        std::shuffle(order.begin(), order.end(), std::mt19937(round * 10 + t));
        for (const std::uint64_t page : order) {
          const std::uint64_t at = std::min<std::uint64_t>(page * kPage + (t * 977) % kPage,
                                                           bytes.size() - 1);
          if (image.data()[at] != bytes[at]) wrong.fetch_add(1);
        }
      });
    }
    for (std::thread& thread : threads) thread.join();
    EXPECT_EQ(wrong.load(), 0);
    for (const LazyImage& image : images) {
      EXPECT_EQ(differences(image, bytes), "");
      EXPECT_EQ(image.stats().failures, 0u);
      EXPECT_EQ(image.stats().pages_filled, pages) << "each page filled once";
    }
  }
}

// A compressed library loads (decoded into a sealed memfd) and runs; one that depends on it
// too.
TEST(CompressedEntries, CompressedLibrariesLoadAndRun) {
  test::TempDir dir;
  WrapperWriter writer(dir / "libs.mwr", compressed_options(kPage));
  writer.add_library("liba", std::filesystem::path(MAPWRIGHT_FIXTURE_A));
  writer.add_library("libb", std::filesystem::path(MAPWRIGHT_FIXTURE_B), {"liba"});
  writer.publish();
  const Wrapper wrapper = Wrapper::open(dir / "libs.mwr");
  EXPECT_EQ(wrapper.entry("liba").compression, EntryCompression::kZstd);
  const LoadedLibraries loaded = wrapper.load_all();
  using Answer = int (*)();
  EXPECT_EQ(reinterpret_cast<Answer>(loaded.at("libb").symbol("fixture_b_answer"))(), 43);
  EXPECT_EQ(read_all(wrapper, wrapper.entry("liba")), test::read_file_bytes(MAPWRIGHT_FIXTURE_A));
}

// Compressed library entries are checked as ELF like any other, through their frames.
TEST(CompressedEntries, ACompressedLibraryThatIsNotASharedObjectIsRefused) {
  test::TempDir dir;
  WrapperWriter writer(dir / "bad.mwr", compressed_options(kPage));
  test::expect_error([&] { writer.add_library("notelf", compressible(3 * kPage, 1)); }, EINVAL,
                     {"entry 'notelf'", "ELF"});
  EXPECT_EQ(writer.entry_count(), 0u);
}

TEST(CompressedEntries, BadOptionsAreRefusedBeforeAnythingIsWritten) {
  test::TempDir dir;
  for (const std::uint64_t frame : {std::uint64_t{0}, std::uint64_t{1000}, std::uint64_t{128 << 20}}) {
    WrapperWriterOptions options = compressed_options(frame);
    test::expect_error([&] { WrapperWriter writer(dir / "x.mwr", options); }, EINVAL,
                       {"frame size " + std::to_string(frame)});
  }
  WrapperWriterOptions options = compressed_options();
  options.compression.level = 99;
  test::expect_error([&] { WrapperWriter writer(dir / "x.mwr", options); }, EINVAL, {"level 99"});
  EXPECT_FALSE(std::filesystem::exists(dir / "x.mwr"));
}

// Flips a byte in the middle of frame `frame`'s stored bytes (not covered by the metadata
// digest: open() accepts the file, the frame's decoding refuses it).
void damage_frame(const std::filesystem::path& path, const WrapperEntry& entry, std::size_t frame) {
  const std::uint64_t begin = frame == 0 ? 0 : entry.frame_ends[frame - 1];
  const std::uint64_t at = entry.offset + begin + (entry.frame_ends[frame] - begin) / 2;
  const int fd = ::open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  unsigned char byte = 0;
  ASSERT_EQ(::pread(fd, &byte, 1, static_cast<off_t>(at)), 1);
  byte ^= 0x5a;
  ASSERT_EQ(::pwrite(fd, &byte, 1, static_cast<off_t>(at)), 1);
  ::close(fd);
}

TEST(CompressedEntries, ACorruptFrameIsAnErrorInsideGuardedAndOneLineOutside) {
  test::TempDir dir;
  const Bytes bytes = compressible(8 * kFrame, 3);
  {
    WrapperWriter writer(dir / "corrupt.mwr", compressed_options());
    writer.add_data("c", bytes);
    writer.publish();
  }
  {
    const Wrapper before = Wrapper::open(dir / "corrupt.mwr");
    damage_frame(dir / "corrupt.mwr", before.entry("c"), 5);
  }
  const Wrapper wrapper = Wrapper::open(dir / "corrupt.mwr");
  const WrapperEntry& entry = wrapper.entry("c");
  EXPECT_FALSE(wrapper.verify_entry(entry));
  EXPECT_THROW(wrapper.verify(), Error);
  test::expect_error([&] { (void)read_all(wrapper, entry); }, EBADMSG,
                     {"decoding wrapper entry", ":c'", "frame 5"});
  test::expect_error([&] { (void)wrapper.image("c"); }, EBADMSG, {"frame 5"});
  if (!test::lazy_unavailable().empty()) GTEST_SKIP() << "lazy part: no userfaultfd: " << test::lazy_unavailable();
  LazyImage image = wrapper.lazy("c", {.name = "corrupt"});
  EXPECT_EQ(image.data()[4 * kFrame], bytes[4 * kFrame]) << "the frames around it decode";
  EXPECT_EQ(image.data()[6 * kFrame], bytes[6 * kFrame]);
  try {
    guarded([&] { return image.data()[5 * kFrame + 2 * kPage]; });
    ADD_FAILURE() << "a corrupt frame was filled";
  } catch (const Error& e) {
    EXPECT_EQ(e.error(), EBADMSG) << e.what();
    EXPECT_EQ(e.operation(), "filling lazy image");
    EXPECT_EQ(e.subject(), "corrupt");
    EXPECT_NE(std::string(e.what()).find("(touch at offset " + std::to_string(5 * kFrame + 2 * kPage) + ")"),
              std::string::npos) << e.what();
  }
  EXPECT_EQ(image.stats().failures, 1u);
  test::expect_error([&] { image.prefetch(5 * kFrame, kPage); }, EBADMSG, {"corrupt"});
  // Again: a failure is not remembered as a success, nor retried in a loop.
  EXPECT_THROW(guarded([&] { return image.data()[5 * kFrame]; }), Error);
  // Outside guarded(): one line, and death by SIGBUS.
  const auto result = run_in_child([&] {
    test::no_core_dumps();
    LazyImage mine = wrapper.lazy("c", {.name = "corrupt"});
    (void)*static_cast<volatile std::byte*>(mine.data() + 5 * kFrame);
    test::say("the touch returned\n");
  }, std::chrono::seconds(20));
  EXPECT_EQ(result.signal, SIGBUS) << result.describe() << result.output;
  EXPECT_EQ(test::lines_starting_with(result.output, "mapwright: filling lazy image 'corrupt'").size(), 1u)
      << result.output;
  // The eager fallback decodes everything at once, so it refuses at construction.
  const auto eager = run_in_child([&] {
    CHILD_CHECK(test::deny_syscall(SYS_userfaultfd, EPERM));
    try {
      LazyImage refused = wrapper.lazy("c", {.fallback = LazyFallback::kEager, .name = "corrupt"});
      CHILD_CHECK_MSG(false, "a corrupt entry was copied");
    } catch (const Error& e) {
      CHILD_CHECK_MSG(e.error() == EBADMSG, e.what());
      CHILD_CHECK_MSG(std::string(e.what()).find("frame 5") != std::string::npos, e.what());
    }
  });
  test::expect_clean_exit(eager);
}

TEST(CompressedEntries, DeniedUserfaultfdDecodesEverythingUpFrontWhenAsked) {
  test::TempDir dir;
  const Bytes bytes = compressible(3 * kFrame + 100, 4);
  WrapperWriter writer(dir / "eager.mwr", compressed_options());
  writer.add_data("e", bytes);
  writer.publish();
  const Wrapper wrapper = Wrapper::open(dir / "eager.mwr");
  const auto result = run_in_child([&] {
    CHILD_CHECK(test::deny_syscall(SYS_userfaultfd, EPERM));
    try {
      LazyImage refused = wrapper.lazy("e");
      CHILD_CHECK_MSG(false, "made without userfaultfd");
    } catch (const Error& e) {
      CHILD_CHECK_MSG(e.error() == EPERM, e.what());
    }
    LazyImage eager = wrapper.lazy("e", {.fallback = LazyFallback::kEager});
    CHILD_CHECK(eager.mode() == LazyMode::kEager);
    CHILD_CHECK(eager.stats().unavailable == EPERM);
    CHILD_CHECK(differences(eager, bytes).empty());
    eager.data()[bytes.size() + 1] = std::byte{9};  // past the end, inside the last page
    eager.reset();
    CHILD_CHECK(differences(eager, bytes).empty());
  });
  test::expect_clean_exit(result);
}

// Frame tables a writer never makes, refused at open() (a crafted message with a valid
// trailer: the metadata digest matches, so these checks are what stands in the way).
template <class Build>
std::filesystem::path craft(const test::TempDir& dir, std::uint32_t version, Build&& build) {
  ::capnp::MallocMessageBuilder message;
  auto root = message.initRoot<schema::WrapperFile>();
  root.setMagic(kWrapperMagic);
  root.setFormatVersion(version);
  root.setProducer("crafted");
  auto entry = root.initEntries(1)[0];
  entry.setName("x");
  entry.setKind(schema::Kind::DATA);
  const std::array<std::byte, 16> digest{};
  entry.setDigest(::capnp::Data::Reader(reinterpret_cast<const ::kj::byte*>(digest.data()), 16));
  build(entry);
  const auto words = ::capnp::messageToFlatArray(message);
  Bytes bytes(reinterpret_cast<const std::byte*>(words.asBytes().begin()),
              reinterpret_cast<const std::byte*>(words.asBytes().end()));
  const auto trailer = detail::trailer_for_metadata_only(bytes);
  bytes.insert(bytes.end(), trailer.begin(), trailer.end());
  const std::filesystem::path path = dir / "crafted.mwr";
  test::write_file(path, bytes);
  return path;
}

TEST(CompressedEntries, HostileFrameTablesAreRefusedAtOpen) {
  test::TempDir dir;
  const auto refused = [&](std::uint32_t version, auto build, const std::string& why) {
    SCOPED_TRACE(why);
    const auto path = craft(dir, version, build);
    test::expect_error([&] { (void)Wrapper::open(path); }, EINVAL, {"entry #0 'x'", why});
  };
  using Entry = schema::Entry::Builder;
  refused(2, [](Entry e) { e.setCompression(schema::Compression::ZSTD); e.setFrameSize(4096); },
          "format version 2 does not allow");
  refused(3, [](Entry e) { e.setCompression(schema::Compression::ZSTD); e.setFrameSize(100); },
          "frame size 100 is not a multiple of 4096");
  refused(3, [](Entry e) { e.setCompression(schema::Compression::ZSTD); e.setFrameSize(1ull << 40); },
          "is not a multiple of 4096 from");
  refused(3, [](Entry e) {
    e.setCompression(schema::Compression::ZSTD);
    e.setFrameSize(4096);
    e.setSize(1ull << 62);  // a size no table of this file can describe
    e.initFrameEnds(1).set(0, 1);
  }, "it has 1 frames, but");
  refused(3, [](Entry e) {
    e.setCompression(schema::Compression::ZSTD);
    e.setFrameSize(4096);
    e.setSize(8192);
    auto ends = e.initFrameEnds(2);
    ends.set(0, 0);
    ends.set(1, 0);
  }, "frame 0 ends at stored byte 0, not after 0");
  refused(3, [](Entry e) {
    e.setCompression(schema::Compression::ZSTD);
    e.setFrameSize(4096);
    e.setSize(4096);
    e.initFrameEnds(1).set(0, 77);
  }, "its frames end at stored byte 77 but its chunks hold 0");
  refused(3, [](Entry e) { e.setFrameSize(4096); }, "it has frames but no compression");
  refused(3, [](Entry e) { e.setCompression(static_cast<schema::Compression>(7)); },
          "unknown compression 7");
  const auto v4 = craft(dir, 4, [](Entry) {});
  test::expect_error([&] { (void)Wrapper::open(v4); }, EINVAL,
                     {"format version 4 is not supported; this build reads versions 1 to 3"});
}

TEST(CompressedEntries, FrameTableChecks) {
  EXPECT_EQ(detail::frame_table_problem(0, 4096, {}, 0), "");
  const std::vector<std::uint64_t> ends = {10, 20, 25};
  EXPECT_EQ(detail::frame_table_problem(2 * 4096 + 1, 4096, ends, 25), "");
  EXPECT_NE(detail::frame_table_problem(2 * 4096, 4096, ends, 25), "");
  EXPECT_NE(detail::frame_table_problem(2 * 4096 + 1, 4096, ends, 26), "");
  const std::vector<std::uint64_t> backwards = {10, 9, 25};
  EXPECT_NE(detail::frame_table_problem(2 * 4096 + 1, 4096, backwards, 25), "");
}

sigjmp_buf g_timeout;
void on_alarm(int) { ::siglongjmp(g_timeout, 1); }

// A SIGALRM + siglongjmp timeout at any moment of first touches: the handler decodes with
// every signal blocked, so the timer fires before or after a decode, never inside one; no
// decoder slot is left taken (with two slots, two lost ones would make every later fill
// fail with EBUSY) and the image stays exactly the entry.
TEST(CompressedEntries, ASiglongjmpTimeoutInTheMiddleOfDecodesLeavesNoSlotTaken) {
  SKIP_WITHOUT_USERFAULTFD();
#if MAPWRIGHT_TEST_TSAN
  GTEST_SKIP() << "TSan holds an asynchronous signal until the thread enters one of its "
                  "interceptors, which a loop of plain loads never does";
#endif
  test::TempDir dir;
  const Bytes bytes = compressible(64 * 16384 + 5, 17);
  WrapperWriter writer(dir / "timeout.mwr", compressed_options(16384));
  writer.add_data("t", bytes);
  writer.publish();
  const Wrapper wrapper = Wrapper::open(dir / "timeout.mwr");
  const auto result = run_in_child([&] {
    LazyImage image = wrapper.lazy("t");
    struct sigaction sa {};
    sa.sa_handler = on_alarm;
    CHILD_CHECK(::sigaction(SIGALRM, &sa, nullptr) == 0);
    for (int round = 0; round < 20; ++round) {
      image.reset();
      if (sigsetjmp(g_timeout, 1) == 0) {
        const itimerval timer{{0, 0}, {0, 200 + round * 150}};
        CHILD_CHECK(::setitimer(ITIMER_REAL, &timer, nullptr) == 0);
        for (;;) {  // until the timer fires
          for (std::uint64_t at = 0; at < bytes.size(); at += kPage) {
            (void)*static_cast<volatile std::byte*>(image.data() + at);
          }
          image.reset();
        }
      }
      CHILD_CHECK_MSG(differences(image, bytes).empty(), "round " + std::to_string(round));
    }
    CHILD_CHECK(image.stats().failures == 0);
  });
  test::expect_clean_exit(result);
}

TEST(CompressedEntries, FillsOnAThreadWithASmallAltstack) {
  SKIP_WITHOUT_USERFAULTFD();
#if MAPWRIGHT_TEST_TSAN || MAPWRIGHT_TEST_ASAN
  GTEST_SKIP() << "sanitizer runtimes wrap the handler in frames of their own on the alternate "
                  "stack (the release build runs this test)";
#endif
  test::TempDir dir;
  const Bytes bytes = compressible(16 * kFrame, 13);
  WrapperWriter writer(dir / "alt.mwr", compressed_options());
  writer.add_data("a", bytes);
  writer.publish();
  const Wrapper wrapper = Wrapper::open(dir / "alt.mwr");
  const auto result = run_in_child([&] {
    LazyImage image = wrapper.lazy("a");
    std::thread thread([&] {
      test::use_small_altstack();
      CHILD_CHECK(differences(image, bytes).empty());
    });
    thread.join();
  });
  test::expect_clean_exit(result);
}

}  // namespace
}  // namespace mapwright
