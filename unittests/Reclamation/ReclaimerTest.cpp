//===- ReclaimerTest.cpp - Tests of grace-period reclamation --------------===//
//
// Part of dispatch-gen.
//
//===----------------------------------------------------------------------===//
//
// A reader thread enters a read-side critical section (or, for QSBR, stays
// online without reporting) and holds it until the test lets go. A free
// retired meanwhile must not run before that. The tests check order, never
// durations: the short sleeps only give a wrong implementation the chance
// to show itself.
//
//===----------------------------------------------------------------------===//

#include "dispatch-gen/Reclamation.h"

#include "gtest/gtest.h"

#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>
#include <thread>

using namespace dispatchgen;

namespace {

/// A reader thread that enters its critical section on construction and
/// leaves it when release() is called.
class HeldReader {
public:
  explicit HeldReader(RCUFlavor Flavor) {
    Thread = std::thread([this, Flavor] {
      RCUReaderThread Registration(Flavor);
      if (Flavor == RCUFlavor::RF_Memb) {
        RCUReadGuard Guard;
        signalInsideAndWait();
      } else {
        // Online and not reporting: a QSBR grace period cannot end.
        signalInsideAndWait();
        rcuQuiescentState();
      }
    });
    std::unique_lock<std::mutex> Lock(M);
    CV.wait(Lock, [this] { return Inside; });
  }

  void release() {
    {
      std::lock_guard<std::mutex> Lock(M);
      Released = true;
    }
    CV.notify_all();
    Thread.join();
  }

  ~HeldReader() {
    if (Thread.joinable())
      release();
  }

private:
  void signalInsideAndWait() {
    std::unique_lock<std::mutex> Lock(M);
    Inside = true;
    CV.notify_all();
    CV.wait(Lock, [this] { return Released; });
  }

  std::mutex M;
  std::condition_variable CV;
  bool Inside = false;
  bool Released = false;
  std::thread Thread;
};

void giveAWrongImplementationTime() {
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
}

class ReclaimerTest : public ::testing::TestWithParam<RCUFlavor> {};

TEST_P(ReclaimerTest, SynchronousFreeWaitsForReader) {
  Reclaimer R(GetParam(), ReclaimMode::RM_Synchronous);
  HeldReader Reader(GetParam());
  std::atomic<bool> Freed{false};
  auto Updater =
      std::async(std::launch::async, [&] { R.retire([&] { Freed = true; }); });
  giveAWrongImplementationTime();
  EXPECT_FALSE(Freed) << "freed while a reader was inside";
  Reader.release();
  Updater.get();
  EXPECT_TRUE(Freed);
  EXPECT_EQ(R.pending(), 0u);
}

TEST_P(ReclaimerTest, AsynchronousRetireReturnsAtOnceAndFreesLater) {
  Reclaimer R(GetParam(), ReclaimMode::RM_Asynchronous);
  HeldReader Reader(GetParam());
  std::atomic<bool> Freed{false};
  R.retire([&] { Freed = true; });
  // retire() returned with the reader still inside.
  EXPECT_EQ(R.pending(), 1u);
  giveAWrongImplementationTime();
  EXPECT_FALSE(Freed) << "freed while a reader was inside";
  Reader.release();
  R.drain();
  EXPECT_TRUE(Freed);
  EXPECT_EQ(R.pending(), 0u);
}

TEST_P(ReclaimerTest, DestructorRunsEveryQueuedFree) {
  std::atomic<int> Freed{0};
  {
    Reclaimer R(GetParam(), ReclaimMode::RM_Asynchronous);
    for (int I = 0; I < 100; ++I)
      R.retire([&] { ++Freed; });
  }
  EXPECT_EQ(Freed, 100);
}

TEST_P(ReclaimerTest, FreesRunOncePerRetire) {
  Reclaimer R(GetParam(), ReclaimMode::RM_Synchronous);
  int Freed = 0;
  for (int I = 0; I < 10; ++I)
    R.retire([&] { ++Freed; });
  EXPECT_EQ(Freed, 10);
}

TEST_P(ReclaimerTest, SkippingTheGracePeriodIsCaught) {
  // The deliberately broken mode the torture test relies on: it must free
  // while a reader is inside, or the torture test's check proves nothing.
  Reclaimer R(GetParam(), ReclaimMode::RM_Synchronous);
  R.setSkipGracePeriodForTesting(true);
  HeldReader Reader(GetParam());
  bool Freed = false;
  R.retire([&] { Freed = true; });
  EXPECT_TRUE(Freed);
}

TEST(ReclaimerQSBRTest, RegisteredUpdaterDoesNotWaitForItself) {
  // The updater is itself an online QSBR reader; it must not deadlock.
  RCUReaderThread Registration(RCUFlavor::RF_QSBR);
  Reclaimer R(RCUFlavor::RF_QSBR, ReclaimMode::RM_Synchronous);
  bool Freed = false;
  R.retire([&] { Freed = true; });
  EXPECT_TRUE(Freed);
  Reclaimer Async(RCUFlavor::RF_QSBR, ReclaimMode::RM_Asynchronous);
  Async.retire([&] { Freed = false; });
  Async.drain();
  EXPECT_FALSE(Freed);
}

TEST(ReclaimerQSBRTest, OfflineReaderDoesNotHoldUpdates) {
  std::promise<void> Offline, Done;
  std::thread Reader([&] {
    RCUReaderThread Registration(RCUFlavor::RF_QSBR);
    RCUOfflineScope Scope;
    Offline.set_value();
    Done.get_future().wait();
  });
  Offline.get_future().wait();
  Reclaimer R(RCUFlavor::RF_QSBR, ReclaimMode::RM_Synchronous);
  bool Freed = false;
  R.retire([&] { Freed = true; });
  EXPECT_TRUE(Freed);
  Done.set_value();
  Reader.join();
}

INSTANTIATE_TEST_SUITE_P(Flavors, ReclaimerTest,
                         ::testing::Values(RCUFlavor::RF_Memb,
                                           RCUFlavor::RF_QSBR),
                         [](const auto &Info) {
                           return Info.param == RCUFlavor::RF_Memb ? "Memb"
                                                                   : "QSBR";
                         });

} // namespace
