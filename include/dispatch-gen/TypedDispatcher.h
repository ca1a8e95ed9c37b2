//===- TypedDispatcher.h - A dispatcher typed by its prototype --*- C++ -*-===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// A Dispatcher takes its programs' type as an LLVM signature string and its
// entry is called through a hand-written function type with a trailing
// program pointer; nothing checks that the two agree. TypedDispatcher<F>
// derives both from the C++ function type F at compile time:
//
//   using Filter = unsigned (const void *Packet, size_t Length);
//   auto D = TypedDispatcher<Filter>::create("filter");
//   (*D)->add(&drop_tcp);
//   unsigned V = (*D)->entry()(Packet, Length, &drop_tcp);
//
// The LLVM signature and the ABI extensions are those Clang gives the same
// C prototype on x86-64 System V (`bool`, `char`, `short` and their unsigned
// forms carry zeroext/signext; `int`, `long`, pointers, `float` and `double`
// none). Types a dispatcher cannot forward in registers this way (structs
// and unions by value, `long double`, `__int128`, references, variadic
// prototypes) are refused by a static_assert that names the type's position.
//
//===----------------------------------------------------------------------===//

#ifndef DISPATCH_GEN_TYPEDDISPATCHER_H
#define DISPATCH_GEN_TYPEDDISPATCHER_H

#include "dispatch-gen/Dispatcher.h"

#include <climits>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace dispatchgen {

namespace typed {

/// Always false, for static_asserts that fire only when instantiated.
template <typename T> struct AlwaysFalse : std::false_type {};

/// How one C++ type crosses a call: its LLVM type and its extension.
template <typename T, typename = void> struct Scalar {
  static_assert(AlwaysFalse<T>::value,
                "a dispatcher forwards scalars and pointers only: bool, "
                "integers of up to 64 bits, float, double, pointers and "
                "enums; pass structs, unions and long double by pointer");
};

template <> struct Scalar<void> {
  static constexpr const char *LLVM = "void";
  static constexpr ArgExtension Ext = ArgExtension::None;
};
template <> struct Scalar<bool> {
  static constexpr const char *LLVM = "i1";
  static constexpr ArgExtension Ext = ArgExtension::ZeroExt;
};
template <> struct Scalar<float> {
  static constexpr const char *LLVM = "float";
  static constexpr ArgExtension Ext = ArgExtension::None;
};
template <> struct Scalar<double> {
  static constexpr const char *LLVM = "double";
  static constexpr ArgExtension Ext = ArgExtension::None;
};
template <typename T> struct Scalar<T *> {
  static constexpr const char *LLVM = "ptr";
  static constexpr ArgExtension Ext = ArgExtension::None;
};
/// Integers (and enums, as their underlying type) of 8 to 64 bits: the
/// narrow ones carry the extension of their signedness, as Clang gives
/// them on x86-64 (the callee may rely on it).
template <typename T>
struct Scalar<
    T, std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, bool> &&
                        std::is_same_v<T, std::remove_cv_t<T>>>> {
  static_assert(sizeof(T) <= 8, "integers wider than 64 bits are passed in "
                                "two registers; pass them by pointer");
  static constexpr const char *LLVM = sizeof(T) == 1   ? "i8"
                                      : sizeof(T) == 2 ? "i16"
                                      : sizeof(T) == 4 ? "i32"
                                                       : "i64";
  static constexpr ArgExtension Ext = sizeof(T) >= 4 ? ArgExtension::None
                                      : std::is_signed_v<T>
                                          ? ArgExtension::SignExt
                                          : ArgExtension::ZeroExt;
};
template <typename T>
struct Scalar<T, std::enable_if_t<std::is_enum_v<T> &&
                                  std::is_same_v<T, std::remove_cv_t<T>>>>
    : Scalar<std::underlying_type_t<T>> {};
/// const/volatile values cross a call as the plain type.
template <typename T>
struct Scalar<T, std::enable_if_t<!std::is_same_v<T, std::remove_cv_t<T>>>>
    : Scalar<std::remove_cv_t<T>> {};

/// The parts of a prototype.
template <typename F> struct Prototype {
  static_assert(AlwaysFalse<F>::value,
                "TypedDispatcher<F>: F must be a function type such as "
                "int(const void *, size_t)");
};
template <typename Ret, typename... Args> struct Prototype<Ret(Args...)> {
  static_assert(!std::is_reference_v<Ret> &&
                    !(std::is_reference_v<Args> || ...),
                "references cannot cross a dispatcher: pass pointers");
  using Program = Ret (*)(Args...);
  /// The entry: the programs' parameters, then the program to call.
  using Entry = Ret (*)(Args..., Program);

  /// "Ret (Args...)" in LLVM syntax.
  static std::string signature() {
    std::string S = Scalar<Ret>::LLVM;
    S += " (";
    bool First = true;
    ((S += First ? "" : ", ", S += Scalar<Args>::LLVM, First = false), ...);
    (void)First;
    return S + ")";
  }
  static ArgExtension returnExtension() { return Scalar<Ret>::Ext; }
  static std::vector<ArgExtension> paramExtensions() {
    return {Scalar<Args>::Ext...};
  }
};
/// Variadic prototypes cannot be forwarded by a tail call.
template <typename Ret, typename... Args> struct Prototype<Ret(Args..., ...)> {
  static_assert(AlwaysFalse<Ret>::value,
                "a dispatcher cannot forward variadic arguments");
};

} // namespace typed

/// A Dispatcher whose signature, extensions and entry type come from F.
template <typename F> class TypedDispatcher {
  using Proto = typed::Prototype<F>;

public:
  /// A program: a function of type F.
  using Program = typename Proto::Program;
  /// The entry: F's parameters, then the program to call.
  using Entry = typename Proto::Entry;

  /// Config with Name, and Signature, ReturnExtension and ParamExtensions
  /// derived from F (whatever Config held there is replaced).
  static DispatcherConfig configure(DispatcherConfig Config) {
    Config.Signature = Proto::signature();
    Config.ReturnExtension = Proto::returnExtension();
    Config.ParamExtensions = Proto::paramExtensions();
    Config.SelectorArg.reset();
    return Config;
  }

  /// A standalone dispatcher named Name.
  static llvm::Expected<std::unique_ptr<TypedDispatcher>>
  create(std::string Name, DispatcherConfig Config = DispatcherConfig()) {
    Config.Name = std::move(Name);
    auto D = Dispatcher::create(configure(std::move(Config)));
    if (!D)
      return D.takeError();
    return std::unique_ptr<TypedDispatcher>(new TypedDispatcher(std::move(*D)));
  }
  /// One inside a host's session (see Dispatcher::create).
  static llvm::Expected<std::unique_ptr<TypedDispatcher>>
  create(std::string Name, llvm::orc::ExecutionSession &ES,
         DispatcherConfig Config = DispatcherConfig()) {
    Config.Name = std::move(Name);
    auto D = Dispatcher::create(configure(std::move(Config)), ES);
    if (!D)
      return D.takeError();
    return std::unique_ptr<TypedDispatcher>(new TypedDispatcher(std::move(*D)));
  }

  /// What callers call: `entry()(args..., program)`.
  Entry entry() const { return D->entryAs<std::remove_pointer_t<Entry>>(); }

  llvm::Error add(Program P, llvm::StringRef Name = "") {
    return D->add(address(P), Name);
  }
  llvm::Error remove(Program P) { return D->remove(address(P)); }
  llvm::Error change(Program From, Program To, llvm::StringRef ToName = "") {
    return D->change(address(From), address(To), ToName);
  }

  /// The untyped dispatcher, for everything else (status, dump, verify,
  /// batches, weights).
  Dispatcher &untyped() { return *D; }
  const Dispatcher &untyped() const { return *D; }

  /// The LLVM signature derived from F, e.g. "i32 (ptr, i64)".
  static std::string signature() { return Proto::signature(); }

private:
  explicit TypedDispatcher(std::unique_ptr<Dispatcher> D) : D(std::move(D)) {}
  static uint64_t address(Program P) { return reinterpret_cast<uint64_t>(P); }
  std::unique_ptr<Dispatcher> D;
};

} // namespace dispatchgen

#endif // DISPATCH_GEN_TYPEDDISPATCHER_H
