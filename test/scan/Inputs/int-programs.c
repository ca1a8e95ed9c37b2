#include "dispatch-gen/program.h"

DISPATCHGEN_PROGRAM int halve(int x) { return x / 2; }
