//===- ShadowStack.h - Whether a thread has a shadow stack ------*- C++ -*-===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// A retpoline returns to an address it wrote over its own return address:
// under a user shadow stack (x86 CET, Linux 6.6 and later, which glibc
// enables for binaries marked for it) that `ret` faults. The code that
// would run one asks first.
//
//===----------------------------------------------------------------------===//

#ifndef DISPATCH_GEN_LIB_DISPATCHER_SHADOWSTACK_H
#define DISPATCH_GEN_LIB_DISPATCHER_SHADOWSTACK_H

#if defined(__x86_64__) && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace dispatchgen {

/// Whether the calling thread runs with a user shadow stack. False where
/// the kernel does not know the question (before Linux 6.6).
inline bool shadowStackEnabled() {
#if defined(__x86_64__) && defined(__linux__)
  // ARCH_SHSTK_STATUS and its ARCH_SHSTK_SHSTK bit (asm/prctl.h of Linux
  // 6.6; older headers lack them).
  constexpr int ArchShstkStatus = 0x5005;
  unsigned long long Features = 0;
  if (syscall(SYS_arch_prctl, ArchShstkStatus, &Features) != 0)
    return false;
  return Features & 1;
#else
  return false;
#endif
}

} // namespace dispatchgen

#endif // DISPATCH_GEN_LIB_DISPATCHER_SHADOWSTACK_H
