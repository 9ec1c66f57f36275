// tests/support/sanitizers.h — which sanitizer this translation unit is built with:
// MAPWRIGHT_TEST_TSAN (ThreadSanitizer) and MAPWRIGHT_TEST_ASAN (AddressSanitizer) are
// defined to 1 when it is, by g++'s __SANITIZE_*__ or clang's __has_feature.
#pragma once

#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define MAPWRIGHT_TEST_TSAN 1
#endif
#if __has_feature(address_sanitizer)
#define MAPWRIGHT_TEST_ASAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__) && !defined(MAPWRIGHT_TEST_TSAN)
#define MAPWRIGHT_TEST_TSAN 1
#endif
#if defined(__SANITIZE_ADDRESS__) && !defined(MAPWRIGHT_TEST_ASAN)
#define MAPWRIGHT_TEST_ASAN 1
#endif
