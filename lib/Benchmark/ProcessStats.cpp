//===- ProcessStats.cpp - The process's memory, mappings and files --------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//

#include "ProcessStats.h"

#include <dirent.h>
#include <fstream>
#include <string>
#include <sys/resource.h>
#include <unistd.h>

namespace dispatchgen::bench {

int64_t residentBytes() {
  std::ifstream Statm("/proc/self/statm");
  int64_t Size = 0, Resident = 0;
  if (!(Statm >> Size >> Resident))
    return 0;
  return Resident * static_cast<int64_t>(sysconf(_SC_PAGESIZE));
}

int64_t mappingCount() {
  std::ifstream Maps("/proc/self/maps");
  int64_t Lines = 0;
  for (std::string L; std::getline(Maps, L);)
    ++Lines;
  return Lines;
}

int64_t fileDescriptorCount() {
  DIR *D = opendir("/proc/self/fd");
  if (!D)
    return 0;
  int64_t N = 0;
  while (struct dirent *E = readdir(D))
    if (E->d_name[0] != '.')
      ++N;
  closedir(D);
  return N - 1; // the directory's own descriptor
}

double processCPUSeconds() {
  struct rusage U;
  if (getrusage(RUSAGE_SELF, &U) != 0)
    return 0;
  auto Seconds = [](const timeval &T) {
    return double(T.tv_sec) + double(T.tv_usec) / 1e6;
  };
  return Seconds(U.ru_utime) + Seconds(U.ru_stime);
}

} // namespace dispatchgen::bench
