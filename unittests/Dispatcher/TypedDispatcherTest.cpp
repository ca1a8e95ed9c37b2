//===- TypedDispatcherTest.cpp - Dispatchers typed by C++ prototypes ------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//

#include "dispatch-gen/TypedDispatcher.h"

#include "llvm/Support/TargetSelect.h"

#include "gtest/gtest.h"

#include <climits>
#include <cstddef>
#include <cstdint>

using namespace dispatchgen;

namespace {

extern "C" __attribute__((noinline)) int fromChar(signed char C);

template <typename F> std::unique_ptr<TypedDispatcher<F>> make() {
  // The programs live in this executable: place the code near them.
  DispatcherConfig Config;
  Config.Near = reinterpret_cast<uint64_t>(&fromChar);
  Config.VerifyImages = true;
  auto D = TypedDispatcher<F>::create("typed", std::move(Config));
  if (!D) {
    ADD_FAILURE() << llvm::toString(D.takeError());
    return nullptr;
  }
  return std::move(*D);
}

// Programs whose results expose a wrong extension: a narrow argument is
// widened by the callee's own code as the ABI promises it was.
extern "C" __attribute__((noinline)) int fromChar(signed char C) { return C; }
extern "C" __attribute__((noinline)) int fromChar2(signed char C) {
  return C * 2;
}
extern "C" __attribute__((noinline)) unsigned fromUChar(unsigned char C) {
  return C;
}
extern "C" __attribute__((noinline)) unsigned fromUChar2(unsigned char C) {
  return C + 1000u;
}
extern "C" __attribute__((noinline)) long fromShort(short S, bool B) {
  return B ? S : -S;
}
extern "C" __attribute__((noinline)) long fromShort2(short S, bool B) {
  return B ? 2 * S : 0;
}
extern "C" __attribute__((noinline)) bool isOdd(unsigned short U) {
  return U & 1;
}
extern "C" __attribute__((noinline)) bool isEven(unsigned short U) {
  return !(U & 1);
}
extern "C" __attribute__((noinline)) double scale(const double *P, float F,
                                                  size_t N) {
  return P[0] * F + static_cast<double>(N);
}
extern "C" __attribute__((noinline)) double scale2(const double *P, float F,
                                                   size_t N) {
  return P[0] - F - static_cast<double>(N);
}
enum class Verdict : uint8_t { Drop = 1, Pass = 2 };
extern "C" __attribute__((noinline)) Verdict drop(const void *, int64_t) {
  return Verdict::Drop;
}
extern "C" __attribute__((noinline)) Verdict pass(const void *, int64_t) {
  return Verdict::Pass;
}

class TypedDispatcherTest : public ::testing::Test {
protected:
  static void SetUpTestSuite() {
    llvm::InitializeNativeTarget();
    llvm::InitializeNativeTargetAsmPrinter();
  }
};

TEST_F(TypedDispatcherTest, SignaturesAndExtensionsFollowTheCxxTypes) {
  using Proto = typed::Prototype<long(short, bool, unsigned char, const int *,
                                      double, uint64_t)>;
  EXPECT_EQ(Proto::signature(), "i64 (i16, i1, i8, ptr, double, i64)");
  EXPECT_EQ(Proto::returnExtension(), ArgExtension::None);
  std::vector<ArgExtension> Want = {
      ArgExtension::SignExt, ArgExtension::ZeroExt, ArgExtension::ZeroExt,
      ArgExtension::None,    ArgExtension::None,    ArgExtension::None};
  EXPECT_EQ(Proto::paramExtensions(), Want);
  EXPECT_EQ(typed::Prototype<void()>::signature(), "void ()");
  EXPECT_EQ(typed::Prototype<bool(char16_t)>::returnExtension(),
            ArgExtension::ZeroExt);
  EXPECT_EQ(typed::Prototype<Verdict(const volatile int)>::signature(),
            "i8 (i32)");
}

TEST_F(TypedDispatcherTest, NarrowIntegersCrossWithTheirExtensions) {
  auto C = make<int(signed char)>();
  ASSERT_TRUE(C);
  ASSERT_FALSE(!!C->add(&fromChar));
  ASSERT_FALSE(!!C->add(&fromChar2));
  for (int V : {-128, -1, 0, 1, 127}) {
    auto Ch = static_cast<signed char>(V);
    EXPECT_EQ(C->entry()(Ch, &fromChar), V);
    EXPECT_EQ(C->entry()(Ch, &fromChar2), 2 * V);
  }
  auto U = make<unsigned(unsigned char)>();
  ASSERT_TRUE(U);
  ASSERT_FALSE(!!U->add(&fromUChar));
  ASSERT_FALSE(!!U->add(&fromUChar2));
  EXPECT_EQ(U->entry()(255, &fromUChar), 255u);
  EXPECT_EQ(U->entry()(200, &fromUChar2), 1200u);
  auto S = make<long(short, bool)>();
  ASSERT_TRUE(S);
  ASSERT_FALSE(!!S->add(&fromShort));
  ASSERT_FALSE(!!S->add(&fromShort2));
  EXPECT_EQ(S->entry()(SHRT_MIN, true, &fromShort), SHRT_MIN);
  EXPECT_EQ(S->entry()(-5, false, &fromShort), 5);
  EXPECT_EQ(S->entry()(-7, true, &fromShort2), -14);
  auto B = make<bool(unsigned short)>();
  ASSERT_TRUE(B);
  ASSERT_FALSE(!!B->add(&isOdd));
  ASSERT_FALSE(!!B->add(&isEven));
  EXPECT_TRUE(B->entry()(65535, &isOdd));
  EXPECT_FALSE(B->entry()(65535, &isEven));
  for (auto *D : {&C->untyped(), &U->untyped(), &S->untyped(), &B->untyped()})
    EXPECT_EQ(D->status().DirectTargets, 2u);
}

TEST_F(TypedDispatcherTest, PointersFloatsAndEnumsAreReachedDirectly) {
  auto D = make<double(const double *, float, size_t)>();
  ASSERT_TRUE(D);
  ASSERT_FALSE(!!D->add(&scale, "scale"));
  ASSERT_FALSE(!!D->add(&scale2, "scale2"));
  double X = 1.5;
  EXPECT_DOUBLE_EQ(D->entry()(&X, 2.0f, 3, &scale), 6.0);
  EXPECT_DOUBLE_EQ(D->entry()(&X, 0.5f, 1, &scale2), 0.0);
  ASSERT_FALSE(!!D->change(&scale2, &scale));
  EXPECT_EQ(D->untyped().status().Programs, 1u);
  EXPECT_FALSE(!!D->untyped().verify());

  EXPECT_EQ(D->untyped().status().DirectTargets, 1u);

  auto V = make<Verdict(const void *, int64_t)>();
  ASSERT_TRUE(V);
  ASSERT_FALSE(!!V->add(&drop));
  EXPECT_EQ(V->untyped().status().DirectTargets, 1u);
  EXPECT_EQ(V->entry()(nullptr, 0, &drop), Verdict::Drop);
  // Not registered: the fallback's indirect call still answers.
  EXPECT_EQ(V->entry()(nullptr, 0, &pass), Verdict::Pass);
  ASSERT_FALSE(!!V->remove(&drop));
  EXPECT_EQ(V->untyped().status().Programs, 0u);
  EXPECT_EQ(TypedDispatcher<Verdict(const void *, int64_t)>::signature(),
            "i8 (ptr, i64)");
}

} // namespace
