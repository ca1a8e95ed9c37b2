//===- CallingThreads.h - The threads that call the programs ----*- C++ -*-===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// Each phase of the harness starts its calling threads together, lets each
// make its calls through a drive function (a hook of the C files) and times
// them. What they are doing is kept where a crash handler can read it: the
// phase (process-wide) and the program each thread is calling.
//
//===----------------------------------------------------------------------===//

#ifndef DISPATCH_GEN_LIB_RUNHARNESS_CALLINGTHREADS_H
#define DISPATCH_GEN_LIB_RUNHARNESS_CALLINGTHREADS_H

#include "dispatch-gen/Reclamation.h"
#include "dispatch-gen/RunHarness.h"

#include "llvm/ADT/ArrayRef.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/FormatVariadic.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <system_error>
#include <thread>
#include <vector>

namespace dispatchgen::run {

/// `unsigned long dispatchgen_drive(unsigned long iteration, PROG prog)`.
using DriveFn = uint64_t (*)(uint64_t, uint64_t);

/// Sets what getRunPhase() returns; Phase must live as long as the process
/// (a string literal).
void setRunPhase(const char *Phase);

/// The calling thread's slot of getCallingProgram().
const char **callingProgramSlot();

/// An alternate signal stack for the calling thread, for its lifetime (the
/// thread's previous one, if any, is restored after).
class AltStack {
public:
  AltStack();
  ~AltStack();
  AltStack(const AltStack &) = delete;
  AltStack &operator=(const AltStack &) = delete;

private:
  std::vector<char> Memory;
  bool Installed = false;
  stack_t Previous{};
};

/// Runs Threads threads that each make Calls calls through Drive, and go on
/// while More() says so; Pick(Cursor) chooses the program of every call
/// (inside a read-side section), an index into Addresses and Labels.
/// Requests, if given, gets each thread's calls per program.
template <typename PickFn, typename MoreFn>
llvm::Expected<PhaseResult>
runThreads(unsigned Threads, uint64_t Calls, DriveFn Drive,
           llvm::ArrayRef<uint64_t> Addresses,
           llvm::ArrayRef<const char *> Labels, PickFn Pick, MoreFn More,
           std::vector<std::vector<uint64_t>> *Requests) {
  std::atomic<uint64_t> Total{0};
  std::atomic<unsigned> Ready{0};
  std::atomic<bool> Go{false}, Abandon{false};
  std::vector<std::thread> Workers;
  auto Work = [&](unsigned T) {
    AltStack CrashStack;
    RCUReaderThread Reader(RCUFlavor::Memb);
    const char **Calling = callingProgramSlot();
    std::vector<uint64_t> Asked(Addresses.size(), 0);
    size_t Cursor = T;
    Ready.fetch_add(1);
    while (!Go.load(std::memory_order_acquire))
      std::this_thread::yield();
    if (Abandon.load())
      return;
    constexpr uint64_t Batch = 64;
    uint64_t I = 0;
    while (I < Calls || More()) {
      // One read-side section per batch keeps the guard off each call.
      RCUReadGuard Guard;
      uint64_t End = More() ? I + Batch : std::min<uint64_t>(Calls, I + Batch);
      for (; I < End; ++I) {
        size_t P = Pick(Cursor);
        ++Asked[P];
        *Calling = Labels[P];
        Drive(I * Threads + T, Addresses[P]);
      }
    }
    *Calling = nullptr;
    Total.fetch_add(I);
    if (Requests)
      (*Requests)[T] = std::move(Asked);
  };
  // The system may refuse a thread (a memory or process limit): stop the
  // ones started and say so, rather than let std::thread's exception end
  // the process.
  try {
    for (unsigned T = 0; T < Threads; ++T)
      Workers.emplace_back(Work, T);
  } catch (const std::system_error &E) {
    Abandon = true;
    Go.store(true, std::memory_order_release);
    for (std::thread &W : Workers)
      W.join();
    return llvm::createStringError(
        llvm::inconvertibleErrorCode(),
        llvm::formatv("cannot start calling thread {0} of {1}: {2}",
                      Workers.size() + 1, Threads, E.what()));
  }
  while (Ready.load() != Threads)
    std::this_thread::yield();
  auto Start = std::chrono::steady_clock::now();
  Go.store(true, std::memory_order_release);
  for (std::thread &W : Workers)
    W.join();
  PhaseResult R;
  R.Calls = Total.load();
  R.Seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - Start)
          .count();
  R.Threads = Threads;
  return R;
}

} // namespace dispatchgen::run

#endif // DISPATCH_GEN_LIB_RUNHARNESS_CALLINGTHREADS_H
