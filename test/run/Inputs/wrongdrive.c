#include "dispatch-gen/program.h"
typedef int (*prog_t)(int);
int wrong_dispatch(int x, prog_t p);
DISPATCHGEN_PROGRAM int inc(int x) { return x + 1; }
int dispatchgen_drive(int i) { return i; }
int use(prog_t p) { return wrong_dispatch(1, p); }
