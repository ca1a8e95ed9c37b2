//===- Patterns.cpp - Call patterns and statistics ------------------------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//

#include "dispatch-gen/Benchmark.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

using namespace llvm;

namespace dispatchgen::bench {

StringRef patternName(Pattern P) {
  switch (P) {
  case Pattern::OneHot:
    return "one-hot";
  case Pattern::RoundRobin:
    return "round-robin";
  case Pattern::Uniform:
    return "uniform";
  case Pattern::Zipf:
    return "zipf";
  case Pattern::Unregistered:
    return "unregistered";
  case Pattern::Phase:
    return "phase";
  }
  llvm_unreachable("unknown pattern");
}

/// The unregistered program Phase selects at call C.
static uint32_t phaseProgram(unsigned N, uint64_t Call) {
  return N + static_cast<uint32_t>(Call / PhaseCalls % UnregisteredPrograms);
}

std::vector<double> zipfProbabilities(unsigned N, double S) {
  std::vector<double> P(N);
  for (unsigned K = 0; K < N; ++K)
    P[K] = 1.0 / std::pow(static_cast<double>(K + 1), S);
  double Sum = std::accumulate(P.begin(), P.end(), 0.0);
  for (double &X : P)
    X /= Sum;
  return P;
}

std::vector<uint32_t> makePattern(Pattern P, unsigned N, size_t Length,
                                  uint64_t Seed) {
  std::vector<uint32_t> Out(Length, 0);
  if (N == 0)
    return {};
  // mt19937_64 is specified exactly; the distributions are not, so the
  // draws are mapped to indices here.
  std::mt19937_64 Rng(Seed);
  auto Uniform01 = [&] { return (Rng() >> 11) * 0x1.0p-53; };
  switch (P) {
  case Pattern::OneHot:
    break;
  case Pattern::RoundRobin:
    for (size_t I = 0; I < Length; ++I)
      Out[I] = static_cast<uint32_t>(I % N);
    break;
  case Pattern::Uniform:
    for (uint32_t &X : Out)
      X = static_cast<uint32_t>(Uniform01() * N);
    break;
  case Pattern::Zipf: {
    // Rank R is program Order[R]: the hot programs are spread over the
    // address range instead of being the lowest addresses.
    std::vector<uint32_t> Order(N);
    std::iota(Order.begin(), Order.end(), 0u);
    for (unsigned I = N; I > 1; --I)
      std::swap(Order[I - 1], Order[Rng() % I]);
    std::vector<double> Cdf = zipfProbabilities(N, ZipfExponent);
    std::partial_sum(Cdf.begin(), Cdf.end(), Cdf.begin());
    for (uint32_t &X : Out) {
      size_t Rank =
          std::upper_bound(Cdf.begin(), Cdf.end(), Uniform01()) - Cdf.begin();
      X = Order[std::min<size_t>(Rank, N - 1)];
    }
    break;
  }
  case Pattern::Unregistered:
    std::fill(Out.begin(), Out.end(), N);
    break;
  case Pattern::Phase:
    for (size_t I = 0; I < Length; ++I)
      Out[I] = phaseProgram(N, I);
    break;
  }
  return Out;
}

uint32_t CallSequence::at(uint64_t Call) const {
  size_t K = CallsPerPhase ? Call / CallsPerPhase % Phases.size() : 0;
  const std::vector<uint32_t> &Indices = Phases[K];
  return Indices[Call % Indices.size()];
}

CallSequence makeSequence(Pattern P, unsigned N, size_t Length, uint64_t Seed) {
  CallSequence S;
  if (P != Pattern::Phase || N == 0) {
    S.Phases.push_back(makePattern(P, N, Length, Seed));
    return S;
  }
  S.CallsPerPhase = PhaseCalls;
  for (unsigned K = 0; K < UnregisteredPrograms; ++K)
    S.Phases.emplace_back(Length, phaseProgram(N, K * PhaseCalls));
  return S;
}

std::vector<uint64_t> frequencies(ArrayRef<uint32_t> Indices, unsigned N) {
  std::vector<uint64_t> F(N, 0);
  for (uint32_t I : Indices)
    if (I < N)
      ++F[I];
  return F;
}

double median(std::vector<double> Samples) {
  if (Samples.empty())
    return 0;
  size_t Mid = Samples.size() / 2;
  std::nth_element(Samples.begin(), Samples.begin() + Mid, Samples.end());
  return Samples[Mid];
}

double percentile(std::vector<double> Samples, double Fraction) {
  if (Samples.empty())
    return 0;
  std::sort(Samples.begin(), Samples.end());
  auto Rank = static_cast<size_t>(std::ceil(Fraction * Samples.size()));
  return Samples[std::clamp<size_t>(Rank, 1, Samples.size()) - 1];
}

} // namespace dispatchgen::bench
