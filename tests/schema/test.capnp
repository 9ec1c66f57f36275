# Test schema for the Cap'n Proto suites: every kind of field a wrapper or a user message has.
@0xd9b7f3a1c2e4a601;

struct Item {
  key @0 :Text;
  value @1 :UInt64;
}

struct TestAll {
  id @0 :UInt64;
  name @1 :Text;
  blob @2 :Data;
  words @3 :List(UInt64);
  names @4 :List(Text);
  nested @5 :List(List(UInt32));
  choice :union {
    none @6 :Void;
    number @7 :Int64;
    label @8 :Text;
  }
  items @9 :List(Item);
  blobs @10 :List(Data);       # blobs placed with new_aligned_data(), adopted one by one
}
