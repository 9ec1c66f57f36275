// examples/fixed_image.cc — a 1,000,000-entry string -> record map built once in a fixed-base
// image, then loaded at startup by another process: no parsing, no relocation.
//
//   build/release/examples/fixed_image [ENTRIES]
//
// This process builds the map (std::pmr::unordered_map in the image), seals it and serves it
// from a broker (fixed_image.h) on a Unix socket; a second process — this program run again
// with `--client SOCKET` — asks for it, maps it at its base and looks keys up. Then the map is
// built the way a program would without mapwright (read a serialized form, insert every
// entry), for comparison.
#include <mapwright/fixed_image.h>
#include <unistd.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory_resource>
#include <string>
#include <thread>
#include <unordered_map>

namespace {

struct Record {
  std::uint64_t id;
  double weight;
};
using Map = std::pmr::unordered_map<std::pmr::string, Record>;

// Both processes say what they expect the image to hold: a changed Record is refused.
std::vector<mapwright::FixedImageType> types() {
  return {mapwright::fixed_type<Map>("Map"), mapwright::fixed_type<Record>("Record")};
}

double since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count();
}

int client(const char* socket) {
  const auto start = std::chrono::steady_clock::now();
  const mapwright::SealedImage image = mapwright::request_image(socket, "dictionary");
  mapwright::FixedMapOptions options;
  options.types = types();
  options.check = mapwright::FixedMapOptions::Check::kHeader;  // from our own broker
  const mapwright::FixedImage mapped = mapwright::FixedImage::map(image, options);
  const Map& map = *mapped.root<Map>();
  const std::uint64_t wanted = map.size() * 7 / 9;
  const auto found = map.find(std::pmr::string("key-" + std::to_string(wanted)));
  const double startup = since(start);
  std::printf("client: received and mapped %llu bytes %s in %.0f us (first lookup included): "
              "key-%llu -> id %llu, weight %.1f; %zu entries\n",
              static_cast<unsigned long long>(mapped.size()),
              mapped.report().at_base ? "at its base, nothing relocated" : "elsewhere, relocated",
              startup, static_cast<unsigned long long>(wanted),
              static_cast<unsigned long long>(found == map.end() ? 0 : found->second.id),
              found == map.end() ? 0.0 : found->second.weight, map.size());
  return found != map.end() && mapped.report().at_base ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) try {
  if (argc == 3 && std::string(argv[1]) == "--client") return client(argv[2]);
  const std::uint64_t entries = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 1'000'000;

  // 1. Build once.
  auto start = std::chrono::steady_clock::now();
  mapwright::FixedImageOptions options;
  options.name = "dictionary";
  options.capacity = 4ull << 30;
  options.types = types();
  mapwright::FixedImageBuilder builder(options);
  Map* map = builder.create<Map>(builder.resource());
  map->reserve(entries);
  for (std::uint64_t i = 0; i < entries; ++i) {
    map->emplace("key-" + std::to_string(i), Record{i, static_cast<double>(i) / 2});
  }
  builder.set_root(map);
  mapwright::SealedImage image = builder.seal();
  std::printf("built: %llu entries, %llu bytes, %llu pointers on %llu pages, in %.0f ms\n",
              static_cast<unsigned long long>(entries),
              static_cast<unsigned long long>(builder.stats().size),
              static_cast<unsigned long long>(builder.stats().relocations),
              static_cast<unsigned long long>(builder.stats().pointer_pages), since(start) / 1000);
  std::fflush(stdout);  // before the second process writes to the same output

  // 2. Serve it; another process loads it at startup.
  const std::filesystem::path socket =
      std::filesystem::temp_directory_path() / ("fixed_image_example." + std::to_string(::getpid()));
  mapwright::FixedImageBroker broker(socket);
  broker.add("dictionary", std::move(image));
  std::thread server([&] { broker.serve(); });
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::execl("/proc/self/exe", argv[0], "--client", socket.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  broker.stop();
  server.join();

  // 3. What a program does without it: read the entries and insert them.
  start = std::chrono::steady_clock::now();
  std::unordered_map<std::string, Record> rebuilt;
  rebuilt.reserve(entries);
  for (std::uint64_t i = 0; i < entries; ++i) {
    rebuilt.emplace("key-" + std::to_string(i), Record{i, static_cast<double>(i) / 2});
  }
  std::printf("without it: inserting the %zu entries into a std::unordered_map takes %.0f ms "
              "(before any parsing)\n", rebuilt.size(), since(start) / 1000);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
} catch (const std::exception& e) {
  std::fprintf(stderr, "fixed_image: %s\n", e.what());
  return 1;
}
