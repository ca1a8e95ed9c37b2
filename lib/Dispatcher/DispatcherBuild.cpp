//===- DispatcherBuild.cpp - The image of a program set -------------------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// Dispatcher::Impl::build(): where each image's lowering is picked. On
// x86-64 with ImageLowering::Auto an image is laid out directly
// (X86ImageEmitter) and placed in the code arena; otherwise, or when the
// programs are spread too far for its layout, it is compiled from
// DispatchIRBuilder's IR and linked through ORC (ImageLinker).
//
//===----------------------------------------------------------------------===//

#include "DispatcherImpl.h"

#include "dispatch-gen/CostCalibration.h"
#include "dispatch-gen/DispatchIRBuilder.h"
#include "dispatch-gen/DispatchLayout.h"

#include "llvm/IR/Module.h"
#include "llvm/Support/FormatVariadic.h"

#include <string>
#include <vector>

using namespace llvm;

namespace dispatchgen {

void Dispatcher::Impl::resetContextIfOld() {
  // Constants and metadata of past images accumulate in a context; a fresh
  // one now and then keeps memory flat over millions of updates. Made on
  // the first compile: laid-out images need none.
  if (Ctx && Generation % 1024 != 0)
    return;
  Ctx = std::make_unique<LLVMContext>();
  Signature = cantFail(parseSignature(Config.Signature, *Ctx),
                       "parsed successfully in init()");
}

const LayoutCostModel &Dispatcher::Impl::costModel() const {
  static const LayoutCostModel Defaults;
  if (Config.CostModel)
    return *Config.CostModel;
  if (!Config.Adaptive.Enabled && Weights.empty())
    return Defaults;
  return processCostCalibration().Model;
}

std::pair<StringRef, StringRef> Dispatcher::Impl::costModelSource() const {
  if (Config.CostModel)
    return {"configured", ""};
  if (!Config.Adaptive.Enabled && Weights.empty())
    return {"defaults", ""};
  const CostCalibration &C = processCostCalibration();
  return {C.Calibrated ? "calibrated" : "defaults", C.Why};
}

Expected<BuiltImage> Dispatcher::Impl::build(uint64_t Gen) {
  std::string ImageSymbol = formatv("{0}.image.g{1}", Config.Name, Gen).str();
  BuiltImage Built;
  bool Adaptive = Config.Adaptive.Enabled;
  auto WeightOf = [&](uint64_t Address) -> uint64_t {
    if (Adaptive)
      return Learned.lookup(Address);
    return Weights.empty() ? 0 : Weights.lookup(Address);
  };
  for (const ProgramEntry &P : Set.entries()) {
    // A program out of rel32 reach would need a stub, an indirect jump:
    // leave it to the fallback and say so in the status.
    if (!Linker->reaches(P.Address)) {
      ++Built.Fallback;
      continue;
    }
    ++Built.Direct;
    Built.Cases.push_back({P.Address, P.Address, WeightOf(P.Address)});
  }
  // Promoted targets that have since been registered are cases already.
  for (uint64_t Address : Promoted)
    if (!Set.contains(Address))
      Built.Cases.push_back({Address, Address, WeightOf(Address)});

  // The layout: the cost model's choice for the weights; an adaptive
  // dispatcher may drop the tree (not while counting: a window counts the
  // cases).
  std::vector<LayoutCase> ForLayout;
  for (const ImageCase &C : Built.Cases)
    ForLayout.push_back({C.Key, C.Weight});
  LayoutOptions Options;
  Options.RetpolineFallback = Config.RetpolineFallback;
  if (Adaptive) {
    Options.FallbackWeight = LearnedFallback;
    Options.Predictability = LearnedPredictability;
    Options.AllowFallbackOnly = !Learning;
  }
  // An adaptive dispatcher whose counts gave no clear win keeps the plain
  // layout; its predicted cost is still under the counts.
  bool Plain = Adaptive && LearnedPlain;
  const LayoutCostModel &Model = costModel();
  DispatchLayout Layout =
      Plain ? plainLayout(ForLayout)
            : DispatchLayout::choose(ForLayout, Options, Model);
  Built.Layout = Layout.shapeName();
  Built.PredictedCost = Plain ? Layout.costUnder(ForLayout, Options, Model)
                              : Layout.predictedCost();
  bool NoTree = Layout.shape() == DispatchLayout::Shape::FallbackOnly;
  if (NoTree) {
    Built.Fallback += Built.Direct;
    Built.Direct = 0;
  }

  Expected<LinkedImage> Image = createStringError("no image");
  if (SelectorReg) {
    X86ImageOptions Emit;
    Emit.InlineRetpoline = InlineRetpoline;
    Emit.ThunkFallback = ThunkFallback && !InlineRetpoline;
    Emit.DelayPauses = Config.ImageDelayForTesting;
    Emit.Layout = &Layout;
    if (Learning && CountingPlan) {
      Emit.Counting = *CountingPlan;
      Built.Counting = true;
    } else if (CountingPlan && Config.Adaptive.Background &&
               Config.Adaptive.TriggerPoll.count() > 0 && !NoTree) {
      // (Not without a tree: every call takes the fallback there, which
      // says nothing of a target that moved.)
      Emit.FallbackCounting = *CountingPlan;
    }
    // Programs spread over more than 2 GiB are left to codegen's 64-bit
    // compares.
    if (auto Code = emitX86Image(Built.Cases, *SelectorReg, Emit)) {
      consumeError(Image.takeError());
      Image = Linker->place(*Code, Built.Cases);
      Built.Laid = true;
      Built.InlineRetpoline = InlineRetpoline;
      Built.Code = std::move(*Code);
    } else {
      consumeError(Code.takeError());
    }
  }
  if (!Built.Laid) {
    consumeError(Image.takeError());
    Image = buildWithCodegen(Gen, ImageSymbol, Built.Cases);
  }
  if (!Image)
    return Image.takeError();
  Built.Linked = std::move(*Image);
  if (Config.VerifyImages) {
    std::vector<uint64_t> Programs;
    if (!NoTree)
      for (const ImageCase &C : Built.Cases)
        Programs.push_back(C.Target);
    if (Error E = verifyImage(Built.Linked, Programs, Built.Counting,
                              Built.InlineRetpoline)) {
      consumeError(Linker->remove(Built.Linked));
      return createStringError(
          formatv("image of generation {0} failed verification: "
                  "{1}",
                  Gen, toString(std::move(E))));
    }
  }
  if (Config.PerfMap)
    Linker->writePerfMap(Built.Linked.Address, Built.Linked.Size, ImageSymbol);
  return std::move(Built);
}

Expected<LinkedImage>
Dispatcher::Impl::buildWithCodegen(uint64_t Gen, StringRef ImageSymbol,
                                   ArrayRef<ImageCase> Cases) {
  auto TMOrErr = Linker->targetMachine();
  if (!TMOrErr)
    return TMOrErr.takeError();
  const TargetMachine &TM = *TMOrErr;
  resetContextIfOld();
  Module M(formatv("{0}.g{1}", Config.Name, Gen).str(), *Ctx);
  M.setDataLayout(TM.createDataLayout());
  M.setTargetTriple(TM.getTargetTriple());

  DispatcherSpec Spec;
  Spec.Name = ImageSymbol.str();
  Spec.Signature = Signature;
  Spec.SelectorArg = Config.SelectorArg;
  Spec.RetpolineFallback = ThunkFallback;
  Spec.ExternalRetpolineThunk = ThunkFallback;
  Spec.ReturnExtension = Config.ReturnExtension;
  Spec.ParamExtensions = Config.ParamExtensions;
  Spec.CostModel = costModel();
  std::vector<ImageTarget> Targets;
  for (const ImageCase &C : Cases) {
    DispatchTarget T;
    T.Symbol = formatv("{0}.g{1}.p{2}", Config.Name, Gen, Targets.size()).str();
    T.Address = C.Target;
    if (!Weights.empty())
      T.Weight = C.Weight;
    Targets.push_back({T.Symbol, C.Target});
    Spec.Targets.push_back(std::move(T));
  }
  if (Error E = DispatchIRBuilder(M).build(Spec).takeError())
    return std::move(E);
  return Linker->link(M, Targets, Gen % 2, Spec.Name);
}

} // namespace dispatchgen
