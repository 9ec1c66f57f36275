// The source that mapwright_test_pch compiles its precompiled header for (tests/CMakeLists.txt).
