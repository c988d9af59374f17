#!/usr/bin/env bash
# setup.sh — install what cqat needs on Debian 12 (as root), then configure and build.
#
#   scripts/setup.sh            install packages (if missing), build into ./build
#   scripts/setup.sh --deps     install packages only
#
# Idempotent: packages already installed are not fetched again, and an existing
# build directory is reused (ninja rebuilds only what changed).
# CQAT_WERROR=1 turns warnings into errors (CI does this).
set -euo pipefail

cd "$(dirname "$0")/.."

PACKAGES=(
  build-essential meson ninja-build pkg-config   # toolchain
  libopenblas-openmp-dev libhdf5-dev zlib1g-dev check   # libraries (check: the test framework)
  dataset-fashion-mnist                          # the default data set
  python3 python3-numpy python3-h5py             # the numpy reference reader, test helpers
  valgrind                                       # memory checks of the test suite
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: all Debian packages already installed"
fi

[ "${1:-}" = "--deps" ] && exit 0

werror=false
[ "${CQAT_WERROR:-0}" = "1" ] && werror=true
if [ -d build ]; then
  meson configure build -Dwerror="$werror" >/dev/null
else
  meson setup build -Dwerror="$werror"
fi
ninja -C build
echo "setup: built into ./build (tests: meson test -C build)"
