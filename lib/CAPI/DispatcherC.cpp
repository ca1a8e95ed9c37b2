//===- DispatcherC.cpp - The C API of dispatch-gen ------------------------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// Thin wrappers: each C call converts its references and calls the C++ API.
// The ORC references are LLVM-C's, which name the same objects.
//
//===----------------------------------------------------------------------===//

#include "dispatch-gen-c/Dispatcher.h"

#include "dispatch-gen/Dispatcher.h"
#include "dispatch-gen/Reclamation.h"

#include "llvm/ExecutionEngine/Orc/LLJIT.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>

using namespace llvm;
using namespace dispatchgen;

namespace {

struct ConfigBox {
  DispatcherConfig Config;
  DispatchGenReleaseCallback OnRelease = nullptr;
  void *OnReleaseContext = nullptr;
};

ConfigBox *unwrap(DispatchGenConfigRef C) {
  return reinterpret_cast<ConfigBox *>(C);
}
Dispatcher *unwrap(DispatchGenDispatcherRef D) {
  return reinterpret_cast<Dispatcher *>(D);
}
ProgramSet::Batch *unwrap(DispatchGenBatchRef B) {
  return reinterpret_cast<ProgramSet::Batch *>(B);
}
ArgExtension extension(DispatchGenExtension E) {
  return E == DispatchGenExtZero   ? ArgExtension::ZeroExt
         : E == DispatchGenExtSign ? ArgExtension::SignExt
                                   : ArgExtension::None;
}
StringRef name(const char *S) { return S ? StringRef(S) : StringRef(); }

/// The settings of C, with its release callback wrapped.
DispatcherConfig configOf(ConfigBox &C) {
  DispatcherConfig Config;
  Config.Name = C.Config.Name;
  Config.Signature = C.Config.Signature;
  Config.SelectorArg = C.Config.SelectorArg;
  Config.ReturnExtension = C.Config.ReturnExtension;
  Config.ParamExtensions = C.Config.ParamExtensions;
  Config.Capacity = C.Config.Capacity;
  Config.Flavor = C.Config.Flavor;
  Config.Reclaim = C.Config.Reclaim;
  Config.RetpolineFallback = C.Config.RetpolineFallback;
  Config.Near = C.Config.Near;
  Config.CompiledEntry = C.Config.CompiledEntry;
  Config.VerifyImages = C.Config.VerifyImages;
  Config.Adaptive = C.Config.Adaptive;
  Config.CostModel = C.Config.CostModel;
  if (C.OnRelease)
    Config.OnRelease = [F = C.OnRelease, Ctx = C.OnReleaseContext](
                           const ProgramEntry &P) { F(Ctx, P.Address); };
  return Config;
}

LLVMErrorRef created(Expected<std::unique_ptr<Dispatcher>> D,
                     DispatchGenDispatcherRef *Result) {
  *Result = nullptr;
  if (!D)
    return wrap(D.takeError());
  *Result = reinterpret_cast<DispatchGenDispatcherRef>(D->release());
  return nullptr;
}

} // namespace

extern "C" {

DispatchGenConfigRef DispatchGenCreateConfig(const char *Name,
                                             const char *Signature) {
  auto *C = new ConfigBox();
  C->Config.Name = name(Name).str();
  C->Config.Signature = name(Signature).str();
  return reinterpret_cast<DispatchGenConfigRef>(C);
}
void DispatchGenDisposeConfig(DispatchGenConfigRef C) { delete unwrap(C); }
void DispatchGenConfigSetSelectorArg(DispatchGenConfigRef C, unsigned I) {
  unwrap(C)->Config.SelectorArg = I;
}
void DispatchGenConfigSetCapacity(DispatchGenConfigRef C, unsigned N) {
  unwrap(C)->Config.Capacity = N;
}
void DispatchGenConfigSetFlavor(DispatchGenConfigRef C,
                                DispatchGenRCUFlavor F) {
  unwrap(C)->Config.Flavor =
      F == DispatchGenRCUQSBR ? RCUFlavor::QSBR : RCUFlavor::Memb;
}
void DispatchGenConfigSetReclaim(DispatchGenConfigRef C,
                                 DispatchGenReclaimMode M) {
  unwrap(C)->Config.Reclaim = M == DispatchGenReclaimAsynchronous
                                  ? ReclaimMode::Asynchronous
                                  : ReclaimMode::Synchronous;
}
void DispatchGenConfigSetNear(DispatchGenConfigRef C, uint64_t Near) {
  unwrap(C)->Config.Near = Near;
}
void DispatchGenConfigSetRetpolineFallback(DispatchGenConfigRef C, int On) {
  unwrap(C)->Config.RetpolineFallback = On != 0;
}
void DispatchGenConfigSetAdaptive(DispatchGenConfigRef C, int Enabled,
                                  int Background) {
  unwrap(C)->Config.Adaptive.Enabled = Enabled != 0;
  unwrap(C)->Config.Adaptive.Background = Background != 0;
}
void DispatchGenConfigSetAdaptiveSchedule(DispatchGenConfigRef C,
                                          uint64_t Window, uint64_t Period,
                                          uint64_t MaxPeriod) {
  AdaptiveConfig &A = unwrap(C)->Config.Adaptive;
  if (Window)
    A.Window = std::chrono::microseconds(Window);
  if (Period)
    A.Period = std::chrono::microseconds(Period);
  if (MaxPeriod)
    A.MaxPeriod = std::chrono::microseconds(MaxPeriod);
}
void DispatchGenConfigSetAdaptiveTrigger(DispatchGenConfigRef C, uint64_t Poll,
                                         uint64_t Calls) {
  AdaptiveConfig &A = unwrap(C)->Config.Adaptive;
  A.TriggerPoll = std::chrono::microseconds(Poll);
  A.TriggerCalls = Calls;
}
void DispatchGenConfigSetAdaptiveSampling(DispatchGenConfigRef C,
                                          unsigned Burst, unsigned Skip,
                                          uint64_t On, uint64_t Off) {
  AdaptiveConfig &A = unwrap(C)->Config.Adaptive;
  A.SampleBurst = Burst;
  A.SampleSkip = Skip;
  // Beyond what the check accepts (60 s), kept out of range rather than
  // wrapped into it.
  auto Micros = [](uint64_t V) {
    return std::chrono::microseconds(std::min<uint64_t>(V, uint64_t(1) << 62));
  };
  A.SampleOn = Micros(On);
  A.SampleOff = Micros(Off);
}
void DispatchGenConfigSetCostModel(DispatchGenConfigRef C, double Compare,
                                   double Mispredict,
                                   double IndirectMispredict) {
  LayoutCostModel M;
  M.Compare = Compare;
  M.Mispredict = Mispredict;
  M.IndirectMispredict = IndirectMispredict;
  unwrap(C)->Config.CostModel = M;
}
void DispatchGenConfigClearCostModel(DispatchGenConfigRef C) {
  unwrap(C)->Config.CostModel.reset();
}
void DispatchGenConfigSetVerifyImages(DispatchGenConfigRef C, int On) {
  unwrap(C)->Config.VerifyImages = On != 0;
}
void DispatchGenConfigSetCompiledEntry(DispatchGenConfigRef C, void *Entry) {
  unwrap(C)->Config.CompiledEntry = Entry;
}
void DispatchGenConfigSetReturnExtension(DispatchGenConfigRef C,
                                         DispatchGenExtension E) {
  unwrap(C)->Config.ReturnExtension = extension(E);
}
void DispatchGenConfigSetParamExtensions(DispatchGenConfigRef C,
                                         const DispatchGenExtension *Exts,
                                         size_t Count) {
  auto &V = unwrap(C)->Config.ParamExtensions;
  V.clear();
  for (size_t I = 0; I < Count; ++I)
    V.push_back(extension(Exts[I]));
}
void DispatchGenConfigSetOnRelease(DispatchGenConfigRef C,
                                   DispatchGenReleaseCallback F, void *Ctx) {
  unwrap(C)->OnRelease = F;
  unwrap(C)->OnReleaseContext = Ctx;
}

LLVMErrorRef DispatchGenCreateDispatcher(DispatchGenConfigRef C,
                                         DispatchGenDispatcherRef *Result) {
  return created(Dispatcher::create(configOf(*unwrap(C))), Result);
}
LLVMErrorRef
DispatchGenCreateDispatcherInSession(DispatchGenConfigRef C,
                                     LLVMOrcExecutionSessionRef ES,
                                     DispatchGenDispatcherRef *Result) {
  return created(
      Dispatcher::create(configOf(*unwrap(C)),
                         *reinterpret_cast<orc::ExecutionSession *>(ES)),
      Result);
}
LLVMErrorRef
DispatchGenCreateDispatcherInLLJIT(DispatchGenConfigRef C, LLVMOrcLLJITRef J,
                                   DispatchGenDispatcherRef *Result) {
  return created(Dispatcher::create(configOf(*unwrap(C)),
                                    *reinterpret_cast<orc::LLJIT *>(J)),
                 Result);
}
void DispatchGenDisposeDispatcher(DispatchGenDispatcherRef D) {
  delete unwrap(D);
}

uint64_t DispatchGenGetEntry(DispatchGenDispatcherRef D) {
  return unwrap(D)->entry();
}
LLVMOrcJITDylibRef DispatchGenGetEntryDylib(DispatchGenDispatcherRef D) {
  return reinterpret_cast<LLVMOrcJITDylibRef>(unwrap(D)->entryDylib());
}

LLVMErrorRef DispatchGenAdd(DispatchGenDispatcherRef D, uint64_t Program,
                            const char *Name) {
  return wrap(unwrap(D)->add(Program, name(Name)));
}
LLVMErrorRef DispatchGenAddSymbol(DispatchGenDispatcherRef D,
                                  const char *Symbol, LLVMOrcJITDylibRef JD) {
  if (!JD)
    return wrap(createStringError(inconvertibleErrorCode(),
                                  "no JITDylib given for program '%s'",
                                  Symbol ? Symbol : ""));
  return wrap(
      unwrap(D)->add(name(Symbol), *reinterpret_cast<orc::JITDylib *>(JD)));
}
LLVMErrorRef DispatchGenRemove(DispatchGenDispatcherRef D, uint64_t P) {
  return wrap(unwrap(D)->remove(P));
}
LLVMErrorRef DispatchGenChange(DispatchGenDispatcherRef D, uint64_t From,
                               uint64_t To, const char *ToName) {
  return wrap(unwrap(D)->change(From, To, name(ToName)));
}

DispatchGenBatchRef DispatchGenCreateBatch(void) {
  return reinterpret_cast<DispatchGenBatchRef>(new ProgramSet::Batch());
}
void DispatchGenBatchAdd(DispatchGenBatchRef B, uint64_t P, const char *N) {
  unwrap(B)->add(P, name(N));
}
void DispatchGenBatchRemove(DispatchGenBatchRef B, uint64_t P) {
  unwrap(B)->remove(P);
}
void DispatchGenBatchChange(DispatchGenBatchRef B, uint64_t From, uint64_t To,
                            const char *ToName) {
  unwrap(B)->change(From, To, name(ToName));
}
void DispatchGenDisposeBatch(DispatchGenBatchRef B) { delete unwrap(B); }
LLVMErrorRef DispatchGenApply(DispatchGenDispatcherRef D,
                              DispatchGenBatchRef B) {
  return wrap(unwrap(D)->apply(*unwrap(B)));
}

void DispatchGenSetWeights(DispatchGenDispatcherRef D, const uint64_t *Programs,
                           const uint64_t *Calls, size_t Count) {
  std::vector<std::pair<uint64_t, uint64_t>> W;
  for (size_t I = 0; I < Count; ++I)
    W.push_back({Programs[I], Calls[I]});
  unwrap(D)->setWeights(W);
}
LLVMErrorRef DispatchGenRegenerate(DispatchGenDispatcherRef D) {
  return wrap(unwrap(D)->regenerate());
}

void DispatchGenGetAdaptiveStatus(DispatchGenDispatcherRef D,
                                  DispatchGenAdaptiveStatus *S) {
  DispatcherStatus St = unwrap(D)->status();
  S->Learning = St.Learning;
  S->Windows = St.LearningWindows;
  S->TriggeredWindows = St.TriggeredWindows;
  S->Promoted = St.Promoted.size();
  size_t N = std::min(St.Layout.size(), sizeof(S->Layout) - 1);
  std::memcpy(S->Layout, St.Layout.data(), N);
  S->Layout[N] = 0;
  S->PredictedCost = St.PredictedCost;
}

LLVMErrorRef DispatchGenBeginLearning(DispatchGenDispatcherRef D) {
  return wrap(unwrap(D)->beginLearning());
}

LLVMErrorRef DispatchGenEndLearning(DispatchGenDispatcherRef D) {
  auto R = unwrap(D)->endLearning();
  return wrap(R.takeError());
}

void DispatchGenGetStatus(DispatchGenDispatcherRef D, DispatchGenStatus *S) {
  DispatcherStatus St = unwrap(D)->status();
  S->Supported = St.Supported;
  S->Generation = St.Generation;
  S->Programs = St.Programs;
  S->DirectTargets = St.DirectTargets;
  S->FallbackTargets = St.FallbackTargets;
  S->EntryAddress = St.EntryAddress;
  S->ImageAddress = St.ImageAddress;
  S->ImageSize = St.ImageSize;
  S->LaidOutDirectly = St.LaidOutDirectly;
  S->Resident = St.Resident;
  S->LastUpdateNanoseconds = St.LastUpdateLatency.count();
  S->LastGracePeriodNanoseconds = St.LastGracePeriod.count();
  S->LiveAllocations = St.LiveAllocations;
}
LLVMErrorRef DispatchGenDump(DispatchGenDispatcherRef D, char **Text) {
  std::string S;
  raw_string_ostream OS(S);
  *Text = nullptr;
  if (Error E = unwrap(D)->dump(OS))
    return wrap(std::move(E));
  *Text = strdup(S.c_str());
  return nullptr;
}
LLVMErrorRef DispatchGenVerify(DispatchGenDispatcherRef D) {
  return wrap(unwrap(D)->verify());
}
void DispatchGenDisposeMessage(char *Message) { free(Message); }

void DispatchGenRegisterReaderThread(DispatchGenRCUFlavor F) {
  if (F == DispatchGenRCUQSBR)
    urcu_qsbr_register_thread();
  else
    urcu_memb_register_thread();
  dispatchgen::detail::noteReader(
      F == DispatchGenRCUQSBR ? RCUFlavor::QSBR : RCUFlavor::Memb, true);
}
void DispatchGenUnregisterReaderThread(DispatchGenRCUFlavor F) {
  RCUFlavor Flavor =
      F == DispatchGenRCUQSBR ? RCUFlavor::QSBR : RCUFlavor::Memb;
  TsanHappensBefore(dispatchgen::detail::tsanGracePeriod(Flavor));
  dispatchgen::detail::noteReader(Flavor, false);
  if (F == DispatchGenRCUQSBR)
    urcu_qsbr_unregister_thread();
  else
    urcu_memb_unregister_thread();
}
void DispatchGenReadLock(void) { urcu_memb_read_lock(); }
void DispatchGenReadUnlock(void) {
  TsanHappensBefore(dispatchgen::detail::tsanGracePeriod(RCUFlavor::Memb));
  urcu_memb_read_unlock();
}
void DispatchGenQuiescentState(void) { rcuQuiescentState(); }
void DispatchGenThreadOffline(void) {
  TsanHappensBefore(dispatchgen::detail::tsanGracePeriod(RCUFlavor::QSBR));
  urcu_qsbr_thread_offline();
}
void DispatchGenThreadOnline(void) { urcu_qsbr_thread_online(); }

} // extern "C"
