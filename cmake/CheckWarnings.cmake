# Proof that the warning flags really apply: each snippet below must fail to
# compile with the project's flags, or configuration stops.
include(CheckCSourceCompiles)

function(mm_expect_rejected name source)
  set(CMAKE_REQUIRED_FLAGS "-std=c11 ${ARGN}")
  string(REPLACE ";" " " CMAKE_REQUIRED_FLAGS "${CMAKE_REQUIRED_FLAGS}")
  set(CMAKE_REQUIRED_QUIET ON)
  check_c_source_compiles("${source}" ${name})
  if(${name})
    message(FATAL_ERROR "warning flags do not apply: ${name} compiled")
  endif()
  message(STATUS "warning flags apply: ${name} rejected")
endfunction()

mm_expect_rejected(MM_REJECTS_MISSING_PROTOTYPE
  "int helper(int x) { return x; } int main(void) { return helper(0); }" ${MM_WARNINGS})
mm_expect_rejected(MM_REJECTS_STRICT_PROTOTYPE
  "int helper(); int helper() { return 0; } int main(void) { return helper(); }" ${MM_WARNINGS})
mm_expect_rejected(MM_REJECTS_VLA
  "int main(int argc, char **argv) { char b[argc]; b[0] = 0; (void)argv; return b[0]; }" ${MM_WARNINGS})
mm_expect_rejected(MM_REJECTS_FALLTHROUGH
  "int main(int argc, char **argv) { (void)argv; switch (argc) { case 1: argc++; case 2: return 1; } return 0; }" ${MM_WARNINGS})
