//===- TortureFaults.cpp - dispatch-gen-torture's fault handling ----------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//

#include "TortureFaults.h"

#include <cstring>
#include <initializer_list>

#include <unistd.h>

namespace dispatchgen::torture {

namespace {

/// The entry and its resident area; set before the readers start.
uint64_t ResidentBegin = 0, ResidentEnd = 0;

FaultKind classify(int Sig, const siginfo_t *Info, const void *Context) {
  const auto *UC = static_cast<const ucontext_t *>(Context);
  uint64_t PC = UC->uc_mcontext.gregs[REG_RIP];
  if (Sig == SIGTRAP) {
    // int3 leaves the PC after itself. Poison is int3: the resident area's
    // before a rewrite, a released program's after its release.
    uint64_t At = PC - 1;
    if (At >= ResidentBegin && At < ResidentEnd)
      return FK_RewrittenResident;
    return FK_ReleasedProgram;
  }
  // Freed image memory holds `hlt` (a privileged instruction: SIGSEGV)
  // until it is reused; an instruction fetch from an inaccessible page is
  // one too. Programs are poisoned with int3 and entries never lose
  // execute, so only freed images fault so.
  if (Sig == SIGSEGV && (reinterpret_cast<uint64_t>(Info->si_addr) == PC ||
                         *reinterpret_cast<const uint8_t *>(PC) == 0xf4))
    return FK_ReleasedImage;
  return FK_Other;
}

void onFault(int Sig, siginfo_t *Info, void *Context) {
  if (InCall) {
    InCall = 0;
    siglongjmp(CallJmp, classify(Sig, Info, Context));
  }
  // Not a reader's call: nothing to recover, report and die.
  static const char Msg[] = "dispatch-gen-torture: fault outside a "
                            "dispatched call\n";
  (void)!write(2, Msg, sizeof(Msg) - 1);
  _exit(3);
}

} // namespace

void setResidentArea(uint64_t Begin, uint64_t End) {
  ResidentBegin = Begin;
  ResidentEnd = End;
}

void installFaultHandlers() {
  struct sigaction SA;
  std::memset(&SA, 0, sizeof(SA));
  SA.sa_sigaction = onFault;
  // NODEFER: leaving with siglongjmp (no mask restore) keeps it unblocked.
  SA.sa_flags = SA_NODEFER | SA_SIGINFO;
  sigemptyset(&SA.sa_mask);
  for (int Sig : {SIGTRAP, SIGILL, SIGSEGV, SIGBUS})
    sigaction(Sig, &SA, nullptr);
}

void onFallback(uint64_t) { TookFallback = true; }

} // namespace dispatchgen::torture
