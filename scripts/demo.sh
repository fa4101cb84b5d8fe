#!/usr/bin/env bash
# `make demo`: the main job end to end on the embedded default (one machine, local
# stores and custodian processes on loopback).  Each step is scripts/demo/NN-*.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
DEMO_DIR="$(mktemp -d -t tessera-demo.XXXXXX)"
export DEMO_DIR
export TESSERA_HOME="$DEMO_DIR/home"
export TESSERA_PASSPHRASE="${TESSERA_PASSPHRASE:-demo-only-passphrase}"
cleanup() {
  # Stop any custodian node processes the demo started, then remove its files.
  if [ -d "$TESSERA_HOME" ]; then tessera node stop --home "$TESSERA_HOME" >/dev/null 2>&1 || true; fi
  rm -rf "$DEMO_DIR"
}
trap cleanup EXIT
echo "Tessera demo — scratch folder $DEMO_DIR"
for step in scripts/demo/[0-9][0-9]-*.sh; do
  echo
  echo "================================================================"
  echo "== ${step##*/}"
  echo "================================================================"
  bash "$step"
done
echo
echo "Demo finished."
