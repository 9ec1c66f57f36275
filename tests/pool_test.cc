// tests/pool_test.cc — InstancePool (pool.h): instances see the image and a zeroed heap; reset
// restores every page, whatever was written, by every reset method and heap mode; nothing
// crosses from one instance to the next; the sealed image never changes; a slot keeps its
// image (no mmap) and free slots prefer their previous image; threads; the refusals (bad
// options, exhausted slots, RLIMIT_AS, an image or heap that does not fit, a heap limit); a
// touch past a memfd heap (a report, or an Error inside guarded()); wrapper entries.
#include "mapwright/pool.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "child.h"
#include "mapwright/error.h"
#include "mapwright/fault.h"
#include "mapwright/region.h"
#include "mapwright/wrapper.h"
#include "pool_helpers.h"
#include "sanitizers.h"
#include "wrapper_helpers.h"

namespace mapwright {
namespace {

using test::pattern_bytes;
using test::run_in_child;
using Bytes = test::PoolBytes;
using test::differences;
using test::make_image;
using test::small_pool;

constexpr std::uint64_t kPage = 4096;

TEST(InstancePool, AnInstanceSeesTheImageAndAZeroedHeap) {
  const Bytes bytes = pattern_bytes(3 * kPage + 100, 1);
  const SealedImage image = make_image(bytes);
  InstancePool pool(small_pool());
  InstanceOptions options;
  options.heap_initial = 10000;
  options.heap_limit = 1u << 20;
  const Instance instance = pool.instantiate(image, options);
  EXPECT_EQ(instance.image_size(), bytes.size());
  EXPECT_EQ(instance.heap(), instance.base() + 4 * kPage);
  EXPECT_EQ(instance.heap_size(), 3 * kPage);  // rounded up to a page
  EXPECT_EQ(instance.heap_limit(), 1u << 20);
  EXPECT_EQ(differences(instance, bytes), "");
  EXPECT_NE(pool.reset_method(), ResetMethod::kAutomatic);
  EXPECT_EQ(pool.stats().reset_method, pool.reset_method());
  EXPECT_EQ(pool.stats().in_use, 1u);
}

// Random writes over the image and the heap, then reset: the next instance (in the same
// slot, with no new mapping) is byte-identical to the image with a zeroed heap; the sealed
// image is unchanged. Every reset method, both heap modes.
class ResetTest : public ::testing::TestWithParam<std::tuple<ResetMethod, HeapMode>> {};

TEST_P(ResetTest, ResetRestoresEveryPageWhateverWasWritten) {
  const auto [method, heap] = GetParam();
  const Bytes bytes = pattern_bytes(64 * kPage + 123, 2);
  const SealedImage image = make_image(bytes);
  InstancePoolOptions options = small_pool(1, heap, method);
  options.heap_keep_resident = 8 * kPage;
  options.image_keep_resident = 5 * kPage;
  InstancePool pool(options);
  EXPECT_EQ(pool.reset_method(), method);
  std::mt19937 random(7);
  InstanceOptions instance_options;
  instance_options.heap_initial = 16 * kPage;
  for (int round = 0; round < 20; ++round) {
    Instance instance = pool.instantiate(image, instance_options);
    ASSERT_EQ(differences(instance, bytes), "") << "round " << round;
    // Reads of some pages, writes to others, in the image, its tail and the heap.
    unsigned sum = 0;
    for (int i = 0; i < 30; ++i) {
      sum += static_cast<unsigned>(static_cast<volatile std::byte*>(instance.base())[random() % bytes.size()]);
    }
    EXPECT_GE(sum, 0u);
    const int writes = 1 + static_cast<int>(random() % 40);
    for (int i = 0; i < writes; ++i) {
      instance.base()[random() % (65 * kPage)] = std::byte{0xee};
      instance.heap()[random() % instance.heap_size()] = std::byte{0xdd};
    }
    if (round % 3 == 0) {
      instance.grow_heap(40 * kPage);
      instance.heap()[40 * kPage - 1] = std::byte{0xcc};
      instance.heap()[20 * kPage] = std::byte{0xcc};
    }
  }
  const InstancePoolStats stats = pool.stats();
  EXPECT_EQ(stats.mappings, 1u);
  EXPECT_EQ(stats.same_image, 19u);
  EXPECT_EQ(stats.resets, 20u);
  EXPECT_GT(stats.pages_restored, 0u);
  const auto view = image.map();
  EXPECT_TRUE(std::equal(view.begin(), view.end(), bytes.begin(), bytes.end()));
}

// Reset in proportion to what was written: an instance that reads every page of the image
// and writes a few has exactly those few restored, round after round (pages dropped at one
// reset must be tracked again, not counted as written forever).
TEST_P(ResetTest, OnlyTheWrittenPagesAreRestoredEvenWhenEveryPageWasRead) {
  const auto [method, heap] = GetParam();
  if (method == ResetMethod::kRemap) GTEST_SKIP() << "remap restores every page by design";
  const Bytes bytes = pattern_bytes(256 * kPage, 16);
  const SealedImage image = make_image(bytes);
  InstancePool pool(small_pool(1, heap, method));
  std::uint64_t before = pool.stats().pages_restored;
  for (std::uint64_t round = 0; round < 6; ++round) {
    {
      Instance instance = pool.instantiate(image);
      EXPECT_EQ(differences(instance, bytes), "");  // reads every page
      for (std::uint64_t k = 0; k <= round % 3; ++k) {
        instance.base()[((round * 37 + k * 101) % 256) * kPage + k] = std::byte{0x5c};
      }
    }
    const std::uint64_t after = pool.stats().pages_restored;
    EXPECT_EQ(after - before, round % 3 + 1) << "round " << round;
    before = after;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Methods, ResetTest,
    ::testing::Combine(::testing::Values(ResetMethod::kWriteProtect, ResetMethod::kPagemapScan,
                                         ResetMethod::kPagemapRead, ResetMethod::kRemap),
                       ::testing::Values(HeapMode::kAnonymous, HeapMode::kMemfd)),
    [](const auto& info) {
      std::string name = std::string(to_string(std::get<0>(info.param))) + "_" +
                         to_string(std::get<1>(info.param));
      for (char& c : name) {
        if (c == ' ' || c == '-') c = '_';
      }
      return name;
    });

// image_keep_resident: written image pages are copied back at reset and stay mapped, so the
// next instance writes them again without a page fault (and still sees the image's bytes);
// without it, each such write faults.
TEST(InstancePool, KeptImagePagesAreRestoredInPlaceAndWrittenAgainWithoutAFault) {
  const Bytes bytes = pattern_bytes(16 * kPage, 15);
  const SealedImage image = make_image(bytes);
  const auto minor_faults = [] {
    struct rusage usage {};
    ::getrusage(RUSAGE_THREAD, &usage);
    return usage.ru_minflt;
  };
  for (const std::uint64_t keep : {std::uint64_t{0}, 4 * kPage}) {
    SCOPED_TRACE("image_keep_resident " + std::to_string(keep));
    InstancePoolOptions options = small_pool(1);
    options.image_keep_resident = keep;
    InstancePool pool(options);
    if (pool.reset_method() == ResetMethod::kRemap) GTEST_SKIP() << "no pagemap here";
    {
      Instance first = pool.instantiate(image);
      first.base()[3 * kPage] = std::byte{1};
      first.base()[7 * kPage + 5] = std::byte{2};
    }
    Instance second = pool.instantiate(image);
    EXPECT_EQ(differences(second, bytes), "");
    const long before = minor_faults();
    second.base()[3 * kPage + 1] = std::byte{3};
    second.base()[7 * kPage + 6] = std::byte{4};
    const long faults = minor_faults() - before;
    if (keep > 0) {
      EXPECT_EQ(faults, 0);
    } else {
      EXPECT_GE(faults, 2);
    }
  }
}

// A page written only through the heap after growth, and the heap pages past the next
// instance's initial size, are zero and inaccessible for the next instance until it grows.
TEST(InstancePool, NothingWrittenCrossesToTheNextInstanceNotEvenThroughTheHeap) {
  for (const HeapMode heap : {HeapMode::kAnonymous, HeapMode::kMemfd}) {
    SCOPED_TRACE(to_string(heap));
    const Bytes bytes = pattern_bytes(kPage, 3);
    const SealedImage image = make_image(bytes);
    InstancePool pool(small_pool(1, heap));
    {
      Instance first = pool.instantiate(image);
      EXPECT_EQ(first.heap_size(), 0u);
      first.grow_heap(1u << 20);
      std::memset(first.heap(), 0x5a, 1u << 20);
      std::memset(first.base(), 0x5a, kPage);
    }
    Instance second = pool.instantiate(image);
    EXPECT_EQ(second.heap_size(), 0u);
    EXPECT_EQ(differences(second, bytes), "");
    second.grow_heap(1u << 20);
    EXPECT_EQ(differences(second, bytes), "");
  }
}

TEST(InstancePool, TouchingPastTheAnonymousHeapIsASegfault) {
  const SealedImage image = make_image(pattern_bytes(100, 4));
  const auto result = run_in_child([&] {
    test::no_core_dumps();
    InstancePool pool(small_pool(1));
    InstanceOptions options;
    options.heap_initial = kPage;
    Instance instance = pool.instantiate(image, options);
    instance.heap()[kPage - 1] = std::byte{1};
    test::say("before\n");
    instance.heap()[kPage] = std::byte{1};
    test::say("after\n");
  });
  test::expect_segv(result);
  EXPECT_NE(result.output.find("before"), std::string::npos);
  EXPECT_EQ(result.output.find("after"), std::string::npos);
}

TEST(InstancePool, TouchingPastTheMemfdHeapIsReportedOrAnErrorInsideGuarded) {
  const SealedImage image = make_image(pattern_bytes(100, 5));
  const auto dies = run_in_child([&] {
    test::no_core_dumps();
    InstancePool pool(small_pool(1, HeapMode::kMemfd));
    Instance instance = pool.instantiate(image);
    instance.grow_heap(kPage);
    instance.heap()[kPage - 1] = std::byte{1};
    instance.heap()[kPage] = std::byte{1};
    test::say("after\n");
  });
  EXPECT_EQ(dies.signal, SIGBUS) << dies.describe() << dies.output;
  EXPECT_NE(dies.output.find("test pool"), std::string::npos) << dies.output;
  EXPECT_NE(dies.output.find("past the instance's heap"), std::string::npos) << dies.output;
  EXPECT_EQ(dies.output.find("after"), std::string::npos);

  const auto caught = run_in_child([&] {
    InstancePool pool(small_pool(1, HeapMode::kMemfd));
    Instance instance = pool.instantiate(image);
    try {
      guarded([&] { instance.heap()[0] = std::byte{1}; });
      CHILD_CHECK_MSG(false, "no error");
    } catch (const Error& e) {
      CHILD_CHECK_MSG(std::string(e.what()).find("past the instance's heap") != std::string::npos, e.what());
    }
    instance.grow_heap(kPage);
    instance.heap()[0] = std::byte{1};  // fine once grown
  });
  test::expect_clean_exit_unreported(caught);
}

TEST(InstancePool, ASlotKeepsItsImageAndFreeSlotsPreferTheirPreviousImage) {
  const Bytes a_bytes = pattern_bytes(5 * kPage, 6);
  const Bytes b_bytes = pattern_bytes(2 * kPage + 9, 7);
  const SealedImage a = make_image(a_bytes, "a");
  const SealedImage b = make_image(b_bytes, "b");
  InstancePool pool(small_pool(2));
  std::byte* a_slot = nullptr;
  std::byte* b_slot = nullptr;
  {
    const Instance ia = pool.instantiate(a);
    const Instance ib = pool.instantiate(b);
    a_slot = ia.base();
    b_slot = ib.base();
  }
  EXPECT_EQ(pool.stats().mappings, 2u);
  // B first: it must get B's slot back, not the first free one.
  {
    const Instance ib = pool.instantiate(b);
    const Instance ia = pool.instantiate(a);
    EXPECT_EQ(ib.base(), b_slot);
    EXPECT_EQ(ia.base(), a_slot);
    EXPECT_EQ(differences(ib, b_bytes), "");
    EXPECT_EQ(differences(ia, a_bytes), "");
  }
  // A copy of the image (another SealedImage object over the same memfd) is the same image.
  const SealedImage a_again = SealedImage::adopt(::fcntl(a.fd(), F_DUPFD_CLOEXEC, 0));
  { const Instance ia = pool.instantiate(a_again); }
  InstancePoolStats stats = pool.stats();
  EXPECT_EQ(stats.mappings, 2u);
  EXPECT_EQ(stats.same_image, 3u);
  // A third image takes one of the two slots, and is mapped there.
  const Bytes c_bytes = pattern_bytes(kPage, 8);
  const SealedImage c = make_image(c_bytes, "c");
  {
    const Instance ic = pool.instantiate(c);
    EXPECT_EQ(differences(ic, c_bytes), "");
  }
  EXPECT_EQ(pool.stats().mappings, 3u);
}

TEST(InstancePool, ExhaustedSlotsAndWhatDoesNotFitAreClearErrors) {
  const SealedImage image = make_image(pattern_bytes(kPage, 9));
  InstancePool pool(small_pool(2));
  const Instance one = pool.instantiate(image);
  const Instance two = pool.instantiate(image);
  test::expect_error([&] { (void)pool.instantiate(image); }, EBUSY,
                     {"instantiating image in pool 'test pool'", "all 2 slots are in use"});
  const SealedImage huge = make_image(Bytes((8u << 20) + 1));
  InstancePool other(small_pool(1));
  test::expect_error([&] { (void)other.instantiate(huge); }, EFBIG, {"a slot has 8388608"});
  InstanceOptions too_much;
  too_much.heap_limit = 8u << 20;
  test::expect_error([&] { (void)other.instantiate(image, too_much); }, EFBIG,
                     {"does not fit a slot"});
  InstanceOptions inverted;
  inverted.heap_initial = 2 * kPage;
  inverted.heap_limit = kPage;
  test::expect_error([&] { (void)other.instantiate(image, inverted); }, EINVAL, {"heap_initial"});
  InstanceOptions limited;
  limited.heap_limit = 4 * kPage;
  Instance instance = other.instantiate(image, limited);
  test::expect_error([&] { instance.grow_heap(5 * kPage); }, ENOMEM, {"the heap limit is 16384"});
  EXPECT_NO_THROW(instance.grow_heap(4 * kPage));
  // The failures left nothing behind: both slots of `other` were usable.
  EXPECT_EQ(other.stats().in_use, 1u);
}

// An image as large as a slot leaves no heap: it instantiates and resets in both heap modes,
// and growing its heap is refused.
TEST(InstancePool, AnImageThatFillsTheSlotHasNoHeap) {
  const Bytes bytes = pattern_bytes(8u << 20, 10);
  const SealedImage image = make_image(bytes);
  for (const HeapMode heap : {HeapMode::kAnonymous, HeapMode::kMemfd}) {
    SCOPED_TRACE(to_string(heap));
    InstancePool pool(small_pool(1, heap));
    for (int round = 0; round < 2; ++round) {
      Instance instance = pool.instantiate(image);
      EXPECT_EQ(instance.heap_limit(), 0u);
      EXPECT_EQ(test::differences(instance, bytes), "");
      test::expect_error([&] { instance.grow_heap(kPage); }, ENOMEM, {"the heap limit is 0"});
      instance.base()[5] = std::byte{1};
    }
  }
}

TEST(InstancePool, BadOptionsAndAnAddressSpaceLimitAreClearErrors) {
  InstancePoolOptions zero = small_pool();
  zero.slots = 0;
  test::expect_error([&] { InstancePool pool(zero); }, EINVAL, {"creating instance pool", "slots is 0"});
  InstancePoolOptions vast = small_pool();
  vast.slots = 1u << 20;
  vast.slot_size = 1ull << 30;
  test::expect_error([&] { InstancePool pool(vast); }, EINVAL, {"2^47"});
#if MAPWRIGHT_TEST_ASAN || MAPWRIGHT_TEST_TSAN
  GTEST_SKIP() << "sanitizers reserve terabytes of shadow memory: RLIMIT_AS cannot be set";
#endif
  const auto result = run_in_child([] {
    struct rlimit limit {1ull << 30, 1ull << 30};
    CHILD_CHECK(::setrlimit(RLIMIT_AS, &limit) == 0);
    InstancePoolOptions options = small_pool();
    options.slots = 4;
    options.slot_size = 1ull << 30;
    try {
      InstancePool pool(options);
      CHILD_CHECK_MSG(false, "reserved 4 GiB under a 1 GiB RLIMIT_AS");
    } catch (const Error& e) {
      CHILD_CHECK_MSG(e.error() == ENOMEM, e.what());
      CHILD_CHECK_MSG(std::string(e.what()).find("RLIMIT_AS") != std::string::npos, e.what());
    }
  });
  test::expect_clean_exit(result);
}

// Without PAGEMAP_SCAN (an ioctl denied as an old kernel answers), automatic falls back to
// reading /proc/self/pagemap, and asking for PAGEMAP_SCAN is refused.
TEST(InstancePool, WithoutPagemapScanTheAutomaticMethodFallsBack) {
  const Bytes bytes = pattern_bytes(10 * kPage, 10);
  const SealedImage image = make_image(bytes);
  const auto result = run_in_child([&] {
    CHILD_CHECK(test::deny_syscall(SYS_ioctl, ENOTTY));
    InstancePool pool(small_pool(1));
    CHILD_CHECK_MSG(pool.reset_method() == ResetMethod::kPagemapRead, to_string(pool.reset_method()));
    for (int i = 0; i < 3; ++i) {
      Instance instance = pool.instantiate(image);
      CHILD_CHECK_MSG(differences(instance, bytes).empty(), differences(instance, bytes));
      instance.base()[3 * kPage] = std::byte{1};
    }
    try {
      InstancePool scan(small_pool(1, HeapMode::kAnonymous, ResetMethod::kPagemapScan));
      CHILD_CHECK_MSG(false, "PAGEMAP_SCAN accepted without the ioctl");
    } catch (const Error& e) {
      CHILD_CHECK_MSG(e.error() == ENOTSUP, e.what());
      CHILD_CHECK_MSG(std::string(e.what()).find("PAGEMAP_SCAN") != std::string::npos, e.what());
    }
  });
  test::expect_clean_exit(result);
}

// Write tracking needs userfaultfd: where it is denied (a seccomp filter, as Docker's default
// profile does; vm.unprivileged_userfaultfd), asking for it is a clear refusal, and the
// automatic choice does not need it.
TEST(InstancePool, WithoutUserfaultfdWriteProtectionIsRefusedClearly) {
  const Bytes bytes = pattern_bytes(10 * kPage, 17);
  const SealedImage image = make_image(bytes);
  const auto result = run_in_child([&] {
    CHILD_CHECK(test::deny_syscall(SYS_userfaultfd, EPERM));
    try {
      InstancePool tracked(small_pool(1, HeapMode::kAnonymous, ResetMethod::kWriteProtect));
      CHILD_CHECK_MSG(false, "write-protect tracking accepted without userfaultfd");
    } catch (const Error& e) {
      CHILD_CHECK_MSG(e.error() == ENOTSUP, e.what());
      CHILD_CHECK_MSG(std::string(e.what()).find("userfaultfd: Operation not permitted") != std::string::npos,
                      e.what());
    }
    InstancePool pool(small_pool(1));
    CHILD_CHECK_MSG(pool.reset_method() == ResetMethod::kPagemapScan, to_string(pool.reset_method()));
    Instance instance = pool.instantiate(image);
    CHILD_CHECK(differences(instance, bytes).empty());
  });
  test::expect_clean_exit(result);
}

// Written pages are dropped in one process_madvise per reset where the kernel takes
// MADV_DONTNEED through it (Linux 6.15+), else one madvise per range; both restore exactly.
// A child that denies process_madvise (EINVAL, as kernels before 6.15 answer) falls back.
TEST(InstancePool, DroppedPagesAreBatchedOrDroppedOneRangeAtATime) {
  const Bytes bytes = pattern_bytes(40 * kPage + 5, 13);
  const SealedImage image = make_image(bytes);
  for (const bool deny : {false, true}) {
    SCOPED_TRACE(deny ? "process_madvise denied" : "process_madvise allowed");
    const auto result = run_in_child([&] {
      if (deny) CHILD_CHECK(test::deny_syscall(SYS_process_madvise, EINVAL));
      InstancePool pool(small_pool(1));
      for (int round = 0; round < 4; ++round) {
        Instance instance = pool.instantiate(image);
        CHILD_CHECK_MSG(differences(instance, bytes).empty(), differences(instance, bytes));
        instance.grow_heap(8 * kPage);
        for (std::uint64_t page = round; page < 40; page += 3) instance.base()[page * kPage + 1] = std::byte{0xab};
        for (std::uint64_t page = 0; page < 8; page += 2) instance.heap()[page * kPage] = std::byte{1};
      }
      const InstancePoolStats stats = pool.stats();
      CHILD_CHECK(stats.pages_restored > 0);
      if (deny) CHILD_CHECK_MSG(!stats.batched_drops, "batched with process_madvise denied");
      test::say(stats.batched_drops ? "batched\n" : "one by one\n");
    });
    test::expect_clean_exit(result);
    // Linux 6.15 lets process_madvise give MADV_DONTNEED for the calling process.
    const bool batches_here = test::kernel_at_least(6, 15);
    if (deny || !batches_here) {
      EXPECT_NE(result.output.find("one by one"), std::string::npos) << result.describe();
    } else {
      EXPECT_NE(result.output.find("batched"), std::string::npos) << result.describe();
    }
  }
}

// Several threads instantiate, write, check and reset at once, two images over fewer slots
// than a thread each would hold with a little slack.
TEST(InstancePool, ThreadsInstantiateAndResetAtOnce) {
  const Bytes a_bytes = pattern_bytes(16 * kPage, 11);
  const Bytes b_bytes = pattern_bytes(9 * kPage + 1, 12);
  const SealedImage a = make_image(a_bytes, "a");
  const SealedImage b = make_image(b_bytes, "b");
  InstancePool pool(small_pool(4, HeapMode::kAnonymous));
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 random(static_cast<unsigned>(t));
      for (int i = 0; i < 100; ++i) {
        const bool use_a = (random() & 1) != 0;
        const Bytes& bytes = use_a ? a_bytes : b_bytes;
        InstanceOptions options;
        options.heap_initial = kPage;
        Instance instance = pool.instantiate(use_a ? a : b, options);
        if (!differences(instance, bytes).empty()) failures += 1;
        for (int w = 0; w < 5; ++w) instance.base()[random() % bytes.size()] = std::byte{0xff};
        instance.heap()[random() % kPage] = std::byte{0xff};
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
  const InstancePoolStats stats = pool.stats();
  EXPECT_EQ(stats.instantiations, 400u);
  EXPECT_EQ(stats.in_use, 0u);
  EXPECT_GT(stats.same_image, 200u);
}

TEST(InstancePool, InstancesOutliveThePool) {
  const Bytes bytes = pattern_bytes(kPage, 13);
  const SealedImage image = make_image(bytes);
  Instance instance;
  {
    InstancePool pool(small_pool(1));
    instance = pool.instantiate(image);
  }
  EXPECT_EQ(differences(instance, bytes), "");
  instance.base()[0] = std::byte{1};
  instance.reset();
  EXPECT_FALSE(instance);
  EXPECT_EQ(instance.base(), nullptr);
}

TEST(InstancePool, AWrapperEntryIsSealedOnceAndPooled) {
  test::TempDir dir;
  const Bytes blob = pattern_bytes(20000, 14);
  {
    WrapperWriter writer(dir / "w.mwr");
    writer.add_data("blob", blob);
    writer.publish();
  }
  const Wrapper wrapper = Wrapper::open(dir / "w.mwr");
  InstancePool pool(small_pool(1));
  for (int i = 0; i < 3; ++i) {
    Instance instance = pool.instantiate(wrapper, "blob");
    EXPECT_EQ(differences(instance, blob), "");
    instance.base()[0] = std::byte{0};
  }
  EXPECT_EQ(pool.stats().mappings, 1u);
  EXPECT_EQ(wrapper.image("blob").fd(), wrapper.image("blob").fd());
  test::expect_error([&] { (void)pool.instantiate(wrapper, "nope"); }, ENOENT, {"nope"});
}

}  // namespace
}  // namespace mapwright
