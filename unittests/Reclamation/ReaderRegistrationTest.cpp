//===- ReaderRegistrationTest.cpp - Guards need registered threads --------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// RCUReadGuard asserts, in builds without NDEBUG, that its thread is a
// registered reader: liburcu would otherwise let a grace period pass the
// section by. The check is inline in the host's code, so this file is built
// as a host with assertions would be.
//
//===----------------------------------------------------------------------===//

#undef NDEBUG
#include "dispatch-gen/Reclamation.h"

#include "gtest/gtest.h"

#include <thread>

using namespace dispatchgen;

namespace {

TEST(ReaderRegistrationTest, AGuardOnAnUnregisteredThreadAssertsWithAMessage) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        std::thread T([] { RCUReadGuard Guard; });
        T.join();
      },
      "RCUReadGuard on a thread that is not registered as an RCU");
}

TEST(ReaderRegistrationTest, AGuardOnARegisteredThreadIsFine) {
  std::thread T([] {
    RCUReaderThread Reader(RCUFlavor::Memb);
    RCUReadGuard Guard;
    EXPECT_TRUE(rcuReadOngoing(RCUFlavor::Memb));
  });
  T.join();
  EXPECT_FALSE(rcuReadOngoing(RCUFlavor::Memb));
}

} // namespace
