#!/usr/bin/env bash
# A federated consortium: three custodians, each with its own folder and its own keys
# (made "on its host"), pinned by a manifest the stewards sign; here all on loopback.
# A change of the node set needs two stewards' signatures, checked by every node.
set -euo pipefail
cd "$DEMO_DIR"
F="$DEMO_DIR/consortium"
PY="${TESSERA_PYTHON:-python3}"
export TESSERA_PERSON=alice
pids=()
stop_all() { for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap stop_all EXIT
rm -rf "$F" && mkdir -p "$F"
port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
echo "-- each hospital's operator makes its node's key on its own host and a join request"
for i in 1 2 3; do
  tessera node init --config "$F/hospital-$i/node.toml" --id "$i" --name "hospital-$i" \
    --address "127.0.0.1:$(port)" | grep fingerprint | sed "s/^/   hospital-$i /"
done
echo "-- the founder (alice) makes the consortium from the three requests"
tessera init "$F/alice" --person alice --node "$F/hospital-1/join-request.json" \
  --node "$F/hospital-2/join-request.json" --node "$F/hospital-3/join-request.json" \
  | grep -E '^(created|fingerprint)' | sed 's/^/   /'
fp=$(tessera consortium show --home "$F/alice" --json | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["fingerprint"][:20])')
echo "-- each operator checks the manifest's fingerprint, pins the others, starts its node"
for i in 1 2 3; do
  tessera node join "$F/alice/consortium.json" --config "$F/hospital-$i/node.toml" \
    --fingerprint "$fp" | sed -n "1s/^/   /p"
  "$PY" -m tessera.node --config "$F/hospital-$i/node.toml" >"$F/node-$i.log" 2>&1 &
  pids+=("$!")
done
for _ in $(seq 100); do
  if tessera node status --home "$F/alice" --json 2>/dev/null | "$PY" -c '
import json, sys; sys.exit(0 if all(n["running"] for n in json.load(sys.stdin)) else 1)'; then break; fi
  sleep 0.2
done
tessera consortium show --home "$F/alice" | sed 's/^/   /'
echo "-- a first query across the three custodians"
"$PY" -c '
import random
r = random.Random(3)
print("age,hospital")
for i in range(60): print(f"{r.randint(20, 90)},hospital-{i % 3 + 1}")' >"$F/ward.csv"
tessera table import "$F/ward.csv" --name ward --origin-column hospital --home "$F/alice" \
  2>/dev/null | sed 's/^/   /'
tessera query "SELECT hospital, COUNT(*) FROM ward GROUP BY hospital" --home "$F/alice"
echo "-- bob becomes a second steward; from now on a node-set change needs both"
tessera person add bob --role steward --as alice --home "$F/alice" | sed 's/^/   /'
tessera node init --config "$F/hospital-4/node.toml" --id 3 --name hospital-4 \
  --address "127.0.0.1:$(port)" >/dev/null
tessera consortium add-node "$F/hospital-4/join-request.json" --as alice --home "$F/alice" >/dev/null
echo "-- alice alone proposes replacing node 3: every node refuses (exit 1)"
if tessera consortium push "$F/alice/consortium-next.json" --home "$F/alice" 2>push.err; then
  echo "unexpected success"; exit 1
fi
cut -c1-150 push.err | sed 's/^/   /'
