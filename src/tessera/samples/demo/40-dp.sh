#!/usr/bin/env bash
# Differential privacy on the secure SQL: the steward gives the 'patients' table of the
# SQL demo (30-sql.sh, same $DEMO_DIR) a DP policy; 'tessera query' then releases
# answers with noise that each custodian node draws itself (OpenDP) and adds inside the
# MPC, so the exact answer exists nowhere; each number carries its 95% interval; the
# query that would overspend is refused by the custodians' own ledgers before anything
# runs; the ledgers persist.
set -euo pipefail
cd "$DEMO_DIR"
H="$DEMO_DIR/sql-env"
PY="${TESSERA_PYTHON:-python3}"
trap 'tessera node stop --home "$H" >/dev/null 2>&1 || true' EXIT
if [ ! -e "$H/tessera.toml" ]; then  # run on its own: build the SQL demo's table
  tessera init "$H" --nodes 3 >/dev/null
  "$PY" -m tessera.samples.cohort cohort --rows 1500 --hospitals 3 >/dev/null
  for h in 1 2 3; do
    tessera table import "cohort/hospital-$h.csv" --name patients --hospital "hospital-$h" \
      --schema cohort/patients.schema.yaml --key patient_id --home "$H" >/dev/null
  done
fi
echo "-- the steward (owner) signs a DP policy for 'patients' (total epsilon 1.5, 1 per query);"
echo "   every custodian checks the signature against its roster and keeps the policy itself"
tessera table policy patients --mode dp --total-epsilon 1.5 --default-epsilon 1 \
  --min-group-size 5 --as owner --home "$H"
echo "-- a researcher joins: alice's key is made here, encrypted under her passphrase, and"
echo "   the owner signs the roster change every custodian checks"
tessera person ls --home "$H" --json | grep -q '"alice"' \
  || tessera person add alice --role researcher --as owner --home "$H"
echo "-- a DP release through the custodian nodes: count, mean age, mean BMI per regimen"
echo "   (each number: released value [95% interval]; guarantee and budget on stderr)"
tessera query "SELECT regimen, COUNT(*) AS n, AVG(age), AVG(bmi) FROM patients
               GROUP BY regimen ORDER BY n DESC" --researcher alice --home "$H"
echo "-- the same in JSON: the privacy object (guarantee, per-statistic noise, budget)"
tessera query "SELECT COUNT(*) AS n, AVG(cd4) FROM patients WHERE age > 60" \
  --epsilon 0.5 --researcher alice --home "$H" --json >release.json
"$PY" - <<'PY'
import json
d = json.load(open("release.json"))
p = d["privacy"]
print("rows:", d["rows"])
print("intervals:", json.dumps({c["column"]: c["intervals"] for c in p["columns"]}))
print(f"guarantee: ({p['epsilon']:.3f}, {p['delta']:g})-DP = rho {p['rho']:.4f}-zCDP "
      f"from any {p['honest_custodians_needed']} of {p['custodians']} custodians")
print("budget remaining:", json.dumps(p["budget_remaining"]))
PY
echo "-- MIN/MAX have no useful DP release here: refused with one line (exit 1)"
if tessera query "SELECT MAX(age) FROM patients" --researcher alice --home "$H"; then
  echo "unexpected success"; exit 1
fi
echo "-- a third query at epsilon 1 would overspend: every custodian refuses it from its own"
echo "   ledger before the MPC starts (exit 1)"
if tessera query "SELECT sex, COUNT(*) FROM patients GROUP BY sex" --researcher alice \
     --home "$H"; then
  echo "unexpected success"; exit 1
fi
echo "-- the custodians' ledgers survive: they restart, and still count the spend"
tessera node stop --home "$H" >/dev/null
tessera budget show --home "$H"
