#!/usr/bin/env bash
# Treatment recommendation on secret records: for one new HIV patient, how did each of
# 100 regimens work among the 50 most similar of 3,000 patients from three hospitals?
# The cohort is secret-shared on three custodian nodes (mutual TLS, MPyC --ssl); the
# patient is secret-shared too (each node's share sealed to its key); only the clinician
# sees the per-regimen result.
set -euo pipefail
cd "$DEMO_DIR"
H="$DEMO_DIR/recommend-env"
PY="${TESSERA_PYTHON:-python3}"
[ -e "$H/tessera.toml" ] || tessera init "$H" --nodes 3 >/dev/null
trap 'tessera node stop --home "$H" >/dev/null 2>&1 || true' EXIT
echo "-- a synthetic HIV cohort: 3,000 patients from three hospitals, 100 regimens (seeded)"
"$PY" -m tessera.samples.hiv hiv --rows 3000 --hospitals 3 >/dev/null
for h in 1 2 3; do
  tessera table import "hiv/hiv-$h.csv" --name hiv --hospital "hospital-$h" \
    --schema hiv/hiv.schema.yaml --home "$H"
done
echo "-- the new patient (stays with the clinician; the custodians get shares only)"
head -7 hiv/patient.json; echo "  ..."
echo "-- the 50 nearest patients (distance, ties by row order), per regimen"
tessera recommend --table hiv --patient hiv/patient.json --k 50 \
  --profile hiv/hiv.schema.yaml --home "$H" | head -14
echo "-- every patient within distance 600, as JSON (regimens that occur)"
tessera recommend --table hiv --patient hiv/patient.json --radius 600 \
  --profile hiv/hiv.schema.yaml --home "$H" --json \
  | "$PY" -c 'import json,sys; d=json.load(sys.stdin); print("selected:", d["k"], "of", d["rows"]); print(*[json.dumps(t) for t in d["treatments"] if t["count"]][:5], sep="\n")'
