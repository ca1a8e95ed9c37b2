//===- TortureFaults.h - dispatch-gen-torture's fault handling --*- C++ -*-===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// How a reader survives a call into code that is gone: each call runs with
// InCall set, after a sigsetjmp(CallJmp) in the reader's own frame; a fault
// during it (a trap in a poisoned program or resident area, `hlt` in a freed
// image) leaves the call by siglongjmp, with the kind of fault, told by where
// it stopped, as the value. A fault outside a call ends the process.
//
// Also the fallback hook, which tells the calling thread that its call took
// the fallback.
//
//===----------------------------------------------------------------------===//

#ifndef DISPATCH_GEN_UTILS_TORTURE_TORTUREFAULTS_H
#define DISPATCH_GEN_UTILS_TORTURE_TORTUREFAULTS_H

#include <csetjmp>
#include <csignal>
#include <cstdint>

namespace dispatchgen::torture {

/// The value siglongjmp gives back to the reader's sigsetjmp.
enum FaultKind : int {
  FK_ReleasedProgram = 1,
  FK_ReleasedImage,
  FK_RewrittenResident,
  FK_Other
};

/// Set by a reader around each of its calls through the entry.
inline thread_local volatile sig_atomic_t InCall = 0;
/// Where a fault inside a call goes back to.
inline thread_local sigjmp_buf CallJmp;

/// The entry and its resident area, [Begin, End); set before the readers
/// start.
void setResidentArea(uint64_t Begin, uint64_t End);
/// Handles SIGTRAP, SIGILL, SIGSEGV and SIGBUS.
void installFaultHandlers();

/// Set by the fallback hook on the calling thread.
inline thread_local bool TookFallback = false;
/// DispatcherConfig::FallbackHookForTesting.
void onFallback(uint64_t Selector);

} // namespace dispatchgen::torture

#endif // DISPATCH_GEN_UTILS_TORTURE_TORTUREFAULTS_H
