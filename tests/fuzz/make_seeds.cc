// tests/fuzz/make_seeds.cc — writes the seed corpora in tests/fuzz/corpus/ (committed; each
// file a few KiB). The output is deterministic: rerun it after a format change with
//
//   ./build.sh build fuzz   (or any preset with MAPWRIGHT_BUILD_FUZZERS=ON)
//   build/fuzz/tests/fuzz/make_seeds tests/fuzz/corpus
//
// and commit what changed. Every file is a real input: wrappers written by WrapperWriter,
// messages written by capnp::writeMessage, and sealed_image_fuzz inputs in the byte layout
// drivers.h describes.
#include <capnp/any.h>
#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/io.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory_resource>
#include <span>
#include <string>
#include <vector>

#include "../support/wrapper_v1_fixture.h"  // a format version 1 file, as bytes
#include "bundle_wire.h"  // bundle_fuzz: real messages
#include "mapwright/fixed_image.h"
#include "mapwright/wrapper.h"
#include "targets.h"
#include "test_generated.h"  // tests/schema/test.fbs, by flatc
#include "tiny_elf.h"
#include "wrapper.capnp.h"  // the schema's generated C++ (build/*/generated/schema)
#include "wrapper_flat.h"  // FlatBuffers-form metadata, for bare metadata seeds
#include "wrapper_integrity.h"  // the trailer, for wrappers written by MallocMessageBuilder

namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<std::uint8_t>;

void write_file(const fs::path& path, const Bytes& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("writing " + path.string());
  std::printf("%s (%zu bytes)\n", path.c_str(), bytes.size());
}

Bytes read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::span<const std::byte> as_bytes(const std::string& text) {
  return std::as_bytes(std::span(text.data(), text.size()));
}

// A "library" that passes the writer's ELF checks (tiny_elf.h); nothing ever loads it.
std::string fake_elf(const std::string& tag) { return mapwright::fuzz::tiny_elf(tag + ".so"); }

std::string pattern(std::size_t size) {
  std::string bytes(size, '\0');
  for (std::size_t i = 0; i < size; ++i) bytes[i] = static_cast<char>((i * 31) >> 3);
  return bytes;
}

Bytes to_bytes(::capnp::MessageBuilder& message) {
  kj::VectorOutputStream out;
  ::capnp::writeMessage(out, message);
  const auto array = out.getArray();
  return Bytes(array.begin(), array.end());
}

// Wrappers of library entries without bytes (so without chunks, which only WrapperWriter can
// align), written by MallocMessageBuilder: a few hundred bytes each, that reach the
// dependency checks in a few mutations. `deps[i]` are entry i's dependencies. Format version
// 1 (no trailer, no metadata digest: a mutation of the metadata reaches the checks after it)
// or 2 (a valid trailer: the fuzzer mostly finds the digest, and learns the trailer).
Bytes metadata_only(const std::vector<std::string>& names, const std::vector<std::vector<std::string>>& deps,
                    std::uint32_t version = 1) {
  ::capnp::MallocMessageBuilder message;
  auto root = message.initRoot<mapwright::schema::WrapperFile>();
  root.setMagic(mapwright::kWrapperMagic);
  root.setFormatVersion(version);
  root.setProducer("make_seeds");
  auto list = root.initEntries(static_cast<::capnp::uint>(names.size()));
  const auto empty = mapwright::digest_of({});
  for (::capnp::uint i = 0; i < names.size(); ++i) {
    list[i].setName(names[i]);
    list[i].setKind(mapwright::schema::Kind::SHARED_LIBRARY);
    list[i].setDigest(::capnp::Data::Reader(reinterpret_cast<const kj::byte*>(empty.bytes.data()), 16));
    auto d = list[i].initDependencies(static_cast<::capnp::uint>(deps[i].size()));
    for (::capnp::uint k = 0; k < deps[i].size(); ++k) d.set(k, deps[i][k]);
  }
  Bytes bytes = to_bytes(message);
  if (version >= 2) {
    const auto trailer = mapwright::detail::trailer_for_metadata_only(std::as_bytes(std::span(bytes)));
    for (const std::byte b : trailer) bytes.push_back(static_cast<std::uint8_t>(b));
  }
  return bytes;
}

void make_wrappers(const fs::path& dir) {
  using mapwright::WrapperWriter;
  using mapwright::WrapperWriterOptions;
  WrapperWriterOptions quick;
  quick.durable = false;
  quick.producer = "make_seeds";
  {
    WrapperWriter writer(dir / "empty.mwr", quick);
    writer.publish();
  }
  {
    WrapperWriter writer(dir / "libraries_and_data.mwr", quick);
    writer.add_library("liba", as_bytes(fake_elf("liba")));
    writer.add_library("libb", as_bytes(fake_elf("libb")), {"liba"});
    writer.add_data("table", as_bytes(pattern(100)));
    writer.add_data("empty", std::span<const std::byte>());
    writer.publish();
  }
  {
    WrapperWriterOptions options = quick;
    options.chunk_bytes = 4096;  // three chunks, back to back
    WrapperWriter writer(dir / "chunked.mwr", options);
    writer.add_data("blob", as_bytes(pattern(10000)));
    writer.publish();
  }
  {
    // Segments of 12 KiB, chunks of 8 KiB: a gap after each chunk (contiguous() is false).
    WrapperWriterOptions options = quick;
    options.chunk_bytes = 8192;
    options.message.segment_words = 12 * 1024 / 8;
    WrapperWriter writer(dir / "gapped.mwr", options);
    writer.add_data("blob", as_bytes(pattern(20000)));
    writer.publish();
  }
  {
    // Format version 3: entries in zstd frames of 4 KiB (three frames, the last one short; a
    // library in frames; an empty entry with none).
    WrapperWriterOptions options = quick;
    options.compression.method = mapwright::EntryCompression::kZstd;
    options.compression.frame_bytes = 4096;
    WrapperWriter writer(dir / "compressed.mwr", options);
    writer.add_data("table", as_bytes(pattern(10000)));
    writer.add_library("liba", as_bytes(fake_elf("liba")));
    writer.add_data("empty", std::span<const std::byte>());
    writer.publish();
  }
  {
    // The FlatBuffers form (wrapper.fbs): the same kinds of entries, compressed ones too.
    WrapperWriterOptions options = quick;
    options.format = mapwright::WrapperFormat::kFlatBuffers;
    options.chunk_bytes = 4096;
    {
      WrapperWriter writer(dir / "flat.mwr", options);
      writer.add_library("liba", as_bytes(fake_elf("liba")));
      writer.add_library("libb", as_bytes(fake_elf("libb")), {"liba"});
      writer.add_data("table", as_bytes(pattern(10000)));
      writer.add_data("empty", std::span<const std::byte>());
      writer.publish();
    }
    options.compression.method = mapwright::EntryCompression::kZstd;
    options.compression.frame_bytes = 4096;
    {
      WrapperWriter writer(dir / "flat_compressed.mwr", options);
      writer.add_data("table", as_bytes(pattern(10000)));
      writer.publish();
    }
  }
  // Bare metadata FlatBuffers, which the driver wraps (drivers.h, flat_wrapper_around): chunks
  // in its zero pages, dependencies, frames.
  {
    const auto zeros = mapwright::digest_of(std::vector<std::byte>(4096));
    const auto entry = [&](const std::string& name, std::uint16_t kind, std::uint64_t offset,
                           std::vector<std::string> dependencies) {
      mapwright::detail::RawEntry e;
      e.name = name;
      e.kind = kind;
      e.size = offset == 0 ? 0 : 4096;
      e.digest.assign(zeros.bytes.begin(), zeros.bytes.end());
      if (offset != 0) e.chunks.push_back({offset, 4096});
      e.dependencies = std::move(dependencies);
      return e;
    };
    const auto bare = [](const std::vector<std::byte>& bytes) {
      Bytes out(bytes.size());
      std::memcpy(out.data(), bytes.data(), bytes.size());
      return out;
    };
    write_file(dir / "flat_metadata.bin",
               bare(mapwright::detail::encode_flat_metadata(
                   "make_seeds", {entry("a", 0, 4096, {}), entry("b", 0, 8192, {"a"}),
                                  entry("c", 1, 0, {})})));
    auto framed = entry("z", 1, 4096, {});
    framed.compression = 1;
    framed.frame_size = 4096;
    framed.has_frame_ends = true;
    framed.frame_ends = {4096};
    write_file(dir / "flat_metadata_frames.bin",
               bare(mapwright::detail::encode_flat_metadata("make_seeds", {framed})));
  }
  write_file(dir / "metadata_chain.bin", metadata_only({"a", "b", "c"}, {{}, {"a"}, {"a", "b"}}));
  write_file(dir / "metadata_cycle.bin", metadata_only({"a", "b"}, {{"b"}, {"a"}}));
  write_file(dir / "metadata_missing_dependency.bin", metadata_only({"a"}, {{"z"}}));
  write_file(dir / "metadata_duplicate_names.bin", metadata_only({"a", "a"}, {{}, {}}));
  write_file(dir / "metadata_chain_v2.bin", metadata_only({"a", "b", "c"}, {{}, {"a"}, {"a", "b"}}, 2));
  write_file(dir / "metadata_cycle_v2.bin", metadata_only({"a", "b"}, {{"b"}, {"a"}}, 2));
  {
    const auto v1 = mapwright::test::wrapper_v1_fixture();
    Bytes bytes(v1.size());
    std::memcpy(bytes.data(), v1.data(), v1.size());
    write_file(dir / "version1.mwr", bytes);
  }
}


void make_messages(const fs::path& dir, const fs::path& wrappers) {
  // One segment: a struct with a text, a list of structs and a nested struct.
  Bytes single;
  {
    ::capnp::MallocMessageBuilder message;
    auto root = message.getRoot<::capnp::AnyPointer>().initAsAnyStruct(2, 3);
    root.getDataSection()[0] = 0x2a;
    root.getPointerSection()[0].setAs<::capnp::Text>("hello, segment table");
    auto list = root.getPointerSection()[1].initAsListOfAnyStruct(1, 1, 3);
    list[1].getPointerSection()[0].setAs<::capnp::Data>(::capnp::Data::Reader(
        reinterpret_cast<const kj::byte*>("abcdefgh"), 8));
    root.getPointerSection()[2].initAsAnyStruct(1, 0);
    single = to_bytes(message);
  }
  write_file(dir / "single_segment.bin", single);
  // Many small segments joined by far pointers.
  Bytes multi;
  {
    ::capnp::MallocMessageBuilder message(2, ::capnp::AllocationStrategy::FIXED_SIZE);
    auto root = message.getRoot<::capnp::AnyPointer>().initAsAnyStruct(1, 2);
    root.getPointerSection()[0].setAs<::capnp::Text>("far away");
    auto list = root.getPointerSection()[1].initAsAnyList(::capnp::ElementSize::EIGHT_BYTES, 5);
    (void)list;
    multi = to_bytes(message);
  }
  write_file(dir / "multi_segment.bin", multi);
  // Truncated: in the table, and in the last segment.
  write_file(dir / "truncated_header.bin", Bytes(multi.begin(), multi.begin() + 12));
  write_file(dir / "truncated_segment.bin", Bytes(single.begin(), single.end() - 8));
  // Three segments, the last two empty (the free slots MappedMessageBuilder leaves).
  write_file(dir / "empty_segments.bin",
             Bytes{2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0});
  // A wrapper is a message too, with 4096-aligned blobs (and, in format version 2, a second
  // message after it, the trailer: left out here, since this target reads one message).
  const Bytes wrapper = read_file(wrappers / "libraries_and_data.mwr");
  write_file(dir / "wrapper.bin", Bytes(wrapper.begin(), wrapper.end() - mapwright::kWrapperTrailerBytes));
}

// The sealed_image_fuzz layout (drivers.h): 5 header bytes, the payload, the content.
Bytes image_input(std::uint8_t fds_and_kinds, std::uint8_t seals, std::uint8_t flags,
                  std::uint8_t grow, std::uint8_t payload_size, const std::string& content) {
  Bytes input{fds_and_kinds, seals, flags, grow, payload_size};
  input.resize(input.size() + payload_size, 0);
  input.insert(input.end(), content.begin(), content.end());
  return input;
}

void make_image_inputs(const fs::path& dir) {
  const std::string content = "sealed image bytes";
  constexpr std::uint8_t kOneFd = 1 << 6, kTwoFds = 2 << 6, kTenFds = 3 << 6;
  constexpr std::uint8_t kSealed = 1, kMemfd = 0, kPipe = 4, kFile = 3;
  constexpr std::uint8_t kSeqpacket = 1, kDgram = 2, kShutdown = 0x04, kMagic = 0x08, kSize = 0x10,
                         kAdopt = 0x20, kGrow = 0x40, kSendNothing = 0x80;
  write_file(dir / "transfer_valid", image_input(kOneFd | kSealed, 0, kMagic | kSize, 0, 16, content));
  write_file(dir / "transfer_seqpacket_grown",
             image_input(kOneFd | kSealed, 0, kSeqpacket | kMagic | kSize | kGrow, 4, 16, content));
  write_file(dir / "transfer_dgram_wrong_size", image_input(kOneFd | kSealed, 0, kDgram | kMagic, 0, 16, content));
  write_file(dir / "transfer_unsealed",
             image_input(kOneFd | kMemfd, 0x07, kMagic | kSize, 0, 16, content));
  write_file(dir / "transfer_two_fds",
             image_input(kTwoFds | kSealed | kSealed << 3, 0, kMagic | kSize, 0, 16, content));
  write_file(dir / "transfer_ten_fds", image_input(kTenFds | kSealed, 0, kMagic | kSize, 0, 16, content));
  write_file(dir / "transfer_pipe", image_input(kOneFd | kPipe, 0, kMagic | kSize, 0, 16, content));
  write_file(dir / "transfer_no_fd", image_input(kSealed, 0, kMagic | kSize, 0, 16, content));
  write_file(dir / "transfer_eof", image_input(kOneFd | kSealed, 0, kShutdown | kSendNothing, 0, 0, content));
  write_file(dir / "adopt_sealed", image_input(kSealed, 0, kAdopt | kGrow, 2, 0, content));
  write_file(dir / "adopt_three_seals", image_input(kMemfd, 0x0e, kAdopt, 0, 0, content));
  write_file(dir / "adopt_file", image_input(kFile, 0, kAdopt, 0, 0, content));
}

// elf_info_fuzz: tiny libraries with and without a SONAME and DT_NEEDED names, and one cut
// short inside its dynamic section.
void make_elf_inputs(const fs::path& dir) {
  const auto bytes = [](const std::string& text) { return Bytes(text.begin(), text.end()); };
  using mapwright::fuzz::tiny_elf;
  write_file(dir / "soname_and_needed.so", bytes(tiny_elf("liba.so.1", {"libb.so", "libc.so.6"})));
  write_file(dir / "no_soname.so", bytes(tiny_elf("", {"libb.so"})));
  write_file(dir / "nothing_needed.so", bytes(tiny_elf("libkj-0.9.2.so")));
  std::string cut = tiny_elf("libcut.so", {"libx.so"});
  cut.resize(cut.size() - 20);
  write_file(dir / "truncated.so", bytes(cut));
}

// bundle_fuzz: real messages from encode_bundle() with the fds' contents, in the layout of
// drivers.h (flags, each fd's length and content, the message): valid ones on both socket
// kinds, and one for each rule the receiver checks.
Bytes bundle_input(std::uint8_t flags, const std::vector<std::string>& contents,
                   const std::vector<std::uint8_t>& message) {
  Bytes input{flags};
  for (const std::string& content : contents) {
    input.push_back(static_cast<std::uint8_t>(content.size()));
    input.insert(input.end(), content.begin(), content.end());
  }
  input.insert(input.end(), message.begin(), message.end());
  return input;
}

void make_bundle_inputs(const fs::path& dir) {
  using mapwright::detail::WireLibrary;
  const std::vector<std::string> contents = {"library a's bytes", "library b, which needs a"};
  const auto digest = [](const std::string& text) {
    return mapwright::digest_of(std::as_bytes(std::span(text.data(), text.size())));
  };
  const auto wire = [&](std::vector<WireLibrary> libraries) {
    const auto bytes = mapwright::detail::encode_bundle(libraries);
    std::vector<std::uint8_t> out(bytes.size());
    std::memcpy(out.data(), bytes.data(), bytes.size());
    return out;
  };
  const std::vector<WireLibrary> good = {
      {"liba", digest(contents[0]), contents[0].size(), {}},
      {"libb", digest(contents[1]), contents[1].size(), {0}},
  };
  constexpr std::uint8_t kTwo = 2, kStream = 0x08, kUnsealed = 0x10, kThreeSeals = 0x20,
                         kPipe = 0x30, kClose = 0x40;
  write_file(dir / "valid_seqpacket", bundle_input(kTwo, contents, wire(good)));
  write_file(dir / "valid_stream", bundle_input(kTwo | kStream | kClose, contents, wire(good)));
  write_file(dir / "empty", bundle_input(0, {}, wire({})));
  write_file(dir / "unsealed", bundle_input(kTwo | kUnsealed, contents, wire(good)));
  write_file(dir / "three_seals", bundle_input(kTwo | kThreeSeals, contents, wire(good)));
  write_file(dir / "pipe", bundle_input(kTwo | kPipe, contents, wire(good)));
  write_file(dir / "one_fd_short", bundle_input(1, {contents[0]}, wire(good)));
  auto changed = good;
  changed[1].digest.bytes[0] ^= std::byte{1};
  write_file(dir / "wrong_digest", bundle_input(kTwo, contents, wire(changed)));
  changed = good;
  changed[0].dependencies = {1};
  changed[1].dependencies = {};
  write_file(dir / "dependency_after", bundle_input(kTwo, contents, wire(changed)));
  changed = good;
  changed[1].name = "liba";
  write_file(dir / "duplicate_name", bundle_input(kTwo, contents, wire(changed)));
  auto cut = wire(good);
  cut.resize(cut.size() - 3);
  write_file(dir / "truncated_stream", bundle_input(kTwo | kStream | kClose, contents, cut));
}

// flatbuffer_fuzz: buffers of the test schema, as the stock builder writes them.
void make_flatbuffers(const fs::path& dir) {
  namespace fb = ::mapwright::test::fb;
  const auto save = [&](const char* name, flatbuffers::FlatBufferBuilder& fbb) {
    write_file(dir / name, std::vector<std::uint8_t>(fbb.GetBufferPointer(),
                                                     fbb.GetBufferPointer() + fbb.GetSize()));
  };
  {
    flatbuffers::FlatBufferBuilder fbb;
    std::vector<flatbuffers::Offset<fb::Item>> items;
    for (int i = 0; i < 6; ++i) {
      std::vector<flatbuffers::Offset<flatbuffers::String>> tags;
      for (int t = 0; t < i % 3; ++t) tags.push_back(fbb.CreateSharedString("tag" + std::to_string(t)));
      items.push_back(fb::CreateItem(fbb, fbb.CreateString("item" + std::to_string(i)), i * 1000003ull,
                                     tags.empty() ? 0 : fbb.CreateVector(tags)));
    }
    const std::vector<std::uint8_t> blob = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    const std::vector<std::uint32_t> numbers = {10, 20, 30};
    const auto child = fb::CreateCatalog(fbb, fbb.CreateString("child"));
    fbb.Finish(fb::CreateCatalog(fbb, fbb.CreateString("catalog"), fbb.CreateVector(items),
                                 fbb.CreateVector(blob), fbb.CreateVector(numbers), child),
               fb::CatalogIdentifier());
    save("catalog", fbb);
  }
  {
    flatbuffers::FlatBufferBuilder fbb;
    fbb.Finish(fb::CreateCatalog(fbb));
    save("empty_catalog", fbb);
  }
  {
    // A chain of nested catalogs, deeper than the tight limit of the driver.
    flatbuffers::FlatBufferBuilder fbb;
    flatbuffers::Offset<fb::Catalog> inner = 0;
    for (int depth = 0; depth < 8; ++depth) {
      inner = fb::CreateCatalog(fbb, fbb.CreateString("level" + std::to_string(depth)), 0, 0, 0, inner);
    }
    fbb.Finish(inner);
    save("nested", fbb);
  }
  {
    // Page-aligned bytes, as MappedFlatBufferBuilder::aligned_bytes() lays them out.
    flatbuffers::FlatBufferBuilder fbb;
    std::uint8_t* data = nullptr;
    fbb.PreAlign(100, 4096);
    const auto blob = fbb.CreateUninitializedVector(100, &data);
    std::memset(data, 0xab, 100);
    fbb.Finish(fb::CreateCatalog(fbb, 0, 0, blob));
    save("aligned_blob", fbb);
  }
}

}  // namespace

// Fixed-base images (fixed_image.h), without declared types (the driver expects none): std::pmr
// strings and a vector of them (pointers found by the scan), a table of noted pointers, and
// an empty image.
void make_fixed_images(const fs::path& dir) {
  const auto save = [&](const char* name, const mapwright::SealedImage& image) {
    const auto bytes = image.map();
    write_file(dir / name, Bytes(reinterpret_cast<const std::uint8_t*>(bytes.data()),
                                 reinterpret_cast<const std::uint8_t*>(bytes.data()) + bytes.size()));
  };
  mapwright::FixedImageOptions options;
  options.base = 0x300000000000;
  options.capacity = 1 << 20;
  {
    mapwright::FixedImageBuilder builder(options);
    auto* list = builder.create<std::pmr::vector<std::pmr::string>>(builder.resource());
    for (int i = 0; i < 12; ++i) list->emplace_back("string number " + std::to_string(i) + (i % 3 ? "" : std::string(30, '+')));
    builder.set_root(list);
    save("strings.img", builder.seal());
  }
  {
    options.scan_pointers = false;
    mapwright::FixedImageBuilder builder(options);
    auto** table = static_cast<std::byte**>(builder.allocate(4 * sizeof(void*), 8));
    auto* blob = static_cast<std::byte*>(builder.allocate(64, 8));
    for (int i = 0; i < 4; ++i) {
      table[i] = i == 2 ? nullptr : blob + 16 * i;
      builder.note_pointer(&table[i]);
    }
    builder.set_root(table);
    save("noted.img", builder.seal());
  }
  {
    mapwright::FixedImageBuilder builder(options);
    save("empty.img", builder.seal());
  }
}

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR   (tests/fuzz/corpus)\n", argv[0]);
    return 2;
  }
  try {
    const fs::path root = argv[1];
    for (const char* target : mapwright::fuzz::kTargets) {
      fs::create_directories(root / target);
    }
    make_wrappers(root / "wrapper_fuzz");
    make_messages(root / "segment_table_fuzz", root / "wrapper_fuzz");
    make_image_inputs(root / "sealed_image_fuzz");
    make_elf_inputs(root / "elf_info_fuzz");
    make_bundle_inputs(root / "bundle_fuzz");
    make_flatbuffers(root / "flatbuffer_fuzz");
    make_fixed_images(root / "fixed_image_fuzz");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "make_seeds: %s\n", e.what());
    return 1;
  } catch (const kj::Exception& e) {
    std::fprintf(stderr, "make_seeds: %s\n", e.getDescription().cStr());
    return 1;
  }
  return 0;
}
