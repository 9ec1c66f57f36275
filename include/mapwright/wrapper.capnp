# mapwright/wrapper.capnp — the wrapper file format (format version 1).
#
# A wrapper file is ONE Cap'n Proto message in standard stream framing (the segment table,
# then the segments), so the stock tool decodes it:
#
#   capnp decode <include dir>/mapwright/wrapper.capnp WrapperFile < file.mwr
#
# (It prints every embedded byte; `mapwright inspect` prints the table of entries.)
#
# How mapwright writes it (a reader must not rely on more than the schema and the checks
# listed under "What a reader checks"):
#   * Each chunk of an entry is a Data blob that starts on a 4096-byte boundary of the file,
#     written in place into the mapped file (no staging buffer). The chunks of one entry are
#     consecutive in the file unless a Cap'n Proto segment ends between them (only in files
#     larger than 4 GiB).
#   * The entries' metadata (this root and the Entry structs) is written last, after every
#     blob, so the file is built front to back in one pass.
#
# What a reader checks (mapwright::Wrapper::open):
#   * the stream framing and segment table (sizes within the file, no trailing bytes);
#   * magic and formatVersion;
#   * each entry: a non-empty name without NUL, unique; a known kind; a 16-byte digest of a
#     known algorithm; chunks whose sizes add up to `size` with no overflow, each starting
#     page-aligned, none overlapping another entry's bytes; dependencies only on libraries,
#     none on itself, none on data, no cycle.
@0xd9e1ca8b3f6a5c27;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("mapwright::schema");

# "MWRAPPER" in ASCII, read as a little-endian UInt64.
const wrapperMagic :UInt64 = 0x524550504152574d;
const wrapperFormatVersion :UInt32 = 1;

struct WrapperFile {
  magic @0 :UInt64;            # must equal wrapperMagic
  formatVersion @1 :UInt32;    # must equal wrapperFormatVersion
  producer @2 :Text;           # who wrote the file, e.g. "mapwright 0.1.0"
  entries @3 :List(Entry);
}

struct Entry {
  name @0 :Text;               # unique within the file; what load_library(name) and
                               # dependencies refer to
  kind @1 :Kind;
  size @2 :UInt64;             # total bytes: the sum of the chunks' sizes
  digestAlgorithm @3 :DigestAlgorithm;
  digest @4 :Data;             # 16 bytes; see DigestAlgorithm
  dependencies @5 :List(Text); # libraries only: names of library entries loaded before it
  chunks @6 :List(Data);       # the bytes, in order; each chunk at most 256 MiB by default
                               # (a Cap'n Proto Data holds less than 512 MiB)
}

enum Kind {
  sharedLibrary @0;            # an ELF shared object for the dynamic loader
  data @1;                     # anything else
}

enum DigestAlgorithm {
  xxh3x128 @0;                 # XXH3 128-bit (xxHash 0.8), seed 0, over the entry's bytes,
                               # stored in canonical (big-endian) form: the hex digits are
                               # what `xxh128sum` prints for the extracted entry.
}
