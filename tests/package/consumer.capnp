# The package test's own schema: a consumer compiles it with capnp_generate_cpp() and builds a
# message of it in place with mapwright::MappedMessageBuilder.
@0xd5c3a4e1f2b60a97;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("consumer");

struct Reading {
  label @0 :Text;
  values @1 :List(UInt64);
}
