//===- TortureReport.cpp - dispatch-gen-torture's report and verdict ------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// What the run counted, printed, then judged: each kind of failure is named
// with its count, so that a deliberately broken reclamation is caught by
// its own (expect-caught.sh).
//
//===----------------------------------------------------------------------===//

#include "Torture.h"

#include "llvm/ADT/Twine.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/WithColor.h"
#include "llvm/Support/raw_ostream.h"

#include <string>

using namespace llvm;

namespace dispatchgen::torture {

Error Torture::report(unsigned NumReaders, double Elapsed,
                      const DispatcherStatus &St,
                      const AdaptiveMonitor *Monitor, Error UpdateError) {
  uint64_t Ops = Adds + Removes + Changes;
  double Rate = Ops / Elapsed;

  const char *Broken[] = {"", ", BROKEN: programs released at once",
                          ", BROKEN: images freed at once",
                          ", BROKEN: resident area rewritten at once"};
  outs() << formatv(
      "dispatch-gen-torture: {0} readers, {1:f1} s{2}{3}{5}, "
      "{4} pauses per image\n",
      NumReaders, Elapsed, Opts.Sync ? ", synchronous" : "",
      Broken[static_cast<int>(Opts.BrokenReclamation)], Opts.ImageDelay,
      Opts.Adaptive ? formatv(", adaptive (windows of {0} us every "
                              "{1} us or more)",
                              Opts.LearnWindow, Opts.LearnPeriod)
                          .str()
                    : std::string());
  outs() << formatv("  calls:           {0} in {1} read-side critical "
                    "sections\n",
                    C.Calls.load(), C.CriticalSections.load());
  outs() << formatv("  updates:         {0} ({1:f0}/s): {2} adds, {3} "
                    "removes, {4} changes\n",
                    Ops, Rate, Adds, Removes, Changes);
  outs() << formatv("  regenerations:   {0} ({1:f0}/s, --batch={2}); image "
                    "generation {3}\n",
                    Updates, Updates / Elapsed, Opts.BatchOps, St.Generation);
  outs() << formatv("  last update:     {0} us to regenerate and patch\n",
                    St.LastUpdateLatency.count() / 1000);
  outs() << formatv("  programs:        {0} compiled in {1} batches, {2} "
                    "released and poisoned\n",
                    Pool->compiled(), Pool->batches(), Pool->released());
  outs() << formatv("  observed stage:  live {0}, removed-not-released {1}, "
                    "released {2}\n",
                    C.StageHist[0].load(), C.StageHist[1].load(),
                    C.StageHist[2].load());
  outs() << formatv("  removal age:     0: {0}, 1: {1}, 2-3: {2}, 4-15: {3}, "
                    "16-63: {4}, 64+: {5} (updates since removal)\n",
                    C.AgeHist[0].load(), C.AgeHist[1].load(),
                    C.AgeHist[2].load(), C.AgeHist[3].load(),
                    C.AgeHist[4].load(), C.AgeHist[5].load());
  outs() << formatv("  misrouted:       {0}\n", C.Misrouted.load());
  outs() << formatv("  released programs: {0} calls trapped in one, {1} "
                    "answered by one\n",
                    C.IntoReleased.load(), C.ObservedReleased.load());
  outs() << formatv("  released images: {0} calls trapped in one\n",
                    C.IntoReleasedImages.load());
  outs() << formatv("  resident area:   {0} calls trapped in it while it was "
                    "rewritten; {1} rewrites{2}\n",
                    C.IntoRewrittenResident.load(), St.Generation,
                    St.Resident ? "" : " (not resident at the end)");
  outs() << formatv("  fallback:        {0} calls for a registered program "
                    "took it{1}\n",
                    C.RegisteredToFallback.load(),
                    OutOfReach ? " (not counted: some programs out of reach)"
                               : "");
  outs() << formatv("  other faults:    {0}\n", C.OtherFaults.load());
  if (Monitor) {
    outs() << formatv("  unregistered:    {0} calls to {1} targets never "
                      "registered: {2} by a promoted direct jump, {3} by the "
                      "fallback\n",
                      C.UnregisteredDirect + C.UnregisteredFallback,
                      UnregisteredTargets::Count, C.UnregisteredDirect.load(),
                      C.UnregisteredFallback.load());
    outs() << formatv("  fallback-only:   {0} calls for a registered program "
                      "took the fallback while an image without a tree may "
                      "have been live (not counted)\n",
                      ExcusedFallbackCalls);
    Monitor->print(outs(), St);
  }

  bool Failed = false;
  auto Fail = [&](const Twine &Why) {
    WithColor::error(errs(), "dispatch-gen-torture")
        << "caught: " << Why << "\n";
    Failed = true;
  };
  if (UpdateError)
    Fail("update failed: " + toString(std::move(UpdateError)));
  if (C.Misrouted)
    Fail(Twine(C.Misrouted.load()) + " misrouted calls");
  if (C.IntoReleased)
    Fail(Twine(C.IntoReleased.load()) + " calls into released programs");
  if (C.IntoReleasedImages)
    Fail(Twine(C.IntoReleasedImages.load()) + " calls into released images");
  if (C.IntoRewrittenResident)
    Fail(Twine(C.IntoRewrittenResident.load()) +
         " calls into a rewritten resident area");
  if (C.RegisteredToFallback)
    Fail(Twine(C.RegisteredToFallback.load()) +
         " calls for a registered program sent to the fallback");
  if (C.OtherFaults)
    Fail(Twine(C.OtherFaults.load()) + " other faults inside calls");
  if (C.ObservedReleased)
    Fail(Twine(C.ObservedReleased.load()) +
         " calls answered by a program released during the reader's "
         "critical section (past its grace period)");
  if (!C.Calls)
    Fail("readers made no calls");
  if (Opts.Adaptive && !St.LearningWindows)
    Fail("no learning window closed");
  if (Opts.Adaptive && !St.LearningError.empty())
    Fail("a learning window failed: " + St.LearningError);
  if (Opts.Sync && Opts.BrokenReclamation == SkippedGracePeriod::None &&
      !St.Resident)
    Fail("with --sync the live image should run resident behind the entry");
  if (Opts.MinUpdateRate && Rate < Opts.MinUpdateRate)
    Fail(formatv("{0:f0} updates/s, below --min-update-rate={1}", Rate,
                 Opts.MinUpdateRate)
             .str());
  if (Failed)
    return createStringError("torture test failed");
  outs() << "dispatch-gen-torture: PASS\n";
  return Error::success();
}

} // namespace dispatchgen::torture
