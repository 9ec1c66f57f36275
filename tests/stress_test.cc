// tests/stress_test.cc — a randomized stress run of the growth machinery: regions created,
// written past their end, grown, finished, sealed or published and destroyed by several
// threads at once, while other threads keep faulting on long-lived regions of their own.
//
// Who runs:
//   * N workers (4 in the short run; 2 x hardware_concurrency, at least 4, in a soak), each
//     in a loop: a Region (memfd mostly, sometimes a file or a staged file in a DiskDir) with
//     random steps and capacity; sometimes ensure() first; a pseudo-random amount (256 KiB
//     to 4 MiB) of the test pattern stored with plain stores in sequential, reverse or
//     shuffled 64 KiB chunks, so that growth happens by SIGBUS at and far past the end;
//     sometimes an unaligned finish() half-way (then ensure(), as region.h requires, and
//     more stores); finish(); the file checked; then a memfd is sometimes seal()ed and the
//     image checked, a staged region publish()ed and the target checked; then destroyed
//     (sometimes after a move).
//   * 2 faulters sharing one long-lived memfd region with small growth steps: each round
//     both store interleaved 16 KiB stripes from offset 0 up to a random size (so their
//     faults meet at the end of the file), then the region is finished, checked, and cut
//     back to 0 for the next round.
//   * 1 faulter growing its own long-lived disk-file region (fallocate) by stores, round
//     after round, checked after each.
//
// Every region's content is checked the same way: the file's size (fstat) is exactly what
// was finished, and a checksum of its words read back by pread(2) on the fd — independent
// of the mapping the stores went through — equals the checksum of the pattern that was
// stored (on a mismatch, the first wrong offset is located). A lost, torn or misplaced store
// changes the checksum. Any Error, any recorded growth failure, a SIGBUS that kills the
// process or a run that does not end (a watchdog aborts it) fails the test.
//
// Duration: about 4 s by default (also under ASan and TSan, where MAPWRIGHT_TEST_BYTES=64MiB
// keeps the shared region's rounds at 8 MiB). A soak run takes its duration in seconds from
// MAPWRIGHT_SOAK_SECONDS:
//
//     MAPWRIGHT_SOAK_SECONDS=600 ./build/release/tests/stress_test
//
// MAPWRIGHT_STRESS_THREADS sets the number of workers, MAPWRIGHT_STRESS_SEED the base seed
// (the seed of a run is printed, and recorded as a test property, to reproduce the choices
// each thread made; thread timing is not reproducible).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <numeric>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "child.h"
#include "content.h"
#include "mapwright/error.h"
#include "mapwright/region.h"
#include "mapwright/sealed_image.h"
#include "region_helpers.h"

namespace mapwright {
namespace {

using namespace test;  // the shared helpers in tests/support
using Clock = std::chrono::steady_clock;

// ---- configuration ---------------------------------------------------------------------

std::optional<std::uint64_t> env_number(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return std::nullopt;
  char* end = nullptr;
  const std::uint64_t number = std::strtoull(value, &end, 0);
  if (end == value) return std::nullopt;
  return number;
}

struct Config {
  std::chrono::milliseconds duration{4000};
  unsigned workers = 4;
  unsigned faulters = 2;             // threads sharing the long-lived memfd region
  std::uint64_t seed = 0;
  std::uint64_t min_write = 256 * kKiB;
  std::uint64_t max_write = 4 * kMiB;   // per worker region
  std::uint64_t shared_max = 32 * kMiB; // per round of the shared region
  std::uint64_t own_max = 8 * kMiB;     // per round of the disk-file faulter's region
};

Config config_from_environment() {
  Config config;
  if (const auto seconds = env_number("MAPWRIGHT_SOAK_SECONDS"); seconds && *seconds > 0) {
    config.duration = std::chrono::seconds(*seconds);
    config.workers = std::max(4u, 2 * std::thread::hardware_concurrency());
  }
  if (const auto threads = env_number("MAPWRIGHT_STRESS_THREADS"); threads && *threads > 0) {
    config.workers = static_cast<unsigned>(std::min<std::uint64_t>(*threads, 256));
  }
  config.seed = env_number("MAPWRIGHT_STRESS_SEED").value_or(std::random_device{}());
  // 32 MiB rounds by default, 8 MiB under the sanitizers' MAPWRIGHT_TEST_BYTES=64MiB.
  config.shared_max = std::clamp<std::uint64_t>(test_bytes() / 8, 4 * kMiB, 32 * kMiB);
  return config;
}

// splitmix64: small, fast, and good enough to pick sizes and orders.
class Rng {
 public:
  explicit Rng(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n); n > 0.
  std::uint64_t below(std::uint64_t n) { return next() % n; }
  // Uniform in [low, high].
  std::uint64_t between(std::uint64_t low, std::uint64_t high) { return low + below(high - low + 1); }
  bool one_in(std::uint64_t n) { return below(n) == 0; }
  template <class T, std::size_t N>
  T pick(const T (&choices)[N]) {
    return choices[below(N)];
  }

 private:
  std::uint64_t state_;
};

// ---- checking a file -------------------------------------------------------------------

// FNV-1a over 8-byte words in file order: a word lost (still zero), torn, moved or stored
// twice changes it.
constexpr std::uint64_t kFnvBasis = 0xcbf29ce484222325ull;
constexpr std::uint64_t kFnvPrime = 0x100000001b3ull;

std::uint64_t checksum_of_pattern(std::uint64_t words, std::uint64_t seed) {
  std::uint64_t sum = kFnvBasis;
  for (std::uint64_t i = 0; i < words; ++i) sum = (sum ^ pattern(i, seed)) * kFnvPrime;
  return sum;
}

// The checksum of the first `words` words of the file behind `fd`, read with pread(2);
// nothing on a short read.
std::optional<std::uint64_t> checksum_of_file(int fd, std::uint64_t words) {
  constexpr std::uint64_t kChunkWords = 128 * 1024;  // 1 MiB
  std::vector<std::uint64_t> buffer(kChunkWords);
  std::uint64_t sum = kFnvBasis;
  for (std::uint64_t w = 0; w < words; w += kChunkWords) {
    const std::uint64_t n = std::min(kChunkWords, words - w);
    if (pread_all(fd, buffer.data(), n * 8, w * 8) != n * 8) return std::nullopt;
    for (std::uint64_t i = 0; i < n; ++i) sum = (sum ^ buffer[i]) * kFnvPrime;
  }
  return sum;
}

std::uint64_t file_size(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return UINT64_MAX;
  return static_cast<std::uint64_t>(st.st_size);
}

// "" when the file behind `fd` is exactly `bytes` long (a multiple of 8) and holds the
// pattern of `seed`, by checksum; else what is wrong.
std::string verify_file(int fd, std::uint64_t bytes, std::uint64_t seed) {
  const std::uint64_t size = file_size(fd);
  if (size != bytes) {
    return "file is " + std::to_string(size) + " bytes, expected " + std::to_string(bytes);
  }
  const std::uint64_t words = bytes / 8;
  const std::optional<std::uint64_t> actual = checksum_of_file(fd, words);
  if (!actual) return "short pread of " + std::to_string(bytes) + " bytes";
  const std::uint64_t expected = checksum_of_pattern(words, seed);
  if (*actual != expected) {
    const std::string where = check_words(fd, 0, words, seed);
    return "checksum mismatch over " + std::to_string(bytes) + " bytes (" +
           (where.empty() ? "the words match on a second read" : where) + ")";
  }
  return "";
}

// The same check of a mapping's bytes (a sealed image's read-only view).
std::string verify_bytes(std::span<const std::byte> bytes, std::uint64_t expected_size,
                         std::uint64_t seed) {
  if (bytes.size() != expected_size) {
    return "mapping is " + std::to_string(bytes.size()) + " bytes, expected " +
           std::to_string(expected_size);
  }
  const auto* words = reinterpret_cast<const std::uint64_t*>(bytes.data());
  std::uint64_t sum = kFnvBasis;
  for (std::uint64_t i = 0; i < expected_size / 8; ++i) sum = (sum ^ words[i]) * kFnvPrime;
  if (sum != checksum_of_pattern(expected_size / 8, seed)) return "checksum mismatch in mapping";
  return "";
}

// ---- what all threads share --------------------------------------------------------------

struct Totals {
  std::atomic<std::uint64_t> regions{0};        // regions finished and checked
  std::atomic<std::uint64_t> bytes{0};          // bytes checked by checksum
  std::atomic<std::uint64_t> faults{0};         // growth faults resolved (RegionStats)
  std::atomic<std::uint64_t> growths{0};
  std::atomic<std::uint64_t> memfds{0}, files{0}, staged{0};
  std::atomic<std::uint64_t> sealed{0}, published{0}, ensured{0}, refinished{0}, moved{0};
  std::atomic<std::uint64_t> shared_rounds{0}, own_rounds{0};
};

class StressRun {
 public:
  StressRun(const Config& config, const DiskDir& dir)
      : config(config), dir(dir), deadline(Clock::now() + config.duration) {}

  bool running() const {
    return !stopped_.load(std::memory_order_relaxed) && Clock::now() < deadline;
  }
  // Records a failure and stops every thread.
  void fail(const std::string& who, const std::string& what) {
    const std::lock_guard lock(mutex_);
    failures_.push_back(who + ": " + what);
    stopped_.store(true);
  }
  std::vector<std::string> failures() const {
    const std::lock_guard lock(mutex_);
    return failures_;
  }
  // A worker's region, finished and checked.
  void count(const Region& region, std::uint64_t bytes) {
    totals.regions.fetch_add(1, std::memory_order_relaxed);
    totals.bytes.fetch_add(bytes, std::memory_order_relaxed);
    count_growth(region);
  }
  void count_growth(const Region& region) {
    const RegionStats stats = region.stats();
    totals.faults.fetch_add(stats.faults, std::memory_order_relaxed);
    totals.growths.fetch_add(stats.growths, std::memory_order_relaxed);
  }

  const Config& config;
  const DiskDir& dir;
  const Clock::time_point deadline;
  Totals totals;

 private:
  std::atomic<bool> stopped_{false};
  mutable std::mutex mutex_;
  std::vector<std::string> failures_;
};

// Stores the pattern of `seed` into words [first, last) of `base` in 64 KiB chunks, in
// sequential, reverse or shuffled order (`order` 0, 1, 2).
void store_chunks(std::byte* base, std::uint64_t first, std::uint64_t last, std::uint64_t seed,
                  unsigned order, Rng& rng) {
  constexpr std::uint64_t kChunkWords = 64 * kKiB / 8;
  std::vector<std::uint64_t> starts;
  for (std::uint64_t w = first; w < last; w += kChunkWords) starts.push_back(w);
  if (order == 1) std::reverse(starts.begin(), starts.end());
  if (order == 2) {
    for (std::size_t i = starts.size(); i > 1; --i) std::swap(starts[i - 1], starts[rng.below(i)]);
  }
  for (const std::uint64_t w : starts) fill(base, w, std::min(last, w + kChunkWords), seed);
}

// ---- the workers -------------------------------------------------------------------------

enum class Kind { kMemfd, kFile, kStaged };

// One region's life, from creation to destruction. Returns "" or what went wrong.
std::string worker_iteration(StressRun& run, unsigned worker, std::uint64_t iteration, Rng& rng) {
  const std::uint64_t seed = rng.next();
  const std::uint64_t bytes = rng.between(run.config.min_write, run.config.max_write) / 8 * 8;
  const std::uint64_t words = bytes / 8;

  RegionOptions options;
  options.min_step = rng.pick({4 * kKiB, 64 * kKiB, 1 * kMiB});
  options.max_step = std::max(options.min_step, rng.pick({64 * kKiB, 1 * kMiB, 4 * kMiB}));
  // Mostly a capacity just above what is written, so that growth is clamped at it.
  if (!rng.one_in(4)) options.capacity = bytes + rng.below(2 * kMiB);

  const std::uint64_t kind_roll = rng.below(8);
  const Kind kind = kind_roll < 5 ? Kind::kMemfd : kind_roll < 7 ? Kind::kFile : Kind::kStaged;
  const std::string base_name = "stress-" + std::to_string(worker) + "-" + std::to_string(iteration);
  const std::filesystem::path path = run.dir / base_name;
  std::optional<Region> made;
  switch (kind) {
    case Kind::kMemfd:
      made.emplace(Region::memfd(base_name, options));
      run.totals.memfds.fetch_add(1, std::memory_order_relaxed);
      break;
    case Kind::kFile:
      made.emplace(Region::file(path, options));
      run.totals.files.fetch_add(1, std::memory_order_relaxed);
      break;
    case Kind::kStaged:
      made.emplace(Region::staged(path, options));
      run.totals.staged.fetch_add(1, std::memory_order_relaxed);
      break;
  }
  Region& region = *made;
  std::byte* const base = region.data();

  if (rng.one_in(3)) {
    region.ensure(rng.between(1, bytes));
    run.totals.ensured.fetch_add(1, std::memory_order_relaxed);
  }
  const auto order = static_cast<unsigned>(rng.below(3));
  if (order == 0 && rng.one_in(4)) {
    // Half-way: an unaligned finish, then ensure() past the partial page (region.h: stores
    // into the rest of that page do not fault until the file grows again), then on by faults.
    const std::uint64_t middle = rng.between(1, words - 1);
    store_chunks(base, 0, middle, seed, order, rng);
    region.finish(middle * 8);
    if (file_size(region.fd()) != middle * 8) return "finish() half-way did not set the size";
    region.ensure(middle * 8 + 1);
    store_chunks(base, middle, words, seed, order, rng);
    run.totals.refinished.fetch_add(1, std::memory_order_relaxed);
  } else {
    store_chunks(base, 0, words, seed, order, rng);
  }

  if (region.data() != base) return "data() moved";
  if (region.size() < bytes) return "size() " + std::to_string(region.size()) + " < stored bytes";
  if (region.stats().failures != 0) return "a growth failed";
  region.finish(bytes);
  if (std::string problem = verify_file(region.fd(), bytes, seed); !problem.empty()) {
    return region.name() + ": " + problem;
  }
  run.count(region, bytes);

  if (kind == Kind::kMemfd && rng.one_in(2)) {
    const SealedImage image = std::move(*made).seal();
    made.reset();
    if (image.size() != bytes) return "sealed image has the wrong size";
    const int seals = ::fcntl(image.fd(), F_GET_SEALS);
    if (seals < 0 || (seals & kImageSeals) != kImageSeals) return "sealed image lacks seals";
    if (std::string problem = verify_file(image.fd(), bytes, seed); !problem.empty()) {
      return "sealed image: " + problem;
    }
    if (std::string problem = verify_bytes(image.map(), bytes, seed); !problem.empty()) {
      return "sealed image: " + problem;
    }
    run.totals.sealed.fetch_add(1, std::memory_order_relaxed);
  } else if (kind == Kind::kStaged) {
    region.publish(Region::PublishOptions{.durable = false});
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return "published file cannot be opened";
    std::string problem = verify_file(fd, bytes, seed);
    ::close(fd);
    if (!problem.empty()) return "published file: " + problem;
    run.totals.published.fetch_add(1, std::memory_order_relaxed);
  }
  if (made && rng.one_in(4)) {
    const Region moved = std::move(*made);  // destroyed here, from its new home
    made.reset();
    run.totals.moved.fetch_add(1, std::memory_order_relaxed);
  }
  made.reset();  // unmapped and closed, while the faulters fault
  if (kind != Kind::kMemfd) std::filesystem::remove(path);
  return "";
}

void worker(StressRun& run, unsigned index, std::uint64_t& iterations) {
  Rng rng(run.config.seed * 1000 + index);
  const std::string who = "worker " + std::to_string(index);
  try {
    while (run.running()) {
      if (std::string problem = worker_iteration(run, index, iterations, rng); !problem.empty()) {
        run.fail(who, "iteration " + std::to_string(iterations) + ": " + problem);
        return;
      }
      ++iterations;
    }
  } catch (const std::exception& e) {
    run.fail(who, "iteration " + std::to_string(iterations) + ": " + e.what());
  }
}

// ---- the faulters --------------------------------------------------------------------------

RegionOptions small_steps() {
  RegionOptions options;
  options.capacity = 1 * kGiB;
  options.min_step = 64 * kKiB;
  options.max_step = 1 * kMiB;
  return options;
}

// Several threads store interleaved stripes into one long-lived memfd region, round after
// round; the barrier's completion checks each round and sets up the next.
class SharedRegionFaulters {
 public:
  explicit SharedRegionFaulters(StressRun& run)
      : run_(run),
        region_(Region::memfd("stress-shared", small_steps())),
        rng_(run.config.seed * 1000 + 999),
        barrier_(run.config.faulters, Completion{this}) {
    next_round();
  }

  void thread(unsigned index) {
    constexpr std::uint64_t kStripeWords = 16 * kKiB / 8;
    std::byte* const base = region_.data();
    const unsigned threads = run_.config.faulters;
    while (!round_.last) {
      // Read after the barrier: the completion that wrote it happens before.
      const std::uint64_t words = round_.words;
      const std::uint64_t seed = round_.seed;
      for (std::uint64_t s = index; s * kStripeWords < words; s += threads) {
        fill(base, s * kStripeWords, std::min(words, (s + 1) * kStripeWords), seed);
      }
      barrier_.arrive_and_wait();
    }
  }

 private:
  struct Round {
    std::uint64_t seed = 0;
    std::uint64_t words = 0;
    bool last = false;
  };
  struct Completion {
    SharedRegionFaulters* self;
    void operator()() noexcept { self->complete_round(); }
  };

  void next_round() {
    round_.seed = rng_.next();
    round_.words = rng_.between(kMiB, run_.config.shared_max) / 8;
  }

  void complete_round() noexcept {
    try {
      const std::uint64_t bytes = round_.words * 8;
      std::string problem;
      if (region_.size() < bytes) problem = "size() below the stored bytes";
      if (problem.empty() && region_.stats().failures != 0) problem = "a growth failed";
      if (problem.empty()) {
        region_.finish(bytes);
        problem = verify_file(region_.fd(), bytes, round_.seed);
      }
      if (!problem.empty()) {
        run_.fail("shared-region faulters", "round " +
                                                std::to_string(run_.totals.shared_rounds.load()) +
                                                ": " + problem);
        round_.last = true;
        return;
      }
      run_.totals.shared_rounds.fetch_add(1, std::memory_order_relaxed);
      run_.totals.bytes.fetch_add(bytes, std::memory_order_relaxed);
      if (!run_.running()) {
        run_.count_growth(region_);
        round_.last = true;
        return;
      }
      region_.finish(0);  // every round grows from nothing again, by faults
      next_round();
    } catch (const std::exception& e) {
      run_.fail("shared-region faulters", e.what());
      round_.last = true;
    }
  }

  StressRun& run_;
  Region region_;
  Rng rng_;
  Round round_;
  std::barrier<Completion> barrier_;
};

// One thread grows its own long-lived disk-file region (fallocate) by stores, round after
// round, cut back to 0 between rounds.
void own_file_faulter(StressRun& run) {
  try {
    Region region = Region::file(run.dir / "stress-own.bin", small_steps());
    Rng rng(run.config.seed * 1000 + 998);
    while (run.running()) {
      const std::uint64_t seed = rng.next();
      const std::uint64_t bytes = rng.between(kMiB, run.config.own_max) / 8 * 8;
      region.finish(0);
      store_chunks(region.data(), 0, bytes / 8, seed, static_cast<unsigned>(rng.below(3)), rng);
      if (region.stats().failures != 0) throw std::runtime_error("a growth failed");
      region.finish(bytes);
      if (std::string problem = verify_file(region.fd(), bytes, seed); !problem.empty()) {
        run.fail("own-file faulter",
                 "round " + std::to_string(run.totals.own_rounds.load()) + ": " + problem);
        return;
      }
      run.totals.own_rounds.fetch_add(1, std::memory_order_relaxed);
      run.totals.bytes.fetch_add(bytes, std::memory_order_relaxed);
    }
    run.count_growth(region);
  } catch (const std::exception& e) {
    run.fail("own-file faulter", e.what());
  }
}

// ---- the test ------------------------------------------------------------------------------

// Aborts the process (with a message) if the run is not over `limit` after it started: a
// fault retried forever, or a deadlock, must not leave the suite waiting for CTest's timeout.
class Watchdog {
 public:
  explicit Watchdog(std::chrono::milliseconds limit)
      : thread_([this, limit] {
          std::unique_lock lock(mutex_);
          if (!done_cv_.wait_for(lock, limit, [this] { return done_; })) {
            std::fprintf(stderr, "stress_test: still running %lld s after the start; aborting\n",
                         static_cast<long long>(limit.count() / 1000));
            std::abort();
          }
        }) {}
  ~Watchdog() {
    {
      const std::lock_guard lock(mutex_);
      done_ = true;
    }
    done_cv_.notify_all();
    thread_.join();
  }

 private:
  std::mutex mutex_;
  std::condition_variable done_cv_;
  bool done_ = false;
  std::thread thread_;
};

TEST(Stress, RegionsChurnWhileOthersFault) {
  const Config config = config_from_environment();
  DiskDir dir;
  ASSERT_TRUE(dir.ok());
  std::printf("stress: %lld ms, %u workers, %u + 1 faulters, seed %llu (MAPWRIGHT_STRESS_SEED)\n",
              static_cast<long long>(config.duration.count()), config.workers, config.faulters,
              static_cast<unsigned long long>(config.seed));
  ::testing::Test::RecordProperty("seed", std::to_string(config.seed));

  const Watchdog watchdog(config.duration + std::chrono::seconds(120));
  StressRun run(config, dir);
  std::vector<std::uint64_t> iterations(config.workers, 0);
  {
    SharedRegionFaulters shared(run);
    std::vector<std::thread> threads;
    for (unsigned f = 0; f < config.faulters; ++f) {
      threads.emplace_back([&shared, f] { shared.thread(f); });
    }
    threads.emplace_back([&run] { own_file_faulter(run); });
    for (unsigned w = 0; w < config.workers; ++w) {
      threads.emplace_back([&run, &iterations, w] { worker(run, w, iterations[w]); });
    }
    for (std::thread& thread : threads) thread.join();
  }

  const Totals& t = run.totals;
  std::printf(
      "stress: %llu regions checked (%llu memfd, %llu file, %llu staged; %llu ensured first, "
      "%llu finished half-way, %llu sealed, %llu published, %llu moved), %llu shared rounds, "
      "%llu own-file rounds, %llu MiB checked, %llu growth faults, %llu growths\n",
      static_cast<unsigned long long>(t.regions.load()),
      static_cast<unsigned long long>(t.memfds.load()),
      static_cast<unsigned long long>(t.files.load()),
      static_cast<unsigned long long>(t.staged.load()),
      static_cast<unsigned long long>(t.ensured.load()),
      static_cast<unsigned long long>(t.refinished.load()),
      static_cast<unsigned long long>(t.sealed.load()),
      static_cast<unsigned long long>(t.published.load()),
      static_cast<unsigned long long>(t.moved.load()),
      static_cast<unsigned long long>(t.shared_rounds.load()),
      static_cast<unsigned long long>(t.own_rounds.load()),
      static_cast<unsigned long long>(t.bytes.load() / kMiB),
      static_cast<unsigned long long>(t.faults.load()),
      static_cast<unsigned long long>(t.growths.load()));
  ::testing::Test::RecordProperty("regions", std::to_string(t.regions.load()));
  ::testing::Test::RecordProperty("faults", std::to_string(t.faults.load()));

  for (const std::string& failure : run.failures()) ADD_FAILURE() << failure;
  // The run did real work: every thread got through at least one checked region or round,
  // and growth happened by faults (not only by ensure()).
  for (unsigned w = 0; w < config.workers; ++w) EXPECT_GE(iterations[w], 1u) << "worker " << w;
  EXPECT_GE(t.shared_rounds.load(), 1u);
  EXPECT_GE(t.own_rounds.load(), 1u);
  EXPECT_GT(t.faults.load(), t.regions.load()) << "growth by SIGBUS hardly happened";
}

}  // namespace
}  // namespace mapwright
