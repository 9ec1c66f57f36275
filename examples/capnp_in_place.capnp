# The schema of the capnp_in_place example: one large message, read back with stock tools.
@0xbf7561e9b84bafce;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("example");

struct Dataset {
  name @0 :Text;
  created @1 :UInt64;           # seconds since the Unix epoch
  values @2 :List(UInt64);      # the bulk of the message, filled by plain stores
  attachment @3 :Data;          # page-aligned in the file, so it can be mapped on its own
}
