#!/usr/bin/env bash
# Configures and builds pgfanout (Release, Ninja): build/bin/pgfanout-publisher,
# build/bin/pgfanout-listener and the tests. Arguments go to `cmake --build`, e.g.
# `scripts/build.sh --target pgfanout-listener`.
#
# PGFANOUT_BUILD_DIR chooses the build directory (default: build in the checkout);
# PGFANOUT_BUILD_JOBS the number of parallel jobs (default: the number of cores).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${PGFANOUT_BUILD_DIR:-$ROOT/build}"

cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build "$BUILD" --parallel "${PGFANOUT_BUILD_JOBS:-$(nproc)}" "$@"
