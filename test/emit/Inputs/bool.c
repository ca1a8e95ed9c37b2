#include "dispatch-gen/program.h"
DISPATCHGEN_PROGRAM _Bool is_small(short x) { return x < 10; }
DISPATCHGEN_PROGRAM _Bool is_neg(short x) { return x < 0; }
