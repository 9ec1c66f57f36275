// tests/bench/bench_main.cc — the shared main() and the RATIO reporter; see bench_main.h.
#include "bench_main.h"

#include <link.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <map>
#include <ostream>
#include <set>
#include <stdexcept>
#include <system_error>
#include <vector>

namespace mapwright::bench {
namespace {

struct Rule {
  std::string subject;
  std::string baseline;
  Clock clock;
};

std::vector<Rule>& rules() {
  static std::vector<Rule> all;
  return all;
}

double to_ns(double value, benchmark::TimeUnit unit) {
  switch (unit) {
    case benchmark::kNanosecond: return value;
    case benchmark::kMicrosecond: return value * 1e3;
    case benchmark::kMillisecond: return value * 1e6;
    case benchmark::kSecond: return value * 1e9;
  }
  return value;
}

// "412 ms", "2.31 us", "+7.05 ms": three significant digits in the largest fitting unit.
std::string format_ns(double ns, bool sign = false) {
  const double magnitude = std::fabs(ns);
  const char* unit = "ns";
  double value = ns;
  if (magnitude >= 1e9) {
    unit = "s";
    value = ns / 1e9;
  } else if (magnitude >= 1e6) {
    unit = "ms";
    value = ns / 1e6;
  } else if (magnitude >= 1e3) {
    unit = "us";
    value = ns / 1e3;
  }
  const double v = std::fabs(value);
  const int decimals = v >= 100 ? 0 : v >= 10 ? 1 : 2;
  char text[64];
  std::snprintf(text, sizeof text, sign ? "%+.*f %s" : "%.*f %s", decimals, value, unit);
  return text;
}

struct Times {
  double real_ns = 0;
  double cpu_ns = 0;
  double get(Clock clock) const { return clock == Clock::kReal ? real_ns : cpu_ns; }
};

// The console output as usual, plus the medians it saw, printed as ratios at the end.
class RatioReporter final : public benchmark::ConsoleReporter {
 public:
  using ConsoleReporter::ConsoleReporter;

  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& run : runs) {
      if (run.error_occurred) {
        failed_.insert(run.benchmark_name() + ": " + run.error_message);
        continue;
      }
      // run_name has no aggregate suffix: a run and its "_median" share it.
      const std::string name = run.run_name.str();
      const Times times{to_ns(run.GetAdjustedRealTime(), run.time_unit),
                        to_ns(run.GetAdjustedCPUTime(), run.time_unit)};
      names_.insert(name);
      if (run.run_type == Run::RT_Aggregate) {
        if (run.aggregate_name == "median") medians_[name] = times;
      } else {
        singles_[name].push_back(times);
      }
    }
  }

  void Finalize() override {
    ConsoleReporter::Finalize();
    struct Row {
      std::string subject, baseline, clock, median, base, delta, ratio, speed;
    };
    std::vector<Row> rows;
    for (const Rule& rule : rules()) {
      for (const std::string& name : names_) {
        if (name.compare(0, rule.subject.size(), rule.subject) != 0) continue;
        const std::string rest = name.substr(rule.subject.size());
        if (!rest.empty() && rest.front() != '/') continue;
        const std::string baseline = rule.baseline + rest;
        double subject_ns = 0;
        double baseline_ns = 0;
        if (!median(name, rule.clock, &subject_ns) || !median(baseline, rule.clock, &baseline_ns) ||
            subject_ns <= 0 || baseline_ns <= 0) {
          continue;
        }
        char ratio[32];
        char speed[32];
        std::snprintf(ratio, sizeof ratio, "%.3f", subject_ns / baseline_ns);
        std::snprintf(speed, sizeof speed, "%.3f", baseline_ns / subject_ns);
        rows.push_back({name, baseline, rule.clock == Clock::kReal ? "real" : "cpu",
                        format_ns(subject_ns), format_ns(baseline_ns),
                        format_ns(subject_ns - baseline_ns, true), ratio, speed});
      }
    }
    std::ostream& out = GetOutputStream();
    for (const std::string& failure : failed_) out << "\nFAILED " << failure;
    if (!failed_.empty()) out << "\n";
    if (rows.empty()) {
      out << "\nRATIO: no comparison had both of its benchmarks in this run.\n";
      return;
    }
    const Row header{"benchmark", "baseline", "clock", "median", "baseline", "delta",
                     "time x", "speed x"};
    std::size_t w[8] = {};
    auto widen = [&w](const Row& r) {
      const std::string* cells[] = {&r.subject, &r.baseline, &r.clock, &r.median,
                                    &r.base,    &r.delta,    &r.ratio, &r.speed};
      for (int i = 0; i < 8; ++i) w[i] = std::max(w[i], cells[i]->size());
    };
    widen(header);
    for (const Row& r : rows) widen(r);
    auto print = [&](const Row& r) {
      char line[1024];
      std::snprintf(line, sizeof line, "%-*s  %-*s  %-*s  %*s  %*s  %*s  %*s  %*s\n",
                    int(w[0]), r.subject.c_str(), int(w[1]), r.baseline.c_str(), int(w[2]),
                    r.clock.c_str(), int(w[3]), r.median.c_str(), int(w[4]), r.base.c_str(),
                    int(w[5]), r.delta.c_str(), int(w[6]), r.ratio.c_str(), int(w[7]),
                    r.speed.c_str());
      out << line;
    };
    out << "\nRATIO (medians from this run; time x = median / baseline median, lower is better;"
           " speed x = baseline / median, higher is better; delta = median - baseline)\n";
    print(header);
    for (const Row& r : rows) print(r);
    out.flush();
  }

  // Whether a benchmark ended with SkipWithError; main() then exits with status 1.
  bool failed() const { return !failed_.empty(); }

 private:
  // The "_median" aggregate if there was one, else the median of the single runs.
  bool median(const std::string& name, Clock clock, double* ns) const {
    if (auto it = medians_.find(name); it != medians_.end()) {
      *ns = it->second.get(clock);
      return true;
    }
    auto it = singles_.find(name);
    if (it == singles_.end() || it->second.empty()) return false;
    std::vector<double> values;
    for (const Times& t : it->second) values.push_back(t.get(clock));
    std::sort(values.begin(), values.end());
    const std::size_t n = values.size();
    *ns = n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
    return true;
  }

  std::set<std::string> names_;  // every benchmark that ran, sorted (runs may be interleaved)
  std::map<std::string, Times> medians_;
  std::map<std::string, std::vector<Times>> singles_;
  std::set<std::string> failed_;
};

// Console options as Google Benchmark's own main would choose them: colour on a terminal
// unless --benchmark_color says otherwise; tabular counters with --benchmark_counters_tabular.
benchmark::ConsoleReporter::OutputOptions output_options(int argc, char** argv) {
  bool color = isatty(STDOUT_FILENO) != 0;
  bool tabular = false;
  auto value_of = [](const char* arg, const char* flag) -> const char* {
    const std::size_t n = std::strlen(flag);
    return std::strncmp(arg, flag, n) == 0 && arg[n] == '=' ? arg + n + 1 : nullptr;
  };
  auto truthy = [](std::string_view v) {
    return v == "true" || v == "yes" || v == "1" || v == "always" || v == "on";
  };
  for (int i = 1; i < argc; ++i) {
    if (const char* v = value_of(argv[i], "--benchmark_color"); v != nullptr) {
      if (std::string_view(v) != "auto") color = truthy(v);
    }
    if (const char* v = value_of(argv[i], "--benchmark_counters_tabular"); v != nullptr) {
      tabular = truthy(v);
    }
  }
  int options = benchmark::ConsoleReporter::OO_None;
  if (color) options |= benchmark::ConsoleReporter::OO_Color;
  if (tabular) options |= benchmark::ConsoleReporter::OO_Tabular;
  return static_cast<benchmark::ConsoleReporter::OutputOptions>(options);
}

}  // namespace

void compare(std::string subject, std::string baseline, Clock clock) {
  rules().push_back({std::move(subject), std::move(baseline), clock});
}

std::uint64_t bench_bytes() {
  const char* text = std::getenv("MAPWRIGHT_BENCH_BYTES");
  if (text == nullptr || *text == '\0') return 1ull << 30;
  char* end = nullptr;
  errno = 0;
  const unsigned long long bytes = std::strtoull(text, &end, 10);
  if (errno != 0 || *end != '\0' || bytes == 0 || bytes % 8 != 0) {
    throw std::invalid_argument(std::string("MAPWRIGHT_BENCH_BYTES=") + text +
                                ": expected a positive multiple of 8");
  }
  return bytes;
}

std::filesystem::path bench_dir() {
  const char* dir = std::getenv("MAPWRIGHT_BENCH_DIR");
  return dir != nullptr && *dir != '\0' ? std::filesystem::path(dir) : std::filesystem::path(".");
}

std::filesystem::path scratch_path(std::string_view tag) {
  return bench_dir() /
         ("mapwright-bench-" + std::string(tag) + "-" + std::to_string(::getpid()));
}

ScratchFile::ScratchFile(Target target, const std::filesystem::path& path) {
  if (target == Target::kMemfd) {
    fd_ = ::memfd_create("mapwright-bench", MFD_CLOEXEC);
    if (fd_ < 0) throw std::system_error(errno, std::generic_category(), "memfd_create");
    return;
  }
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) throw std::system_error(errno, std::generic_category(), "open " + path.string());
  path_ = path;
}

ScratchFile::~ScratchFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!path_.empty()) ::unlink(path_.c_str());
}

void write_all(int fd, const void* data, std::uint64_t size) {
  const auto* p = static_cast<const char*>(data);
  while (size > 0) {
    // Linux transfers at most 0x7ffff000 bytes per call; ask for 1 GiB at a time.
    const std::size_t chunk = size < (1ull << 30) ? static_cast<std::size_t>(size) : 1ull << 30;
    const ssize_t n = ::write(fd, p, chunk);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw std::system_error(errno, std::generic_category(), "write");
    }
    p += n;
    size -= static_cast<std::uint64_t>(n);
  }
}

std::size_t loaded_objects() {
  std::size_t count = 0;
  ::dl_iterate_phdr(
      [](dl_phdr_info*, std::size_t, void* data) {
        ++*static_cast<std::size_t*>(data);
        return 0;
      },
      &count);
  return count;
}

}  // namespace mapwright::bench

int main(int argc, char** argv) {
  // Defaults first, so that the same flags on the command line override them.
  static char repetitions[] = "--benchmark_repetitions=5";
  static char aggregates[] = "--benchmark_display_aggregates_only=true";
  // Repetitions of all benchmarks in random order, so that a baseline and its subjects
  // share the machine's slow and fast moments instead of running minutes apart.
  static char interleave[] = "--benchmark_enable_random_interleaving=true";
  std::vector<char*> args{argv[0], repetitions, aggregates, interleave};
  args.insert(args.end(), argv + 1, argv + argc);
  args.push_back(nullptr);
  int count = static_cast<int>(args.size()) - 1;

  benchmark::Initialize(&count, args.data());
  if (benchmark::ReportUnrecognizedArguments(count, args.data())) return 1;
  try {
    mapwright::bench::register_benchmarks();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", argv[0], e.what());
    return 1;
  }
  mapwright::bench::RatioReporter reporter(mapwright::bench::output_options(argc, argv));
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return reporter.failed() ? 1 : 0;
}
