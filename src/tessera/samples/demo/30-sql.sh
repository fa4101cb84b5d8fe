#!/usr/bin/env bash
# Secure SQL: three hospitals append to one secret-shared table on three custodian
# nodes (mutual TLS, MPyC over TLS); queries are answered without anyone seeing a record.
set -euo pipefail
cd "$DEMO_DIR"
H="$DEMO_DIR/sql-env"
PY="${TESSERA_PYTHON:-python3}"
[ -e "$H/tessera.toml" ] || tessera init "$H" --nodes 3 >/dev/null
trap 'tessera node stop --home "$H" >/dev/null 2>&1 || true' EXIT
echo "-- a synthetic cohort of 1,500 patients from three hospitals (seeded)"
"$PY" -m tessera.samples.cohort cohort --rows 1500 --hospitals 3
for h in 1 2 3; do
  tessera table import "cohort/hospital-$h.csv" --name patients --hospital "hospital-$h" \
    --schema cohort/patients.schema.yaml --key patient_id --home "$H"
  tessera table import "cohort/labs-$h.csv" --name labs --hospital "hospital-$h" \
    --schema cohort/labs.schema.yaml --key patient_id --home "$H"
done
tessera node status --home "$H"
tessera table describe patients --home "$H"
echo "-- how many patients over 60 had a viral load above 1000, per hospital?"
tessera query "SELECT hospital, COUNT(*) FROM patients WHERE age > 60 AND viral_load > 1000
               GROUP BY hospital" --home "$H"
echo "-- per regimen: size, mean BMI and its spread among smokers"
tessera query "SELECT regimen, COUNT(*) AS n, AVG(bmi), STDDEV(bmi) FROM patients
               WHERE smoker GROUP BY regimen ORDER BY n DESC" --home "$H"
echo "-- a join on pseudonymous keys (the linkage key never left the hospitals)"
tessera query "SELECT p.sex, COUNT(*), AVG(l.hba1c), MAX(l.ldl) FROM patients p
               JOIN labs l ON p.patient_id = l.patient_id WHERE p.age >= 70 GROUP BY p.sex" \
  --home "$H" --json
echo "-- groups smaller than 5 are suppressed inside the MPC, before anything is revealed"
tessera query "SELECT regimen, COUNT(*) FROM patients WHERE age > 95 GROUP BY regimen" --home "$H"
echo "-- one CSV from a registry that names each row's hospital: imported in one command"
"$PY" - <<'PY'
import csv
rows = []
for h in (1, 2, 3):
    with open(f"cohort/hospital-{h}.csv", newline="") as f:
        for i, row in enumerate(csv.DictReader(f)):
            if i < 200:
                rows.append({**row, "hospital": f"site-{h}"})
with open("registry.csv", "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
PY
tessera table import registry.csv --name registry --origin-column hospital \
  --schema cohort/patients.schema.yaml --home "$H"
tessera query "SELECT hospital, COUNT(*), AVG(age) FROM registry GROUP BY hospital" --home "$H"
echo "-- unsupported SQL is refused, naming the construct (exit 1)"
if tessera query "SELECT COUNT(*) FROM patients WHERE age < cd4" --home "$H"; then
  echo "unexpected success"; exit 1
fi
