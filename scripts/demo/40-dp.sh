#!/usr/bin/env bash
# Differential privacy: a table policy, a DP release with its intervals, a refusal when
# the budget is spent, and the budget surviving in the ledger.
set -euo pipefail
cd "$DEMO_DIR"
H="$DEMO_DIR/dp-env"
PY="$(dirname "$(command -v tessera)")/python"  # the interpreter tessera runs on
[ -e "$H/tessera.toml" ] || tessera init "$H" --nodes 3 --unencrypted-key >/dev/null
echo "-- the steward gives table 'cohort' a DP policy: total epsilon 1.2, 1 per query"
tessera budget policy cohort --mode dp --total-epsilon 1.2 --default-epsilon 1 \
  --min-group-size 5 --home "$H"
tessera budget show --home "$H"
echo "-- a DP release: COUNT and AVG(age) per hospital (300 / 120 / 3 patients)."
echo "   Three custodian processes each draw their own discrete Gaussian noise share"
echo "   from the serialised release plan; the shares are summed onto the statistics."
echo "   (Until 'tessera query --epsilon' is wired to the secure SQL, this demo computes"
echo "    the exact statistics in the clear itself; the DP layer is the real one.)"
TESSERA_HOME="$H" "$PY" - <<'PY'
import json, os, subprocess, sys
from pathlib import Path
from tessera.dp import Aggregate, ReleasePlan
from tessera.errors import BudgetExhaustedError
from tessera.workflows.dp import open_ledger, run_private_query

exact = {"count": [300, 120, 3], "sum:age": [300 * 61, 120 * 47, 3 * 80]}
custodian = ("import json, sys; from tessera.dp import ReleasePlan, sample_noise_share; "
             "p = ReleasePlan.from_dict(json.load(sys.stdin)); "
             "print(json.dumps(sample_noise_share(p).tolist()))")

def custodians(plan: ReleasePlan) -> dict[str, list[int]]:
    doc = json.dumps(plan.to_dict())
    shares = [json.loads(subprocess.run([sys.executable, "-c", custodian], input=doc,
                                        text=True, capture_output=True, check=True).stdout)
              for _ in range(plan.custodians)]
    return {k: [exact[k][c] + sum(s[i][c] for s in shares) for c in range(plan.cells)]
            for i, k in enumerate(plan.keys)}

query = dict(tables=["cohort"], researcher="demo", cells=3, custodians=3, threshold=1,
             aggregates=[Aggregate("count"), Aggregate("avg", "age", 0, 120)],
             execute=custodians)
ledger = open_ledger(Path(os.environ["TESSERA_HOME"]))
answer = run_private_query(ledger, **query)
p = answer.privacy
print(f"guarantee: rho={p['rho']:.4f}-zCDP, (epsilon={p['epsilon']:.3f}, delta={p['delta']:g})"
      f"-DP from any {p['honest_custodians_needed']} of {p['custodians']} custodians' noise")
for c, hospital in enumerate(["A", "B", "C"]):
    row = answer.rows[c]
    if row[0] is None:
        print(f"hospital {hospital}: suppressed (noisy count below {p['min_group_size']})")
        continue
    ivs = [col["intervals"][c] for col in p["columns"]]
    print(f"hospital {hospital}: count {row[0]:.0f} [{ivs[0][0]:.0f}, {ivs[0][1]:.0f}]   "
          f"avg(age) {row[1]:.1f} [{ivs[1][0]:.1f}, {ivs[1][1]:.1f}]   (95% intervals)")
print(f"budget left: {json.dumps(p['budget_remaining'])}")
print("-- the same query again: the budget does not admit it")
try:
    run_private_query(ledger, **query)
except BudgetExhaustedError as exc:
    print(f"refused: {exc}")
else:
    sys.exit("unexpected: second release admitted")
PY
echo "-- the ledger survives: a fresh process sees what was spent"
tessera budget show --home "$H" --json | "$PY" -c \
  'import json,sys; b=json.load(sys.stdin)["budgets"][0]; print("cohort spent rho", round(b["spent_rho"], 5), "remaining", round(b["remaining_rho"], 5))'
echo "-- and the command line refuses a bad policy with one line (exit 2)"
if tessera budget policy cohort --mode dp --home "$H" 2>err.txt; then exit 1; fi
cat err.txt
