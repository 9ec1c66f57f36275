// tools/progress.cc — the pack progress bar.
#include "progress.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>

#include <fmt/format.h>

#include "commands.h"

namespace mapwright::tool {
namespace {

using Clock = std::chrono::steady_clock;

constexpr auto kRedrawInterval = std::chrono::milliseconds(100);  // at most ~10 per second
constexpr auto kAutoDelay = std::chrono::milliseconds(300);       // a quick pack stays quiet
constexpr std::size_t kBarCells = 20;

std::size_t terminal_columns() {
  winsize size{};
  if (::ioctl(STDERR_FILENO, TIOCGWINSZ, &size) == 0 && size.ws_col >= 20) return size.ws_col;
  return 80;
}

std::string human_bytes(std::uint64_t bytes) {
  if (bytes < 1024) return fmt::format("{} B", bytes);
  static constexpr const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes) / 1024;
  std::size_t unit = 0;
  while (value >= 1024 && unit + 1 < std::size(kUnits)) {
    value /= 1024;
    ++unit;
  }
  return fmt::format("{:.1f} {}", value, kUnits[unit]);
}

// The columns `text` (printable, UTF-8) takes: one per code point.
std::size_t columns_of(std::string_view text) {
  return static_cast<std::size_t>(std::count_if(text.begin(), text.end(), [](char c) {
    return (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  }));
}

// `text`, cut to at most `width` columns at a code point boundary.
std::string cut_to_width(const std::string& text, std::size_t width) {
  std::size_t columns = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if ((static_cast<unsigned char>(text[i]) & 0xC0) == 0x80) continue;
    if (columns == width) return text.substr(0, i);
    ++columns;
  }
  return text;
}

}  // namespace

ProgressBar::ProgressBar(Mode mode, std::uint64_t total_bytes, bool open_ended)
    : enabled_(mode == Mode::kOn || (mode == Mode::kAuto && ::isatty(STDERR_FILENO) == 1)),
      forced_(mode == Mode::kOn),
      total_bytes_(total_bytes),
      open_ended_(open_ended),
      start_(Clock::now()),
      columns_(enabled_ ? terminal_columns() : 80) {}

ProgressBar::~ProgressBar() {
  // A pack that failed: end the line so that the error message starts on its own.
  if (drawn_ && !finished_) (void)write_all(STDERR_FILENO, "\n", 1);
}

void ProgressBar::update(const WriteProgress& progress) noexcept {
  if (!enabled_ || finished_) return;
  last_done_ = progress.total_done;
  const auto now = Clock::now();
  if (!forced_ && !drawn_ && now - start_ < kAutoDelay) return;
  if (drawn_ && now - last_draw_ < kRedrawInterval) return;
  last_draw_ = now;
  draw(progress.entry, progress.total_done);
}

void ProgressBar::finish() noexcept {
  if (!enabled_ || finished_) return;
  if (drawn_ || forced_) {
    if (open_ended_) {  // the streams have ended: now the total is known
      open_ended_ = false;
      total_bytes_ = std::max(total_bytes_, last_done_);
    }
    draw({}, total_bytes_);
    (void)write_all(STDERR_FILENO, "\n", 1);
  }
  finished_ = true;
}

void ProgressBar::draw(std::string_view entry, std::uint64_t done) noexcept {
  try {
    std::string line;
    if (open_ended_) {
      // Some entries are streams of unknown size: no percentage, only what was written.
      line = fmt::format("[{}]  {} so far", std::string(kBarCells, '?'), human_bytes(done));
    } else {
      done = std::min(done, total_bytes_);
      const std::uint64_t percent = total_bytes_ == 0 ? 100 : done * 100 / total_bytes_;
      const std::size_t filled = static_cast<std::size_t>(percent * kBarCells / 100);
      line = "[" + std::string(filled, '#') + std::string(kBarCells - filled, '.') + "] " +
             fmt::format("{:>3}%  {} / {}", percent, human_bytes(done), human_bytes(total_bytes_));
    }
    std::size_t width = line.size();  // ASCII so far
    const std::string name = printable(entry);
    // The name, if there is room for some of it; the line stays below the terminal's width
    // so that it never wraps (a wrapped line cannot be redrawn with '\r').
    if (!name.empty() && width + 2 + 8 < columns_) {
      const std::string shown = cut_to_width(name, columns_ - 1 - width - 2);
      line += "  " + shown;
      width += 2 + columns_of(shown);
    }
    std::string out = "\r" + line;
    if (last_width_ > width) out.append(last_width_ - width, ' ');
    last_width_ = width;
    (void)write_all(STDERR_FILENO, out.data(), out.size());
    drawn_ = true;
  } catch (...) {
    // Out of memory while formatting: skip this frame.
  }
}

}  // namespace mapwright::tool
