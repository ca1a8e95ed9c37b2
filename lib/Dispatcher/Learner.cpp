//===- Learner.cpp - The process's thread of learning windows -------------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//

#include "Learner.h"

#include "DispatcherImpl.h"

#include "llvm/ADT/STLExtras.h"

#include <pthread.h>

#include <unistd.h>

using namespace llvm;

namespace dispatchgen {

Learner &Learner::get() {
  // Never destroyed: the thread may run until the process ends.
  static Learner *L = [] {
    auto *New = new Learner();
    // fork() waits for a window step in progress (up to a second), so
    // that no dispatcher's update is half done in the child; the child
    // keeps the schedule and starts its own thread when one of its
    // dispatchers is updated (ensureRunning()).
    pthread_atfork(
        [] {
          Learner &L = get();
          std::unique_lock<std::mutex> Lock(L.M);
          L.CV.wait_for(Lock, std::chrono::seconds(1),
                        [&] { return L.Busy == nullptr; });
          Lock.release();
        },
        [] { get().M.unlock(); },
        [] {
          Learner &L = get();
          L.Busy = nullptr;
          L.Owner = 0;
          for (auto &[I, E] : L.Entries) {
            E.Open = I->Learning;
            L.requeue(E);
          }
          L.M.unlock();
        });
    return New;
  }();
  return *L;
}

void Learner::startLocked() {
  if (Owner == getpid())
    return;
  Owner = getpid();
  // A forked child inherits the list but not the thread, nor a step that
  // was running in the parent.
  Busy = nullptr;
  // pthread_create rather than std::thread: a detached std::thread owns a
  // heap block that only the thread frees, so a forked child, which
  // inherits the block but not the thread, would leak it (LeakSanitizer
  // in a host reports it at the child's exit).
  pthread_t Thread;
  if (pthread_create(
          &Thread, nullptr,
          [](void *) -> void * {
            Learner::get().run();
            return nullptr;
          },
          nullptr) != 0) {
    Owner = 0; // no thread: the next add() or update tries again
    return;
  }
  pthread_detach(Thread);
}

void Learner::ensureRunning() {
  std::lock_guard<std::mutex> Lock(M);
  if (!Entries.empty())
    startLocked();
}

void Learner::requeue(Entry &E) {
  Queue.erase({E.Queued, E.I});
  E.Queued = wakeOf(E);
  Queue.insert({E.Queued, E.I});
}

Learner::Entry *Learner::find(Dispatcher::Impl *I) {
  auto It = Entries.find(I);
  return It == Entries.end() ? nullptr : &It->second;
}

void Learner::add(Dispatcher::Impl *I, std::chrono::microseconds Period) {
  std::lock_guard<std::mutex> Lock(M);
  auto Now = Clock::now();
  Entry &E = Entries.insert({I, Entry{I, Now + Period, Period}}).first->second;
  E.LastPoll = Now;
  E.NextPoll = Now + I->Config.Adaptive.TriggerPoll;
  requeue(E);
  startLocked();
  CV.notify_all();
}

void Learner::remove(Dispatcher::Impl *I) {
  std::unique_lock<std::mutex> Lock(M);
  if (Entry *E = find(I)) {
    Queue.erase({E->Queued, I});
    Entries.erase(I);
  }
  CV.wait(Lock, [&] { return Busy != I; });
  CV.notify_all();
}

void Learner::sampleWindow(Dispatcher::Impl *I, uint64_t Serial, bool Open) {
  std::lock_guard<std::mutex> Lock(M);
  Entry *E = find(I);
  if (!E || Serial < E->GateSerial || (!Open && Serial != E->GateSerial))
    return;
  E->GateSerial = Serial;
  if (Open) {
    I->setGate(true);
    E->GateDue = Clock::now() + I->Config.Adaptive.SampleOn;
  } else {
    E->GateDue = Clock::time_point::max();
  }
  requeue(*E);
  CV.notify_all();
}

Learner::Clock::time_point Learner::wakeOf(const Entry &E) {
  Clock::time_point Wake = E.Due;
  if (!E.Open && E.I->Config.Adaptive.TriggerPoll.count() > 0)
    Wake = std::min(Wake, E.NextPoll);
  return std::min(Wake, E.GateDue);
}

bool Learner::triggerFires(Entry &E, Clock::time_point Now) {
  const AdaptiveConfig &A = E.I->Config.Adaptive;
  uint64_t Calls = E.I->steadyFallbackCalls();
  uint64_t Delta = Calls - std::min(Calls, E.SeenFallback);
  double Seconds = std::chrono::duration<double>(Now - E.LastPoll).count();
  double Expected =
      E.I->FallbackRateSeen.load(std::memory_order_relaxed) * Seconds;
  E.SeenFallback = Calls;
  E.LastPoll = Now;
  E.NextPoll = Now + A.TriggerPoll;
  return double(Delta) > 2 * Expected + double(A.TriggerCalls);
}

void Learner::run() {
  std::unique_lock<std::mutex> Lock(M);
  int Me = getpid();
  while (Owner == Me) {
    if (Queue.empty()) {
      CV.wait(Lock);
      continue;
    }
    auto [When, Due] = *Queue.begin();
    auto Now = Clock::now();
    if (Now < When) {
      CV.wait_until(Lock, When);
      continue;
    }
    Entry &Next = Entries.find(Due)->second;
    const AdaptiveConfig &A = Next.I->Config.Adaptive;
    if (Next.GateDue <= Now) {
      // The window's sampling in time (under M: remove() cannot free the
      // gate meanwhile).
      bool Open = Next.I->toggleGate();
      Next.GateDue = Now + (Open ? A.SampleOn : A.SampleOff);
      requeue(Next);
      continue;
    }
    if (!Next.Open && Next.I->learningNow()) {
      // The host opened a window: it closes it; the next of the schedule
      // comes a Period after.
      Next.Due = Now + Next.Period;
      Next.NextPoll = Now + A.TriggerPoll;
      requeue(Next);
      continue;
    }
    if (Now < Next.Due) {
      // The trigger's look (under M: remove() cannot free the counters
      // meanwhile).
      if (triggerFires(Next, Now)) {
        Next.Due = Now;
        Next.I->TriggeredWindows.fetch_add(1, std::memory_order_relaxed);
      }
      requeue(Next);
      continue;
    }
    Dispatcher::Impl *I = Next.I;
    bool Open = Next.Open;
    Busy = I;
    Lock.unlock();
    bool Changed = false;
    std::string Failure;
    if (!Open) {
      if (Error E = I->beginLearning())
        Failure = toString(std::move(E));
    } else if (auto R = I->endLearning()) {
      Changed = R->LayoutChanged;
    } else {
      Failure = toString(R.takeError());
    }
    Lock.lock();
    Busy = nullptr;
    CV.notify_all();
    if (!Failure.empty()) {
      std::lock_guard<std::mutex> ImplLock(I->UpdateMutex);
      I->LearningError = Failure;
    }
    // The entry may have gone (remove() waited for this step).
    Entry *E = find(I);
    if (!E)
      continue;
    Now = Clock::now();
    if (!Open && Failure.empty()) {
      E->Open = true;
      E->Due = Now + A.Window;
      requeue(*E);
      continue;
    }
    if (Open && !Failure.empty() && I->learningNow()) {
      // The window failed to close and is still open: try again later,
      // backing off as after a window that changed nothing.
      E->Period = std::min<Clock::duration>(2 * E->Period, A.MaxPeriod);
      E->Due = Now + E->Period;
      requeue(*E);
      continue;
    }
    // The steady counters start from 0 at each window's open (a window
    // that failed to open may have left them as they were).
    if (Open)
      E->SeenFallback = 0;
    E->Open = false;
    E->LastPoll = Now;
    E->NextPoll = Now + A.TriggerPoll;
    E->Period = Changed ? Clock::duration(A.Period)
                        : std::min<Clock::duration>(2 * E->Period, A.MaxPeriod);
    E->Due = Now + E->Period;
    requeue(*E);
  }
}

} // namespace dispatchgen
