#include "dispatch-gen/program.h"

typedef int (*handler_t)(void *state, long arg);

DISPATCHGEN_PROGRAM int add_one(void *state, long arg) {
  (void)state;
  return (int)arg + 1;
}

DISPATCHGEN_PROGRAM static int twice(void *state, long arg) {
  (void)state;
  return (int)arg * 2;
}

/* Not annotated: not a program unless --prototype=handler_t. */
int plain(void *state, long arg) {
  (void)state;
  return (int)arg;
}

/* A declaration is never a program. */
int declared_only(void *state, long arg);
