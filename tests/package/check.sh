#!/usr/bin/env bash
# Installs the build tree into a scratch prefix, then builds and runs a consumer with
# find_package(mapwright CONFIG) and another with pkg-config. Args: BUILD_DIR SOURCE_DIR CXX
set -euo pipefail
build=$1 source=$2 cxx=$3
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cmake --install "$build" --prefix "$scratch/prefix" >/dev/null
cmake -S "$source/tests/package" -B "$scratch/cmake" -G Ninja -DCMAKE_CXX_COMPILER="$cxx" \
      -DCMAKE_PREFIX_PATH="$scratch/prefix" >/dev/null
cmake --build "$scratch/cmake" >/dev/null || cmake --build "$scratch/cmake"
"$scratch/cmake/consumer"
flags=$(PKG_CONFIG_PATH="$scratch/prefix/lib/pkgconfig:$scratch/prefix/lib64/pkgconfig" \
        pkg-config --cflags --libs --static mapwright)
# shellcheck disable=SC2086
"$cxx" "$source/tests/package/consumer.cc" $flags -o "$scratch/pkgconfig-consumer"
"$scratch/pkgconfig-consumer"
