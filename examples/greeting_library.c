/* greeting_library: the tiny shared library that load_from_memory loads without a file. */
#include <stdio.h>

/* Writes "hello, <who>, from a library that was never on disk" into out (at most size bytes,
   NUL-terminated) and returns the length the whole greeting needs, as snprintf does. */
int greet(const char* who, char* out, int size) {
  const size_t capacity = size > 0 ? (size_t)size : 0;
  return snprintf(out, capacity, "hello, %s, from a library that was never on disk", who);
}

int answer(void) { return 42; }
