#!/usr/bin/env bash
# Homomorphic encryption: a server nobody trusts scores the cohort and measures a tumour in
# a CT series, computing on ciphertexts only. The owner's secret key never leaves their
# machine (sealed under their own key, backed up in the vault 2-of-3), hidden sentinel rows
# tell the owner whether the server did the work it was asked, and a tampered answer is
# refused.
set -euo pipefail
cd "$DEMO_DIR"
PY="${TESSERA_PYTHON:-python3}"
H="$DEMO_DIR/he-env"
[ -e "$H/tessera.toml" ] || tessera init "$H" --nodes 3 --threshold 2 >/dev/null 2>&1
export TESSERA_HOME="$H"
srv=""
trap '[ -n "$srv" ] && kill "$srv" 2>/dev/null; tessera node stop --home "$H" >/dev/null 2>&1 || true' EXIT

echo "-- the owner makes a CKKS key set; its secret is sealed under the owner's own key"
[ -e "$H/he/owner.hekey" ] || tessera he keygen --as owner | sed 's/^/   /'

echo "-- the demo cohort, encrypted column by column (scaled by its schema's bounds, with"
echo "   sentinel rows hidden among the patients)"
"$PY" -m tessera.samples.cohort he-cohort --rows 3000 --hospitals 1 --seed 19 >/dev/null
tessera he encrypt he-cohort/hospital-1.csv --key owner --out cohort.hedata \
  --schema he-cohort/patients.schema.yaml --columns age,bmi,cd4,smoker \
  --id-column patient_id --skip-incomplete | sed 's/^/   /'

echo "-- a vendor's server, its own process on loopback, holding a plaintext risk model"
mkdir -p models
cat >models/readmission.json <<'JSON'
{"format": "tessera-he-model", "version": 1, "name": "readmission", "kind": "logistic",
 "features": ["age", "bmi", "cd4", "smoker"], "weights": [0.04, 0.05, -0.002, 0.7],
 "intercept": -3.5, "description": "demo 30-day readmission risk"}
JSON
rm -f he-server.out
tessera he serve --port 0 --models models >he-server.out 2>he-server.err &
srv=$!
for _ in $(seq 100); do grep -q listening he-server.out 2>/dev/null && break; sleep 0.1; done
URL=$(sed -n 's/^he server listening on //p' he-server.out)
echo "   $URL"

echo "-- the statistics and every patient's risk score, computed on ciphertexts"
printf 'kind: variance\n' >stats.yaml
printf 'kind: scores\nmodel: readmission\n' >scores.yaml
tessera he run --server "$URL" --job stats.yaml --data cohort.hedata --out stats.heresult | sed 's/^/   /'
tessera he run --server "$URL" --job scores.yaml --data cohort.hedata --out scores.heresult | sed 's/^/   /'
echo "-- the owner decrypts, after checking the sentinels"
tessera he decrypt stats.heresult | sed 's/^/   /'
tessera he decrypt scores.heresult --out scores.csv | sed 's/^/   /'

echo "-- a synthetic CT series with a tumour and its segmentation mask, encrypted voxel by voxel"
"$PY" -m tessera.samples.ct_phantom phantom >truth.json
tessera he encrypt phantom/ct --mask phantom/mask --key owner --out ct.hedata | sed 's/^/   /'
printf 'kind: imaging\n' >imaging.yaml
tessera he run --server "$URL" --job imaging.yaml --data ct.hedata --out ct.heresult | sed 's/^/   /'
tessera he decrypt ct.heresult | sed 's/^/   /'
"$PY" -c "
import json; t = json.load(open('truth.json'))
print(f\"   on the plaintext: {t['voxels']} voxels, {t['volume_mm3']:.6g} mm^3, mean {t['mean_intensity']:.6g} HU\")"

echo "-- a server that skips work: its answer swaps two outputs; decrypt refuses it (exit 1)"
"$PY" - <<'PY'
from tessera.he.container import pack, unpack
box = unpack(open("stats.heresult", "rb").read(), expect="tessera-he-result")
answer = unpack(box.blobs[0], expect="tessera-he-answer")
lazy = pack(answer.header, [answer.blobs[1], answer.blobs[0], *answer.blobs[2:]])
open("lazy.heresult", "wb").write(pack(box.header, [lazy, box.blobs[1]]))
PY
if tessera he decrypt lazy.heresult 2>lazy.err; then
  echo "unexpected success"; exit 1
fi
sed 's/^/   /' lazy.err

echo "-- the key set kept in the vault as 2-of-3 fragments (still sealed under the owner's key)"
tessera he key backup owner | sed 's/^/   /'
kill "$srv"; wait "$srv" 2>/dev/null || true; srv=""
