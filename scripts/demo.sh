#!/usr/bin/env bash
# `make demo`: the main job end to end on the embedded default (one machine, local
# stores and custodian processes on loopback), through `tessera demo`, whose steps are
# src/tessera/samples/demo/NN-*.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
exec tessera demo "$@"
