//===- embed.cpp - Embedding a dispatcher in your own LLJIT ---------------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// An embedder's LLJIT compiles three programs and a caller. A dispatcher
// created in the same session reaches two of them directly; the caller's
// JIT code calls the dispatcher's entry symbol; two threads call it under
// load while the main thread swaps one program for the third. Every call
// must return the result of the program it asked for.
//
//===----------------------------------------------------------------------===//

#include "dispatch-gen/Dispatcher.h"

#include "llvm/ExecutionEngine/Orc/LLJIT.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/IRReader/IRReader.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Support/WithColor.h"
#include "llvm/Support/raw_ostream.h"

#include <atomic>
#include <thread>
#include <vector>

using namespace llvm;

// The programs, and a JIT-compiled caller that calls the dispatcher entry
// `filter` directly (a `call rel32` to its trampoline).
static const char *ProgramsIR = R"(
  define i32 @count_even(i32 %x) {
    %r = and i32 %x, 1
    %e = xor i32 %r, 1
    ret i32 %e
  }
  define i32 @times_two(i32 %x) { %r = mul i32 %x, 2  ret i32 %r }
  define i32 @plus_ten(i32 %x)  { %r = add i32 %x, 10 ret i32 %r }

  declare i32 @filter(i32, ptr)
  define i32 @run_filter(i32 %x, ptr %prog) {
    %r = call i32 @filter(i32 %x, ptr %prog)
    ret i32 %r
  }
)";

using Prog = int (*)(int);
using RunFilter = int (*)(int, Prog);

static ExitOnError ExitOnErr;

int main(int Argc, char **Argv) {
  InitLLVM X(Argc, Argv);
  ExitOnErr.setBanner("embed: ");
  InitializeNativeTarget();
  InitializeNativeTargetAsmPrinter();

  // 1. The embedder's own JIT and programs.
  auto J = ExitOnErr(orc::LLJITBuilder().create());
  auto Ctx = std::make_unique<LLVMContext>();
  SMDiagnostic Diag;
  auto M = parseIR(MemoryBufferRef(ProgramsIR, "programs"), Diag, *Ctx);
  if (!M) {
    Diag.print("embed", errs());
    return 1;
  }

  // 2. A dispatcher in the same session; its entry symbol `filter` is
  //    visible to the main JITDylib.
  dispatchgen::DispatcherConfig Config;
  Config.Name = "filter";
  Config.Signature = "i32 (i32)"; // the programs' type; the entry adds `ptr`
  Config.VerifyImages = true;
  auto D = ExitOnErr(dispatchgen::Dispatcher::create(std::move(Config), *J));
  orc::JITDylib &Main = J->getMainJITDylib();
  Main.addToLinkOrder(*D->entryDylib());
  ExitOnErr(
      J->addIRModule(orc::ThreadSafeModule(std::move(M), std::move(Ctx))));

  // 3. Register two programs by name.
  ExitOnErr(D->add("count_even", Main));
  ExitOnErr(D->add("times_two", Main));
  auto CountEven = ExitOnErr(J->lookup("count_even")).toPtr<Prog>();
  auto TimesTwo = ExitOnErr(J->lookup("times_two")).toPtr<Prog>();
  auto PlusTen = ExitOnErr(J->lookup("plus_ten")).toPtr<Prog>();
  auto Run = ExitOnErr(J->lookup("run_filter")).toPtr<RunFilter>();
  ExitOnErr(D->dump(outs()));

  // 4. Two caller threads (RCU readers) call through the JIT caller while
  //    the main thread swaps times_two for plus_ten and back.
  std::atomic<bool> Stop{false};
  std::atomic<uint64_t> Calls{0}, Wrong{0};
  std::vector<std::thread> Callers;
  for (int T = 0; T < 2; ++T)
    Callers.emplace_back([&, T] {
      dispatchgen::RCUReaderThread Reader(dispatchgen::RCUFlavor::Memb);
      for (int I = T; !Stop.load(std::memory_order_relaxed); ++I) {
        dispatchgen::RCUReadGuard Guard;
        bool Ok = Run(I, CountEven) == (I % 2 == 0) &&
                  Run(I, TimesTwo) == I * 2 && Run(I, PlusTen) == I + 10;
        Wrong.fetch_add(!Ok, std::memory_order_relaxed);
        Calls.fetch_add(3, std::memory_order_relaxed);
      }
    });
  const int Swaps = 200;
  for (int S = 0; S < Swaps; ++S) {
    auto [From, To] =
        S % 2 ? std::pair(PlusTen, TimesTwo) : std::pair(TimesTwo, PlusTen);
    ExitOnErr(D->change(reinterpret_cast<uint64_t>(From),
                        reinterpret_cast<uint64_t>(To),
                        S % 2 ? "times_two" : "plus_ten"));
  }
  Stop = true;
  for (std::thread &T : Callers)
    T.join();

  dispatchgen::DispatcherStatus S = D->status();
  outs() << formatv("{0} calls from 2 threads during {1} swaps; last update "
                    "{2} us (+{3} us grace period); {4} wrong results\n",
                    Calls.load(), Swaps, S.LastUpdateLatency.count() / 1000,
                    S.LastGracePeriod.count() / 1000, Wrong.load());
  ExitOnErr(D->verify());
  D.reset(); // before the session it lives in
  if (Wrong.load() != 0) {
    WithColor::error(errs(), "embed") << "a call returned a wrong result\n";
    return 1;
  }
  outs() << "OK\n";
  return 0;
}
