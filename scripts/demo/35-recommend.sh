#!/usr/bin/env bash
# Treatment recommendation on secret records: for one new HIV patient, how did each of
# 100 regimens work among the 50 most similar of 3,000 patients from three hospitals?
# Local mode: the custodian MPyC parties run as processes on this machine; each gets only
# its own shares of the cohort and of the patient, and only the clinician sees the result.
# (Running through the custodian nodes on an imported table is pending: see docs/recommend.md.)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$DEMO_DIR"
PY="$(dirname "$(command -v tessera)")/python"
echo "-- a synthetic HIV cohort: 3,000 patients from three hospitals, 100 regimens (seeded)"
"$PY" "$ROOT/bench/data/hiv.py" hiv --rows 3000 --hospitals 3
echo "-- the new patient (stays with the clinician; the custodians get shares only)"
head -8 hiv/patient.json; echo "  ..."
echo "-- the 50 nearest patients (distance, then row order), per regimen"
tessera recommend --patient hiv/patient.json --k 50 \
  --csv hiv/hiv-1.csv --csv hiv/hiv-2.csv --csv hiv/hiv-3.csv --schema hiv/hiv.schema.yaml
echo "-- the same as JSON, every patient within distance 2000 (regimens used only)"
tessera recommend --patient hiv/patient.json --radius 2000 --json \
  --csv hiv/hiv-1.csv --csv hiv/hiv-2.csv --csv hiv/hiv-3.csv --schema hiv/hiv.schema.yaml \
  | "$PY" -c 'import json,sys; d=json.load(sys.stdin); print("selected:", d["k"]); [print(" ", t) for t in d["treatments"] if t["count"]][:0]' | head -8
