#include "dispatch-gen/program.h"
typedef int (*prog_t)(int);
int one_dispatch(int x, prog_t p);
DISPATCHGEN_PROGRAM int only(int x) { return x + 1; }
unsigned long dispatchgen_drive(unsigned long i, prog_t p) {
  return (unsigned long)one_dispatch((int)i, p);
}
