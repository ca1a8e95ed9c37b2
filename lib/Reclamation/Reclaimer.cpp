//===- Reclaimer.cpp - Grace-period reclamation with liburcu --------------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//

#include "dispatch-gen/Reclamation.h"

#include "llvm/ADT/STLExtras.h"

#include <urcu/call-rcu.h>
#include <urcu/flavor.h>

#include <mutex>
#include <optional>
#include <vector>

#include <pthread.h>

// Both flavours' operation tables are exported by their libraries; the
// headers declare only the flavour included last, so declare them here.
extern "C" {
extern const struct rcu_flavor_struct urcu_memb_flavor;
extern const struct rcu_flavor_struct urcu_qsbr_flavor;
void urcu_memb_call_rcu_before_fork(void);
void urcu_memb_call_rcu_after_fork_parent(void);
void urcu_memb_call_rcu_after_fork_child(void);
void urcu_qsbr_call_rcu_before_fork(void);
void urcu_qsbr_call_rcu_after_fork_parent(void);
void urcu_qsbr_call_rcu_after_fork_child(void);
}

namespace dispatchgen {

static const rcu_flavor_struct &ops(RCUFlavor Flavor) {
  return Flavor == RCUFlavor::Memb ? urcu_memb_flavor : urcu_qsbr_flavor;
}

/// A free queued with call_rcu; Head must stay the first member so the
/// callback can get back to the whole object.
struct Reclaimer::Deferred {
  struct rcu_head Head;
  Reclaimer *Owner;
  llvm::unique_function<void()> Free;
};

namespace {

/// A thread registered through RCUReaderThread: its flavour's reader
/// record (thread-local, in liburcu's registry) and the thread.
struct TrackedReader {
  RCUFlavor Flavor;
  void *Record;
  pthread_t Thread;
};

/// Guards trackedReaders(); fork() holds it from prepare to the parent's
/// or child's handler.
std::mutex &trackedReadersMutex() {
  static auto *M = new std::mutex;
  return *M;
}
std::vector<TrackedReader> &trackedReaders() {
  static auto *V = new std::vector<TrackedReader>;
  return *V;
}

/// In a forked child, which has only the thread that forked: takes every
/// other remembered reader out of liburcu's registry. The memory of their
/// records was copied with the rest; left in the registry, a reader that
/// was inside a read-side section (or online, with QSBR) at the fork would
/// hold up every grace period of the child forever. No other thread runs,
/// so the registry needs no lock; this runs before the new call_rcu thread
/// starts.
void dropOtherThreadsReaders() {
  pthread_t Self = pthread_self();
  llvm::erase_if(trackedReaders(), [&](const TrackedReader &T) {
    if (pthread_equal(T.Thread, Self))
      return false;
    if (T.Flavor == RCUFlavor::Memb) {
      auto *R = static_cast<struct urcu_reader *>(T.Record);
      cds_list_del(&R->node);
      R->ctr = 0;
      R->registered = 0;
    } else {
      auto *R = static_cast<struct urcu_qsbr_reader *>(T.Record);
      cds_list_del(&R->node);
      R->ctr = 0;
      R->registered = 0;
    }
    return true;
  });
}

/// liburcu's call_rcu threads do not survive fork(): its hooks pause them
/// around the fork and, in the child, start a new one that takes over the
/// frees queued in the parent, so a child's asynchronous frees still run.
/// The child first drops the readers it does not have.
void installForkHandlers() {
  static std::once_flag Once;
  std::call_once(Once, [] {
    pthread_atfork(
        [] {
          trackedReadersMutex().lock();
          urcu_memb_call_rcu_before_fork();
          urcu_qsbr_call_rcu_before_fork();
        },
        [] {
          urcu_qsbr_call_rcu_after_fork_parent();
          urcu_memb_call_rcu_after_fork_parent();
          trackedReadersMutex().unlock();
        },
        [] {
          dropOtherThreadsReaders();
          urcu_qsbr_call_rcu_after_fork_child();
          urcu_memb_call_rcu_after_fork_child();
          trackedReadersMutex().unlock();
        });
  });
}

} // namespace

void detail::noteReader(RCUFlavor Flavor, bool Registered) {
  installForkHandlers();
  void *Record = Flavor == RCUFlavor::Memb
                     ? static_cast<void *>(&URCU_TLS(urcu_memb_reader))
                     : static_cast<void *>(&URCU_TLS(urcu_qsbr_reader));
  std::lock_guard<std::mutex> Lock(trackedReadersMutex());
  auto &V = trackedReaders();
  if (Registered) {
    V.push_back({Flavor, Record, pthread_self()});
    return;
  }
  llvm::erase_if(V, [&](const TrackedReader &T) {
    return T.Flavor == Flavor && T.Record == Record;
  });
}

Reclaimer::Reclaimer(RCUFlavor Flavor, ReclaimMode Mode)
    : Flavor(Flavor), Mode(Mode) {
  if (Mode == ReclaimMode::Asynchronous)
    installForkHandlers();
}

Reclaimer::~Reclaimer() { drain(); }

void Reclaimer::runDeferred(struct rcu_head *Head) {
  auto *D = reinterpret_cast<Deferred *>(Head);
  // For ThreadSanitizer, which sees neither call_rcu's queue nor the grace
  // period: retire() happened before, and so did every reader's critical
  // section that might still have used what Free frees.
  TsanHappensAfter(D);
  TsanHappensAfter(detail::tsanGracePeriod(D->Owner->Flavor));
  D->Free();
  Reclaimer *Owner = D->Owner;
  delete D;
  Owner->Pending.fetch_sub(1, std::memory_order_release);
}

void Reclaimer::retire(llvm::unique_function<void()> Free) {
  if (Mode == ReclaimMode::Synchronous) {
    synchronize();
    Free();
    return;
  }
  Pending.fetch_add(1, std::memory_order_relaxed);
  auto *D = new Deferred{{}, this, std::move(Free)};
  // Hands D to runDeferred() through call_rcu's queue, for ThreadSanitizer.
  TsanHappensBefore(D);
  // call_rcu works from any thread; the QSBR flavour's needs no
  // registration of the caller either (liburcu 0.13, call_rcu.h).
  ops(Flavor).update_call_rcu(&D->Head, runDeferred);
}

void Reclaimer::synchronize() {
  // A registered QSBR reader that waits for a grace period would wait for
  // itself; liburcu's synchronize_rcu takes such a thread offline itself.
  ops(Flavor).update_synchronize_rcu();
  // The readers' critical sections are behind us (see Reclamation.h).
  TsanHappensAfter(detail::tsanGracePeriod(Flavor));
}

void Reclaimer::drain() {
  if (Pending.load(std::memory_order_acquire) == 0)
    return;
  // rcu_barrier() waits for every call_rcu callback queued before it, and
  // those wait for a grace period: an online QSBR reader must not hold it
  // up by waiting here.
  std::optional<RCUOfflineScope> Offline;
  if (Flavor == RCUFlavor::QSBR && urcu_qsbr_read_ongoing())
    Offline.emplace();
  ops(Flavor).barrier();
  // Each free ends with a release decrement of Pending: this load orders
  // them all before drain() returns, for ThreadSanitizer too, which cannot
  // see how rcu_barrier() waits for them.
  (void)Pending.load(std::memory_order_acquire);
}

} // namespace dispatchgen
