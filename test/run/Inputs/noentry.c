#include "dispatch-gen/program.h"
typedef int (*prog_t)(int);
DISPATCHGEN_PROGRAM int inc(int x) { return x + 1; }
unsigned long dispatchgen_drive(unsigned long i, prog_t p) { return p((int)i); }
