//===- FaultPoint.h - Where a test can make an update fail ------*- C++ -*-===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// The steps of an update where DispatcherConfig::InjectFault (testing only)
// can make it fail. A header of its own so that the layers below the
// Dispatcher (the image linker) name it without depending on Dispatcher.h.
//
//===----------------------------------------------------------------------===//

#ifndef DISPATCH_GEN_FAULTPOINT_H
#define DISPATCH_GEN_FAULTPOINT_H

namespace dispatchgen {

/// Steps of an update where a test can inject a failure.
enum class FaultPoint { Compile, Allocate, Link, Patch };

} // namespace dispatchgen

#endif // DISPATCH_GEN_FAULTPOINT_H
