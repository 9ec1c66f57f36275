// src/sealed_image_state.h — what copies of a SealedImage share. Private to src/.
#pragma once

#include <cstdint>
#include <mutex>

#include "mapwright/sealed_image.h"

namespace mapwright {

struct SealedImage::State {
  int fd = -1;
  std::uint64_t size = 0;
  std::mutex mutex;                  // guards the lazy mapping below
  const void* mapping = nullptr;     // read-only view of [0, size), or null until map()
  std::uint64_t mapping_length = 0;  // bytes to munmap
  ~State();
};

}  // namespace mapwright
