// tools/progress.h — the progress bar `mapwright pack` draws on stderr.
//
// One line, redrawn in place with '\r' at most ten times a second:
//
//   [##########..........]  50%  12.0 MiB / 24.0 MiB  libfoo.so
//
// and ended with a newline by finish(), or by the destructor when the pack fails, so that
// the error message starts on a line of its own. Nothing else is written to stderr while a
// bar is on it.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

#include "mapwright/wrapper.h"

namespace mapwright::tool {

class ProgressBar {
 public:
  enum class Mode {
    kAuto,  // only when stderr is a terminal, and only once the pack has taken a moment
    kOn,    // always, from the first update (--progress; also into a pipe)
    kOff,   // never (--no-progress)
  };

  // `total_bytes`: the sum of the entries' sizes, for the percentage (0 shows 100%).
  // `open_ended`: some entries are streams whose size is known only at their end (stdin, a
  // FIFO, a /proc file); the bar then shows the bytes written so far and no percentage:
  //   [????????????????????]  12.0 MiB so far  stdin-entry
  // until finish() draws the final total.
  ProgressBar(Mode mode, std::uint64_t total_bytes, bool open_ended = false);
  ~ProgressBar();
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  // For WrapperWriterOptions::progress. Never throws.
  void update(const WriteProgress& progress) noexcept;
  // Draws the final state (in kOn mode always; in kAuto mode if a bar is showing) and ends
  // the line.
  void finish() noexcept;

 private:
  void draw(std::string_view entry, std::uint64_t done) noexcept;

  bool enabled_;
  bool forced_;
  std::uint64_t total_bytes_;
  bool open_ended_;
  std::uint64_t last_done_ = 0;  // total_done of the last update
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_{};
  bool drawn_ = false;  // a line is on the screen, not yet ended
  bool finished_ = false;
  std::size_t last_width_ = 0;  // columns of the line last drawn, to blank its remains
  std::size_t columns_;
};

}  // namespace mapwright::tool
