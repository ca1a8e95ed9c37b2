//===- Reclamation.h - RCU readers and grace-period reclamation -*- C++ -*-===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// A dispatcher frees an old image, and releases the programs that left the
// set, only after every caller that might still run them has finished: after
// an RCU grace period, from liburcu.
//
// Callers are RCU readers, in one of two flavours:
//
//  * Memb (liburcu's urcu-memb): each thread that calls through a
//    dispatcher registers once (RCUReaderThread) and wraps each call, or a
//    batch of calls, in an RCUReadGuard. The guard increments a thread-local
//    counter: no lock, no shared write, no fence (the updater pays with
//    membarrier()).
//  * QSBR (urcu-qsbr): calls need no guard at all. Each registered thread
//    instead reports a quiescent state (rcuQuiescentState()) from time to
//    time, at a point where it holds no reference to dispatched code, and
//    goes offline (RCUOfflineScope) around anything that blocks. A
//    registered thread that never reports stalls every update.
//
// The updater side is Reclaimer: synchronous (wait for the grace period,
// then free) or asynchronous (call_rcu: free on liburcu's worker thread, so
// the update does not block).
//
// ThreadSanitizer cannot see how liburcu orders a reader's critical section
// before the free that follows the grace period (membarrier(), futexes,
// fences in inline assembly). In a TSan build the project says it itself,
// with LLVM's TsanHappensBefore/After (nothing in other builds): wherever a
// reader's critical section ends (RCUReadGuard's destructor, a QSBR
// quiescent state, going offline, unregistering) it releases the flavour's
// grace-period state, and Reclaimer acquires that state once a grace period
// has passed, before any free. Readers never acquire it: that would order
// readers after one another and hide races between callers. The cost is
// over-ordering only: a critical section that ended before the free is
// ordered before it even if it began after the grace period did.
//
//===----------------------------------------------------------------------===//

#ifndef DISPATCH_GEN_RECLAMATION_H
#define DISPATCH_GEN_RECLAMATION_H

#include "llvm/ADT/FunctionExtras.h"
#include "llvm/Support/Compiler.h"

#include <atomic>
#include <cassert>
#include <cstdint>

// The read side must inline: a call into liburcu through the PLT is an
// indirect jump, the very thing a dispatcher exists to avoid.
#ifndef _LGPL_SOURCE
#define _LGPL_SOURCE
#define DISPATCHGEN_DEFINED_LGPL_SOURCE
#endif
#include <urcu/urcu-memb.h>
#include <urcu/urcu-qsbr.h>
#ifdef DISPATCHGEN_DEFINED_LGPL_SOURCE
#undef _LGPL_SOURCE
#undef DISPATCHGEN_DEFINED_LGPL_SOURCE
#endif

namespace dispatchgen {

enum class RCUFlavor { Memb, QSBR };

namespace detail {
/// What ThreadSanitizer orders a flavour's readers and frees through (see
/// above): liburcu's grace-period state for the flavour.
inline const volatile void *tsanGracePeriod(RCUFlavor Flavor) {
  return Flavor == RCUFlavor::Memb ? &urcu_memb_gp : &urcu_qsbr_gp;
}
/// Remembers (Registered) or forgets the calling thread as a reader of
/// Flavor. A forked child has only the thread that forked: it drops the
/// parent's other remembered readers from liburcu's registry, so that its
/// grace periods do not wait for threads it does not have.
void noteReader(RCUFlavor Flavor, bool Registered);
} // namespace detail

enum class ReclaimMode {
  /// Each update waits for its grace period, then frees.
  Synchronous,
  /// Each update queues its frees with call_rcu and returns at once.
  Asynchronous,
};

/// Registers the calling thread as an RCU reader of Flavor for the guard's
/// lifetime (QSBR threads start online). Create it on the thread itself.
/// Readers registered so are known to dispatch-gen: after fork(), the child
/// drops the parent's other ones from liburcu's registry (the child has
/// none of those threads), so a fork while one of them is inside a
/// read-side section does not stall the child's grace periods.
class RCUReaderThread {
public:
  explicit RCUReaderThread(RCUFlavor Flavor) : Flavor(Flavor) {
    if (Flavor == RCUFlavor::Memb)
      urcu_memb_register_thread();
    else
      urcu_qsbr_register_thread();
    detail::noteReader(Flavor, true);
  }
  ~RCUReaderThread() {
    // An online QSBR thread's critical section ends here.
    TsanHappensBefore(detail::tsanGracePeriod(Flavor));
    detail::noteReader(Flavor, false);
    if (Flavor == RCUFlavor::Memb)
      urcu_memb_unregister_thread();
    else
      urcu_qsbr_unregister_thread();
  }
  RCUReaderThread(const RCUReaderThread &) = delete;
  RCUReaderThread &operator=(const RCUReaderThread &) = delete;

private:
  RCUFlavor Flavor;
};

/// A read-side critical section of the Memb flavour: a dispatcher's
/// image and programs stay alive while any guard that saw them is alive.
/// Nests. The thread must be registered (RCUReaderThread): in a build
/// without NDEBUG a guard on an unregistered thread asserts, since
/// liburcu would otherwise let the grace period miss it. Inside a guard
/// a thread must not update or destroy a synchronous Memb dispatcher:
/// the update would wait for its own grace period, so it is refused
/// (Dispatcher.h).
class RCUReadGuard {
public:
  RCUReadGuard() {
    assert(URCU_TLS(urcu_memb_reader).registered &&
           "RCUReadGuard on a thread that is not registered as an RCU "
           "reader: create an RCUReaderThread on it first");
    urcu_memb_read_lock();
  }
  ~RCUReadGuard() {
    // Before the unlock, which may end the grace period a free waits for.
    TsanHappensBefore(detail::tsanGracePeriod(RCUFlavor::Memb));
    urcu_memb_read_unlock();
  }
  RCUReadGuard(const RCUReadGuard &) = delete;
  RCUReadGuard &operator=(const RCUReadGuard &) = delete;
};

/// Whether the calling thread is inside a read-side critical section of
/// Flavor (for QSBR: registered and online).
inline bool rcuReadOngoing(RCUFlavor Flavor) {
  return Flavor == RCUFlavor::Memb ? urcu_memb_read_ongoing()
                                   : urcu_qsbr_read_ongoing();
}

/// QSBR: the calling thread holds no reference to dispatched code now.
inline void rcuQuiescentState() {
  TsanHappensBefore(detail::tsanGracePeriod(RCUFlavor::QSBR));
  urcu_qsbr_quiescent_state();
}

/// QSBR: the calling thread is offline (it may block; updates do not
/// wait for it) for the scope's lifetime.
class RCUOfflineScope {
public:
  RCUOfflineScope() {
    TsanHappensBefore(detail::tsanGracePeriod(RCUFlavor::QSBR));
    urcu_qsbr_thread_offline();
  }
  ~RCUOfflineScope() { urcu_qsbr_thread_online(); }
  RCUOfflineScope(const RCUOfflineScope &) = delete;
  RCUOfflineScope &operator=(const RCUOfflineScope &) = delete;
};

/// Runs frees after RCU grace periods.
class Reclaimer {
public:
  Reclaimer(RCUFlavor Flavor, ReclaimMode Mode);
  /// Waits until every queued free has run.
  ~Reclaimer();
  Reclaimer(const Reclaimer &) = delete;
  Reclaimer &operator=(const Reclaimer &) = delete;

  /// Runs Free once no reader can still be in a read-side critical section
  /// that began before this call: at once after a grace period
  /// (Synchronous), or later on liburcu's call_rcu thread
  /// (Asynchronous).
  void retire(llvm::unique_function<void()> Free);

  /// Waits for one grace period.
  void synchronize();

  /// Waits until every free queued so far has run.
  void drain();

  /// Frees queued and not yet run.
  uint64_t pending() const { return Pending.load(std::memory_order_acquire); }

  RCUFlavor flavor() const { return Flavor; }
  ReclaimMode mode() const { return Mode; }

private:
  struct Deferred;
  static void runDeferred(struct rcu_head *Head);

  RCUFlavor Flavor;
  ReclaimMode Mode;
  /// Incremented by retire() (updater thread), decremented by the free
  /// (updater thread, or the call_rcu thread); acquire/release so that a
  /// drain() that sees 0, or that has waited for the frees, also sees every
  /// free's effects.
  std::atomic<uint64_t> Pending{0};
};

} // namespace dispatchgen

#endif // DISPATCH_GEN_RECLAMATION_H
