//===- TestingSupport.h - llvm::Error matchers for unit tests ---*- C++ -*-===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// Debian's LLVM 22 ships llvm/Testing/Support/Error.h but not the
// LLVMTestingSupport library behind it, so the unit tests carry the little
// they need here: takeError() turns an llvm::Error or llvm::Expected<T> into a
// plain value that gtest can match and print, and the matchers Succeeded()
// and Failed(MessageMatcher) check it.
//
//   EXPECT_THAT(takeError(parseSignature("i32", Ctx)),
//               Failed(HasSubstr("not a function type")));
//   auto FOrErr = Builder.build(Spec);
//   ASSERT_THAT(takeError(FOrErr), Succeeded());
//   Function *F = *FOrErr; // takeError() leaves a success's value in place.
//
//===----------------------------------------------------------------------===//

#ifndef DISPATCH_GEN_UNITTESTS_TESTINGSUPPORT_H
#define DISPATCH_GEN_UNITTESTS_TESTINGSUPPORT_H

#include "llvm/Support/Error.h"

#include "gmock/gmock.h"

#include <ostream>
#include <string>
#include <utility>

namespace dispatchgen {
namespace unittest {

/// What an llvm::Error held, taken out of it: the Error itself is consumed,
/// so a test that only inspects this never trips LLVM's unchecked-error
/// abort.
struct ErrorResult {
  bool Failed = false;
  /// The error's message (all of them, joined, for an ErrorList); empty on
  /// success.
  std::string Message;
};

/// Consumes Err.
inline ErrorResult takeError(llvm::Error Err) {
  ErrorResult Result;
  Result.Failed = static_cast<bool>(Err);
  if (Result.Failed)
    Result.Message = llvm::toString(std::move(Err));
  return Result;
}

/// Consumes ValOrErr's error, if any. A success keeps its value, so the
/// test can go on to use it.
template <typename T> ErrorResult takeError(llvm::Expected<T> &ValOrErr) {
  return takeError(ValOrErr.takeError());
}

template <typename T> ErrorResult takeError(llvm::Expected<T> &&ValOrErr) {
  return takeError(ValOrErr.takeError());
}

/// Lets gtest print an ErrorResult in failure messages.
inline void PrintTo(const ErrorResult &Result, std::ostream *OS) {
  if (Result.Failed)
    *OS << "failure: \"" << Result.Message << "\"";
  else
    *OS << "success";
}

// The matchers are written out rather than with gmock's MATCHER macros,
// which need libgmock; the unit tests link only libgtest. PrintTo() already
// shows the error, so they add no explanation of their own.
namespace detail {

class SucceededMatcher
    : public ::testing::MatcherInterface<const ErrorResult &> {
public:
  bool MatchAndExplain(const ErrorResult &Result,
                       ::testing::MatchResultListener *) const override {
    return !Result.Failed;
  }
  void DescribeTo(std::ostream *OS) const override { *OS << "succeeded"; }
  void DescribeNegationTo(std::ostream *OS) const override { *OS << "failed"; }
};

class FailedMatcher : public ::testing::MatcherInterface<const ErrorResult &> {
public:
  explicit FailedMatcher(::testing::Matcher<const std::string &> MessageMatcher)
      : MessageMatcher(std::move(MessageMatcher)) {}

  bool MatchAndExplain(const ErrorResult &Result,
                       ::testing::MatchResultListener *) const override {
    return Result.Failed && MessageMatcher.Matches(Result.Message);
  }
  void DescribeTo(std::ostream *OS) const override {
    *OS << "failed with a message that ";
    MessageMatcher.DescribeTo(OS);
  }
  void DescribeNegationTo(std::ostream *OS) const override {
    *OS << "succeeded, or failed with a message that ";
    MessageMatcher.DescribeNegationTo(OS);
  }

private:
  ::testing::Matcher<const std::string &> MessageMatcher;
};

} // namespace detail

/// Matches the ErrorResult of a success.
inline ::testing::Matcher<const ErrorResult &> Succeeded() {
  return ::testing::MakeMatcher(new detail::SucceededMatcher());
}

/// Matches the ErrorResult of a failure whose message matches
/// MessageMatcher, a string matcher such as testing::HasSubstr("...") or
/// testing::_ for any message.
inline ::testing::Matcher<const ErrorResult &>
Failed(::testing::Matcher<const std::string &> MessageMatcher) {
  return ::testing::MakeMatcher(
      new detail::FailedMatcher(std::move(MessageMatcher)));
}

} // namespace unittest
} // namespace dispatchgen

#endif // DISPATCH_GEN_UNITTESTS_TESTINGSUPPORT_H
