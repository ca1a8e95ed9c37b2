// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//===- SharedPrograms.cpp - Programs living in a shared library -----------===//
#include "SharedPrograms.h"

extern "C" int dispatchgen_test_shared_prog(int X) { return 9000 + X; }
extern "C" int dispatchgen_test_shared_prog2(int X) { return 9100 + X; }
