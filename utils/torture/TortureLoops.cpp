//===- TortureLoops.cpp - dispatch-gen-torture's readers and updater ------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// The readers call through the entry in read-side critical sections and
// check each answer against the program records; the updater adds, removes
// and changes programs as fast as it can.
//
//===----------------------------------------------------------------------===//

#include "Torture.h"
#include "TortureFaults.h"

#include "dispatch-gen/Reclamation.h"

#include <algorithm>

using namespace llvm;

namespace dispatchgen::torture {

namespace {

unsigned ageBucket(uint64_t Age) {
  if (Age <= 1)
    return Age;
  if (Age < 4)
    return 2;
  if (Age < 16)
    return 3;
  if (Age < 64)
    return 4;
  return 5;
}

} // namespace

void Torture::readerLoop(unsigned Index) {
  RCUReaderThread Registration(RCUFlavor::Memb);
  std::minstd_rand Rng(Index * 7919 + 1);
  while (!Stop.load(std::memory_order_relaxed)) {
    RCUReadGuard Guard;
    C.CriticalSections.fetch_add(1, std::memory_order_relaxed);
    uint64_t S0 = Seq.load(std::memory_order_seq_cst);
    uint64_t Id = Slots[Rng() % NumSlots].load(std::memory_order_seq_cst);
    if (!Id)
      continue;
    Program *P = Pool->get(Id);
    uint64_t Address = P->Address;
    // Hold the reference for a while: up to 32 calls, each lingering in
    // the image (--image-delay) and spinning up to 64 pauses in the
    // program; one section in 8 is 16 times longer (tens of milliseconds),
    // longer than an update, so that updates and releases happen while
    // readers still use what they removed.
    unsigned Calls = 1 + Rng() % 32;
    if (Rng() % 8 == 0)
      Calls *= 16;
    volatile unsigned N = Calls;
    volatile unsigned K = 0;
    if (int Fault = sigsetjmp(CallJmp, 0)) {
      std::atomic<uint64_t> &Count =
          Fault == FK_ReleasedProgram     ? C.IntoReleased
          : Fault == FK_ReleasedImage     ? C.IntoReleasedImages
          : Fault == FK_RewrittenResident ? C.IntoRewrittenResident
                                          : C.OtherFaults;
      Count.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    for (; K < N; K = K + 1) {
      if (Opts.Adaptive && Rng() % 4 == 0) {
        callUnregistered(Rng);
        continue;
      }
      TookFallback = false;
      auto Begin = Clock::now();
      InCall = 1;
      uint64_t R = Entry(Rng() % 64, Address);
      InCall = 0;
      C.Calls.fetch_add(1, std::memory_order_relaxed);
      uint64_t S1 = Seq.load(std::memory_order_seq_cst);
      if (R == 0 || R >= Pool->end()) {
        C.Misrouted.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      Program *Q = Pool->get(R);
      uint64_t Removed = Q->RemovedSeq.load(std::memory_order_acquire);
      // Registered at some time during the call: added before it ended,
      // not removed before it began (see the slot ordering in updaterLoop).
      bool Registered = Q->AddedSeq != 0 && Q->AddedSeq <= S1 &&
                        (Removed == 0 || Removed >= S0);
      if (R != Id || !Registered)
        C.Misrouted.fetch_add(1, std::memory_order_relaxed);
      // In the dispatcher from before the call (published) until after it
      // (no removal had begun when S1 was read): every image the call could
      // enter had a direct jump to it.
      if (TookFallback && R == Id && (Removed == 0 || Removed > S1) &&
          !OutOfReach.load(std::memory_order_relaxed)) {
        // Adaptive: legitimate where the layout had no tree; judged at
        // the end.
        if (Opts.Adaptive)
          FallbackCalls[Index].push_back({Begin, Clock::now()});
        else
          C.RegisteredToFallback.fetch_add(1, std::memory_order_relaxed);
      }
      uint8_t Stage = Q->Stage.load(std::memory_order_acquire);
      C.StageHist[Stage].fetch_add(1, std::memory_order_relaxed);
      if (Stage == PS_Released)
        C.ObservedReleased.fetch_add(1, std::memory_order_relaxed);
      else if (Removed && Removed <= S1)
        // (Removed after S1 was read: live when the call ended.)
        C.AgeHist[ageBucket(S1 - Removed)].fetch_add(1,
                                                     std::memory_order_relaxed);
    }
  }
}

/// --adaptive: a call to a target the dispatcher never registered. Its tag
/// must come back, through the fallback or a promoted target's jump.
void Torture::callUnregistered(std::minstd_rand &Rng) {
  unsigned K = Unregistered.pick(Rng);
  TookFallback = false;
  InCall = 1;
  uint64_t R = Entry(Rng() % 64, Unregistered.address(K));
  InCall = 0;
  C.Calls.fetch_add(1, std::memory_order_relaxed);
  if (R != UnregisteredTargets::tag(K))
    C.Misrouted.fetch_add(1, std::memory_order_relaxed);
  (TookFallback ? C.UnregisteredFallback : C.UnregisteredDirect)
      .fetch_add(1, std::memory_order_relaxed);
}

// Slot ordering: to remove, the updater bumps Seq (RemovedSeq = the new
// value), unpublishes, then calls the dispatcher; to add, it registers,
// then sets AddedSeq and publishes. A reader loads Seq (S0) before a slot,
// all seq_cst, so a program it found published has RemovedSeq 0 or >= S0.
//
// Each update applies --batch operations on distinct slots with one
// regeneration (Dispatcher::apply); --batch=1 makes every operation its own
// back-to-back update.
Error Torture::updaterLoop(Clock::time_point End) {
  std::minstd_rand Rng(42);
  std::array<unsigned, NumSlots> Order;
  for (unsigned K = 0; K < NumSlots; ++K)
    Order[K] = K;
  unsigned Ops = std::clamp<unsigned>(Opts.BatchOps, 1, NumSlots);
  struct Pending {
    unsigned Slot;
    uint64_t New;
  };
  std::vector<Pending> Publish;
  auto Start = Clock::now();
  while (Clock::now() < End) {
    if (Opts.Adaptive)
      Unregistered.setPhase(
          (Clock::now() - Start) /
          std::chrono::milliseconds(std::max(1u, Opts.HotPhase)));
    std::shuffle(Order.begin(), Order.end(), Rng);
    uint64_t S = Seq.fetch_add(1, std::memory_order_seq_cst) + 1;
    ProgramSet::Batch B;
    Publish.clear();
    for (unsigned I = 0; I < Ops; ++I) {
      unsigned K = Order[I];
      uint64_t Old = Slots[K].load(std::memory_order_relaxed);
      uint64_t New = 0;
      bool Change = Old && Rng() % 2;
      if (!Old || Change) {
        auto F = Pool->freshProgram();
        if (!F)
          return F.takeError();
        New = *F;
        Publish.push_back({K, New});
      }
      if (Old) {
        Pool->get(Old)->RemovedSeq.store(S, std::memory_order_seq_cst);
        Slots[K].store(0, std::memory_order_seq_cst);
        Pool->get(Old)->Stage.store(PS_Removed, std::memory_order_relaxed);
      }
      if (Change) {
        B.change(Pool->get(Old)->Address, Pool->get(New)->Address);
        ++Changes;
      } else if (Old) {
        B.remove(Pool->get(Old)->Address);
        ++Removes;
      } else {
        B.add(Pool->get(New)->Address);
        ++Adds;
      }
    }
    if (Error E = D->apply(B))
      return E;
    ++Updates;
    // A layout without a tree (adaptive) counts every program as taking
    // the fallback; only a tree's count is of programs out of reach.
    DispatcherStatus St = D->status();
    if (St.FallbackTargets && St.Layout != "fallback-only")
      OutOfReach.store(true, std::memory_order_relaxed);
    uint64_t Now = Seq.load(std::memory_order_seq_cst);
    for (const Pending &P : Publish) {
      Pool->get(P.New)->AddedSeq = Now;
      Slots[P.Slot].store(P.New, std::memory_order_seq_cst);
    }
  }
  return Error::success();
}

} // namespace dispatchgen::torture
