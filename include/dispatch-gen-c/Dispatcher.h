/*===- dispatch-gen-c/Dispatcher.h - The C API of dispatch-gen -----*- C
-*-===*\
|*                                                                            *|
|* Part of dispatch-gen.                                                      *|
|* SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception                    *|
|*                                                                            *|
|*===----------------------------------------------------------------------===*|
|*                                                                            *|
|* A C interface to dispatchgen::Dispatcher, in the style of LLVM-C: opaque   *|
|* references, every fallible call returns an LLVMErrorRef (null: success;    *|
|* the caller consumes it with LLVMGetErrorMessage / LLVMConsumeError), owned *|
|* strings freed with DispatchGenDisposeMessage. Link libdispatch-gen.so      *|
|* (pkg-config dispatch-gen).                                                 *|
|*                                                                            *|
|* The rules of dispatch-gen/Dispatcher.h and Reclamation.h hold: callers are *|
|* RCU readers; destroy a dispatcher before the session it lives in, and     *|
|* stop calling its entry first.                                              *|
|*                                                                            *|
\*===----------------------------------------------------------------------===*/

#ifndef DISPATCH_GEN_C_DISPATCHER_H
#define DISPATCH_GEN_C_DISPATCHER_H

#include "llvm-c/Error.h"
#include "llvm-c/LLJIT.h"
#include "llvm-c/Orc.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** A dispatcher's settings, before it is created. */
typedef struct DispatchGenOpaqueConfig *DispatchGenConfigRef;
/** A live dispatcher. */
typedef struct DispatchGenOpaqueDispatcher *DispatchGenDispatcherRef;
/** Changes applied together, with one regeneration. */
typedef struct DispatchGenOpaqueBatch *DispatchGenBatchRef;

typedef enum {
  DispatchGenRCUMemb = 0, /**< guards around calls (the default) */
  DispatchGenRCUQSBR = 1  /**< quiescent states, no guards */
} DispatchGenRCUFlavor;

typedef enum {
  DispatchGenReclaimSynchronous = 0, /**< each update waits (default) */
  DispatchGenReclaimAsynchronous = 1 /**< frees on liburcu's thread */
} DispatchGenReclaimMode;

typedef enum {
  DispatchGenExtNone = 0,
  DispatchGenExtZero = 1,
  DispatchGenExtSign = 2
} DispatchGenExtension;

/** Called once for each program whose last reference went (see
 *  DispatcherConfig::OnRelease). */
typedef void (*DispatchGenReleaseCallback)(void *Context, uint64_t Program);

/** A snapshot of a dispatcher's state (DispatcherStatus). */
typedef struct {
  int Supported;
  uint64_t Generation;
  size_t Programs;
  size_t DirectTargets;
  size_t FallbackTargets;
  uint64_t EntryAddress;
  uint64_t ImageAddress;
  uint64_t ImageSize;
  int LaidOutDirectly;
  int Resident;
  uint64_t LastUpdateNanoseconds;
  uint64_t LastGracePeriodNanoseconds;
  uint64_t LiveAllocations;
} DispatchGenStatus;

/** Adaptive dispatch (DispatchGenGetAdaptiveStatus; dispatch-gen/Dispatcher.h,
 * AdaptiveConfig and DispatcherStatus). */
typedef struct {
  /** A learning window is open (the image counts). */
  int Learning;
  /** Windows closed, and of those the ones the trigger opened early. */
  uint64_t Windows;
  uint64_t TriggeredWindows;
  /** Unregistered targets the image reaches directly now. */
  size_t Promoted;
  /** The live layout ("bisect", "hot-scan", "fallback-only", ...; empty
   * before the first image) and the model's cost of a call. */
  char Layout[24];
  double PredictedCost;
} DispatchGenAdaptiveStatus;

/* Settings -----------------------------------------------------------------*/

/** Name: the entry's symbol; Signature: the programs' type in LLVM syntax,
 *  e.g. "i32 (ptr, ptr)". Both are copied. */
DispatchGenConfigRef DispatchGenCreateConfig(const char *Name,
                                             const char *Signature);
void DispatchGenDisposeConfig(DispatchGenConfigRef Config);
/** The selector is parameter Index instead of a trailing pointer. */
void DispatchGenConfigSetSelectorArg(DispatchGenConfigRef Config,
                                     unsigned Index);
void DispatchGenConfigSetCapacity(DispatchGenConfigRef Config,
                                  unsigned Capacity);
void DispatchGenConfigSetFlavor(DispatchGenConfigRef Config,
                                DispatchGenRCUFlavor Flavor);
void DispatchGenConfigSetReclaim(DispatchGenConfigRef Config,
                                 DispatchGenReclaimMode Mode);
/** Place the code near this address (a program's). */
void DispatchGenConfigSetNear(DispatchGenConfigRef Config, uint64_t Near);
void DispatchGenConfigSetRetpolineFallback(DispatchGenConfigRef Config,
                                           int Enabled);
void DispatchGenConfigSetVerifyImages(DispatchGenConfigRef Config, int Enabled);
/** Adopt an entry defined with DISPATCHGEN_DEFINE_DISPATCHER. */
void DispatchGenConfigSetCompiledEntry(DispatchGenConfigRef Config,
                                       void *Entry);
void DispatchGenConfigSetReturnExtension(DispatchGenConfigRef Config,
                                         DispatchGenExtension Ext);
/** The extensions of the first Count parameters. */
void DispatchGenConfigSetParamExtensions(DispatchGenConfigRef Config,
                                         const DispatchGenExtension *Exts,
                                         size_t Count);
void DispatchGenConfigSetOnRelease(DispatchGenConfigRef Config,
                                   DispatchGenReleaseCallback Callback,
                                   void *Context);

/** Adaptive dispatch (off by default; see AdaptiveConfig for what it costs):
 * Background, the library's learner thread opens and closes the windows;
 * else the host does, with DispatchGenBeginLearning/EndLearning. */
void DispatchGenConfigSetAdaptive(DispatchGenConfigRef Config, int Enabled,
                                  int Background);
/** A window's length, and the time between windows: Period, doubling up to
 * MaxPeriod while windows change nothing (microseconds; 0 keeps the
 * default). */
void DispatchGenConfigSetAdaptiveSchedule(DispatchGenConfigRef Config,
                                          uint64_t WindowMicroseconds,
                                          uint64_t PeriodMicroseconds,
                                          uint64_t MaxPeriodMicroseconds);
/** The trigger on the fallback rate: looks every PollMicroseconds (0: no
 * trigger), opens a window when the fallback's calls rose by more than
 * Calls (AdaptiveConfig::TriggerPoll, TriggerCalls). */
void DispatchGenConfigSetAdaptiveTrigger(DispatchGenConfigRef Config,
                                         uint64_t PollMicroseconds,
                                         uint64_t Calls);
/** Sampling inside a window (AdaptiveConfig::SampleBurst, SampleSkip,
 * SampleOn, SampleOff): per CPU Burst calls in a row counted, then about
 * Skip not (0: every call counted); with Background, counting for
 * OnMicroseconds, then not for OffMicroseconds (0: the whole window).
 * Checked when the dispatcher is created. */
void DispatchGenConfigSetAdaptiveSampling(DispatchGenConfigRef Config,
                                          unsigned Burst, unsigned Skip,
                                          uint64_t OnMicroseconds,
                                          uint64_t OffMicroseconds);

/** Pins the cost model weighted and adaptive layouts are chosen by
 * (DispatcherConfig::CostModel; a retpoline is 20 units): a predicted
 * compare, a mispredicted compare and a mispredicted indirect branch, the
 * rest as LayoutCostModel's defaults. Without it, the process's
 * calibration (dispatch-gen/CostCalibration.h) chooses. Checked when the
 * dispatcher is created: finite and not negative. */
void DispatchGenConfigSetCostModel(DispatchGenConfigRef Config, double Compare,
                                   double Mispredict,
                                   double IndirectMispredict);
/** Undoes DispatchGenConfigSetCostModel: the process's calibration chooses
 * again. */
void DispatchGenConfigClearCostModel(DispatchGenConfigRef Config);

/* Life ---------------------------------------------------------------------*/

/** A standalone dispatcher. Config is not consumed. */
LLVMErrorRef DispatchGenCreateDispatcher(DispatchGenConfigRef Config,
                                         DispatchGenDispatcherRef *Result);
/** A dispatcher inside a host's session, which must outlive it. */
LLVMErrorRef
DispatchGenCreateDispatcherInSession(DispatchGenConfigRef Config,
                                     LLVMOrcExecutionSessionRef ES,
                                     DispatchGenDispatcherRef *Result);
LLVMErrorRef
DispatchGenCreateDispatcherInLLJIT(DispatchGenConfigRef Config,
                                   LLVMOrcLLJITRef J,
                                   DispatchGenDispatcherRef *Result);
/** Waits for pending reclamation and frees everything (~Dispatcher). */
void DispatchGenDisposeDispatcher(DispatchGenDispatcherRef D);

/** The address callers call. */
uint64_t DispatchGenGetEntry(DispatchGenDispatcherRef D);
/** The JITDylib defining the entry's symbol; null when standalone. */
LLVMOrcJITDylibRef DispatchGenGetEntryDylib(DispatchGenDispatcherRef D);

/* Programs -----------------------------------------------------------------*/

LLVMErrorRef DispatchGenAdd(DispatchGenDispatcherRef D, uint64_t Program,
                            const char *Name);
/** Adds the program Symbol defines in JD (materialising it). */
LLVMErrorRef DispatchGenAddSymbol(DispatchGenDispatcherRef D,
                                  const char *Symbol, LLVMOrcJITDylibRef JD);
LLVMErrorRef DispatchGenRemove(DispatchGenDispatcherRef D, uint64_t Program);
/** bpf_dispatcher_change_prog: either may be 0. */
LLVMErrorRef DispatchGenChange(DispatchGenDispatcherRef D, uint64_t From,
                               uint64_t To, const char *ToName);

DispatchGenBatchRef DispatchGenCreateBatch(void);
void DispatchGenBatchAdd(DispatchGenBatchRef B, uint64_t Program,
                         const char *Name);
void DispatchGenBatchRemove(DispatchGenBatchRef B, uint64_t Program);
void DispatchGenBatchChange(DispatchGenBatchRef B, uint64_t From, uint64_t To,
                            const char *ToName);
void DispatchGenDisposeBatch(DispatchGenBatchRef B);
/** All of B or nothing, with at most one regeneration. */
LLVMErrorRef DispatchGenApply(DispatchGenDispatcherRef D,
                              DispatchGenBatchRef B);

/** Observed call counts, Count pairs; the next regeneration uses them. */
void DispatchGenSetWeights(DispatchGenDispatcherRef D, const uint64_t *Programs,
                           const uint64_t *Calls, size_t Count);
LLVMErrorRef DispatchGenRegenerate(DispatchGenDispatcherRef D);

/* Inspection ---------------------------------------------------------------*/

void DispatchGenGetStatus(DispatchGenDispatcherRef D,
                          DispatchGenStatus *Status);
/** The live image's disassembly, to free with DispatchGenDisposeMessage. */
LLVMErrorRef DispatchGenDump(DispatchGenDispatcherRef D, char **Text);
LLVMErrorRef DispatchGenVerify(DispatchGenDispatcherRef D);
void DispatchGenGetAdaptiveStatus(DispatchGenDispatcherRef D,
                                  DispatchGenAdaptiveStatus *Status);
/** A host-driven learning window (Background off): opens it (the image
 * counts), and closes it (the counts become the layout; hot unregistered
 * targets are promoted). */
LLVMErrorRef DispatchGenBeginLearning(DispatchGenDispatcherRef D);
LLVMErrorRef DispatchGenEndLearning(DispatchGenDispatcherRef D);
void DispatchGenDisposeMessage(char *Message);

/* Readers (Reclamation.h). Each is a call into the library: a host that
 * wants the read side inlined uses liburcu's own static API (_LGPL_SOURCE,
 * urcu_memb_read_lock()) on threads registered here. -----------------------*/

/** Registers (and, before the thread ends, unregisters) the calling thread
 *  as a reader of Flavor; QSBR threads start online. */
void DispatchGenRegisterReaderThread(DispatchGenRCUFlavor Flavor);
void DispatchGenUnregisterReaderThread(DispatchGenRCUFlavor Flavor);
/** A read-side section of the memb flavour (nests). */
void DispatchGenReadLock(void);
void DispatchGenReadUnlock(void);
/** QSBR: no reference to dispatched code is held here. */
void DispatchGenQuiescentState(void);
void DispatchGenThreadOffline(void);
void DispatchGenThreadOnline(void);

#ifdef __cplusplus
}
#endif

#endif /* DISPATCH_GEN_C_DISPATCHER_H */
