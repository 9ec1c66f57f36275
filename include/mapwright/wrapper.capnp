# mapwright/wrapper.capnp — the wrapper file format (format version 2, or 3 when an entry is
# compressed: the same layout with compressed entries; version 1 is still read).
#
# This is the Cap'n Proto form. The same entries, rules and integrity also come in a
# FlatBuffers form (wrapper.fbs, beside this file; `mapwright pack --format flatbuffers`);
# mapwright reads both, telling them apart by their first bytes.
#
# A version 2 wrapper file is TWO Cap'n Proto messages in standard stream framing, back to
# back: the wrapper itself (the segment table, then the segments; root: WrapperFile with
# producer and entries), then the TRAILER, a tiny single-segment message whose root is also a
# WrapperFile, carrying only magic, formatVersion, wrapperSize, metadataOffset and
# metadataDigest. The stock tool decodes both:
#
#   capnp decode <include dir>/mapwright/wrapper.capnp WrapperFile < file.mwr
#
# prints two WrapperFile structs: the first with the producer and every entry (and every
# embedded byte: `mapwright inspect` prints the table of entries instead), wrapperSize = 0
# and metadataOffset = 0; the second with only the trailer fields. (A version 1 file is the
# first message alone; `capnp decode` prints one struct.)
#
# The trailer is always the last kWrapperTrailerBytes (88) bytes, written exactly as
# Cap'n Proto's MallocMessageBuilder + writeMessage encode it (segment table 00000000
# 0a000000, root pointer, 4 data words, 3 pointers, the 16-byte digest): a reader finds the
# wrapper's first byte from the end of the file alone, as wrapperSize bytes before the end.
# So a wrapper may also sit at the end of a larger file (appended to an executable padded with
# zeros to a multiple of 4096): it must start at a multiple of 4096 of that file, so that its
# chunks stay page-aligned there, and everything below — offsets, "the file" — is then
# relative to the wrapper's first byte and its own bytes (Wrapper::open_embedded).
#
# Integrity (version 2): every byte of the file is in exactly one of
#   * a CHUNK (an entry's bytes): covered by the entry's digest (Wrapper::verify_entry);
#   * the HASHED METADATA: the segment table and the root pointer (bytes [0, H), H = the
#     table's size + 8), and [metadataOffset, S), S = the first message's size — the root,
#     the entries, their names, kinds, dependencies, digests, the chunk pointers, far pointers
#     and landing pads, all written last. metadataDigest (XXH3-128, canonical byte order) is
#     the digest of: bytes [0, H), bytes [metadataOffset, S), then wrapperSize and
#     metadataOffset as little-endian UInt64s. Wrapper::open checks it (it reads no blob:
#     its cost grows with the number of entries, not their sizes);
#   * ZERO: everything else in [H, metadataOffset) — the alignment padding before each chunk,
#     the bytes after a chunk up to its 8-byte word, unused segment tails (holes in files over
#     4 GiB), given-up blobs. Which bytes these are follows from the chunk pointers and
#     metadataOffset, so the digest covers the partition too. Wrapper::verify checks they are
#     zero (open() does not read them);
#   * the TRAILER: checked field by field and byte for byte against its encoding.
# So a flip of any single bit anywhere is refused by open() or verify().
#
# Version 1 files (no trailer; no metadataDigest) are still read: their entries' digests are
# checked, but not their metadata (Wrapper::metadata_checked() is false; the tool warns).
#
# How mapwright writes it (a reader must not rely on more than the schema and the checks
# listed under "What a reader checks"):
#   * Each chunk of an entry is a Data blob that starts on a 4096-byte boundary of the file,
#     written in place into the mapped file (no staging buffer). The chunks of one entry are
#     consecutive in the file unless a Cap'n Proto segment ends between them (only in files
#     larger than 4 GiB).
#   * The entries' metadata (this root and the Entry structs) is written last, after every
#     blob, so the file is built front to back in one pass; then the trailer.
#
# What a reader checks (mapwright::Wrapper::open):
#   * the trailer (version 2 or 3): its encoding, magic, formatVersion 2 (the trailer's own
#     layout, also in a version 3 file, so that version 2 readers find it and then refuse the
#     root's version 3 by name), wrapperSize = the
#     wrapper's size (the file's, for a whole file), metadataOffset within the first message;
#     the metadata digest;
#   * the stream framing and segment table (sizes within the file; the first message ends
#     exactly where the trailer begins, or, in version 1, at the end of the file);
#   * magic and formatVersion (1, 2 or 3; 2 or 3 if there is a trailer; 3 if an entry is
#     compressed);
#   * each entry: a non-empty name without NUL, unique; a known kind; a 16-byte digest of a
#     known algorithm; chunks whose sizes add up to `size` with no overflow, each starting
#     page-aligned, none overlapping another entry's bytes (version 2: all of them inside
#     [H, metadataOffset)); dependencies only on libraries, none on itself, none on data, no
#     cycle; a compressed entry: a known compression, contiguous chunks, a frame table as
#     described at frameEnds (every frame's bytes are checked when they are decoded).
@0xd9e1ca8b3f6a5c27;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("mapwright::schema");

# "MWRAPPER" in ASCII, read as a little-endian UInt64.
const wrapperMagic :UInt64 = 0x524550504152574d;
const wrapperFormatVersion :UInt32 = 2;
# The version of a file that holds a compressed entry (a version 2 file otherwise).
const wrapperCompressedFormatVersion :UInt32 = 3;
# The size of the trailer message at the end of a version 2 file, in bytes.
const wrapperTrailerBytes :UInt64 = 88;

struct WrapperFile {
  magic @0 :UInt64;            # must equal wrapperMagic
  formatVersion @1 :UInt32;    # wrapperFormatVersion (2), 3 with a compressed entry, or 1 in
                               # files written before the trailer
  producer @2 :Text;           # who wrote the file, e.g. "mapwright 0.1.0"
  entries @3 :List(Entry);
  # The trailer's fields (version 2): set in the trailer message only, 0/null in the first.
  wrapperSize @4 :UInt64;      # bytes of the whole wrapper, trailer included
  metadataOffset @5 :UInt64;   # where the hashed metadata of the first message starts
  metadataDigest @6 :Data;     # 16 bytes, XXH3-128 (see "Integrity" above)
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
                               # (a Cap'n Proto Data holds less than 512 MiB); compressed:
                               # the stored (compressed) bytes, contiguous in the file
  # Format version 3 (a file with a compressed entry; version 2 readers refuse it by its
  # version rather than misread it). With compression = zstd the entry's `size` bytes are cut
  # in frames of frameSize bytes (the last one shorter), each compressed on its own as one
  # zstd frame that records its size and a checksum of its content (mapwright writes both;
  # a reader checks the size, and zstd the checksum when there is one); the frames follow each other in the chunks' bytes, and
  # frameEnds[i] is where frame i ends there (frame i starts at frameEnds[i-1], frame 0 at 0;
  # the last ends at the chunks' total size). `size`, `digest` and what `extract` writes are
  # the uncompressed bytes.
  compression @7 :Compression;
  frameSize @8 :UInt64;        # a multiple of 4096, 4 KiB to 64 MiB; 0 when not compressed
  frameEnds @9 :List(UInt64);  # ceil(size / frameSize) ends, increasing
}

enum Compression {
  none @0;                     # the chunks are the entry's bytes
  zstd @1;                     # independent zstd frames (zstd 1.5, RFC 8878), as above
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
