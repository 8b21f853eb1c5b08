#!/usr/bin/env bash
# Builds the Debian package: a Release tree configured for /usr (so that the settings go to
# /etc/pgfanout and the units to /usr/lib/systemd/system), then `cpack -G DEB`. Prints the
# path of the .deb on its last line.
#
# PGFANOUT_PACKAGE_DIR chooses the build directory (default: build-deb in the checkout).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${PGFANOUT_PACKAGE_DIR:-$ROOT/build-deb}"

cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/usr \
  -DPGFANOUT_BUILD_TESTS=OFF >/dev/null
cmake --build "$BUILD" --parallel "${PGFANOUT_BUILD_JOBS:-$(nproc)}" >/dev/null
(cd "$BUILD" && cpack -G DEB >/dev/null)
ls -1t "$BUILD"/pgfanout_*.deb | head -n 1
