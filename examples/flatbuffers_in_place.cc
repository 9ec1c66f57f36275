// examples/flatbuffers_in_place.cc — a FlatBuffers model file built in place, back to front,
// at the top of a staged file, then read back zero-copy and verified.
//
//   flatbuffers_in_place OUT [MIB]     (default 256 MiB of weights)
//
// The weights arrive in 1 MiB pieces (made up here; read from elsewhere in a real compiler)
// and go into the file with fill(), which writes them into the file's pages without mapping
// them: no page faults, and the resident set stays small whatever the model's size. finish()
// then leaves the buffer alone at offset 0 — without a copy on ext4 and xfs, whose
// COLLAPSE_RANGE takes the unused front off — and publish() links it in place, durable.
#include <mapwright/mapwright.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "flatbuffers_in_place_generated.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s OUT [MIB]\n", argv[0]);
    return 2;
  }
  const std::string out = argv[1];
  const std::uint64_t mib = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 256;
  const std::uint64_t tensor_bytes = 16ull << 20;
  const std::uint64_t tensors = (mib << 20) / tensor_bytes;
  const auto seconds = [start = std::chrono::steady_clock::now()] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  try {
    mapwright::MappedFlatBufferBuilder builder(mapwright::FlatBufferTarget::staged(out));
    std::vector<flatbuffers::Offset<example::Tensor>> offsets;
    std::vector<std::uint8_t> piece(1 << 20);
    for (std::uint64_t t = 0; t < tensors; ++t) {
      const auto weights = builder.aligned_bytes(tensor_bytes);  // page-aligned in the file
      for (std::uint64_t at = 0; at < tensor_bytes; at += piece.size()) {
        for (std::size_t i = 0; i < piece.size(); i += 64) piece[i] = static_cast<std::uint8_t>(t + at + i);
        builder.fill(weights.data + at, piece.data(), piece.size());
      }
      const std::vector<std::uint32_t> shape = {1024, static_cast<std::uint32_t>(tensor_bytes / 1024)};
      offsets.push_back(example::CreateTensor(builder, builder.CreateString("layer" + std::to_string(t)),
                                              builder.CreateVector(shape), weights.offset));
    }
    const auto model = example::CreateModel(builder, builder.CreateString("flatbuffers_in_place"),
                                            builder.CreateVector(offsets));
    const mapwright::FlatBufferFinish done = builder.finish(model, example::ModelIdentifier());
    builder.publish();  // fsync, link in place, fsync the directory
    const mapwright::MappedFlatBufferStats stats = builder.stats();
    std::printf("built %s: %llu bytes in %.2f s; %llu growths moved %llu bytes of data; finish %s\n",
                out.c_str(), static_cast<unsigned long long>(done.size), seconds(),
                static_cast<unsigned long long>(stats.growths),
                static_cast<unsigned long long>(stats.data_bytes_moved),
                done.method == mapwright::FlatBufferFinish::Method::kCollapse ? "collapsed (no copy)"
                : done.method == mapwright::FlatBufferFinish::Method::kCopy   ? "copied"
                                                                              : "had nothing to do");

    const mapwright::MappedFlatBuffer file(out);  // zero-copy, verified below
    const example::Model* read = file.root<example::Model>(example::ModelIdentifier());
    std::uint64_t aligned = 0;
    for (const example::Tensor* tensor : *read->tensors()) {
      if ((tensor->weights()->data() - file.data()) % 4096 == 0) ++aligned;
    }
    std::printf("read back: %u tensors, %llu with page-aligned weights, producer \"%s\"\n",
                read->tensors()->size(), static_cast<unsigned long long>(aligned),
                read->producer()->c_str());
    std::printf("decode it with: flatc --json --raw-binary %s -- %s\n", FLATBUFFERS_IN_PLACE_SCHEMA,
                out.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "flatbuffers_in_place: %s\n", e.what());
    return 1;
  }
  return 0;
}
