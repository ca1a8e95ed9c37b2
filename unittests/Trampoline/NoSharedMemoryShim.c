/*===- NoSharedMemoryShim.c - Sandboxes without executable memfds ---------===*
 * SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
 *
 * Part of dispatch-gen.
 *
 *===----------------------------------------------------------------------===*
 *
 * An LD_PRELOAD library for TrampolineTests: memfd_create fails as in a
 * seccomp sandbox or under vm.memfd_noexec. With DISPATCHGEN_SHIM_FAIL=all,
 * shm_open and O_TMPFILE fail too, so no executable shared memory is left.
 *
 *===----------------------------------------------------------------------===*/

#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

static int failAll(void) {
  const char *V = getenv("DISPATCHGEN_SHIM_FAIL");
  return V && strcmp(V, "all") == 0;
}

int memfd_create(const char *Name, unsigned Flags) {
  (void)Name;
  (void)Flags;
  errno = ENOSYS;
  return -1;
}

int shm_open(const char *Name, int Flags, mode_t Mode) {
  if (failAll()) {
    errno = EACCES;
    return -1;
  }
  int (*Real)(const char *, int, mode_t) =
      (int (*)(const char *, int, mode_t))dlsym(RTLD_NEXT, "shm_open");
  return Real(Name, Flags, Mode);
}

static int openWith(const char *Symbol, const char *Path, int Flags,
                    mode_t Mode) {
  if ((Flags & O_TMPFILE) == O_TMPFILE && failAll()) {
    errno = EOPNOTSUPP;
    return -1;
  }
  int (*Real)(const char *, int, ...) =
      (int (*)(const char *, int, ...))dlsym(RTLD_NEXT, Symbol);
  return Real(Path, Flags, Mode);
}

/* open() and open64() take a mode only with O_CREAT or O_TMPFILE. */
#define FORWARD_OPEN(Symbol, Path, Flags)                                      \
  do {                                                                         \
    mode_t Mode = 0;                                                           \
    if ((Flags) & (O_CREAT | O_TMPFILE)) {                                     \
      va_list Args;                                                            \
      va_start(Args, Flags);                                                   \
      Mode = va_arg(Args, mode_t);                                             \
      va_end(Args);                                                            \
    }                                                                          \
    return openWith(Symbol, Path, Flags, Mode);                                \
  } while (0)

int open(const char *Path, int Flags, ...) { FORWARD_OPEN("open", Path, Flags); }

int open64(const char *Path, int Flags, ...) {
  FORWARD_OPEN("open64", Path, Flags);
}
