#!/usr/bin/env bash
# mapwright's developer entry point. Installs the Debian packages it needs (as root, with
# apt-get), configures with a CMake preset, builds, and runs.
#
#   ./build.sh demo            build and run the main demonstration (examples/wrapper_demo)
#   ./build.sh test [PRESET]   build and run the whole test suite; PRESET is one of
#                              release (default), debug, asan, tsan, clang
#                              (clang-check, for build only: without tests and benchmarks;
#                              the fuzz preset builds the same with clang, for CI)
#   ./build.sh build [PRESET]  build only
#   ./build.sh bench           build and run the benchmarks (several minutes; see README)
#   ./build.sh fuzz [SECONDS]  build the libFuzzer targets (preset fuzz) and run each for
#                              SECONDS (default 20) over a copy of its seed corpus and saved
#                              regressions, in build/fuzz/run/; fails if any target finds
#                              a crash, leak, hang or sanitizer report (tests/fuzz/README.md)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

command=${1:-test}
preset=${2:-release}
if [[ $command == fuzz ]]; then
  seconds=${2:-20}
  preset=fuzz
fi

packages=(cmake ninja-build g++ pkg-config libgtest-dev libgmock-dev libbenchmark-dev
          libsigsegv-dev capnproto libcapnp-dev libcli11-dev libfmt-dev libxxhash-dev xxhash libzstd-dev zstd
          libflatbuffers-dev flatbuffers-compiler libboost-dev
          libseccomp-dev e2fsprogs)  # coexistence_test; mkfs.ext4 for fault_matrix_test
if [[ $preset == clang* ]]; then packages+=(clang); fi
if [[ $preset == fuzz ]]; then packages+=(clang libclang-rt-14-dev); fi  # libFuzzer, sanitizers

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$package")
  fi
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "build.sh: missing Debian packages: ${missing[*]}" >&2
    echo "build.sh: install them with: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
  echo "build.sh: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

configure_and_build() {
  cmake --preset "$1" >/dev/null
  cmake --build --preset "$1" ${2:+--target "$2"}
}

case $command in
  demo)
    configure_and_build release wrapper_demo
    out=build/release/wrapper_demo.mwr
    ./build/release/examples/wrapper_demo "$out"  # removes it unless given --keep
    rm -f "$out"
    ;;
  test)
    configure_and_build "$preset"
    ctest --preset "$preset"
    ;;
  build)
    configure_and_build "$preset"
    ;;
  bench)
    configure_and_build release
    for program in build/release/tests/bench/*_bench; do
      echo "== $program"
      "$program"
    done
    ;;
  fuzz)
    if ! [[ $seconds =~ ^[1-9][0-9]*$ ]]; then
      echo "build.sh: fuzz takes a number of seconds per target, not '$seconds'" >&2
      exit 2
    fi
    configure_and_build fuzz
    # handle_sigbus=0 and UBSan's halt_on_error come from tests/support/sanitizer_options.cc,
    # built into each target; leak detection is on by default under libFuzzer.
    # The targets run side by side (each single-threaded), so the whole run takes SECONDS.
    targets=(wrapper_fuzz segment_table_fuzz sealed_image_fuzz elf_info_fuzz bundle_fuzz flatbuffer_fuzz
             fixed_image_fuzz)
    pids=()
    for target in "${targets[@]}"; do
      run=build/fuzz/run/$target
      rm -rf "$run"
      mkdir -p "$run/corpus"
      # A copy: the inputs libFuzzer adds stay out of the source tree.
      cp tests/fuzz/corpus/$target/* "$run/corpus/"
      if [[ -d tests/fuzz/regressions/$target ]]; then
        cp tests/fuzz/regressions/$target/* "$run/corpus/" 2>/dev/null || true
      fi
      echo "== $target: ${seconds} s, corpus and findings in $run" >&2
      "build/fuzz/tests/fuzz/$target" -max_total_time="$seconds" -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$run/" \
        "$run/corpus" >"$run/log" 2>&1 &
      pids+=($!)
    done
    failed=()
    for i in "${!targets[@]}"; do
      target=${targets[$i]}
      run=build/fuzz/run/$target
      if ! wait "${pids[$i]}"; then
        tail -n 60 "$run/log" >&2
        failed+=("$target")
      fi
      echo "== $target:" >&2
      grep -E '^(Done|stat::number_of_executed_units|stat::average_exec_per_sec)' "$run/log" >&2 || true
    done
    if ((${#failed[@]})); then
      echo "build.sh: fuzzing found a problem in: ${failed[*]} (inputs saved as build/fuzz/run/<target>/crash-*, leak-*, timeout-*, oom-*)" >&2
      exit 1
    fi
    ;;
  *)
    echo "usage: ./build.sh demo | test [PRESET] | build [PRESET] | bench | fuzz [SECONDS]" >&2
    exit 2
    ;;
esac
