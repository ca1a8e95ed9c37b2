#include "dispatch-gen/program.h"
typedef int (*prog_t)(int);
int crash_dispatch(int x, prog_t p);
DISPATCHGEN_PROGRAM int fine(int x) { return x + 1; }
DISPATCHGEN_PROGRAM int faulty(int x) { return *(volatile int *)0 + x; }
unsigned long dispatchgen_drive(unsigned long i, prog_t p) {
  return (unsigned long)crash_dispatch((int)i, p);
}
