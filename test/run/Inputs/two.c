#include "dispatch-gen/program.h"
typedef int (*prog_t)(int);
int two_dispatch(int x, prog_t p);
DISPATCHGEN_PROGRAM int add_one(int x) { return x + 1; }
DISPATCHGEN_PROGRAM int add_two(int x) { return x + 2; }
unsigned long dispatchgen_drive(unsigned long i, prog_t p) {
  return (unsigned long)two_dispatch((int)i, p);
}
