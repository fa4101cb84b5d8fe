#!/usr/bin/env bash
# The custodians are the enforcers: each node checks every job and every policy change
# against the roster and the signed policies it holds itself, so a forged job, a patched
# client that drops the noise, or a steward switching DP off alone is refused by every
# custodian; breaking a rule would take a majority of them, as reading the data does.
set -euo pipefail
cd "$DEMO_DIR"
H="$DEMO_DIR/sql-env"
PY="${TESSERA_PYTHON:-python3}"
trap 'tessera node stop --home "$H" >/dev/null 2>&1 || true' EXIT
if [ ! -e "$H/tessera.toml" ]; then  # run on its own: the SQL demo's table under DP
  tessera init "$H" --nodes 3 >/dev/null
  "$PY" -m tessera.samples.cohort cohort --rows 600 --hospitals 3 >/dev/null
  for h in 1 2 3; do
    tessera table import "cohort/hospital-$h.csv" --name patients --hospital "hospital-$h" \
      --schema cohort/patients.schema.yaml --key patient_id --home "$H" >/dev/null
  done
  tessera table policy patients --mode dp --total-epsilon 1.5 --as owner --home "$H" >/dev/null
fi
tessera person ls --home "$H" --json | grep -q '"alice"' \
  || tessera person add alice --role researcher --as owner --home "$H" >/dev/null
echo "-- before the first DP release the custodians validated every uploaded chunk inside the"
echo "   MPC (values within bounds, bits that are bits): out-of-range shares change nothing"
tessera table validate patients --as owner --home "$H"
echo "-- the roster every custodian pinned: who may sign jobs, policies and roster changes"
tessera person ls --home "$H"
export H
"$PY" - <<'PY'
import os, secrets, time
from pathlib import Path

from tessera.config import Environment
from tessera.errors import TesseraError
from tessera.keys import generate
from tessera.workflows.nodes import ensure_nodes, sign_job
from tessera.workflows.people import Signer, unlock
from tessera.workflows.query import plan_query, run_query

env = Environment.load(Path(os.environ["H"]))
plan = plan_query(env, "SELECT sex, COUNT(*) FROM patients GROUP BY sex", min_group=1)
job = {
    "version": 1, "type": "sql", "job_id": secrets.token_hex(16),
    "issued_at": int(time.time()), "parties": [[n.host, 1] for n in env.nodes],
    "inputs": [{"alias": s.alias, "table": s.table, "parts": list(s.parts)}
               for s in plan.sources],
    "noise": None, "params": {"plan": plan.to_dict(), "prime": 2**61 - 1},
}
print("-- a forged job: exact counts, minimum group 1, signed 'alice' with a key that is")
print("   not in the roster (what a stolen requester folder or a gateway could make)")
forged = sign_job(job, Signer("alice", generate()))
clients = ensure_nodes(env)
for node_id, client in clients.items():
    try:
        client.request("POST", "/v1/jobs", json=forged)
        raise SystemExit(f"node {node_id} ran a forged job")
    except TesseraError as exc:
        print(f"   refused: {exc}")
for client in clients.values():
    client.close()
print("-- alice's own key, but a patched client that asks for exact counts on the DP table")
alice = unlock(env, "alice", os.environ["TESSERA_PASSPHRASE"].encode(), record=False)
try:
    run_query(env, "SELECT sex, COUNT(*) FROM patients GROUP BY sex", signer=alice, min_group=5)
    raise SystemExit("an exact release on a DP table")
except TesseraError as exc:
    print(f"   {exc}")
PY
echo "-- the steward alone switches DP off: refused, a second person must co-sign (exit 1)"
if tessera table policy patients --mode none --as owner --home "$H"; then
  echo "unexpected success"; exit 1
fi
echo "-- and what a patched client sends anyway, every custodian refuses on its own"
"$PY" - <<'PY'
import os
from pathlib import Path

from tessera.config import Environment
from tessera.dp import Policy
from tessera.dp.policy import TablePolicy
from tessera.errors import TesseraError
from tessera.keys.documents import SignedDocument
from tessera.workflows.custodian import POLICY_CONTEXT
from tessera.workflows.nodes import broadcast
from tessera.workflows.people import unlock
from tessera.workflows.policies import installed_policy

env = Environment.load(Path(os.environ["H"]))
owner = unlock(env, "owner", os.environ["TESSERA_PASSPHRASE"].encode(), record=False)
current = installed_policy(env, "patients")
off = TablePolicy("patients", current.serial + 1, "owner", Policy.none())
document = owner.sign(SignedDocument(off.body()), context=POLICY_CONTEXT)
try:
    broadcast(env, "POST", "/v1/policies", json=document.to_dict())
    raise SystemExit("a custodian took a weakening signed by one person")
except TesseraError as exc:
    print(f"   {exc}")
PY
