# Runs CMD (a ;-separated command line) and checks that it fails cleanly: exit code 1 or 2 (not 0,
# not a signal), and one line on stderr that contains "error:" and MATCH.
#   cmake -DCMD="prog;--bad" -DMATCH="regex" -P expect_error.cmake
execute_process(COMMAND ${CMD} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
string(STRIP "${err}" err)
if(NOT rc MATCHES "^[12]$")
  message(FATAL_ERROR "expected exit code 1 or 2, got '${rc}'\nstderr: ${err}")
endif()
string(REGEX MATCHALL "\n" newlines "${err}")
list(LENGTH newlines n)
if(NOT n EQUAL 0)
  message(FATAL_ERROR "expected a one-line error on stderr, got:\n${err}")
endif()
if(NOT err MATCHES "error: .*${MATCH}")
  message(FATAL_ERROR "stderr does not match 'error: .*${MATCH}':\n${err}")
endif()
message(STATUS "failed cleanly (exit ${rc}): ${err}")
