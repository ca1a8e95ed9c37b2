#!/usr/bin/env bash
#===- utils/install-deps.sh - Install the Debian packages the project needs -===#
# SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
#
# Installs, with apt-get, every Debian package dispatch-gen builds, tests and
# benchmarks with. A no-op when all are present; runs `apt-get update` first
# otherwise. Uses sudo when not run as root.
#
#===------------------------------------------------------------------------===#
set -euo pipefail

PACKAGES=(
  cmake ninja-build g++ python3 pkgconf
  llvm-22-dev llvm-22-tools clang-22 libclang-22-dev
  libclang-rt-22-dev
  liburcu-dev
  libzstd-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  gnuplot-nox
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$pkg")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "all ${#PACKAGES[@]} packages are installed"
  exit 0
fi

SUDO=
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || {
    echo "error: missing packages (${missing[*]}) and not root; install them" \
         "as root or install sudo" >&2
    exit 1
  }
  SUDO=sudo
fi

echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends "${missing[@]}"
