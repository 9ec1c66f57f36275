# tests/support/expect_output.cmake — runs PROGRAM with ARGS (cmake -DPROGRAM=... [-DARGS=x;y]
# -DPATTERNS=a;b -P this)
# and fails unless it exits 0 and its standard output matches every regular expression in
# PATTERNS, in order. For example programs, which CTest runs as they are (PASS_REGULAR_EXPRESSION
# alone would ignore the exit status).
execute_process(COMMAND ${PROGRAM} ${ARGS} RESULT_VARIABLE status OUTPUT_VARIABLE out ERROR_VARIABLE err)
message("${out}${err}")
if(NOT status EQUAL 0)
  message(FATAL_ERROR "${PROGRAM} exited with ${status}")
endif()
set(rest "${out}")
foreach(pattern IN LISTS PATTERNS)
  string(REGEX MATCH "${pattern}" found "${rest}")
  if(found STREQUAL "")
    message(FATAL_ERROR "${PROGRAM}: no match for '${pattern}' in what follows the previous match:\n${rest}")
  endif()
  string(FIND "${rest}" "${found}" at)
  string(LENGTH "${found}" length)
  math(EXPR after "${at} + ${length}")
  string(SUBSTRING "${rest}" ${after} -1 rest)
endforeach()
