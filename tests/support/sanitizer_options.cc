// tests/support/sanitizer_options.cc — the sanitizer runtimes' default options for the test
// programs. Compiled into every test executable directly (tests/CMakeLists.txt), not into
// mapwright_test_support: the runtimes look these functions up through a weak reference,
// which does not pull a member out of a static library.
//
// Children in the tests must die by SIGBUS exactly as without a sanitizer. The sanitizer
// runtimes install their own SIGBUS handler by default, which would catch the SIGBUS that
// mapwright re-raises under SIG_DFL to end the process and turn it into a report and exit code
// 66 (TSan) or would take SIGBUS from mapwright altogether (ASan). These defaults keep the
// runtimes off SIGBUS; TSAN_OPTIONS / ASAN_OPTIONS / UBSAN_OPTIONS from the environment still
// add to them. Without a sanitizer this file defines nothing.
#include "sanitizers.h"

#if defined(MAPWRIGHT_TEST_TSAN)
extern "C" __attribute__((used, visibility("default"))) const char* __tsan_default_options() {
  return "handle_sigbus=0:halt_on_error=1";  // a report in a child must fail the child
}
// The loader's SONAME check (src/loader.cc, name_in_use) reads the link map's names inside
// dl_iterate_phdr(), which holds ld.so's dl_load_write_lock; another thread's dlopen() adds
// an object to the list under the same lock, after strdup()ing its name. ld.so is not
// instrumented, so TSan sees neither lock and reports the strdup against the read.
extern "C" __attribute__((used, visibility("default"))) const char* __tsan_default_suppressions() {
  return "race:name_in_use\n";
}
#endif
#if defined(MAPWRIGHT_TEST_ASAN)
extern "C" __attribute__((used, visibility("default"))) const char* __asan_default_options() {
  return "handle_sigbus=0:allow_user_segv_handler=1";
}
// UBSan (built together with ASan here) only prints and carries on by default; a child
// that then _exit(0)s would hide the report.
extern "C" __attribute__((used, visibility("default"))) const char* __ubsan_default_options() {
  return "halt_on_error=1:print_stacktrace=1";
}
#endif
