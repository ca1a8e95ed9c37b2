//===- ReclaimerTest.cpp - Tests of grace-period reclamation --------------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// A reader thread enters a read-side critical section (or, for QSBR, stays
// online without reporting) and a free is retired meanwhile. The free
// itself checks whether the reader is still inside, so a free that runs too
// early is caught exactly, with no sleep: the reader stays inside until
// either the free has run (what a Reclaimer that skips the grace period
// does) or liburcu shows a grace period waiting for it (what a correct one
// does), and only then leaves.
//
//===----------------------------------------------------------------------===//

#include "dispatch-gen/Reclamation.h"

#include "gtest/gtest.h"

#include <atomic>
#include <chrono>
#include <future>
#include <optional>
#include <thread>

using namespace dispatchgen;

namespace {

/// Whether a grace period has begun that waits for the calling reader
/// thread: the updater's own view of this reader (liburcu's reader state),
/// which is how the reader can tell, without a timeout, that a correct
/// Reclaimer is now blocked on it.
bool gracePeriodWaitsForThisThread(RCUFlavor Flavor) {
  if (Flavor == RCUFlavor::Memb)
    return urcu_common_reader_state(&urcu_memb_gp,
                                    &URCU_TLS(urcu_memb_reader).ctr) ==
           URCU_READER_ACTIVE_OLD;
  return urcu_qsbr_reader_state(&URCU_TLS(urcu_qsbr_reader).ctr) ==
         URCU_READER_ACTIVE_OLD;
}

/// A reader thread inside its critical section from construction until,
/// after letGo(), the free it protects has run or a grace period waits for
/// it. The free calls recordFree(), which notes whether the reader was still
/// inside: a correct Reclaimer can only free after the reader left, a
/// broken one frees first and the reader sees that and leaves.
class HeldReader {
public:
  explicit HeldReader(RCUFlavor Flavor) {
    std::promise<void> Entered;
    std::future<void> EnteredFuture = Entered.get_future();
    Thread =
        std::thread([this, Flavor, Entered = std::move(Entered)]() mutable {
          RCUReaderThread Registration(Flavor);
          // QSBR: online and not reporting, so a grace period cannot end.
          std::optional<RCUReadGuard> Guard;
          if (Flavor == RCUFlavor::Memb)
            Guard.emplace();
          Inside.store(true);
          Entered.set_value();
          waitUntilAFreeOrAGracePeriodComes(Flavor);
          // Cleared before leaving, so a free that sees it set ran while the
          // reader was still inside.
          Inside.store(false);
          if (Flavor == RCUFlavor::Memb)
            Guard.reset();
          else
            rcuQuiescentState();
        });
    EnteredFuture.wait();
  }

  /// Lets the reader leave once the free has run or a grace period waits
  /// for it; before this, it stays inside whatever happens.
  void letGo() { LetGo.store(true); }

  /// What the retired free calls.
  void recordFree() {
    if (Inside.load())
      FreedInside.store(true);
    Freed.store(true);
  }

  bool isInside() const { return Inside.load(); }

  void join() {
    if (Thread.joinable())
      Thread.join();
  }

  ~HeldReader() {
    // A test that failed early must not leave the thread waiting.
    Abandoned.store(true);
    join();
  }

  bool freed() const { return Freed.load(); }
  bool freedWhileInside() const { return FreedInside.load(); }
  /// Neither a free nor a grace period came: the Reclaimer under test lost
  /// the free.
  bool gaveUp() const { return GaveUp.load(); }

private:
  void waitUntilAFreeOrAGracePeriodComes(RCUFlavor Flavor) {
    // Only a safety net against a Reclaimer that never frees: a correct
    // one starts its grace period at once.
    constexpr auto Patience = std::chrono::seconds(30);
    std::optional<std::chrono::steady_clock::time_point> Deadline;
    while (!Abandoned.load()) {
      if (LetGo.load()) {
        if (Freed.load() || gracePeriodWaitsForThisThread(Flavor))
          return;
        if (!Deadline)
          Deadline = std::chrono::steady_clock::now() + Patience;
        else if (std::chrono::steady_clock::now() > *Deadline) {
          GaveUp.store(true);
          return;
        }
      }
      // Also makes the loop reload liburcu's grace-period counter.
      std::this_thread::yield();
    }
  }

  std::atomic<bool> Inside{false};
  std::atomic<bool> LetGo{false};
  std::atomic<bool> Abandoned{false};
  std::atomic<bool> Freed{false};
  std::atomic<bool> FreedInside{false};
  std::atomic<bool> GaveUp{false};
  std::thread Thread;
};

class ReclaimerTest : public ::testing::TestWithParam<RCUFlavor> {};

TEST_P(ReclaimerTest, SynchronousRetireFreesOnlyAfterTheReaderLeaves) {
  Reclaimer R(GetParam(), ReclaimMode::Synchronous);
  HeldReader Reader(GetParam());
  std::atomic<bool> ReturnedWhileInside{false};
  std::thread Updater([&] {
    // From here on only this retire() can free or start a grace period.
    Reader.letGo();
    R.retire([&] { Reader.recordFree(); });
    ReturnedWhileInside.store(Reader.isInside());
  });
  Updater.join();
  Reader.join();
  EXPECT_FALSE(Reader.gaveUp()) << "no grace period began and nothing freed";
  EXPECT_TRUE(Reader.freed());
  EXPECT_FALSE(Reader.freedWhileInside()) << "freed while a reader was inside";
  EXPECT_FALSE(ReturnedWhileInside.load())
      << "retire() returned while a reader was inside";
  EXPECT_EQ(R.pending(), 0u);
}

TEST_P(ReclaimerTest, AsynchronousRetireReturnsAtOnceAndFreesAfterTheReader) {
  Reclaimer R(GetParam(), ReclaimMode::Asynchronous);
  HeldReader Reader(GetParam());
  R.retire([&] { Reader.recordFree(); });
  // The reader cannot leave before letGo(): retire() did not wait for it.
  EXPECT_TRUE(Reader.isInside());
  EXPECT_EQ(R.pending(), 1u);
  Reader.letGo();
  Reader.join();
  R.drain();
  EXPECT_FALSE(Reader.gaveUp()) << "no grace period began and nothing freed";
  EXPECT_TRUE(Reader.freed());
  EXPECT_FALSE(Reader.freedWhileInside()) << "freed while a reader was inside";
  EXPECT_EQ(R.pending(), 0u);
}

TEST_P(ReclaimerTest, DestructorRunsEveryQueuedFree) {
  std::atomic<int> Freed{0};
  {
    Reclaimer R(GetParam(), ReclaimMode::Asynchronous);
    for (int I = 0; I < 100; ++I)
      R.retire([&] { ++Freed; });
  }
  EXPECT_EQ(Freed, 100);
}

TEST_P(ReclaimerTest, FreesRunOncePerRetire) {
  Reclaimer R(GetParam(), ReclaimMode::Synchronous);
  int Freed = 0;
  for (int I = 0; I < 10; ++I)
    R.retire([&] { ++Freed; });
  EXPECT_EQ(Freed, 10);
}

TEST(ReclaimerQSBRTest, RegisteredUpdaterDoesNotWaitForItself) {
  // The updater is itself an online QSBR reader; it must not deadlock.
  RCUReaderThread Registration(RCUFlavor::QSBR);
  Reclaimer R(RCUFlavor::QSBR, ReclaimMode::Synchronous);
  bool Freed = false;
  R.retire([&] { Freed = true; });
  EXPECT_TRUE(Freed);
  Reclaimer Async(RCUFlavor::QSBR, ReclaimMode::Asynchronous);
  Async.retire([&] { Freed = false; });
  Async.drain();
  EXPECT_FALSE(Freed);
}

TEST(ReclaimerQSBRTest, OfflineReaderDoesNotHoldUpdates) {
  std::promise<void> Offline, Done;
  std::thread Reader([&] {
    RCUReaderThread Registration(RCUFlavor::QSBR);
    RCUOfflineScope Scope;
    Offline.set_value();
    Done.get_future().wait();
  });
  Offline.get_future().wait();
  Reclaimer R(RCUFlavor::QSBR, ReclaimMode::Synchronous);
  bool Freed = false;
  R.retire([&] { Freed = true; });
  EXPECT_TRUE(Freed);
  Done.set_value();
  Reader.join();
}

INSTANTIATE_TEST_SUITE_P(Flavors, ReclaimerTest,
                         ::testing::Values(RCUFlavor::Memb, RCUFlavor::QSBR),
                         [](const auto &Info) {
                           return Info.param == RCUFlavor::Memb ? "Memb"
                                                                : "QSBR";
                         });

} // namespace
