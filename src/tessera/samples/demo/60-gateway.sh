#!/usr/bin/env bash
# The gateway: a REST API and a web console over the SQL demo's custodians; the steward
# issues tokens to a researcher and a security officer; roles decide what each may do,
# and every request, refused ones included, lands in the signed audit log.
set -euo pipefail
PY="${TESSERA_PYTHON:-python3}"
cd "$DEMO_DIR"
H="$DEMO_DIR/sql-env"
if [ ! -e "$H/tessera.toml" ]; then  # run on its own: build the SQL demo's tables
  tessera init "$H" --nodes 3 >/dev/null
  "$PY" -m tessera.samples.cohort cohort --rows 600 --hospitals 3 >/dev/null
  for h in 1 2 3; do
    tessera table import "cohort/labs-$h.csv" --name labs --hospital "hospital-$h" \
      --schema cohort/labs.schema.yaml --key patient_id --home "$H" >/dev/null
  done
fi
gw=""
trap '[ -n "$gw" ] && kill "$gw" 2>/dev/null; tessera node stop --home "$H" >/dev/null 2>&1 || true' EXIT
echo "-- the owner adds a researcher and a security officer (each token is shown once; each"
echo "   user joins the custodians' roster with a key only their token unlocks)"
token() { tessera user add "$1" --role "$2" --as owner --home "$H" --json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["token"])'; }
RITA=$(token rita researcher)
OSCAR=$(token oscar officer)
tessera user ls --home "$H" | sed 's/^/   /'
tessera serve --port 0 --home "$H" >gateway.out 2>gateway.err &
gw=$!
for _ in $(seq 100); do grep -q listening gateway.out 2>/dev/null && break; sleep 0.1; done
URL=$(sed -n 's/^gateway listening on //p' gateway.out)
echo "-- $URL serves the API and the web console (open it in a browser, paste a token):"
echo "   researchers file requests and see charts, stewards an inbox of requests and held"
echo "   outputs, budget gauges, the vault's health grid and upload; officers the alerts"
export URL RITA OSCAR
"$PY" - <<'PY'
import json, os
import httpx

url = os.environ["URL"]


def call(method, path, token=None, body=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = httpx.request(method, url + path, headers=headers, json=body, timeout=300)
    return r.status_code, r.json()


print("-- rita runs a secure query through the API (the custodians compute it)")
status, doc = call("POST", "api/v1/query", os.environ["RITA"],
                   {"sql": "SELECT COUNT(*) AS n, AVG(hba1c), MAX(ldl) FROM labs"})
print(f"   HTTP {status}: {json.dumps(dict(zip(doc['columns'], doc['rows'][0])))}")
print("-- a guessed token: refused, and recorded as a failed login")
status, doc = call("GET", "api/v1/me", "guess")
print(f"   HTTP {status}: {doc['message']}")
print("-- rita may not read the audit trail; the security officer may")
status, doc = call("GET", "api/v1/audit/verify", os.environ["RITA"])
print(f"   rita:  HTTP {status}: {doc['message']}")
status, doc = call("GET", "api/v1/audit/verify", os.environ["OSCAR"])
print(f"   oscar: HTTP {status}: log verified {doc['ok']}, {doc['entries']} entries, "
      f"verified against {doc.get('vouched', 0)} of {doc.get('nodes', 0)} custodians")
status, events = call("GET", "api/v1/audit/events?limit=6", os.environ["OSCAR"])
for e in events:
    print(f"   #{e['seq']:<4} {e['action']:14} {e['outcome']:8} {e['user'] or '-':6} "
          f"{e['role'] or '-':11} {e['address'] or '-'}")
PY
kill "$gw"; wait "$gw" 2>/dev/null || true; gw=""
