# -*- Python -*- lit configuration for dispatch-gen's tests.
import os
import shutil
import sys

import lit.formats
from lit.llvm import llvm_config
from lit.llvm.subst import ToolSubst

config.name = "dispatch-gen"
config.test_format = lit.formats.ShTest(not llvm_config.use_lit_shell)
config.suffixes = [".test"]
config.excludes = ["Inputs", "CMakeLists.txt", "lit.cfg.py"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.dispatchgen_obj_root, "test")

llvm_config.use_default_substitutions()
# The Python that runs lit also runs the tests' generator scripts.
config.substitutions.append(("%python", sys.executable))
config.substitutions.append(
    ("%examples", os.path.join(config.dispatchgen_src_root, "examples")))
config.substitutions.append(
    ("%include", os.path.join(config.dispatchgen_src_root, "include")))

# FileCheck, not and count live in LLVM's bin directory; dispatch-gen is the
# one just built. Never refer to either by a relative path in a test.
llvm_config.add_tool_substitutions(
    ["FileCheck", "not", "count", "clang", "llvm-mc", "llvm-objdump",
     "llvm-readobj", "llvm-nm", "llc"],
    [config.llvm_tools_dir])
llvm_config.add_tool_substitutions(
    [ToolSubst("dispatch-gen", unresolved="fatal")],
    [config.dispatchgen_tools_dir])

for arch in config.targets_to_build.split(";"):
    config.available_features.add(arch.lower() + "-registered-target")
if config.host_triple.startswith("x86_64"):
    config.available_features.add("host-x86_64")
# `dispatch-gen bench --plot` runs gnuplot (Debian's gnuplot-nox).
if shutil.which("gnuplot"):
    config.available_features.add("gnuplot")
