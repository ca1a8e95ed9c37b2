//===- ProgramPool.cpp - dispatch-gen-torture's programs ------------------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//

#include "ProgramPool.h"

#include "llvm/ExecutionEngine/Orc/LLJIT.h"
#include "llvm/ExecutionEngine/Orc/ThreadSafeModule.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/Module.h"
#include "llvm/IRReader/IRReader.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <cstring>

#include <sys/mman.h>
#include <unistd.h>

using namespace llvm;

namespace dispatchgen::torture {

std::string spinningProgramIR(StringRef Name, uint64_t Result, unsigned Align) {
  return formatv(R"(
define i64 @{0}(i64 %spins) align {1} {{
entry:
  br label %loop
loop:
  %i = phi i64 [ 0, %entry ], [ %n, %loop ]
  %n = add i64 %i, 1
  call void asm sideeffect "pause", ""()
  %c = icmp ult i64 %n, %spins
  br i1 %c, label %loop, label %done
done:
  ret i64 {2}
}
)",
                 Name, Align, Result)
      .str();
}

ProgramPool::ProgramPool(orc::LLJIT &J) : J(J) {
  PageSize = sysconf(_SC_PAGESIZE);
}

Error ProgramPool::compileBatch() {
  uint64_t First = NextId.load(std::memory_order_relaxed);
  std::string IR;
  raw_string_ostream OS(IR);
  // Spin (pause) for %spins iterations, then return the id.
  for (unsigned K = 0; K < BatchSize; ++K)
    OS << spinningProgramIR(formatv("torture_prog_{0}", First + K).str(),
                            First + K, ProgramAlign);
  auto Ctx = std::make_unique<LLVMContext>();
  SMDiagnostic Diag;
  auto M = parseIR(MemoryBufferRef(IR, "torture-programs"), Diag, *Ctx);
  if (!M)
    return createStringError("cannot parse the programs: " +
                             Diag.getMessage().str());
  auto JD = J.createJITDylib(formatv("torture_batch_{0}", Batches++).str());
  if (!JD)
    return JD.takeError();
  if (Error E = J.addIRModule(
          *JD, orc::ThreadSafeModule(std::move(M), std::move(Ctx))))
    return E;
  // One lookup for the batch: one materialisation, one link.
  orc::SymbolLookupSet Names;
  for (unsigned K = 0; K < BatchSize; ++K)
    Names.add(J.mangleAndIntern(formatv("torture_prog_{0}", First + K).str()));
  auto Found = J.getExecutionSession().lookup(
      orc::makeJITDylibSearchOrder(&*JD), std::move(Names));
  if (!Found)
    return Found.takeError();
  std::vector<uint64_t> Addrs;
  for (unsigned K = 0; K < BatchSize; ++K)
    Addrs.push_back((*Found)[J.mangleAndIntern(
                                 formatv("torture_prog_{0}", First + K).str())]
                        .getAddress()
                        .getValue());
  std::vector<uint64_t> Sorted = Addrs;
  std::sort(Sorted.begin(), Sorted.end());
  for (unsigned K = 0; K < BatchSize; ++K) {
    Program *P = Table.create(First + K);
    if (!P)
      return createStringError("out of program records");
    P->Address = Addrs[K];
    auto Next = std::upper_bound(Sorted.begin(), Sorted.end(), Addrs[K]);
    uint64_t Limit = Addrs[K] + ProgramAlign;
    P->PoisonSize =
        (Next == Sorted.end() ? Limit : std::min(Limit, *Next)) - Addrs[K];
    {
      std::lock_guard<std::mutex> Lock(ReleaseMutex);
      IdOf[Addrs[K]] = First + K;
    }
    Fresh.push_back(First + K);
  }
  NextId.store(First + BatchSize, std::memory_order_release);
  std::reverse(Fresh.begin(), Fresh.end());
  return Error::success();
}

Expected<uint64_t> ProgramPool::freshProgram() {
  if (Fresh.empty())
    if (Error E = compileBatch())
      return std::move(E);
  uint64_t Id = Fresh.back();
  Fresh.pop_back();
  return Id;
}

/// OnRelease: the program may never run again. Mark, then poison its code
/// with int3 (the page is made writable without losing exec: other
/// programs on it stay live).
void ProgramPool::release(uint64_t Address) {
  std::lock_guard<std::mutex> Lock(ReleaseMutex);
  auto It = IdOf.find(Address);
  if (It == IdOf.end())
    return;
  Program *P = Table.get(It->second);
  P->Stage.store(PS_Released, std::memory_order_release);
  uint64_t Page = Address & ~(PageSize - 1);
  uint64_t Len = Address + P->PoisonSize - Page;
  if (mprotect(reinterpret_cast<void *>(Page), Len,
               PROT_READ | PROT_WRITE | PROT_EXEC) == 0) {
    std::memset(reinterpret_cast<void *>(Address), 0xCC, P->PoisonSize);
    mprotect(reinterpret_cast<void *>(Page), Len, PROT_READ | PROT_EXEC);
  }
  ReleasedAsync.fetch_add(1, std::memory_order_relaxed);
}

} // namespace dispatchgen::torture
