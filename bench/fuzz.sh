#!/usr/bin/env bash
# Long fuzz run of the atheris targets in fuzz/ (the short run is part of `make test`).
#
#   bench/fuzz.sh [SECONDS] [TARGET...]     SECONDS per target (default 600); all targets
#                                           when none are named (fuzz/corpus/<target>)
#
# Targets run one after the other under `nice -n 10`.  For each it prints the runs made
# and whether anything but a TesseraError escaped (a crash), a hang (timeout) or memory
# blew up (oom).  Crashers and the corpus the run grew stay in a scratch folder outside
# the repository ($TESSERA_FUZZ_DIR, default a new /tmp/tessera-fuzz.XXXXXX); replay one
# with `.venv/bin/python -m fuzz.TARGET CRASH_FILE`.  Exits 1 when any target escaped.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
SECONDS_PER=${1:-600}
shift $(( $# > 0 ? 1 : 0 ))
if [ $# -gt 0 ]; then
  TARGETS=("$@")
else
  mapfile -t TARGETS < <(ls fuzz/corpus)
fi
SCRATCH=${TESSERA_FUZZ_DIR:-$(mktemp -d /tmp/tessera-fuzz.XXXXXX)}
mkdir -p "$SCRATCH"
echo "fuzzing ${#TARGETS[@]} targets for ${SECONDS_PER}s each; scratch: $SCRATCH"
failed=0
for t in "${TARGETS[@]}"; do
  if [ ! -f "fuzz/$t.py" ]; then
    echo "$t: no such target (fuzz/$t.py)"; failed=1; continue
  fi
  work="$SCRATCH/$t"
  mkdir -p "$work/corpus"
  nice -n 10 "$PY" -m "fuzz.$t" -max_total_time="$SECONDS_PER" -timeout=30 \
    -rss_limit_mb=4096 -print_final_stats=1 -artifact_prefix="$work/" \
    "$work/corpus" "fuzz/corpus/$t" >"$work/log" 2>&1
  rc=$?
  runs=$(grep -ao 'stat::number_of_executed_units: *[0-9]*' "$work/log" | grep -o '[0-9]*$' | tail -1)
  found=$(find "$work" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' \) | sort)
  if [ -n "$found" ] || [ "$rc" -ne 0 ]; then
    failed=1
    echo "$t: ESCAPE after ${runs:-?} runs (rc $rc); log: $work/log"
    for f in $found; do echo "    $f"; done
    grep -m1 -A1 'Uncaught Python exception' "$work/log" | tail -1 | sed 's/^/    /'
  else
    echo "$t: ok, ${runs:-?} runs, nothing escaped"
  fi
done
exit "$failed"
