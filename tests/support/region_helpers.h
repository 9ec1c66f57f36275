// tests/support/region_helpers.h — small helpers about mapwright::Region for the suites:
// catching its Error, the options several suites use, and a disk-file region in a DiskDir
// (child.h).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include <gtest/gtest.h>

#include "child.h"
#include "content.h"
#include "mapwright/error.h"
#include "mapwright/region.h"

namespace mapwright::test {

// Runs `body` and returns the mapwright::Error it throws, or nothing.
template <class F>
std::optional<Error> error_from(F&& body) {
  try {
    body();
  } catch (const Error& e) {
    return e;
  }
  return std::nullopt;
}

// Default options but for the capacity.
inline RegionOptions options_with_capacity(std::uint64_t capacity) {
  RegionOptions options;
  options.capacity = capacity;
  return options;
}

// A 64 MiB capacity and grow_on_fault off: only ensure() grows the region.
inline RegionOptions no_grow_options() {
  RegionOptions options = options_with_capacity(64ull << 20);
  options.grow_on_fault = false;
  return options;
}

// A memfd region with no_grow_options(), ensured to 1 MiB: a store at 1 MiB or past it fails.
inline Region no_grow_region(const std::string& name) {
  Region region = Region::memfd(name, no_grow_options());
  region.ensure(1ull << 20);
  return region;
}

// Runs `check(region)` on a fresh Region::file named `name` (with `options`) in a new DiskDir,
// removed afterwards; a fatal test failure if the directory cannot be made. For the disk-file
// twins of tests that also run on a memfd.
template <class Check>
void on_disk_file(const std::string& name, const RegionOptions& options, Check&& check) {
  DiskDir dir;
  ASSERT_TRUE(dir.ok());
  Region region = Region::file(dir / name, options);
  check(region);
}

template <class Check>
void on_disk_file(const std::string& name, Check&& check) {
  on_disk_file(name, RegionOptions{}, check);
}

// The region's bytes, for single stores that the compiler may not merge or drop.
inline volatile unsigned char* bytes_of(const Region& region) {
  return reinterpret_cast<volatile unsigned char*>(region.data());
}

// One byte stored at `offset` (usable in a child).
inline void store(const Region& region, std::uint64_t offset, unsigned char value) {
  bytes_of(region)[offset] = value;
}

// Stores then reads back the test pattern's byte at `offset`: the region covers it now. Ends
// a child that finds otherwise (CHILD_CHECK).
inline void check_store_works(const Region& region, std::uint64_t offset) {
  store(region, offset, byte_pattern(offset));
  CHILD_CHECK_MSG(bytes_of(region)[offset] == byte_pattern(offset),
                  "offset " + std::to_string(offset));
}

}  // namespace mapwright::test
