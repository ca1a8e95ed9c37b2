#include "dispatch-gen/program.h"
typedef int (*prog_t)(int);
int dispatch(int x, prog_t p);
DISPATCHGEN_PROGRAM int inc(int x) { return x + 1; }
/* Calls the entry, but is not the driver run looks for. */
int not_the_driver(int x) { return dispatch(x, inc); }
