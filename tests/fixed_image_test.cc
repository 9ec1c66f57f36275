// Fixed-base images (fixed_image.h): std::pmr containers built at a chosen base, sealed,
// mapped at that base with nothing relocated (also by another process than the builder),
// relocated page by page when the base is taken, refused when stale or hostile.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <functional>
#include <memory_resource>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "child.h"
#include "fixed_image_format.h"
#include "mapwright/error.h"
#include "mapwright/fixed_image.h"
#include "mapwright/region.h"
#include "mapwright/sealed_image.h"
#include "sanitizers.h"
#include "wrapper_helpers.h"

namespace mapwright {
namespace {

using test::expect_error;

struct Record {
  std::uint64_t id;
  double weight;
};

// What the images of these tests hold: a string -> record map and the keys in order.
struct Dictionary {
  explicit Dictionary(std::pmr::memory_resource* resource) : keys(resource), map(resource) {}
  std::pmr::vector<std::pmr::string> keys;
  std::pmr::unordered_map<std::pmr::string, Record> map;
  const Dictionary* self = this;  // a raw pointer to itself, noted explicitly
};

std::vector<FixedImageType> dictionary_types() {
  return {fixed_type<Dictionary>("Dictionary", 1), fixed_type<Record>("Record", 1)};
}

// Each test builds at its own base, so that one test's leftovers never decide another's path.
// (From the default base up: under ThreadSanitizer that is 256 GiB, where its mmap maps.)
std::uintptr_t test_base(int n) { return kDefaultFixedBase + static_cast<std::uintptr_t>(n) * (1ull << 32); }

std::string key(std::size_t i) {
  // Every fifth key is longer than the small-string buffer: it lives in its own allocation.
  return "key-" + std::to_string(i) + (i % 5 == 0 ? std::string(40, 'x') : std::string());
}

SealedImage build_dictionary(std::uintptr_t base, std::size_t entries,
                             FixedImageBuildStats* stats = nullptr,
                             std::vector<FixedImageDependency> dependencies = {}) {
  FixedImageOptions options;
  options.name = "dictionary";
  options.base = base;
  options.capacity = 64ull << 20;
  options.types = dictionary_types();
  options.dependencies = std::move(dependencies);
  FixedImageBuilder builder(options);
  auto* dictionary = builder.create<Dictionary>(builder.resource());
  dictionary->map.reserve(entries);
  for (std::size_t i = 0; i < entries; ++i) {
    dictionary->keys.emplace_back(key(i));
    dictionary->map.emplace(key(i), Record{i, static_cast<double>(i) / 2});
  }
  builder.note_pointer(&dictionary->self);
  builder.set_root(dictionary);
  SealedImage image = builder.seal();
  if (stats != nullptr) *stats = builder.stats();
  return image;
}

// Reads every entry back through the mapped image.
void expect_dictionary(const FixedImage& image, std::size_t entries) {
  const Dictionary* d = image.root<Dictionary>();
  ASSERT_NE(d, nullptr);
  EXPECT_EQ(d->self, d);
  ASSERT_EQ(d->keys.size(), entries);
  ASSERT_EQ(d->map.size(), entries);
  for (std::size_t i = 0; i < entries; ++i) {
    ASSERT_EQ(std::string_view(d->keys[i]), key(i));
    const auto found = d->map.find(std::pmr::string(key(i)));
    ASSERT_NE(found, d->map.end()) << key(i);
    EXPECT_EQ(found->second.id, i);
    EXPECT_EQ(found->second.weight, static_cast<double>(i) / 2);
    EXPECT_GE(reinterpret_cast<const std::byte*>(found->first.data()), image.data());
    EXPECT_LT(reinterpret_cast<const std::byte*>(found->first.data()), image.data() + image.size());
  }
  EXPECT_EQ(d->map.find(std::pmr::string("absent")), d->map.end());
}

FixedMapOptions expecting(FixedMapOptions::Check check = FixedMapOptions::Check::kFull) {
  FixedMapOptions options;
  options.types = dictionary_types();
  options.check = check;
  return options;
}

TEST(FixedImage, MapsAtItsBaseWithNothingRelocated) {
  FixedImageBuildStats stats;
  const SealedImage sealed = build_dictionary(test_base(1), 5000, &stats);
  EXPECT_GT(stats.relocations, 5000u);
  EXPECT_GT(stats.pointer_pages, 0u);
  for (const auto check : {FixedMapOptions::Check::kFull, FixedMapOptions::Check::kHeader}) {
    const FixedImage image = FixedImage::map(sealed, expecting(check));
    EXPECT_TRUE(image.report().at_base);
    EXPECT_EQ(image.data(), reinterpret_cast<std::byte*>(test_base(1)));
    EXPECT_EQ(image.report().relocations, 0u);
    EXPECT_EQ(image.report().pages_touched, 0u);
    EXPECT_EQ(image.report().pages_checked, check == FixedMapOptions::Check::kFull ? (image.size() + 4095) / 4096 : 0u);
    EXPECT_EQ(image.writer().rfind("mapwright ", 0), 0u);
    expect_dictionary(image, 5000);
  }
}

TEST(FixedImage, ATakenBaseRelocatesOnlyPointerPages) {
  FixedImageBuildStats stats;
  const SealedImage sealed = build_dictionary(test_base(2), 5000, &stats);
  const FixedImage first = FixedImage::map(sealed, expecting());
  ASSERT_TRUE(first.report().at_base);
  for (const auto check : {FixedMapOptions::Check::kFull, FixedMapOptions::Check::kHeader}) {
    const FixedImage second = FixedImage::map(sealed, expecting(check));  // the base is taken
    EXPECT_FALSE(second.report().at_base);
    EXPECT_NE(second.data(), first.data());
    EXPECT_EQ(second.report().relocations, stats.relocations - 0);
    EXPECT_EQ(second.report().pages_touched, stats.pointer_pages);
    expect_dictionary(second, 5000);
  }
  expect_dictionary(first, 5000);  // its pages were never written: copy-on-write
  FixedMapOptions no = expecting();
  no.allow_relocation = false;
  expect_error([&] { (void)FixedImage::map(sealed, no); }, EEXIST, {"is taken", "relocation is off"});
}

// Pointers packed together cost few pages to relocate, whatever the image's size.
TEST(FixedImage, RelocationCostFollowsPointerPagesNotSize) {
  FixedImageOptions options;
  options.base = test_base(3);
  options.capacity = 64ull << 20;
  options.scan_pointers = false;
  FixedImageBuilder builder(options);
  auto** table = static_cast<std::byte**>(builder.allocate(1000 * sizeof(void*), 8));
  std::byte* blob = static_cast<std::byte*>(builder.allocate(32 << 20, 4096));
  for (int i = 0; i < 1000; ++i) {
    table[i] = blob + i * 4096;
    builder.note_pointer(&table[i]);
  }
  builder.set_root(table);
  const SealedImage sealed = builder.seal();
  EXPECT_EQ(builder.stats().relocations, 1000u);
  EXPECT_LE(builder.stats().pointer_pages, 3u);
  const FixedImage first = FixedImage::map(sealed);
  const FixedImage second = FixedImage::map(sealed);
  ASSERT_FALSE(second.report().at_base);
  EXPECT_EQ(second.report().relocations, 1000u);
  EXPECT_LE(second.report().pages_touched, 3u);
  std::byte** moved = second.root<std::byte*>();
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(moved[i], second.data() + (blob - builder.base()) + i * 4096);
}

// The characters of strings (allocated with alignment 1) are kept apart from the nodes that
// point to them: they are never scanned, so bytes that look like an address stay bytes, and
// relocation writes only the nodes' pages.
TEST(FixedImage, StringDataIsKeptOffPointerPages) {
  using Keys = std::pmr::unordered_map<std::pmr::string, std::uint64_t>;
  constexpr std::uint64_t kKeys = 20000;
  FixedImageOptions options;
  options.base = test_base(13);
  options.capacity = 64ull << 20;
  FixedImageBuilder builder(options);
  // Every key is 200 bytes whose 8-byte words all hold an address inside the image.
  const std::uint64_t lookalike = test_base(13) + 8192;
  const auto key_of = [&](std::uint64_t i) {
    std::string text(200, '\0');
    for (std::size_t at = 0; at + 8 <= text.size(); at += 8) std::memcpy(text.data() + at, &lookalike, 8);
    std::memcpy(text.data() + 192, &i, 8);
    return text;
  };
  Keys* keys = builder.create<Keys>(builder.resource());
  for (std::uint64_t i = 0; i < kKeys; ++i) keys->emplace(key_of(i), i);  // node, key, node...
  builder.set_root(keys);
  const SealedImage sealed = builder.seal();
  const FixedImageBuildStats stats = builder.stats();
  const std::uint64_t data_pages = stats.data_bytes / 4096;
  // The keys' 4 MB hold no pointer: a node page holds at most 4096 / 48 nodes.
  EXPECT_GT(data_pages, 1000u);
  EXPECT_LT(stats.pointer_pages * 3, data_pages) << stats.pointer_pages << " of " << data_pages;
  const FixedImage first = FixedImage::map(sealed);
  const FixedImage second = FixedImage::map(sealed);
  ASSERT_FALSE(second.report().at_base);
  EXPECT_EQ(second.report().pages_touched, stats.pointer_pages);
  for (const FixedImage* image : {&first, &second}) {
    const Keys& mapped = *image->root<Keys>();
    ASSERT_EQ(mapped.size(), kKeys);
    for (std::uint64_t i = 0; i < kKeys; i += 97) {
      const auto found = mapped.find(std::pmr::string(key_of(i)));
      ASSERT_NE(found, mapped.end()) << i;  // its bytes were not "relocated"
      EXPECT_EQ(found->second, i);
    }
  }
}

TEST(FixedImage, AnotherProcessMapsWhatOneBuilt) {
  int sockets[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sockets), 0);
  const auto result = test::run_in_child([&] {
    ::close(sockets[0]);
    send_image(sockets[1], build_dictionary(test_base(4), 3000));
  });
  ::close(sockets[1]);
  const SealedImage received = receive_image(sockets[0]);
  ::close(sockets[0]);
  test::expect_clean_exit(result);
  const FixedImage image = FixedImage::map(received, expecting());
  EXPECT_TRUE(image.report().at_base);
  expect_dictionary(image, 3000);
}

// ---- refusals ---------------------------------------------------------------------------

// A copy of `image` with `patch` applied, re-digested unless `keep_digest`.
SealedImage patched(const SealedImage& image, const std::function<void(std::byte*)>& patch,
                    bool keep_digest = false) {
  Region region = Region::memfd("patched");
  region.ensure(image.size());
  std::memcpy(region.data(), image.map().data(), image.size());
  patch(region.data());
  if (!keep_digest) {
    std::string why;
    detail::FixedHeader header = detail::decode_fixed_header({region.data(), image.size()}, image.size(), &why);
    EXPECT_EQ(why, "");
    header.digest = detail::fixed_image_digest({region.data(), image.size()});
    detail::encode_fixed_header(header, region.data());
  }
  region.finish(image.size());
  return std::move(region).seal();
}

detail::FixedHeader header_of(const SealedImage& image) {
  std::string why;
  return detail::decode_fixed_header(image.map(), image.size(), &why);
}

TEST(FixedImage, StaleImagesAreRefusedByName) {
  const Digest pool_digest = digest_of(std::as_bytes(std::span("pool", 4)));
  const FixedImageDependency pool{"strings", pool_digest, test_base(11), 8192};
  const SealedImage sealed = build_dictionary(test_base(5), 10, nullptr, {pool});
  FixedMapOptions good = expecting();
  good.dependencies = {pool};
  (void)FixedImage::map(sealed, good);

  FixedMapOptions bigger = good;
  bigger.types[1].size += 8;
  expect_error([&] { (void)FixedImage::map(sealed, bigger); }, ESTALE,
               {"its type 'Record' (16 bytes, alignment 8, schema hash 1) is not this program's 'Record' (24 bytes"});
  FixedMapOptions schema = good;
  schema.types[0].schema_hash = 2;
  expect_error([&] { (void)FixedImage::map(sealed, schema); }, ESTALE, {"'Dictionary'", "schema hash 2"});
  FixedMapOptions missing = good;
  missing.types.pop_back();
  expect_error([&] { (void)FixedImage::map(sealed, missing); }, ESTALE, {"holds type 'Record'", "does not expect"});
  FixedMapOptions extra = good;
  extra.types.push_back(fixed_type<int>("Other"));
  expect_error([&] { (void)FixedImage::map(sealed, extra); }, ESTALE, {"does not hold type 'Other'"});
  FixedMapOptions rebuilt = good;
  rebuilt.dependencies[0].digest.bytes[0] ^= std::byte{1};
  expect_error([&] { (void)FixedImage::map(sealed, rebuilt); }, ESTALE,
               {"points into image 'strings' with digest " + pool_digest.hex(), "rebuild it"});
  FixedMapOptions unmapped = good;
  unmapped.dependencies.clear();
  expect_error([&] { (void)FixedImage::map(sealed, unmapped); }, ESTALE, {"does not say it has mapped"});
  // Another writer version: the manifest's first line.
  const SealedImage older = patched(sealed, [&](std::byte* bytes) {
    const detail::FixedHeader h = header_of(sealed);
    const std::string line = "writer mapwright 0.0.9";
    ASSERT_EQ(std::memcmp(bytes + h.manifest, "writer mapwright ", 17), 0);
    std::memcpy(bytes + h.manifest, line.data(), line.size());
  });
  expect_error([&] { (void)FixedImage::map(older, good); }, ESTALE,
               {"written by mapwright 0.0.9, read by mapwright "});
}

TEST(FixedImage, DamagedAndHostileImagesAreRefused) {
  const SealedImage sealed = build_dictionary(test_base(6), 200);
  const detail::FixedHeader h = header_of(sealed);
  ASSERT_GE(h.relocation_count, 3u);
  const auto relocation = [&](std::uint64_t i) {
    std::uint64_t at;
    std::memcpy(&at, sealed.map().data() + h.relocations + 8 * i, 8);
    return at;
  };
  // A flipped byte in the data: the digest.
  const SealedImage flipped = patched(sealed, [](std::byte* b) { b[5000] ^= std::byte{4}; }, true);
  expect_error([&] { (void)FixedImage::map(flipped, expecting()); }, EBADMSG, {"the digest does not match"});
  // A pointer out of the image, digest recomputed.
  const SealedImage outside = patched(sealed, [&](std::byte* b) {
    const std::uint64_t wild = h.base + h.size + 4096;
    std::memcpy(b + relocation(1), &wild, 8);
  });
  expect_error([&] { (void)FixedImage::map(outside, expecting()); }, EBADMSG, {"outside the image's data"});
  // A relocation table that lies: out of order, or pointing into the header.
  const SealedImage unordered = patched(sealed, [&](std::byte* b) {
    const std::uint64_t first = relocation(0);
    const std::uint64_t second = relocation(1);
    std::memcpy(b + h.relocations, &second, 8);
    std::memcpy(b + h.relocations + 8, &first, 8);
  });
  expect_error([&] { (void)FixedImage::map(unordered, expecting()); }, EBADMSG, {"relocation 1"});
  const SealedImage header_pointer = patched(sealed, [&](std::byte* b) {
    const std::uint64_t at = 16;
    std::memcpy(b + h.relocations, &at, 8);
  });
  expect_error([&] { (void)FixedImage::map(header_pointer, expecting()); }, EBADMSG, {"relocation 0 (offset 16)"});
  // ... also when only the header is checked: the table is checked before it is written through.
  {
    const FixedImage taken = FixedImage::map(sealed, expecting());
    ASSERT_TRUE(taken.report().at_base);
    expect_error([&] { (void)FixedImage::map(header_pointer, expecting(FixedMapOptions::Check::kHeader)); },
                 EBADMSG, {"relocation 0 (offset 16)"});
  }
  // Headers that lie about sizes and offsets, and what is no image at all.
  const SealedImage sized = patched(sealed, [&](std::byte* b) {
    const std::uint64_t size = h.size + 8;
    std::memcpy(b + 24, &size, 8);
  }, true);
  expect_error([&] { (void)FixedImage::map(sized, expecting()); }, EINVAL, {"the header says"});
  const SealedImage table = patched(sealed, [&](std::byte* b) {
    const std::uint64_t count = h.relocation_count + 1'000'000'000;
    std::memcpy(b + 56, &count, 8);
  }, true);
  expect_error([&] { (void)FixedImage::map(table, expecting()); }, EINVAL, {"relocation table"});
  const SealedImage unaligned = patched(sealed, [&](std::byte* b) {
    const std::uint64_t base = h.base + 8;
    std::memcpy(b + 16, &base, 8);
  }, true);
  expect_error([&] { (void)FixedImage::map(unaligned, expecting()); }, EINVAL, {"is not a page-aligned address"});
  // A base near address 0 (root may map there): null pointers plus offsets would read it.
  const SealedImage low = patched(sealed, [&](std::byte* b) {
    const std::uint64_t base = 0x1000;
    std::memcpy(b + 16, &base, 8);
  }, true);
  expect_error([&] { (void)FixedImage::map(low, expecting()); }, EINVAL, {"from 64 KiB"});
  const SealedImage manifest = patched(sealed, [&](std::byte* b) { b[h.manifest] = std::byte{'W'}; });
  expect_error([&] { (void)FixedImage::map(manifest, expecting()); }, EINVAL, {"manifest line 1 is malformed"});
  Region other = Region::memfd("not an image");
  other.ensure(8192);
  std::memset(other.data(), 'z', 8192);
  other.finish(8192);
  const SealedImage not_image = std::move(other).seal();
  expect_error([&] { (void)FixedImage::map(not_image, expecting()); }, EINVAL, {"not a fixed image", "MWFIXIMG"});
}

// A string pool in one image; a table in another whose entries point into the pool. The
// table is relocated (its base taken) while its pointers into the pool stay as they are.
TEST(FixedImage, ImagesPointIntoADependencyMappedAtItsBase) {
  FixedImageOptions pool_options;
  pool_options.name = "strings";
  pool_options.base = test_base(9);
  pool_options.capacity = 1 << 20;
  FixedImageBuilder pool_builder(pool_options);
  std::vector<const char*> words;
  for (int i = 0; i < 100; ++i) {
    const std::string word = "word" + std::to_string(i);
    char* at = static_cast<char*>(pool_builder.allocate(word.size() + 1, 1));
    std::memcpy(at, word.c_str(), word.size() + 1);
    words.push_back(at);
  }
  const SealedImage pool_image = pool_builder.seal();
  const FixedImage pool = FixedImage::map(pool_image);
  ASSERT_TRUE(pool.report().at_base);
  EXPECT_EQ(pool.image_name(), "strings");

  FixedImageOptions table_options;
  table_options.name = "table";
  table_options.base = test_base(10);
  table_options.capacity = 1 << 20;
  table_options.dependencies = {pool.as_dependency()};
  FixedImageBuilder table_builder(table_options);
  struct Row {
    const char* word;
    const Row* next;
  };
  Row* rows = static_cast<Row*>(table_builder.allocate(100 * sizeof(Row), alignof(Row)));
  for (int i = 0; i < 100; ++i) rows[i] = {words[i], i + 1 < 100 ? &rows[i + 1] : nullptr};
  table_builder.set_root(rows);
  const SealedImage table_image = table_builder.seal();
  EXPECT_EQ(table_builder.stats().relocations, 199u);  // 100 words, 99 next pointers

  FixedMapOptions options;
  options.dependencies = {pool.as_dependency()};
  const FixedImage at_base = FixedImage::map(table_image, options);
  const FixedImage moved = FixedImage::map(table_image, options);
  ASSERT_TRUE(at_base.report().at_base);
  ASSERT_FALSE(moved.report().at_base);
  EXPECT_EQ(moved.report().relocations, 99u);  // only the pointers into the table itself
  for (const FixedImage* table : {&at_base, &moved}) {
    const Row* row = table->root<Row>();
    for (int i = 0; i < 100; ++i, row = row->next) {
      ASSERT_NE(row, nullptr);
      EXPECT_STREQ(row->word, ("word" + std::to_string(i)).c_str());
      EXPECT_EQ(row->word, words[i]);  // in the pool, at its base
    }
    EXPECT_EQ(row, nullptr);
  }
  // The pool mapped elsewhere cannot be a dependency; a pool at another address is stale.
  const FixedImage pool_moved = FixedImage::map(pool_image);
  ASSERT_FALSE(pool_moved.report().at_base);
  expect_error([&] { (void)pool_moved.as_dependency(); }, EINVAL, {"is not mapped at its base"});
  FixedMapOptions elsewhere = options;
  elsewhere.dependencies[0].base += 1 << 20;
  expect_error([&] { (void)FixedImage::map(table_image, elsewhere); }, ESTALE,
               {"points into image 'strings' at", "but the one mapped is at"});
  // A pointer into neither: refused by the full check, whatever the dependencies.
  const SealedImage wild = patched(table_image, [&](std::byte* b) {
    const std::uint64_t value = test_base(9) + (2 << 20);
    std::memcpy(b + header_of(table_image).data_end - sizeof(Row), &value, 8);
  });
  expect_error([&] { (void)FixedImage::map(wild, options); }, EBADMSG, {"outside the image's data and its dependencies'"});
}

// `ulimit -v`: the reservation is refused naming RLIMIT_AS and the option to lower.
TEST(FixedImage, AddressSpaceLimitIsNamed) {
#if MAPWRIGHT_TEST_ASAN || MAPWRIGHT_TEST_TSAN
  GTEST_SKIP() << "the sanitizers' shadow memory does not fit under a small RLIMIT_AS";
#endif
  const auto result = test::run_in_child([] {
    rlimit limit{600ull << 20, RLIM_INFINITY};
    CHILD_CHECK(::setrlimit(RLIMIT_AS, &limit) == 0);
    FixedImageOptions options;
    options.base = test_base(13);
    options.capacity = 4ull << 30;
    try {
      FixedImageBuilder builder(options);
      CHILD_CHECK_MSG(false, "4 GiB reserved under a 600 MiB RLIMIT_AS");
    } catch (const Error& e) {
      CHILD_CHECK_MSG(e.error() == ENOMEM, e.what());
      CHILD_CHECK_MSG(std::string(e.what()).find("RLIMIT_AS") != std::string::npos, e.what());
      CHILD_CHECK_MSG(std::string(e.what()).find("FixedImageOptions::capacity") != std::string::npos, e.what());
    }
  });
  test::expect_clean_exit(result);
}

TEST(FixedImage, BuilderRefusals) {
  FixedImageOptions options;
  options.base = test_base(7);
  options.capacity = 1 << 20;
  FixedImageBuilder builder(options);
  expect_error([&] { FixedImageBuilder again(options); }, EEXIST, {"the address is taken"});
  FixedImageOptions unaligned = options;
  unaligned.base += 100;
  expect_error([&] { FixedImageBuilder b(unaligned); }, EINVAL, {"is not a page-aligned address"});
  FixedImageOptions spaced = options;
  spaced.base = test_base(8);
  spaced.types = {fixed_type<int>("two words")};
  expect_error([&] { FixedImageBuilder b(spaced); }, EINVAL, {"type name 'two words'"});
  expect_error([&] { (void)builder.allocate(2 << 20, 8); }, ENOMEM, {"capacity"});
  int local = 0;
  expect_error([&] { builder.note_pointer(&local); }, EINVAL, {"is not inside what was allocated"});
  FixedImageOptions overlapping = options;
  overlapping.base = test_base(12);
  overlapping.dependencies = {{"other", {}, test_base(12) + 4096, 8192}};
  expect_error([&] { FixedImageBuilder b(overlapping); }, EINVAL, {"overlaps this one"});
  auto** slot = static_cast<void**>(builder.allocate(8, 8));
  *slot = &local;  // a pointer to this stack: never fit for an image
  builder.note_pointer(slot);
  expect_error([&] { (void)builder.seal(); }, EINVAL, {"neither null nor inside the image"});
}

// A flipped byte in the manifest is damage, and said to be (the digest is checked before the
// manifest is read as staleness); with only the header checked, it is what the manifest says.
TEST(FixedImage, DamageIsNeverTakenForStaleness) {
  const SealedImage sealed = build_dictionary(test_base(14), 50);
  const detail::FixedHeader h = header_of(sealed);
  const std::uint64_t digit = h.manifest + std::strlen("writer mapwright ");  // of the version
  const SealedImage flipped = patched(sealed, [&](std::byte* b) {
    b[digit] = b[digit] == std::byte{'9'} ? std::byte{'8'} : std::byte{'9'};
  }, true);
  expect_error([&] { (void)FixedImage::map(flipped, expecting()); }, EBADMSG, {"the digest does not match"});
  expect_error([&] { (void)FixedImage::map(flipped, expecting(FixedMapOptions::Check::kHeader)); },
               ESTALE, {"written by mapwright"});
  const SealedImage broken = patched(sealed, [&](std::byte* b) { b[h.manifest] = std::byte{'W'}; }, true);
  expect_error([&] { (void)FixedImage::map(broken, expecting()); }, EBADMSG,
               {"the digest does not match", "manifest line 1 is malformed"});
  expect_error([&] { (void)FixedImage::map(broken, expecting(FixedMapOptions::Check::kHeader)); },
               EINVAL, {"manifest line 1 is malformed"});
}

// Two types (or dependencies) of one name would make the manifest ambiguous: refused when
// built, and when read (a manifest that says so, digest and all).
TEST(FixedImage, ANameDeclaredTwiceIsRefused) {
  FixedImageOptions options;
  options.base = test_base(15);
  options.capacity = 1 << 20;
  FixedImageOptions types = options;
  types.types = {fixed_type<std::uint64_t>("Word"), fixed_type<std::uint32_t>("Word")};
  expect_error([&] { FixedImageBuilder b(types); }, EINVAL, {"type 'Word' is declared twice"});
  FixedImageOptions dependencies = options;
  const FixedImageDependency pool{"pool", {}, test_base(16), 8192};
  dependencies.dependencies = {pool, pool};
  expect_error([&] { FixedImageBuilder b(dependencies); }, EINVAL, {"dependency 'pool' is declared twice"});

  options.types = {fixed_type<std::uint64_t>("Wa"), fixed_type<std::uint64_t>("Wb")};
  FixedImageBuilder builder(options);
  builder.set_root(builder.create<std::uint64_t>(7));
  const SealedImage sealed = builder.seal();
  const detail::FixedHeader h = header_of(sealed);
  const std::string manifest(reinterpret_cast<const char*>(sealed.map().data() + h.manifest), h.manifest_bytes);
  const std::size_t second = manifest.find("type Wb ");
  ASSERT_NE(second, std::string::npos) << manifest;
  const SealedImage twice = patched(sealed, [&](std::byte* b) { b[h.manifest + second + 6] = std::byte{'a'}; });
  FixedMapOptions expect;
  expect.types = {fixed_type<std::uint64_t>("Wa")};
  expect_error([&] { (void)FixedImage::map(twice, expect); }, EINVAL, {"names type 'Wa' a second time"});
}

// The builder reserves exactly [base, base + capacity): a mapping right after it (or right
// before it) is no obstacle.
TEST(FixedImage, TheBuilderTakesExactlyItsRange) {
  FixedImageOptions options;
  options.base = test_base(17);
  options.capacity = 1 << 20;
  void* const after = reinterpret_cast<void*>(options.base + options.capacity);
  void* const before = reinterpret_cast<void*>(options.base - 4096);
  ASSERT_EQ(::mmap(after, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0), after);
  ASSERT_EQ(::mmap(before, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0), before);
  {
    FixedImageBuilder builder(options);
    auto* words = static_cast<std::uint64_t*>(builder.allocate(options.capacity - kFixedImageHeaderBytes - 4096, 8));
    words[0] = 1;
    builder.set_root(words);
    const SealedImage sealed = builder.seal();
    EXPECT_EQ(*FixedImage::map(sealed).root<std::uint64_t>(), 1u);
  }
  ::munmap(after, 4096);
  ::munmap(before, 4096);
}

// The address space a map() takes is the image's size, once: under a `ulimit -v` with room for
// one copy and a half it maps; with room for half of one it is refused naming RLIMIT_AS.
std::uint64_t address_space_in_use() {
  std::ifstream statm("/proc/self/statm");
  std::uint64_t pages = 0;
  statm >> pages;
  return pages * 4096;
}

TEST(FixedImage, MappingTakesTheImagesAddressSpaceOnce) {
#if MAPWRIGHT_TEST_ASAN || MAPWRIGHT_TEST_TSAN
  GTEST_SKIP() << "the sanitizers' shadow memory does not fit under a small RLIMIT_AS";
#endif
  constexpr std::uint64_t kData = 64ull << 20;
  FixedImageOptions options;
  options.name = "big";
  options.base = test_base(18);
  options.capacity = kData + (1 << 20);
  FixedImageBuilder builder(options);
  auto* bytes = static_cast<char*>(builder.allocate(kData, 1));  // sparse: never written
  builder.set_root(bytes);
  const SealedImage sealed = builder.seal();
  for (const auto& [room, fits] : {std::pair{kData * 3 / 2, true}, std::pair{kData / 2, false}}) {
    const auto result = test::run_in_child([&, room = room, fits = fits] {
      rlimit limit{address_space_in_use() + room, RLIM_INFINITY};
      CHILD_CHECK(::setrlimit(RLIMIT_AS, &limit) == 0);
      FixedMapOptions expect;
      expect.name = "big";
      expect.check = FixedMapOptions::Check::kHeader;
      try {
        const FixedImage image = FixedImage::map(sealed, expect);
        CHILD_CHECK_MSG(fits, "mapped with room for half of it");
        CHILD_CHECK(image.report().at_base);
      } catch (const Error& e) {
        CHILD_CHECK_MSG(!fits, e.what());
        CHILD_CHECK_MSG(e.error() == ENOMEM, e.what());
        const std::string what = e.what();
        CHILD_CHECK_MSG(what.find("mapping fixed image 'big'") != std::string::npos, e.what());
        CHILD_CHECK_MSG(what.find("RLIMIT_AS") != std::string::npos, e.what());
        CHILD_CHECK_MSG(what.find("RegionOptions") == std::string::npos, e.what());
      }
    });
    test::expect_clean_exit(result);
  }
}

// The last place an image can be: ending at kFixedImageTop (the top of x86-64's user address
// space, 2^47 - 4 KiB), if that is free here; an image whose header says it ends past it is
// refused as malformed.
TEST(FixedImage, ImagesUpToTheTopOfTheAddressSpace) {
  FixedImageOptions options;
  options.capacity = 1 << 20;
  options.base = kFixedImageTop - options.capacity;
  std::optional<FixedImageBuilder> builder;
  try {
    builder.emplace(options);
  } catch (const Error& e) {
    if (e.error() == EEXIST) GTEST_SKIP() << "the top of the address space is taken here: " << e.what();
    throw;
  }
  builder->set_root(builder->create<std::uint64_t>(42));
  const SealedImage sealed = builder->seal();
  builder.reset();
  {
    const FixedImage image = FixedImage::map(sealed);
    EXPECT_TRUE(image.report().at_base);
    EXPECT_EQ(*image.root<std::uint64_t>(), 42u);
  }
  const SealedImage past = patched(sealed, [&](std::byte* b) {
    const std::uint64_t base = kFixedImageTop - 4096;  // the image is larger than a page
    std::memcpy(b + 16, &base, 8);
  }, true);  // the header is checked before the digest
  expect_error([&] { (void)FixedImage::map(past); }, EINVAL, {"with room below 2^47 - 4 KiB"});
  options.base += 4096;
  expect_error([&] { FixedImageBuilder b(options); }, EINVAL, {"does not fit between the base and 2^47 - 4 KiB"});
}

// A manifest is at most 1 MiB (what a mapper reads before the digest): a builder whose types
// would make a longer one says so when sealing.
TEST(FixedImage, AManifestPastOneMebibyteIsRefused) {
  FixedImageOptions options;
  options.base = test_base(19);
  options.capacity = 4 << 20;
  for (int i = 0; i < 5000; ++i) {
    options.types.push_back(fixed_type<std::uint64_t>(std::string(240, 'T') + std::to_string(i)));
  }
  FixedImageBuilder builder(options);
  builder.set_root(builder.create<std::uint64_t>(1));
  expect_error([&] { (void)builder.seal(); }, EINVAL, {"manifest of", "larger than a mapper reads"});
}

}  // namespace
}  // namespace mapwright
