#!/usr/bin/env bash
# The installed package, used the way users use it. Installs the build tree into a scratch
# directory, moves it elsewhere (the package must be relocatable), then, with LD_LIBRARY_PATH
# unset for every program it runs:
#  - checks the shared library's SONAME and symlinks, and that nothing installed for CMake or
#    pkg-config names the build or source tree;
#  - CMake: configures tests/package with find_package(CapnProto) before find_package(mapwright),
#    after it, and not at all (a C++-only project); each builds and runs consumer
#    (mapwright::mapwright) and consumer_static (mapwright::mapwright_static), which with
#    CapnProto also compile consumer.capnp with capnp_generate_cpp and build a message of it;
#    a program that links both libraries must be refused;
#  - pkg-config: mapwright (the shared library, -std=c++2b must stay C++23), mapwright-static,
#    and a fully static program (-static with --static);
#  - each shared consumer must need libmapwright.so.0 and load it from the prefix (readelf,
#    ldd, and dladdr inside the program); each static one must not need it;
#  - the installed tool packs a wrapper that the stock `capnp decode` reads with the installed
#    schema.
# Args: BUILD_DIR SOURCE_DIR CXX
set -euo pipefail
build=$1 source=$2 cxx=$3
here=$source/tests/package
unset LD_LIBRARY_PATH
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
fail() { echo "check.sh: $*" >&2; exit 1; }

cmake --install "$build" --prefix "$scratch/staging" >/dev/null
mv "$scratch/staging" "$scratch/prefix"
prefix=$scratch/prefix
shared_lib=$(find "$prefix" -name libmapwright.so.0 -print -quit)
[[ -n $shared_lib ]] || fail "no libmapwright.so.0 installed"
libdir=$(dirname "$shared_lib")
[[ -f $libdir/libmapwright.a ]] || fail "no libmapwright.a installed beside $shared_lib"
[[ $(readlink "$libdir/libmapwright.so") == libmapwright.so.0 ]] ||
  fail "libmapwright.so does not point at libmapwright.so.0"
dynamic=$(readelf -d "$shared_lib")
grep -qF '(SONAME)             Library soname: [libmapwright.so.0]' <<<"$dynamic" ||
  fail "libmapwright.so.0 has no SONAME libmapwright.so.0: $dynamic"
if grep -rlF -e "$build" -e "$source" "$libdir/cmake" "$libdir/pkgconfig"; then
  fail "the files above name the build or source tree"
fi
echo "check.sh: installed libmapwright.so.0 (SONAME set) and libmapwright.a, relocatable"

# run_consumer PROGRAM shared|static|full-static: runs it and checks where mapwright came from.
# (Outputs go into variables before grep -q: under pipefail, a writer that grep -q leaves
# early dies of SIGPIPE and fails the pipeline.)
run_consumer() {
  local program=$1 kind=$2 output from dynamic libraries loaded
  output=$("$program" "$scratch") || fail "$program failed: $output"
  grep -q '^consumer: ok' <<<"$output" || fail "$program: $output"
  if grep -q 'schema message' <<<"$output" &&
     ! grep -q '^consumer: schema message ok' <<<"$output"; then
    fail "$program: $output"
  fi
  from=$(sed -n 's/^consumer: mapwright code in //p' <<<"$output")
  dynamic=$(readelf -d "$program" 2>&1)
  case $kind in
    shared)
      grep -qF '(NEEDED)             Shared library: [libmapwright.so.0]' <<<"$dynamic" ||
        fail "$program does not need libmapwright.so.0: $dynamic"
      libraries=$(ldd "$program")
      loaded=$(sed -n 's/.*libmapwright\.so\.0 => \(.*\) (0x.*/\1/p' <<<"$libraries")
      [[ -n $loaded && $(realpath "$loaded") == $(realpath "$shared_lib") ]] ||
        fail "$program: ldd does not resolve libmapwright.so.0 to $shared_lib: $libraries"
      [[ -n $from && $(realpath "$from") == $(realpath "$shared_lib") ]] ||
        fail "$program ran mapwright from '$from', not from $shared_lib"
      ;;
    static)
      if grep -q 'libmapwright' <<<"$dynamic"; then fail "$program needs libmapwright: $dynamic"; fi
      [[ -n $from && $(realpath "$from") == $(realpath "$program") ]] ||
        fail "$program ran mapwright from '$from', not from itself"
      ;;
    full-static)
      if grep -q NEEDED <<<"$dynamic"; then fail "$program is dynamic: $dynamic"; fi
      [[ $from == "(no dynamic object)" ]] || fail "$program ran mapwright from '$from'"
      ;;
  esac
  echo "check.sh: ${program#"$scratch"/}: $kind, ok"
}

# CMake, with CapnProto found by the consumer before mapwright, after it, and not at all.
for order in capnp-first mapwright-first mapwright-only; do
  dir=$scratch/cmake-$order
  if ! cmake -S "$here" -B "$dir" -G Ninja -DCMAKE_CXX_COMPILER="$cxx" \
        -DCMAKE_PREFIX_PATH="$prefix" -DCONSUMER_ORDER="$order" >"$scratch/log" 2>&1; then
    cat "$scratch/log" >&2
    fail "configuring the consumer ($order) failed"
  fi
  cmake --build "$dir" >"$scratch/log" 2>&1 || { cat "$scratch/log" >&2; fail "building ($order)"; }
  run_consumer "$dir/consumer" shared
  run_consumer "$dir/consumer_static" static
done
if cmake -S "$here" -B "$scratch/cmake-both" -G Ninja -DCMAKE_CXX_COMPILER="$cxx" \
     -DCMAKE_PREFIX_PATH="$prefix" -DCONSUMER_LINK_BOTH=ON >"$scratch/log" 2>&1; then
  fail "a program linking mapwright::mapwright and mapwright::mapwright_static was accepted"
fi
if ! grep -q 'MAPWRIGHT_LIBRARY_KIND' "$scratch/log"; then
  cat "$scratch/log" >&2
  fail "linking both was refused, but not for MAPWRIGHT_LIBRARY_KIND"
fi
echo "check.sh: a program linking both libraries is refused"

# pkg-config. The consumer's own -std= comes first, as in most makefiles: the package must not
# override it. (-std=c++2b: clang 14 does not know -std=c++23 yet.)
export PKG_CONFIG_PATH=$libdir/pkgconfig
pc_libdir=$(pkg-config --variable=libdir mapwright)
# shellcheck disable=SC2046
"$cxx" -std=c++2b -DCONSUMER_EXPECT_CXX23 "$here/consumer.cc" \
  $(pkg-config --cflags --libs mapwright) -Wl,-rpath,"$pc_libdir" -o "$scratch/pkgconfig-shared"
run_consumer "$scratch/pkgconfig-shared" shared
# shellcheck disable=SC2046
"$cxx" -std=c++20 "$here/consumer.cc" $(pkg-config --cflags --libs mapwright-static) \
  -o "$scratch/pkgconfig-static"
run_consumer "$scratch/pkgconfig-static" static
# shellcheck disable=SC2046
"$cxx" -std=c++20 -static "$here/consumer.cc" $(pkg-config --static --cflags --libs mapwright) \
  -o "$scratch/pkgconfig-full-static" 2>"$scratch/log" ||
  { cat "$scratch/log" >&2; fail "linking a fully static program failed"; }
run_consumer "$scratch/pkgconfig-full-static" full-static

# The tool (it links the static library: it runs without LD_LIBRARY_PATH or an rpath).
tool=$prefix/bin/mapwright
schema=$prefix/include/mapwright/wrapper.capnp
test -x "$tool" || fail "the tool was not installed at $tool"
test -f "$schema" || fail "the schema was not installed at $schema"
printf 'hello from the package test\n' > "$scratch/hello.txt"
"$tool" pack -o "$scratch/hello.mwr" --data "greeting=$scratch/hello.txt"
"$tool" verify "$scratch/hello.mwr" >/dev/null
decoded=$(capnp decode "$schema" WrapperFile < "$scratch/hello.mwr")
for expected in 'name = "greeting"' 'kind = data' 'formatVersion = 2' 'hello from the package test' \
                'wrapperSize = '; do  # the second struct is the trailer (wrapper.capnp)
  if ! grep -qF "$expected" <<<"$decoded"; then
    echo "$decoded" >&2
    fail "capnp decode output lacks: $expected"
  fi
done
echo "check.sh: installed tool packed a wrapper that capnp decode reads with the installed schema"

# The FlatBuffers form: its metadata, written out by inspect, decoded by the stock flatc with
# the installed wrapper.fbs.
fbs=$prefix/include/mapwright/wrapper.fbs
test -f "$fbs" || fail "the FlatBuffers schema was not installed at $fbs"
"$tool" pack --format flatbuffers -o "$scratch/hello-fb.mwr" --data "greeting=$scratch/hello.txt"
"$tool" verify "$scratch/hello-fb.mwr" >/dev/null
"$tool" inspect "$scratch/hello-fb.mwr" --metadata-out "$scratch/hello-fb.bin" >/dev/null
flatc --json --raw-binary --strict-json -o "$scratch" "$fbs" -- "$scratch/hello-fb.bin"
for expected in '"name": "greeting"' '"kind": "Data"' '"format_version": 1' '"offset": 4096'; do
  if ! grep -qF "$expected" "$scratch/hello-fb.json"; then
    cat "$scratch/hello-fb.json" >&2
    fail "flatc output lacks: $expected"
  fi
done
echo "check.sh: installed tool packed a FlatBuffers-form wrapper whose metadata flatc decodes with the installed schema"
