//===- ManyDispatchers.cpp - Thousands of dispatchers in one process ------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// Hosts put a dispatcher at every indirect call site they care about, so a
// process may hold thousands. This section creates them side by side, over
// the update benchmark's program stubs, and measures what each costs: the
// time of create() and of registering its programs, the resident memory,
// and whether every program is still reached directly; then it creates
// and destroys one dispatcher after another and samples the resident set,
// the mappings and the file descriptors, which must stay flat.
//
//===----------------------------------------------------------------------===//

#include "ProcessStats.h"

#include "dispatch-gen/Benchmark.h"
#include "dispatch-gen/Dispatcher.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/Support/FormatVariadic.h"

#include <algorithm>
#include <chrono>
#include <string>
#include <thread>

using namespace llvm;

namespace dispatchgen::bench {

namespace {

using Clock = std::chrono::steady_clock;

double micros(Clock::duration D) {
  return std::chrono::duration<double, std::micro>(D).count();
}

/// Dispatcher I's programs: ProgramsEach consecutive stubs, starting at a
/// different stub for each dispatcher.
uint64_t programOf(unsigned I, unsigned P, unsigned ProgramsEach) {
  return UpdateDriver::stubAddress((I * ProgramsEach + P) %
                                   UpdateDriver::MaxPrograms);
}

DispatcherConfig configFor(unsigned I, unsigned ProgramsEach) {
  DispatcherConfig C;
  C.Name = formatv("many{0}", I).str();
  C.Signature = "i32 (i32)";
  C.Capacity = ProgramsEach;
  C.Near = UpdateDriver::stubAddress(0);
  return C;
}

Error checkCalls(const Dispatcher &D, unsigned I, unsigned ProgramsEach) {
  auto *Entry = D.entryAs<UpdateDriver::EntryFn>();
  for (unsigned P = 0; P < ProgramsEach; ++P) {
    uint64_t Program = programOf(I, P, ProgramsEach);
    int Want = UpdateDriver::StubBase +
               static_cast<int>((Program - UpdateDriver::stubAddress(0)) / 16);
    int Got = Entry(0, reinterpret_cast<int (*)(int)>(Program));
    if (Got != Want)
      return createStringError(
          formatv("dispatcher {0}: program {1:x} answered {2}, "
                  "not {3}",
                  I, Program, Got, Want));
  }
  return Error::success();
}

} // namespace

Expected<ManyDispatchers> measureManyDispatchers(unsigned Count,
                                                 unsigned ProgramsEach,
                                                 unsigned Cycles,
                                                 ProgressFn Progress) {
  if (Count == 0 || ProgramsEach == 0 || ProgramsEach > 64)
    return createStringError(
        "many dispatchers: at least one dispatcher of 1 to 64 "
        "programs");
  // First use of liburcu, the stubs and the process-wide state, outside
  // the measurement.
  {
    auto Warm = UpdateDriver::create(1, ReclaimMode::Synchronous);
    if (!Warm)
      return Warm.takeError();
  }
  ManyDispatchers R;
  R.Dispatchers = Count;
  R.ProgramsEach = ProgramsEach;
  R.Cycles = Cycles;

  std::vector<std::unique_ptr<Dispatcher>> All;
  All.reserve(Count);
  std::vector<double> Create, Register;
  Create.reserve(Count);
  Register.reserve(Count);
  int64_t RSSBefore = residentBytes();
  int64_t MapsBefore = mappingCount();
  for (unsigned I = 0; I < Count; ++I) {
    if (Progress && I && I % 2000 == 0)
      Progress(formatv("many dispatchers: {0} of {1} created", I, Count));
    auto Start = Clock::now();
    auto D = Dispatcher::create(configFor(I, ProgramsEach));
    auto Created = Clock::now();
    if (!D)
      return createStringError(formatv("dispatcher {0} of {1}: {2}", I + 1,
                                       Count, toString(D.takeError())));
    ProgramSet::Batch B;
    for (unsigned P = 0; P < ProgramsEach; ++P)
      B.add(programOf(I, P, ProgramsEach));
    if (Error E = (*D)->apply(B))
      return std::move(E);
    auto Registered = Clock::now();
    Create.push_back(micros(Created - Start));
    Register.push_back(micros(Registered - Created));
    All.push_back(std::move(*D));
  }
  int64_t RSSAfter = residentBytes();
  R.ResidentBytesEach =
      static_cast<double>(RSSAfter - RSSBefore) / static_cast<double>(Count);
  R.MappingsAdded = mappingCount() - MapsBefore;

  R.AllDirect = true;
  for (unsigned I = 0; I < Count; ++I) {
    DispatcherStatus S = All[I]->status();
    if (S.DirectTargets != ProgramsEach || S.FallbackTargets != 0)
      R.AllDirect = false;
    if (Error E = checkCalls(*All[I], I, ProgramsEach))
      return std::move(E);
  }
  // verify() proves the routing by running each image's code; a sample is
  // enough to see the layout holds (the disassembler is not cheap).
  for (unsigned I = 0; I < Count; I += std::max(1u, Count / 16))
    if (Error E = All[I]->verify())
      return createStringError(
          formatv("dispatcher {0}: {1}", I, toString(std::move(E))));

  auto Stat = [](std::vector<double> &V, double &Median, double &Max,
                 std::optional<double> &P99) {
    llvm::sort(V);
    Median = V[V.size() / 2];
    Max = V.back();
    if (V.size() >= MinP99Samples)
      P99 = V[std::min(V.size() - 1, V.size() * 99 / 100)];
  };
  Stat(Create, R.CreateMedianUs, R.CreateMaxUs, R.CreateP99Us);
  Stat(Register, R.RegisterMedianUs, R.RegisterMaxUs, R.RegisterP99Us);
  auto DestroyStart = Clock::now();
  All.clear();
  R.DestroyEachUs = micros(Clock::now() - DestroyStart) / Count;

  // Churn: one dispatcher at a time, created, used and destroyed.
  unsigned Every = std::max(1u, Cycles / 10);
  for (unsigned C = 0; C < Cycles; ++C) {
    if (C % Every == 0) {
      R.Churn.push_back(
          {C, residentBytes(), mappingCount(), fileDescriptorCount()});
      if (Progress && C)
        Progress(formatv("many dispatchers: {0} of {1} create/destroy cycles",
                         C, Cycles));
    }
    auto D = Dispatcher::create(configFor(C % Count, ProgramsEach));
    if (!D)
      return createStringError(
          formatv("create/destroy cycle {0}: {1}", C, toString(D.takeError())));
    ProgramSet::Batch B;
    for (unsigned P = 0; P < ProgramsEach; ++P)
      B.add(programOf(C % Count, P, ProgramsEach));
    if (Error E = (*D)->apply(B))
      return std::move(E);
    if (Error E = checkCalls(**D, C % Count, ProgramsEach))
      return std::move(E);
  }
  R.Churn.push_back(
      {Cycles, residentBytes(), mappingCount(), fileDescriptorCount()});

  // Adaptive: as many again, each with its counter blocks and a place in
  // the learner's schedule.
  {
    ManyDispatchers::AdaptiveCost A;
    std::vector<double> Create;
    Create.reserve(Count);
    int64_t RSSBefore = residentBytes();
    int64_t MapsBefore = mappingCount();
    for (unsigned I = 0; I < Count; ++I) {
      if (Progress && I && I % 2000 == 0)
        Progress(formatv("many dispatchers: {0} of {1} adaptive ones created",
                         I, Count));
      DispatcherConfig C = configFor(I, ProgramsEach);
      C.Adaptive.Enabled = true;
      ProgramSet::Batch B;
      for (unsigned P = 0; P < ProgramsEach; ++P)
        B.add(programOf(I, P, ProgramsEach));
      auto Start = Clock::now();
      auto D = Dispatcher::create(std::move(C));
      if (!D)
        return createStringError(formatv("adaptive dispatcher {0} of {1}: {2}",
                                         I + 1, Count,
                                         toString(D.takeError())));
      if (Error E = (*D)->apply(B))
        return std::move(E);
      Create.push_back(micros(Clock::now() - Start));
      All.push_back(std::move(*D));
    }
    A.ResidentBytesEach = static_cast<double>(residentBytes() - RSSBefore) /
                          static_cast<double>(Count);
    A.MappingsAdded = mappingCount() - MapsBefore;
    llvm::sort(Create);
    A.CreateMedianUs = Create[Create.size() / 2];
    if (Progress)
      Progress("many dispatchers: the learner with all of them, 1.5 s");
    auto Windows = [&] {
      uint64_t Sum = 0;
      for (const auto &D : All)
        Sum += D->status().LearningWindows;
      return Sum;
    };
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    uint64_t WindowsBefore = Windows();
    double CPUBefore = processCPUSeconds();
    auto Start = Clock::now();
    std::this_thread::sleep_for(std::chrono::seconds(1));
    double Seconds =
        std::chrono::duration<double>(Clock::now() - Start).count();
    A.LearnerCPUShare = (processCPUSeconds() - CPUBefore) / Seconds;
    A.WindowsPerSecond = static_cast<uint64_t>(
        static_cast<double>(Windows() - WindowsBefore) / Seconds);
    All.clear();
    R.Adaptive = A;
  }
  return R;
}

} // namespace dispatchgen::bench
