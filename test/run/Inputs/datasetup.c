#include "dispatch-gen/program.h"
typedef int (*prog_t)(int);
int setup_dispatch(int x, prog_t p);
DISPATCHGEN_PROGRAM int inc(int x) { return x + 1; }
int dispatchgen_setup = 7;
unsigned long dispatchgen_drive(unsigned long i, prog_t p) {
  return (unsigned long)setup_dispatch((int)i, p);
}
