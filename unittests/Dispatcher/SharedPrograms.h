// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//===- SharedPrograms.h - Programs living in a shared library ---*- C++ -*-===//
#ifndef DISPATCH_GEN_UNITTESTS_LOWERING_SHAREDPROGRAMS_H
#define DISPATCH_GEN_UNITTESTS_LOWERING_SHAREDPROGRAMS_H

extern "C" int dispatchgen_test_shared_prog(int X);
extern "C" int dispatchgen_test_shared_prog2(int X);

#endif
