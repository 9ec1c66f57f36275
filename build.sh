#!/usr/bin/env bash
# mapwright's developer entry point. Installs the Debian packages it needs (as root, with
# apt-get), configures with a CMake preset, builds, and runs.
#
#   ./build.sh demo            build and run the main demonstration (examples/wrapper_demo)
#   ./build.sh test [PRESET]   build and run the whole test suite; PRESET is one of
#                              release (default), debug, asan, tsan, clang
#   ./build.sh build [PRESET]  build only
#   ./build.sh bench           build and run the benchmarks (several minutes; see README)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

command=${1:-test}
preset=${2:-release}

packages=(cmake ninja-build g++ pkg-config libgtest-dev libgmock-dev libbenchmark-dev
          libsigsegv-dev capnproto libcapnp-dev libcli11-dev libfmt-dev libxxhash-dev xxhash)
if [[ $preset == clang ]]; then packages+=(clang); fi

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
  *)
    echo "usage: ./build.sh demo | test [PRESET] | build [PRESET] | bench" >&2
    exit 2
    ;;
esac
