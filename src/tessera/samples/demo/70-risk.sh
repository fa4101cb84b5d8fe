#!/usr/bin/env bash
# Assess the re-identification risk of the demo cohort, anonymise it, ask for advice.
set -euo pipefail
PY="${TESSERA_PYTHON:-python3}"
cd "$DEMO_DIR"
cp "$TESSERA_SAMPLES/risk/cohort.csv" "$TESSERA_SAMPLES/risk/hierarchies.yaml" \
   "$TESSERA_SAMPLES/risk/request.yaml" .
echo "== risk: the demo cohort (2,000 synthetic patients) as the researchers asked for it"
tessera risk assess cohort.csv --qi zip,birth_date,sex --sensitive diagnosis \
  --population 250000 --worst 3
echo "== risk: drop direct identifiers; generalise age, ZIP, admission date to k >= 11, l >= 2"
tessera risk anonymize cohort.csv --qi age,zip,sex,admitted --k 11 --l 2 \
  --sensitive diagnosis --hierarchies hierarchies.yaml --drop patient_id,email,birth_date \
  --out cohort-k11.csv
echo "== risk: the anonymised table, re-assessed (JSON for scripts)"
tessera risk assess cohort-k11.csv --qi age,zip,sex,admitted --sensitive diagnosis --json \
  | "$PY" -c 'import json,sys; d=json.load(sys.stdin); print(json.dumps({k: d[k] for k in ("rows","k_anonymity","l_diversity","t_closeness","prosecutor","marketer")}))'
echo "== risk: which mechanisms fit the request (request.yaml)"
tessera risk recommend request.yaml
