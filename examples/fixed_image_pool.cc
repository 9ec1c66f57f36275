// examples/fixed_image_pool.cc — fixed-base images that point into another: one string pool
// shared by two indexes, each index its own image, served by a broker; a second process maps
// an index and gets the pool mapped with it, each at its base.
//
//   build/release/examples/fixed_image_pool [WORDS]
//
// This process builds "strings" (the words), then "by-name" (word -> id, a std::pmr::
// unordered_map whose keys are std::string_views into the pool) and "sorted" (the words in
// order), each recording the pool as a dependency by digest and address. A second process —
// this program run again with `--client SOCKET` — maps both indexes through a FixedImageSet:
// the pool is fetched and mapped once, first, at its base, and checked to be the very pool the
// indexes were built against.
#include <mapwright/fixed_image.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory_resource>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

namespace {

using Words = std::pmr::vector<std::string_view>;  // views of the pool's bytes
using ByName = std::pmr::unordered_map<std::string_view, std::uint32_t>;

// What each image holds, as both processes see it: a change to these types is refused.
mapwright::FixedMapOptions expecting(mapwright::FixedImageType type) {
  mapwright::FixedMapOptions options;
  options.types = {std::move(type)};
  options.check = mapwright::FixedMapOptions::Check::kHeader;  // from our own broker
  return options;
}
mapwright::FixedImageType words_type() { return mapwright::fixed_type<Words>("Words"); }
mapwright::FixedImageType by_name_type() { return mapwright::fixed_type<ByName>("ByName"); }

double since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count();
}

// The pool at the default base; each index 4 GiB above the one before.
mapwright::FixedImageOptions image_options(const char* name, int slot, mapwright::FixedImageType type) {
  mapwright::FixedImageOptions options;
  options.name = name;
  options.base = mapwright::kDefaultFixedBase + static_cast<std::uintptr_t>(slot) * (4ull << 30);
  options.capacity = 2ull << 30;
  options.types = {std::move(type)};
  return options;
}

int client(const char* socket) {
  mapwright::FixedImageSet set(mapwright::broker_source(socket));
  set.expect("strings", expecting(words_type()));
  set.expect("by-name", expecting(by_name_type()));
  set.expect("sorted", expecting(words_type()));

  auto start = std::chrono::steady_clock::now();
  const mapwright::FixedImage& by_name = set.map("by-name");  // and "strings", first
  const ByName& ids = *by_name.root<ByName>();
  const auto found = ids.find("word-4242");
  const double first = since(start);
  start = std::chrono::steady_clock::now();
  const mapwright::FixedImage& sorted = set.map("sorted");  // "strings" is mapped already
  const Words& in_order = *sorted.root<Words>();
  const double second = since(start);
  const mapwright::FixedImage& strings = *set.find("strings");

  const bool shared = found != ids.end() && in_order.front().data() ==
                          (*strings.root<Words>())[std::stoul(std::string(in_order.front().substr(5)))].data();
  std::printf("client: mapped 'by-name' with its pool in %.0f us (first lookup included): "
              "word-4242 -> id %u\n", first, found == ids.end() ? 0u : found->second);
  std::printf("client: mapped 'sorted' in %.0f us, the pool already there: first word %.*s, "
              "last %.*s\n", second, static_cast<int>(in_order.front().size()), in_order.front().data(),
              static_cast<int>(in_order.back().size()), in_order.back().data());
  std::printf("client: %zu images, all at their base: %s; both indexes point into the one pool: %s\n",
              set.size(),
              strings.report().at_base && by_name.report().at_base && sorted.report().at_base ? "yes" : "no",
              shared ? "yes" : "no");
  return shared && found->second == 4242 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) try {
  if (argc == 3 && std::string(argv[1]) == "--client") return client(argv[2]);
  const std::uint32_t count = argc > 1 ? static_cast<std::uint32_t>(std::strtoul(argv[1], nullptr, 10)) : 200'000;
  if (count < 5000) throw std::invalid_argument("at least 5000 words");

  // 1. The pool: every word's bytes, and a view of each.
  mapwright::FixedImageBuilder pool_builder(image_options("strings", 0, words_type()));
  Words* words = pool_builder.create<Words>(pool_builder.resource());
  words->reserve(count);
  for (std::uint32_t i = 0; i < count; ++i) {
    const std::string text = "word-" + std::to_string(i);
    char* at = static_cast<char*>(pool_builder.allocate(text.size(), 1));
    std::copy(text.begin(), text.end(), at);
    words->emplace_back(at, text.size());
  }
  pool_builder.set_root(words);
  mapwright::SealedImage pool_image = pool_builder.seal();

  // 2. The indexes, built with the pool mapped at its base: their views point into it.
  const mapwright::FixedImage pool = mapwright::FixedImage::map(pool_image, expecting(words_type()));
  const Words& pool_words = *pool.root<Words>();
  auto by_name_options = image_options("by-name", 1, by_name_type());
  by_name_options.dependencies = {pool.as_dependency()};
  mapwright::FixedImageBuilder by_name_builder(by_name_options);
  ByName* ids = by_name_builder.create<ByName>(by_name_builder.resource());
  ids->reserve(count);
  for (std::uint32_t i = 0; i < count; ++i) ids->emplace(pool_words[i], i);
  by_name_builder.set_root(ids);
  mapwright::SealedImage by_name_image = by_name_builder.seal();

  auto sorted_options = image_options("sorted", 2, words_type());
  sorted_options.dependencies = {pool.as_dependency()};
  mapwright::FixedImageBuilder sorted_builder(sorted_options);
  Words* sorted = sorted_builder.create<Words>(pool_words.begin(), pool_words.end(), sorted_builder.resource());
  std::sort(sorted->begin(), sorted->end());
  sorted_builder.set_root(sorted);
  mapwright::SealedImage sorted_image = sorted_builder.seal();
  std::printf("built: 'strings' %llu bytes, 'by-name' %llu bytes, 'sorted' %llu bytes (%u words)\n",
              static_cast<unsigned long long>(pool_image.size()),
              static_cast<unsigned long long>(by_name_image.size()),
              static_cast<unsigned long long>(sorted_image.size()), count);
  std::fflush(stdout);  // before the second process writes to the same output

  // 3. Serve all three; another process loads an index at startup.
  const std::filesystem::path socket =
      std::filesystem::temp_directory_path() / ("fixed_image_pool." + std::to_string(::getpid()));
  mapwright::FixedImageBroker broker(socket);
  broker.add("strings", std::move(pool_image));
  broker.add("by-name", std::move(by_name_image));
  broker.add("sorted", std::move(sorted_image));
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
  std::printf("broker: %llu images handed out\n", static_cast<unsigned long long>(broker.served()));
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
} catch (const std::exception& e) {
  std::fprintf(stderr, "fixed_image_pool: %s\n", e.what());
  return 1;
}
