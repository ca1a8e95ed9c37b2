#include "dispatch-gen/program.h"

typedef int (*handler_t)(void *state, long arg);

DISPATCHGEN_PROGRAM int good(void *state, long arg) { return (int)arg; }

DISPATCHGEN_PROGRAM int bad(int x) { return x; }
