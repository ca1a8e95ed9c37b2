//===- CallingThreads.cpp - What a crash handler can know of a run --------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//

#include "CallingThreads.h"

#include <cstring>

namespace dispatchgen {

namespace {
std::atomic<const char *> CurrentPhase{"starting"};
/// A plain pointer with constant initialisation: reading it from a signal
/// handler needs no TLS initialiser.
thread_local const char *CallingProgram = nullptr;
} // namespace

const char *getRunPhase() { return CurrentPhase.load(); }

const char *getCallingProgram() { return CallingProgram; }

namespace run {

void setRunPhase(const char *Phase) { CurrentPhase.store(Phase); }

const char **callingProgramSlot() { return &CallingProgram; }

AltStack::AltStack() : Memory(64 * 1024) {
  stack_t SS;
  std::memset(&SS, 0, sizeof(SS));
  SS.ss_sp = Memory.data();
  SS.ss_size = Memory.size();
  Installed = sigaltstack(&SS, &Previous) == 0;
}

AltStack::~AltStack() {
  if (!Installed)
    return;
  stack_t Old = Previous;
  if (Old.ss_flags & SS_DISABLE) {
    std::memset(&Old, 0, sizeof(Old));
    Old.ss_flags = SS_DISABLE;
  } else {
    Old.ss_flags &= ~SS_ONSTACK;
  }
  sigaltstack(&Old, nullptr);
}

} // namespace run
} // namespace dispatchgen
