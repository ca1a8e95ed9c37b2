#include "dispatch-gen/program.h"
DISPATCHGEN_PROGRAM long add1(long x, const char *s) { return x + 1; }
DISPATCHGEN_PROGRAM long add2(long x, const char *s) { return x + 2; }
