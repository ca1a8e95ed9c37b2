#include "dispatch-gen/program.h"
typedef int (*prog_t)(int);
int loop_dispatch(int x, prog_t p);
DISPATCHGEN_PROGRAM int fine(int x) { return x + 1; }
unsigned long dispatchgen_drive(unsigned long i, prog_t p) {
  volatile int Forever = 1;
  while (Forever)
    ;
  return (unsigned long)loop_dispatch((int)i, p);
}
