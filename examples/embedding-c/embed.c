/*===- embed.c - A dispatcher in an LLJIT, from C -------------------------===*
 * SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
 *
 * What a C host does (a user-space eBPF VM, an interpreter): its own LLJIT,
 * made with LLVM-C, compiles three programs; a dispatcher in the same
 * session reaches them directly; two reader threads call through the entry
 * while the main thread swaps programs 200 times. Every result is checked.
 *
 *   cc -std=c11 embed.c $(pkg-config --cflags --libs dispatch-gen)
 *
 *===----------------------------------------------------------------------===*/

#include "dispatch-gen-c/Dispatcher.h"
#include "dispatch-gen/Trampoline.h" /* DISPATCHGEN_DEFINE_DISPATCHER */

#include "llvm-c/Core.h"
#include "llvm-c/IRReader.h"
#include "llvm-c/LLJIT.h"
#include "llvm-c/Target.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <threads.h>

typedef int (*Program)(int);
typedef int (*Entry)(int, Program);

/* A compiled-in entry in this program's own text, as the kernel's
 * DEFINE_BPF_DISPATCHER: the plain indirect call until a dispatcher adopts
 * it, and again after. */
DISPATCHGEN_DEFINE_DISPATCHER(compiled_dispatch, int, (int x, Program prog),
                              prog(x));

static const char Programs[] =
    "define i32 @add_one(i32 %x) { %r = add i32 %x, 1\n ret i32 %r }\n"
    "define i32 @twice(i32 %x) { %r = mul i32 %x, 2\n ret i32 %r }\n"
    "define i32 @negate(i32 %x) { %r = sub i32 0, %x\n ret i32 %r }\n";

/* Ends the program with LLVM's message when E is an error. */
static void check(LLVMErrorRef E, const char *What) {
  if (!E)
    return;
  char *Msg = LLVMGetErrorMessage(E);
  fprintf(stderr, "embed-c: %s: %s\n", What, Msg);
  LLVMDisposeErrorMessage(Msg);
  exit(1);
}

static Entry TheEntry;
/* Programs 0 and 1 are registered at first; the swapper exchanges which
 * of 1 and 2 is. Readers call 0 (always registered) and whichever of 1
 * and 2 is published, and check the answer. */
static Program Progs[3];
static atomic_int Published = 1;
static atomic_int Stop;
static atomic_long Wrong, Calls;

/* Whether creating a dispatcher from C fails with a message that says
 * Expected; prints what it said. */
static int refused(DispatchGenConfigRef C, LLVMOrcLLJITRef J,
                   const char *Expected) {
  DispatchGenDispatcherRef D;
  LLVMErrorRef Err = DispatchGenCreateDispatcherInLLJIT(C, J, &D);
  char *Why = Err ? LLVMGetErrorMessage(Err) : NULL;
  if (!Err)
    DispatchGenDisposeDispatcher(D);
  int Ok = Why && strstr(Why, Expected);
  printf("adaptive: refused: %s\n", Why ? Why : "(nothing)");
  if (Why)
    LLVMDisposeErrorMessage(Why);
  return Ok;
}

static int expected(int P, int X) {
  return P == 0 ? X + 1 : P == 1 ? 2 * X : -X;
}

static int reader(void *Arg) {
  (void)Arg;
  DispatchGenRegisterReaderThread(DispatchGenRCUMemb);
  while (!atomic_load(&Stop)) {
    DispatchGenReadLock();
    for (int X = 0; X < 64; ++X) {
      int P = X % 2 ? atomic_load(&Published) : 0;
      if (TheEntry(X, Progs[P]) != expected(P, X))
        atomic_fetch_add(&Wrong, 1);
    }
    DispatchGenReadUnlock();
    atomic_fetch_add(&Calls, 64);
  }
  DispatchGenUnregisterReaderThread(DispatchGenRCUMemb);
  return 0;
}

int main(void) {
  LLVMInitializeNativeTarget();
  LLVMInitializeNativeAsmPrinter();

  /* The host's JIT, made with LLVM-C, and its programs. */
  LLVMOrcLLJITRef J;
  check(LLVMOrcCreateLLJIT(&J, NULL), "cannot create the LLJIT");
  LLVMContextRef Ctx = LLVMContextCreate();
  LLVMMemoryBufferRef Buf = LLVMCreateMemoryBufferWithMemoryRangeCopy(
      Programs, strlen(Programs), "programs");
  LLVMModuleRef M;
  char *Msg = NULL;
  if (LLVMParseIRInContext(Ctx, Buf, &M, &Msg)) {
    fprintf(stderr, "embed-c: %s\n", Msg);
    return 1;
  }
  /* The thread-safe context owns Ctx from here on. */
  LLVMOrcThreadSafeContextRef TSCtx =
      LLVMOrcCreateNewThreadSafeContextFromLLVMContext(Ctx);
  LLVMOrcJITDylibRef Main = LLVMOrcLLJITGetMainJITDylib(J);
  check(LLVMOrcLLJITAddLLVMIRModule(J, Main,
                                    LLVMOrcCreateNewThreadSafeModule(M, TSCtx)),
        "cannot add the programs");
  LLVMOrcDisposeThreadSafeContext(TSCtx);

  /* The dispatcher, in the same session: programs by symbol. */
  DispatchGenConfigRef Config =
      DispatchGenCreateConfig("dispatch", "i32 (i32)");
  DispatchGenConfigSetVerifyImages(Config, 1);
  DispatchGenDispatcherRef D;
  check(DispatchGenCreateDispatcherInLLJIT(Config, J, &D),
        "cannot create the dispatcher");
  DispatchGenDisposeConfig(Config);
  const char *Names[3] = {"add_one", "twice", "negate"};
  for (int I = 0; I < 3; ++I) {
    LLVMOrcExecutorAddress Addr;
    check(LLVMOrcLLJITLookup(J, &Addr, Names[I]), Names[I]);
    Progs[I] = (Program)(uintptr_t)Addr;
  }
  check(DispatchGenAddSymbol(D, "add_one", Main), "add add_one");
  check(DispatchGenAdd(D, (uint64_t)(uintptr_t)Progs[1], "twice"), "add twice");
  TheEntry = (Entry)(uintptr_t)DispatchGenGetEntry(D);

  /* Two readers call while the main thread swaps 200 times. */
  thrd_t Readers[2];
  for (int T = 0; T < 2; ++T)
    if (thrd_create(&Readers[T], reader, NULL) != thrd_success)
      return 1;
  for (int Swap = 0; Swap < 200; ++Swap) {
    int Out = atomic_load(&Published), In = 3 - Out;
    /* Publish the one coming in first: calls to it take the fallback
     * until the change, which is right too. */
    atomic_store(&Published, In);
    check(DispatchGenChange(D, (uint64_t)(uintptr_t)Progs[Out],
                            (uint64_t)(uintptr_t)Progs[In], Names[In]),
          "swap");
  }
  atomic_store(&Stop, 1);
  for (int T = 0; T < 2; ++T)
    thrd_join(Readers[T], NULL);

  DispatchGenStatus S;
  DispatchGenGetStatus(D, &S);
  check(DispatchGenVerify(D), "verify");
  printf("%ld calls from 2 threads during 200 swaps, %ld wrong; generation "
         "%llu, %zu programs, %zu direct\n",
         atomic_load(&Calls), atomic_load(&Wrong),
         (unsigned long long)S.Generation, S.Programs, S.DirectTargets);
  int Ok = atomic_load(&Wrong) == 0 && S.Programs == 2 &&
           S.DirectTargets == 2 && S.Generation == 202;
  DispatchGenDisposeDispatcher(D);

  /* Adaptive dispatch, host-driven: one window in which an unregistered
   * program takes most calls; it is promoted, then reached directly. */
  DispatchGenConfigRef LC = DispatchGenCreateConfig("adaptive", "i32 (i32)");
  DispatchGenConfigSetVerifyImages(LC, 1);
  DispatchGenConfigSetRetpolineFallback(LC, 1);
  DispatchGenConfigSetAdaptive(LC, /*Enabled=*/1, /*Background=*/0);
  DispatchGenConfigSetNear(LC, (uint64_t)(uintptr_t)Progs[0]);
  DispatchGenDispatcherRef L;
  /* Sampling the library refuses (counting for 5 us at a time), then every
   * call counted. */
  DispatchGenConfigSetAdaptiveSampling(LC, 32, 224, 5, 700);
  Ok = refused(LC, J, "SampleOn must be 10 us to 60 s") && Ok;
  DispatchGenConfigSetAdaptiveSampling(LC, 32, 0, 100, 0);
  /* A cost model the library refuses; cleared, the process's calibration
   * chooses the layouts (DispatchGenConfigSetCostModel(LC, 0.25, 20, 16)
   * would pin the defaults instead). */
  DispatchGenConfigSetCostModel(LC, -1, 20, 16);
  Ok = refused(LC, J, "costs must be finite and not negative") && Ok;
  DispatchGenConfigClearCostModel(LC);
  check(DispatchGenCreateDispatcherInLLJIT(LC, J, &L),
        "cannot create the adaptive dispatcher");
  DispatchGenDisposeConfig(LC);
  check(DispatchGenAdd(L, (uint64_t)(uintptr_t)Progs[0], "add_one"),
        "add add_one");
  Entry Learn = (Entry)(uintptr_t)DispatchGenGetEntry(L);
  check(DispatchGenBeginLearning(L), "begin learning");
  long LearnWrong = 0;
  DispatchGenRegisterReaderThread(DispatchGenRCUMemb);
  for (int I = 0; I < 20000; ++I) {
    DispatchGenReadLock();
    LearnWrong += Learn(I, Progs[2]) != -I; /* negate: unregistered */
    LearnWrong += I % 100 == 0 && Learn(I, Progs[0]) != I + 1;
    DispatchGenReadUnlock();
  }
  DispatchGenUnregisterReaderThread(DispatchGenRCUMemb);
  check(DispatchGenEndLearning(L), "end learning");
  DispatchGenAdaptiveStatus AS;
  DispatchGenGetAdaptiveStatus(L, &AS);
  check(DispatchGenVerify(L), "verify the adaptive dispatcher");
  printf("adaptive: %llu window, %zu promoted, layout %s (predicted %.2f), "
         "%ld wrong\n",
         (unsigned long long)AS.Windows, AS.Promoted, AS.Layout,
         AS.PredictedCost, LearnWrong);
  Ok = Ok && LearnWrong == 0 && AS.Windows == 1 && !AS.Learning &&
       AS.Promoted == 1 && strcmp(AS.Layout, "hot-scan") == 0;
  DispatchGenDisposeDispatcher(L);

  /* The compiled-in entry, adopted by a standalone dispatcher. */
  int Before = compiled_dispatch(20, Progs[1]);
  DispatchGenConfigRef AC = DispatchGenCreateConfig("compiled", "i32 (i32)");
  DispatchGenConfigSetCompiledEntry(AC, (void *)&compiled_dispatch);
  DispatchGenDispatcherRef A;
  check(DispatchGenCreateDispatcher(AC, &A), "cannot adopt the entry");
  DispatchGenDisposeConfig(AC);
  check(DispatchGenAdd(A, (uint64_t)(uintptr_t)Progs[2], "negate"), "adopt");
  DispatchGenRegisterReaderThread(DispatchGenRCUMemb);
  DispatchGenReadLock();
  int Adopted = compiled_dispatch(7, Progs[2]) + compiled_dispatch(7, Progs[0]);
  DispatchGenReadUnlock();
  DispatchGenUnregisterReaderThread(DispatchGenRCUMemb);
  DispatchGenDisposeDispatcher(A);
  int After = compiled_dispatch(3, Progs[0]);
  printf("compiled-in entry: %d before adoption, %d adopted, %d after\n",
         Before, Adopted, After);
  Ok = Ok && Before == 40 && Adopted == -7 + 8 && After == 4;

  check(LLVMOrcDisposeLLJIT(J), "cannot dispose of the LLJIT");
  return Ok ? 0 : 1;
}
