#!/usr/bin/env bash
# Installs the build tree into a scratch prefix, then builds and runs a consumer with
# find_package(mapwright CONFIG) and another with pkg-config; packs a wrapper with the installed
# tool and decodes it with the stock `capnp decode` and the installed schema.
# Args: BUILD_DIR SOURCE_DIR CXX
set -euo pipefail
build=$1 source=$2 cxx=$3
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cmake --install "$build" --prefix "$scratch/prefix" >/dev/null
cmake -S "$source/tests/package" -B "$scratch/cmake" -G Ninja -DCMAKE_CXX_COMPILER="$cxx" \
      -DCMAKE_PREFIX_PATH="$scratch/prefix" >/dev/null
cmake --build "$scratch/cmake" >/dev/null || cmake --build "$scratch/cmake"
"$scratch/cmake/consumer" "$scratch"
flags=$(PKG_CONFIG_PATH="$scratch/prefix/lib/pkgconfig:$scratch/prefix/lib64/pkgconfig" \
        pkg-config --cflags --libs --static mapwright)
# shellcheck disable=SC2086
"$cxx" "$source/tests/package/consumer.cc" $flags -o "$scratch/pkgconfig-consumer"
"$scratch/pkgconfig-consumer" "$scratch"

tool="$scratch/prefix/bin/mapwright"
schema="$scratch/prefix/include/mapwright/wrapper.capnp"
test -x "$tool" || { echo "check.sh: the tool was not installed at $tool" >&2; exit 1; }
test -f "$schema" || { echo "check.sh: the schema was not installed at $schema" >&2; exit 1; }
printf 'hello from the package test\n' > "$scratch/hello.txt"
"$tool" pack -o "$scratch/hello.mwr" --data "greeting=$scratch/hello.txt"
"$tool" verify "$scratch/hello.mwr" >/dev/null
decoded=$(capnp decode "$schema" WrapperFile < "$scratch/hello.mwr")
for expected in 'name = "greeting"' 'kind = data' 'formatVersion = 1' 'hello from the package test'; do
  if ! grep -qF "$expected" <<<"$decoded"; then
    echo "check.sh: capnp decode output lacks: $expected" >&2
    echo "$decoded" >&2
    exit 1
  fi
done
echo "check.sh: installed tool packed a wrapper that capnp decode reads with the installed schema"
