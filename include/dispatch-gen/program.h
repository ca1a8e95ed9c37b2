/*===- program.h - Mark C functions as dispatcher programs --------*- C -*-===*\
 * SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
|*                                                                            *|
|* Part of dispatch-gen.                                                      *|
|*                                                                            *|
|*===----------------------------------------------------------------------===*|
|*                                                                            *|
|* Include this header in C program files and put DISPATCHGEN_PROGRAM on the  *|
|* definitions that dispatch-gen's frontend should treat as programs:        *|
|*                                                                            *|
|*   #include "dispatch-gen/program.h"                                       *|
|*                                                                            *|
|*   DISPATCHGEN_PROGRAM unsigned int drop_tcp(const void *ctx,              *|
|*                                             const void *insn) { ... }     *|
|*                                                                            *|
|* Static functions may be programs too. Only Clang (the frontend's parser)  *|
|* sees the annotation; for other compilers the macro is empty, so the same   *|
|* file still builds the programs ahead of time.                              *|
|*                                                                            *|
\*===----------------------------------------------------------------------===*/

#ifndef DISPATCH_GEN_PROGRAM_H
#define DISPATCH_GEN_PROGRAM_H

/* The string must equal dispatchgen::ProgramAnnotation (Frontend.h). */
#if defined(__clang__)
#define DISPATCHGEN_PROGRAM __attribute__((annotate("dispatch-gen.program")))
#else
#define DISPATCHGEN_PROGRAM
#endif

#endif /* DISPATCH_GEN_PROGRAM_H */
