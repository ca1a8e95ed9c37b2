//===- Updates.cpp - Update latency, read-side scaling, memory ------------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// These measurements use program stubs in this process's own memory rather
// than JIT-compiled programs, so that an update costs only the dispatcher's
// own work: the stubs are N + 1 `mov $imm32, %eax; ret`, 16 bytes apart in
// one executable block that is never unmapped (so a caller holding a stale
// pointer can still call it).
//
//===----------------------------------------------------------------------===//

#include "ProcessStats.h"

#include "dispatch-gen/Benchmark.h"
#include "dispatch-gen/CodeEmitter.h"
#include "dispatch-gen/Dispatcher.h"

#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/TargetSelect.h"

#include <atomic>
#include <chrono>
#include <cstring>
#include <fstream>
#include <sys/mman.h>
#include <thread>
#include <unistd.h>

using namespace llvm;

namespace dispatchgen::bench {

namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t StubSize = 16;
constexpr unsigned WarmupUpdates = 3;

const uint8_t *stubBlock() {
  static const uint8_t *Block = []() -> const uint8_t * {
    size_t PS = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    size_t Bytes =
        ((UpdateDriver::MaxPrograms + 1) * StubSize + PS - 1) / PS * PS;
    void *P = mmap(nullptr, Bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (P == MAP_FAILED)
      return nullptr;
    auto *Code = static_cast<uint8_t *>(P);
    std::memset(Code, 0xcc, Bytes); // int3 between the stubs
    for (unsigned I = 0; I <= UpdateDriver::MaxPrograms; ++I) {
      uint8_t *S = Code + I * StubSize;
      int32_t Imm = UpdateDriver::StubBase + static_cast<int32_t>(I);
      S[0] = 0xb8; // mov $imm32, %eax
      std::memcpy(S + 1, &Imm, sizeof(Imm));
      S[5] = 0xc3; // ret
    }
    if (mprotect(P, Bytes, PROT_READ | PROT_EXEC))
      return nullptr;
    return Code;
  }();
  return Block;
}

} // namespace

uint64_t UpdateDriver::stubAddress(unsigned I) {
  return reinterpret_cast<uint64_t>(stubBlock() + I * StubSize);
}

UpdateDriver::~UpdateDriver() = default;

Expected<std::unique_ptr<UpdateDriver>> UpdateDriver::create(unsigned N,
                                                             ReclaimMode Mode) {
  if (N == 0 || N > MaxPrograms)
    return createStringError(
        formatv("an update benchmark takes 1 to {0} programs, "
                "not {1}",
                MaxPrograms, N));
  if (!stubBlock())
    return createStringError("cannot map the program stubs");
  initializeTargets();
  DispatcherConfig C;
  C.Name = "bench_dispatch";
  C.Signature = "i32 (i32)";
  C.Capacity = N;
  C.Reclaim = Mode;
  C.Near = stubAddress(0);
  auto D = Dispatcher::create(std::move(C));
  if (!D)
    return D.takeError();
  std::unique_ptr<UpdateDriver> U(new UpdateDriver());
  U->D = std::move(*D);
  ProgramSet::Batch Initial;
  for (unsigned I = 0; I < N; ++I) {
    U->InSet.push_back(I);
    Initial.add(stubAddress(I));
  }
  U->Spare = N;
  if (Error E = U->D->apply(Initial))
    return std::move(E);
  if (U->D->status().DirectTargets != N)
    return createStringError("not every program stub is reached directly");
  return std::move(U);
}

Error UpdateDriver::swap() {
  if (Error E = D->change(stubAddress(InSet[Slot]), stubAddress(Spare)))
    return E;
  std::swap(InSet[Slot], Spare);
  Slot = (Slot + 1) % InSet.size();
  return Error::success();
}

UpdateDriver::EntryFn *UpdateDriver::entry() const {
  return D->entryAs<EntryFn>();
}

Error UpdateDriver::checkCalls() const {
  // A reader only meanwhile, so it never holds up a timed grace period.
  RCUReaderThread Reader(RCUFlavor::Memb);
  for (unsigned I :
       {InSet.front(), InSet[InSet.size() / 2], InSet.back(), Spare}) {
    int Got;
    {
      RCUReadGuard Guard;
      Got = entry()(0, reinterpret_cast<int (*)(int)>(stubAddress(I)));
    }
    if (Got != StubBase + static_cast<int>(I))
      return createStringError(
          formatv("a call of stub {0} returned {1}", I, Got));
  }
  return Error::success();
}

Expected<UpdateLatency> measureUpdateLatency(unsigned N, ReclaimMode Mode,
                                             unsigned Updates) {
  auto U = UpdateDriver::create(N, Mode);
  if (!U)
    return U.takeError();
  for (unsigned I = 0; I < WarmupUpdates; ++I)
    if (Error E = (*U)->swap())
      return std::move(E);
  if (Error E = (*U)->checkCalls())
    return std::move(E);
  std::vector<double> Us;
  for (unsigned I = 0; I < Updates; ++I) {
    auto Start = Clock::now();
    if (Error E = (*U)->swap())
      return std::move(E);
    Us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - Start)
                     .count());
  }
  if (Error E = (*U)->checkCalls())
    return std::move(E);
  std::optional<double> P99;
  if (Us.size() >= MinP99Samples)
    P99 = percentile(Us, 0.99);
  return UpdateLatency{N, Mode, Updates, median(Us), percentile(Us, 1.0), P99};
}

Expected<ReadScaling> measureReadScaling(unsigned Threads,
                                         unsigned UpdatesPerSecond,
                                         double Seconds) {
  constexpr unsigned N = ProgramSet::DefaultCapacity;
  constexpr unsigned Batch = 1024;
  if (Threads == 0)
    return createStringError("the scaling benchmark needs at least one thread");
  auto U = UpdateDriver::create(N, ReclaimMode::Synchronous);
  if (!U)
    return U.takeError();
  // Stubs 0..N-1: registered at the start; a swap takes one out at a time,
  // whose calls then take the fallback (the stubs are never unmapped).
  std::vector<int (*)(int)> Progs;
  for (unsigned I = 0; I < N; ++I)
    Progs.push_back(
        reinterpret_cast<int (*)(int)>(UpdateDriver::stubAddress(I)));
  UpdateDriver::EntryFn *Entry = (*U)->entry();

  std::atomic<bool> Go{false}, Stop{false};
  std::atomic<unsigned> Ready{0};
  std::atomic<uint64_t> Calls{0}, Sink{0};
  std::vector<std::thread> Workers;
  for (unsigned T = 0; T < Threads; ++T)
    Workers.emplace_back([&] {
      RCUReaderThread Reader(RCUFlavor::Memb);
      Ready.fetch_add(1);
      while (!Go.load(std::memory_order_acquire))
        std::this_thread::yield();
      uint64_t Made = 0, Acc = 0;
      // Relaxed: the flag only ends the loop; the join orders the counts.
      while (!Stop.load(std::memory_order_relaxed)) {
        RCUReadGuard Guard;
        for (unsigned I = 0; I < Batch; ++I)
          Acc += Entry(static_cast<int>(I), Progs[I % N]);
        Made += Batch;
      }
      Calls.fetch_add(Made);
      Sink.fetch_add(Acc);
    });
  while (Ready.load() != Threads)
    std::this_thread::yield();

  Error UpdateError = Error::success();
  unsigned Done = 0;
  auto Start = Clock::now();
  auto End = Start + std::chrono::duration_cast<Clock::duration>(
                         std::chrono::duration<double>(Seconds));
  Go.store(true, std::memory_order_release);
  if (UpdatesPerSecond == 0) {
    std::this_thread::sleep_until(End);
  } else {
    auto Period = std::chrono::duration_cast<Clock::duration>(
        std::chrono::duration<double>(1.0 / UpdatesPerSecond));
    for (auto Next = Start; Next < End; Next += Period) {
      std::this_thread::sleep_until(Next);
      if (Clock::now() >= End)
        break;
      if (Error E = (*U)->swap()) {
        UpdateError = std::move(E);
        break;
      }
      ++Done;
    }
    std::this_thread::sleep_until(End);
  }
  Stop.store(true, std::memory_order_relaxed);
  for (std::thread &W : Workers)
    W.join();
  double Elapsed = std::chrono::duration<double>(Clock::now() - Start).count();
  if (UpdateError)
    return std::move(UpdateError);
  return ReadScaling{Threads, UpdatesPerSecond, Done / Elapsed,
                     Calls.load() / Elapsed, Elapsed};
}

Expected<MemoryUse> measureMemory(unsigned N) {
  // First use of the code generator, the stubs and liburcu, outside the
  // measurement.
  {
    auto Warm = UpdateDriver::create(1, ReclaimMode::Synchronous);
    if (!Warm)
      return Warm.takeError();
  }
  int64_t Before = residentBytes();
  auto U = UpdateDriver::create(N, ReclaimMode::Synchronous);
  if (!U)
    return U.takeError();
  int64_t After = residentBytes();
  return MemoryUse{N, After - Before};
}

} // namespace dispatchgen::bench
