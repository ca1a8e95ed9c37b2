#include "dispatch-gen/program.h"
typedef int (*prog_t)(int);
int data_dispatch(int x, prog_t p);
DISPATCHGEN_PROGRAM int inc(int x) { return x + 1; }
unsigned long dispatchgen_drive[4] = {1, 2, 3, 4};
int use(prog_t p) { return data_dispatch(1, p); }
