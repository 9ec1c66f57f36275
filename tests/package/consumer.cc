// Built against an installed mapwright: grows a memfd region by stores and seals it, then
// writes a wrapper file and reads it back. With CONSUMER_SCHEMA, also builds a message of its
// own schema (consumer.capnp, compiled by capnp_generate_cpp) in a region with
// MappedMessageBuilder and reads it back with MappedMessageReader. With CONSUMER_EXPECT_CXX23,
// fails to compile unless the compiler is in C++23 mode (whatever flags pkg-config added).
// Prints the file that mapwright's code was loaded from (the shared library, or this program
// when linked statically), for check.sh to compare. Arg: a scratch directory for the wrapper.
#include <dlfcn.h>
#include <mapwright/mapwright.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>

#ifdef CONSUMER_SCHEMA
#include "consumer.capnp.h"
#endif

#ifdef CONSUMER_EXPECT_CXX23
static_assert(__cplusplus > 202002L, "compiled as C++20 or older, not as the C++23 asked for");
#endif

namespace {

#ifdef CONSUMER_SCHEMA
constexpr std::uint64_t kValues = 1 << 20;  // 8 MiB of values: the region grows by faults

bool schema_round_trip() {
  auto region = mapwright::Region::memfd("consumer-message");
  {
    mapwright::MappedMessageBuilder builder(region);
    auto reading = builder.initRoot<consumer::Reading>();
    reading.setLabel("from the package test");
    auto values = reading.initValues(kValues);
    for (std::uint64_t i = 0; i < kValues; ++i) values.set(i, i * 3);
    builder.finish();
  }
  const mapwright::SealedImage image = std::move(region).seal();
  mapwright::MappedMessageReader reader(image);
  const auto reading = reader.getRoot<consumer::Reading>();
  const auto values = reading.getValues();
  const bool ok = reading.getLabel() == "from the package test" && values.size() == kValues &&
                  values[0] == 0 && values[kValues - 1] == (kValues - 1) * 3;
  std::printf("consumer: schema message %s (%llu bytes)\n", ok ? "ok" : "WRONG",
              static_cast<unsigned long long>(image.size()));
  return ok;
}
#endif

}  // namespace

int main(int argc, char** argv) {
  auto region = mapwright::Region::memfd("consumer");
  std::memset(region.data(), 0x5a, 3 << 20);  // runs past the end: the handler grows the memfd
  region.finish(3 << 20);
  const mapwright::SealedImage image = std::move(region).seal();
  const auto bytes = image.map();
  bool ok = image.size() == (3u << 20) && bytes[12345] == std::byte{0x5a};

  const std::string path = std::string(argc > 1 ? argv[1] : ".") + "/consumer.mwr";
  mapwright::WrapperWriter writer(path);
  writer.add_data("sealed", bytes);
  writer.publish();
  const auto wrapper = mapwright::Wrapper::open(path);
  wrapper.verify();
  ok = ok && wrapper.entry("sealed").size == image.size();
  std::printf("consumer: %s (%llu bytes sealed, wrapper of %llu bytes)\n", ok ? "ok" : "WRONG",
              static_cast<unsigned long long>(image.size()),
              static_cast<unsigned long long>(wrapper.file_size()));
#ifdef CONSUMER_SCHEMA
  ok = schema_round_trip() && ok;
#endif

  // FlatBuffers built in place (header-only FlatBuffers, as Debian installs it).
  mapwright::MappedFlatBufferBuilder fbb(mapwright::FlatBufferTarget::memfd("consumer-fb"));
  fbb.finish(fbb.CreateString("flat"));
  const mapwright::MappedFlatBuffer flat(fbb.seal());
  const auto* text = flatbuffers::GetRoot<flatbuffers::String>(flat.data());
  const bool flat_ok = text->str() == "flat";
  std::printf("consumer: flatbuffer %s\n", flat_ok ? "ok" : "WRONG");
  ok = flat_ok && ok;

  // A fixed-base image and one that points into it, mapped together by a FixedImageSet.
  std::optional<mapwright::SealedImage> pool_image;
  std::optional<mapwright::SealedImage> table_image;
  {
    mapwright::FixedImageOptions options;
    options.name = "pool";
    options.capacity = 1 << 20;
    mapwright::FixedImageBuilder builder(options);
    char* word = static_cast<char*>(builder.allocate(6, 1));
    std::memcpy(word, "fixed", 6);
    builder.set_root(word);
    pool_image.emplace(builder.seal());
    const mapwright::FixedImage pool = mapwright::FixedImage::map(*pool_image);  // at its base
    options.name = "table";
    options.base = mapwright::kDefaultFixedBase + (1ull << 32);
    options.dependencies = {pool.as_dependency()};
    mapwright::FixedImageBuilder table(options);
    table.set_root(table.create<const char*>(pool.root<char>()));
    table_image.emplace(table.seal());
  }
  mapwright::FixedImageSet set([&](const std::string& name) { return name == "pool" ? *pool_image : *table_image; });
  const mapwright::FixedImage& table = set.map("table");
  const bool fixed_ok = table.report().at_base && set.size() == 2 &&
                        std::strcmp(*table.root<const char*>(), "fixed") == 0;
  std::printf("consumer: fixed images %s\n", fixed_ok ? "ok" : "WRONG");
  ok = fixed_ok && ok;

  // A fully static program (linked with -static) has no dynamic objects for dladdr to name.
  Dl_info info{};
  const bool named = dladdr(reinterpret_cast<void*>(&mapwright::handle_fault), &info) != 0 &&
                     info.dli_fname != nullptr;
  std::printf("consumer: mapwright code in %s\n", named ? info.dli_fname : "(no dynamic object)");
  return ok ? 0 : 1;
}
