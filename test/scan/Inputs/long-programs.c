#include "dispatch-gen/program.h"
DISPATCHGEN_PROGRAM long twice(long x) { return 2 * x; }
