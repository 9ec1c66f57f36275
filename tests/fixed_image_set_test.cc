// FixedImageSet (fixed_image.h): an image that points into others (tables sharing a string
// pool) is mapped with them, each dependency once and at its base; a dependency that is not
// the one the image was built against, a taken dependency base, a source that lies, cycles
// and endless chains are refused, and a failed map() leaves nothing behind.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "child.h"
#include "mapwright/error.h"
#include "mapwright/fixed_image.h"
#include "mapwright/region.h"
#include "wrapper_helpers.h"

namespace mapwright {
namespace {

using test::expect_error;

// The string pool: NUL-terminated words and an array of pointers to them.
struct Pool {
  std::uint64_t count;
  const char* const* words;
};
// A table: rows that point into the pool.
struct Row {
  const char* word;  // in the pool
  std::uint64_t index;
};
struct Table {
  std::uint64_t count;
  const Row* rows;
};

// Its own stretch of the address space, away from the other fixed-image tests'.
std::uintptr_t base_of(int n) { return kDefaultFixedBase + (40ull << 32) + static_cast<std::uintptr_t>(n) * (1ull << 30); }

std::string word(const std::string& salt, std::uint64_t i) { return salt + "-word-" + std::to_string(i); }

SealedImage pool_image(std::uintptr_t base, std::uint64_t count, const std::string& salt = "w") {
  FixedImageOptions options;
  options.name = "strings";
  options.base = base;
  options.capacity = 8 << 20;
  options.types = {fixed_type<Pool>("Pool")};
  FixedImageBuilder builder(options);
  auto* pool = builder.create<Pool>();
  auto** words = static_cast<const char**>(builder.allocate(count * sizeof(char*), alignof(char*)));
  for (std::uint64_t i = 0; i < count; ++i) {
    const std::string text = word(salt, i);
    char* at = static_cast<char*>(builder.allocate(text.size() + 1, 1));
    std::memcpy(at, text.c_str(), text.size() + 1);
    words[i] = at;
  }
  *pool = {count, words};
  builder.set_root(pool);
  return builder.seal();
}

// A table named `name` of `count` rows, row i pointing to word (i * step) % pool count.
SealedImage table_image(const std::string& name, std::uintptr_t base, const FixedImage& pool,
                        std::uint64_t count, std::uint64_t step) {
  FixedImageOptions options;
  options.name = name;
  options.base = base;
  options.capacity = 8 << 20;
  options.types = {fixed_type<Table>("Table"), fixed_type<Row>("Row")};
  options.dependencies = {pool.as_dependency()};
  FixedImageBuilder builder(options);
  const Pool* strings = pool.root<Pool>();
  auto* table = builder.create<Table>();
  auto* rows = static_cast<Row*>(builder.allocate(count * sizeof(Row), alignof(Row)));
  for (std::uint64_t i = 0; i < count; ++i) rows[i] = {strings->words[(i * step) % strings->count], i};
  *table = {count, rows};
  builder.set_root(table);
  return builder.seal();
}

void expect_table(const FixedImage& table, const FixedImage& pool, std::uint64_t count,
                  std::uint64_t step, const std::string& salt = "w") {
  const Table* t = table.root<Table>();
  const Pool* p = pool.root<Pool>();
  ASSERT_NE(t, nullptr);
  ASSERT_EQ(t->count, count);
  for (std::uint64_t i = 0; i < count; ++i) {
    const std::uint64_t w = (i * step) % p->count;
    ASSERT_EQ(t->rows[i].word, p->words[w]) << "row " << i;  // into the pool, at its base
    ASSERT_STREQ(t->rows[i].word, word(salt, w).c_str());
    ASSERT_EQ(t->rows[i].index, i);
  }
}

FixedMapOptions expecting_pool() {
  FixedMapOptions options;
  options.types = {fixed_type<Pool>("Pool")};
  return options;
}
FixedMapOptions expecting_table() {
  FixedMapOptions options;
  options.types = {fixed_type<Table>("Table"), fixed_type<Row>("Row")};
  return options;
}

// Images by name, as a source; counts what it was asked for.
struct Shelf {
  std::map<std::string, SealedImage> images;
  std::map<std::string, int> asked;
  FixedImageSource source() {
    return [this](const std::string& name) {
      ++asked[name];
      const auto found = images.find(name);
      if (found == images.end()) throw Error(ENOENT, "looking up", name, "(not on the shelf)");
      return found->second;
    };
  }
};

// A pool and two tables pointing into it, built the way a build step would: the pool mapped
// at its base while the tables are built, then unmapped.
struct Library {
  static constexpr std::uint64_t kWords = 5000;
  static constexpr std::uint64_t kRows = 20000;
  Shelf shelf;
  explicit Library(int slot) {
    shelf.images.emplace("strings", pool_image(base_of(slot), kWords));
    const FixedImage pool = FixedImage::map(shelf.images.at("strings"), expecting_pool());
    EXPECT_TRUE(pool.report().at_base);
    shelf.images.emplace("names", table_image("names", base_of(slot + 1), pool, kRows, 7));
    shelf.images.emplace("cities", table_image("cities", base_of(slot + 2), pool, kRows, 13));
  }
};

void expect_all(FixedImageSet& set) {
  set.expect("strings", expecting_pool());
  set.expect("names", expecting_table());
  set.expect("cities", expecting_table());
}

TEST(FixedImageSet, TwoTablesShareOneStringPoolMappedOnce) {
  Library library(0);
  FixedImageSet set(library.shelf.source());
  expect_all(set);
  const FixedImage& names = set.map("names");
  const FixedImage& cities = set.map("cities");
  EXPECT_EQ(&set.map("names"), &names);  // mapped once per set
  ASSERT_EQ(set.size(), 3u);
  const FixedImage* pool = set.find("strings");
  ASSERT_NE(pool, nullptr);
  EXPECT_EQ(set.find("absent"), nullptr);
  EXPECT_EQ(library.shelf.asked["strings"], 1);  // the second table found it mapped
  EXPECT_EQ(library.shelf.asked["names"], 1);
  for (const FixedImage* image : {pool, &names, &cities}) {
    EXPECT_TRUE(image->report().at_base) << image->image_name();
    EXPECT_EQ(image->report().pages_touched, 0u);
  }
  expect_table(names, *pool, Library::kRows, 7);
  expect_table(cities, *pool, Library::kRows, 13);

  // Another set in the same process: the pool's base is taken by the first, and a dependency
  // is never moved. Nothing of the failed map() stays.
  FixedImageSet second(library.shelf.source());
  expect_all(second);
  expect_error([&] { (void)second.map("names"); }, EEXIST,
               {"mapping fixed image 'strings'", "is taken in this process, which 'names' points into",
                "cannot be mapped elsewhere"});
  EXPECT_EQ(second.size(), 0u);
}

TEST(FixedImageSet, TheImageAskedForIsRelocatedItsDependenciesNever) {
  Library library(4);
  // Something else holds the names table's base.
  void* block = ::mmap(reinterpret_cast<void*>(base_of(5)), 4096, PROT_NONE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
  ASSERT_EQ(block, reinterpret_cast<void*>(base_of(5)));
  {
    FixedImageSet set(library.shelf.source());
    expect_all(set);
    const FixedImage& names = set.map("names");
    const FixedImage& pool = *set.find("strings");
    EXPECT_TRUE(pool.report().at_base);
    EXPECT_FALSE(names.report().at_base);
    EXPECT_EQ(names.report().relocations, 1u);  // Table::rows; the words stay in the pool
    expect_table(names, pool, Library::kRows, 7);
  }
  {
    // Its expectation can forbid that.
    FixedImageSet strict(library.shelf.source());
    expect_all(strict);
    FixedMapOptions no_move = expecting_table();
    no_move.allow_relocation = false;
    strict.expect("names", no_move);
    expect_error([&] { (void)strict.map("names"); }, EEXIST,
                 {"mapping fixed image 'names'", "is taken in this process, and relocation is off"});
    EXPECT_EQ(strict.size(), 0u);
  }
  // An image that points into a relocated one cannot be mapped with it. (Built while the
  // table is at its base.)
  ASSERT_EQ(::munmap(block, 4096), 0);
  {
    FixedImageSet set(library.shelf.source());
    expect_all(set);
    const FixedImage& names = set.map("names");
    ASSERT_TRUE(names.report().at_base);
    FixedImageOptions options;
    options.name = "index";
    options.base = base_of(7);
    options.capacity = 1 << 20;
    options.dependencies = {names.as_dependency()};
    FixedImageBuilder builder(options);
    auto** first = builder.create<const Row*>(names.root<Table>()->rows);
    builder.set_root(first);
    library.shelf.images.emplace("index", builder.seal());
  }
  block = ::mmap(reinterpret_cast<void*>(base_of(5)), 4096, PROT_NONE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
  ASSERT_EQ(block, reinterpret_cast<void*>(base_of(5)));
  {
    FixedImageSet set(library.shelf.source());
    expect_all(set);
    ASSERT_FALSE(set.map("names").report().at_base);
    expect_error([&] { (void)set.map("index"); }, EEXIST,
                 {"mapping fixed image 'names'", "this set mapped it away from its base",
                  "'index' points into it"});
    EXPECT_EQ(set.size(), 2u);  // what the earlier map() mapped stays
  }
  ASSERT_EQ(::munmap(block, 4096), 0);
  FixedImageSet fresh(library.shelf.source());
  expect_all(fresh);
  const FixedImage& index = fresh.map("index");
  EXPECT_EQ(fresh.size(), 3u);
  EXPECT_EQ(*index.root<const Row*>(), fresh.find("names")->root<Table>()->rows);
}

TEST(FixedImageSet, ADependencyOtherThanTheOneBuiltAgainstIsRefused) {
  Library library(8);
  // The pool rebuilt (same name, same base, other words): the tables are stale.
  library.shelf.images.insert_or_assign("strings", pool_image(base_of(8), Library::kWords, "v2"));
  FixedImageSet set(library.shelf.source());
  expect_all(set);
  expect_error([&] { (void)set.map("names"); }, ESTALE,
               {"mapping fixed image 'names'", "points into image 'strings' with digest", "rebuild it"});
  EXPECT_EQ(set.size(), 0u);  // the pool it mapped first is gone again
  // Rebuilt elsewhere, or with more words: another place.
  library.shelf.images.insert_or_assign("strings", pool_image(base_of(9) + (512 << 20), Library::kWords));
  expect_error([&] { (void)set.map("names"); }, ESTALE, {"points into image 'strings'"});
  EXPECT_EQ(set.size(), 0u);
}

TEST(FixedImageSet, WhatTheProcessExpectsOfEachImageIsChecked) {
  Library library(12);
  FixedImageSet set(library.shelf.source());
  set.expect("names", expecting_table());  // nothing said of the pool
  expect_error([&] { (void)set.map("names"); }, ESTALE,
               {"mapping fixed image 'strings'", "holds type 'Pool'", "does not expect"});
  FixedMapOptions wrong = expecting_pool();
  wrong.types[0].schema_hash = 2;
  set.expect("strings", wrong);
  expect_error([&] { (void)set.map("names"); }, ESTALE, {"'strings'", "its type 'Pool'", "is not this program's"});
  FixedMapOptions with_dependencies = expecting_table();
  with_dependencies.dependencies = {{"strings", {}, base_of(12), 8192}};
  expect_error([&] { set.expect("names", with_dependencies); }, EINVAL, {"the set's to fill in"});
  set.expect("strings", expecting_pool());
  EXPECT_TRUE(set.map("names").report().at_base);
  expect_error([] { FixedImageSet none(nullptr); }, EINVAL, {"no source"});
}

TEST(FixedImageSet, ASourceThatLiesIsRefused) {
  Library library(16);
  FixedImageSet set(library.shelf.source());
  expect_all(set);
  // Missing: the source's error, with who needed it.
  Shelf partial;
  partial.images.emplace("names", library.shelf.images.at("names"));
  FixedImageSet from_partial(partial.source());
  expect_all(from_partial);
  expect_error([&] { (void)from_partial.map("names"); }, ENOENT,
               {"mapping fixed image 'strings'", "getting it from the source, which 'names' points into",
                "not on the shelf"});
  // Another image under the name asked for.
  Shelf swapped;
  swapped.images.emplace("names", library.shelf.images.at("names"));
  swapped.images.emplace("strings", library.shelf.images.at("cities"));
  FixedImageSet from_swapped(swapped.source());
  expect_all(from_swapped);
  expect_error([&] { (void)from_swapped.map("names"); }, EINVAL,
               {"'strings'", "the source answered with image 'cities', which 'names' points into"});
  // Not a fixed image at all.
  Region garbage = Region::memfd("garbage");
  garbage.ensure(8192);
  std::memset(garbage.data(), 0x5a, 8192);
  garbage.finish(8192);
  swapped.images.insert_or_assign("strings", std::move(garbage).seal());
  expect_error([&] { (void)from_swapped.map("names"); }, EINVAL, {"'strings'", "not a fixed image"});
  EXPECT_EQ(from_swapped.size(), 0u);
}

// An image that says it depends on `dependency` (at `dependency_base`), without it existing:
// what a hostile source can make.
SealedImage claiming(const std::string& name, std::uintptr_t base, const std::string& dependency,
                     std::uintptr_t dependency_base) {
  FixedImageOptions options;
  options.name = name;
  options.base = base;
  options.capacity = 1 << 16;
  options.dependencies = {{dependency, {}, dependency_base, 8192}};
  FixedImageBuilder builder(options);
  builder.set_root(builder.create<std::uint64_t>(7));
  return builder.seal();
}

TEST(FixedImageSet, CyclesAndEndlessChainsAreRefused) {
  Shelf shelf;
  shelf.images.emplace("a", claiming("a", base_of(20), "b", base_of(21)));
  shelf.images.emplace("b", claiming("b", base_of(21), "c", base_of(22)));
  shelf.images.emplace("c", claiming("c", base_of(22), "a", base_of(20)));
  FixedImageSet set(shelf.source());
  expect_error([&] { (void)set.map("b"); }, EINVAL,
               {"mapping fixed image 'b'", "come back to it: 'b' -> 'c' -> 'a' -> 'b'"});
  EXPECT_EQ(set.size(), 0u);

  // A source that makes up a new image for every name: chain-0 -> chain-1 -> ...
  int made = 0;
  FixedImageSet endless([&](const std::string& name) {
    const int n = std::stoi(name.substr(6));
    ++made;
    return claiming(name, base_of(24) + n * (1ull << 20), "chain-" + std::to_string(n + 1),
                    base_of(24) + (n + 1) * (1ull << 20));
  });
  expect_error([&] { (void)endless.map("chain-0"); }, EINVAL,
               {"mapping fixed image 'chain-64'", "deeper than 64 images: 'chain-0' -> '...' -> 'chain-64'"});
  EXPECT_EQ(made, kFixedImageMaxDepth);
  EXPECT_EQ(endless.size(), 0u);
}

// The runtime's way: a broker process serves the pool and the tables; a client process asks
// for one table and gets it mapped with its pool, each at its base, in microseconds.
TEST(FixedImageSet, AClientMapsATableWithItsPoolFromABroker) {
  Library library(28);
  test::TempDir dir;
  const auto path = dir / "broker.sock";
  FixedImageBroker broker(path);
  for (const auto& [name, image] : library.shelf.images) broker.add(name, image);
  std::thread server([&] { broker.serve(); });
  const test::ChildResult child = test::run_in_child([&] {
    FixedImageSet set(broker_source(path));
    expect_all(set);
    for (const char* name : {"strings", "names", "cities"}) {
      FixedMapOptions options = std::string(name) == "strings" ? expecting_pool() : expecting_table();
      options.check = FixedMapOptions::Check::kHeader;  // our own broker
      set.expect(name, options);
    }
    const FixedImage& cities = set.map("cities");
    const FixedImage& pool = *set.find("strings");
    CHILD_CHECK(set.size() == 2);
    CHILD_CHECK(cities.report().at_base && pool.report().at_base);
    CHILD_CHECK(cities.report().pages_checked == 0 && pool.report().pages_checked == 0);
    const Table* table = cities.root<Table>();
    CHILD_CHECK(table->count == Library::kRows);
    for (std::uint64_t i = 0; i < table->count; ++i) {
      CHILD_CHECK(std::string(table->rows[i].word) == word("w", (i * 13) % Library::kWords));
    }
    bool refused = false;
    try {
      (void)set.map("absent");
    } catch (const Error& e) {
      refused = e.error() == ENOENT && std::string(e.what()).find("no image of that name") != std::string::npos;
    }
    CHILD_CHECK(refused);
  });
  broker.stop();
  server.join();
  EXPECT_TRUE(child.exited && child.exit_code == 0) << child.describe() << "\n" << child.output;
  EXPECT_EQ(broker.served(), 2u);
}

// A copy of `image` with the first `from` in it (its manifest) replaced by `to`, the digest
// left as it was: damage.
SealedImage damaged(const SealedImage& image, const std::string& from, const std::string& to) {
  const std::span<const std::byte> bytes = image.map();
  const std::string text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  const std::size_t at = text.rfind(from);
  EXPECT_NE(at, std::string::npos);
  Region region = Region::memfd("damaged");
  region.ensure(bytes.size());
  std::memcpy(region.data(), bytes.data(), bytes.size());
  std::memcpy(region.data() + at, to.data(), to.size());
  region.finish(bytes.size());
  return std::move(region).seal();
}

// A table whose manifest was damaged where it names its pool: under the full check that is
// damage (the digest says so), not the source's "no such image", and nothing stays mapped.
TEST(FixedImageSet, ADamagedManifestIsDamageNotAMissingDependency) {
  Library library(32);
  library.shelf.images.insert_or_assign(
      "names", damaged(library.shelf.images.at("names"), "depends strings ", "depends strinGs "));
  FixedImageSet set(library.shelf.source());
  expect_all(set);
  expect_error([&] { (void)set.map("names"); }, EBADMSG, {"mapping fixed image 'names'", "the digest does not match"});
  EXPECT_EQ(set.size(), 0u);
  // Trusted (header only), the damaged manifest is all there is to go by.
  FixedMapOptions trusted = expecting_table();
  trusted.check = FixedMapOptions::Check::kHeader;
  set.expect("names", trusted);
  expect_error([&] { (void)set.map("names"); }, ENOENT, {"strinGs", "not on the shelf"});
  EXPECT_EQ(set.size(), 0u);
}

}  // namespace
}  // namespace mapwright
