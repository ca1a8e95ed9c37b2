//===- TypedDispatcherRefusals.cpp - Prototypes that must not compile -----===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// Compiled with -fsyntax-only and one of CASE_struct, CASE_longdouble,
// CASE_reference, CASE_variadic by ctest, which expects the static_assert's
// message (typed-dispatcher-refuses-*): each must fail to compile.
//
//===----------------------------------------------------------------------===//

#include "dispatch-gen/TypedDispatcher.h"

struct Pair {
  long A, B;
};

#if defined(CASE_struct)
using F = Pair(const void *);
#elif defined(CASE_longdouble)
using F = int(long double);
#elif defined(CASE_reference)
using F = int(const int &);
#elif defined(CASE_variadic)
using F = int(const char *, ...);
#else
using F = int(const void *);
#endif

std::string signatureOf() {
  return dispatchgen::TypedDispatcher<F>::signature();
}
