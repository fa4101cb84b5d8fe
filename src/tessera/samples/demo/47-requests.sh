#!/usr/bin/env bash
# Safe projects and safe outputs: on a table whose steward requires approval, a researcher
# files a request, the steward approves it, the researcher runs it once; every exact
# release is checked for disclosure inside the MPC (small cells, dominance, empty cells,
# differencing) and one that fails is held by every custodian for the steward to review.
set -euo pipefail
cd "$DEMO_DIR"
H="$DEMO_DIR/requests-env"
PY="${TESSERA_PYTHON:-python3}"
export TESSERA_HOME="$H"
trap 'tessera node stop --home "$H" >/dev/null 2>&1 || true' EXIT
if [ ! -e "$H/tessera.toml" ]; then
  tessera init "$H" --nodes 3 >/dev/null
  "$PY" -m tessera.samples.cohort registry --rows 400 --hospitals 1 --seed 7 >/dev/null
  tessera table import registry/hospital-1.csv --name registry \
    --schema registry/patients.schema.yaml --key patient_id >/dev/null
  tessera person add alice --role researcher --as owner >/dev/null
fi
id_of() { "$PY" -c 'import json, sys; print(json.load(sys.stdin)["id"])'; }
echo "-- the steward (owner) requires approval and output checks on the registry"
tessera table policy registry --approval required --output-checks --as owner \
  | grep -E '^(approval|output_checks|serial):' | sed 's/^/   /'
echo "-- alice queries without a request: refused (exit 1)"
if tessera query "SELECT sex, COUNT(*) FROM registry GROUP BY sex" --as alice 2>q.err; then
  echo "unexpected success"; exit 1
fi
sed 's/^/   /' q.err
echo "-- alice files a request: the SQL, what it is for; signed with her key"
rid=$(tessera request file --sql "SELECT sex, COUNT(*), AVG(age) FROM registry GROUP BY sex" \
  --purpose "table 1 of the protocol" --as alice --json | id_of)
tessera request ls | sed 's/^/   /'
echo "-- the steward approves it, with a reason (a decision the steward signs)"
tessera request approve "$rid" --reason "within the approved protocol" --as owner
echo "-- alice runs it; every custodian checked the approval, the plan and the steward's signature"
tessera request run "$rid" --as alice
echo "-- an approval runs once (exit 1)"
if tessera request run "$rid" --as alice 2>again.err; then echo "unexpected success"; exit 1; fi
sed 's/^/   /' again.err
echo "-- a second request: regimens of patients over 75 (small cells)"
rid2=$(tessera request file --sql "SELECT regimen, COUNT(*) FROM registry WHERE age > 75
  GROUP BY regimen" --purpose "the oldest patients" --as alice --json | id_of)
tessera request approve "$rid2" --reason "approved; outputs are checked" --as owner >/dev/null
echo "-- the custodians check the output inside the MPC and hold it back (exit 1)"
if tessera request run "$rid2" --as alice 2>held.err; then echo "unexpected success"; exit 1; fi
sed 's/^/   /' held.err
out=$(tessera request ls --json | "$PY" -c '
import json, sys
print(next(r["id"] for r in json.load(sys.stdin) if r["kind"] == "output"))')
echo "-- alice cannot see it; the steward reviews the held result (groups under 5 stay"
echo "   suppressed inside the MPC) and releases it with a reason"
if tessera request show "$out" --result --as alice 2>peek.err >/dev/null; then
  echo "unexpected success"; exit 1
fi
sed 's/^/   /' peek.err
tessera request show "$out" --result --as owner | sed 's/^/   /'
tessera request approve "$out" --reason "reviewed: no cell under 5 is shown" --as owner
echo "-- now alice collects it: each custodian seals its share to her one-time key"
tessera request show "$out" --result --as alice --json 2>/dev/null | "$PY" -c '
import json, sys
doc = json.load(sys.stdin)
print("   state:", doc["state"], " rows:", doc["result"]["rows"])'
echo "-- two releases whose cohorts differ by a single patient: the second is held"
rid3=$(tessera request file --sql "SELECT COUNT(*) FROM registry WHERE age > 60" \
  --purpose "one more" --as alice --json | id_of)
tessera request approve "$rid3" --reason "ok" --as owner >/dev/null
tessera request run "$rid3" --as alice | sed 's/^/   /'
rid4=$(tessera request file --sql "SELECT COUNT(*) FROM registry WHERE age > 60 AND age <> 84" \
  --purpose "and again" --as alice --json | id_of)
tessera request approve "$rid4" --reason "ok" --as owner >/dev/null
if tessera request run "$rid4" --as alice 2>diff.err; then echo "unexpected success"; exit 1; fi
sed 's/^/   /' diff.err
echo "-- every step is in the audit trail: the gateway's log, and each custodian's own"
"$PY" - <<'PY'
import os
from pathlib import Path

from tessera.workflows.audit import gateway_log, node_log

home = Path(os.environ["TESSERA_HOME"])
for _, e in gateway_log(home).events():
    if e.action.startswith("request."):
        print(f"   gateway  {e.action:16} {e.outcome:8} {e.detail.get('request', '')}")
for _, e in node_log(home, 1).events():
    if e.action.startswith("output.") or e.outcome == "denied":
        print(f"   node 1   {e.action:16} {e.outcome:8} {e.detail.get('why', e.detail.get('error', ''))}")
PY
