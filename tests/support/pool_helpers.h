// tests/support/pool_helpers.h — helpers of the instance pool suites (pool_test,
// pool_edges_test): a sealed image of given bytes, a small pool's options, and a check that
// an instance is exactly its image with a zeroed heap.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "mapwright/pool.h"
#include "mapwright/region.h"
#include "mapwright/sealed_image.h"

namespace mapwright::test {

using PoolBytes = std::vector<std::byte>;

inline SealedImage make_image(const PoolBytes& bytes, const char* name = "pool-test-image") {
  Region region = Region::memfd(name);
  region.ensure(bytes.size());
  if (!bytes.empty()) std::memcpy(region.data(), bytes.data(), bytes.size());
  region.finish(bytes.size());
  return std::move(region).seal();
}

// 8 MiB slots with 64 KiB guards, named "test pool".
inline InstancePoolOptions small_pool(std::size_t slots = 2, HeapMode heap = HeapMode::kAnonymous,
                                      ResetMethod reset = ResetMethod::kAutomatic) {
  InstancePoolOptions options;
  options.slots = slots;
  options.slot_size = 8u << 20;
  options.guard = 64u << 10;
  options.heap = heap;
  options.reset = reset;
  options.name = "test pool";
  return options;
}

// Every byte of the instance's image equals `bytes`, the rest of its last page is zero, and
// the heap's accessible bytes are zero. Returns the first difference, or "".
inline std::string differences(const Instance& instance, const PoolBytes& bytes) {
  const std::byte* image = instance.base();
  if (instance.image_size() != bytes.size()) return "image size " + std::to_string(instance.image_size());
  if (std::memcmp(image, bytes.data(), bytes.size()) != 0) {
    for (std::size_t i = 0; i < bytes.size(); ++i) {
      if (image[i] != bytes[i]) return "image byte " + std::to_string(i);
    }
  }
  for (std::byte* p = instance.base() + bytes.size(); p < instance.heap(); ++p) {
    if (*p != std::byte{0}) return "tail byte " + std::to_string(p - instance.base());
  }
  for (std::uint64_t i = 0; i < instance.heap_size(); ++i) {
    if (instance.heap()[i] != std::byte{0}) return "heap byte " + std::to_string(i);
  }
  return "";
}

}  // namespace mapwright::test
