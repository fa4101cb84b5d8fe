"""The DP commands end to end: policy, budget show, a release and a refusal.

The policy is signed by the steward and installed on the custodians; the budget is kept
and enforced by each custodian's own ledger (the requester keeps none).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from tessera.cli.main import main
from tessera.cli.policy import register_table_policy
from tessera.config import Environment
from tessera.dp import Aggregate, ReleasePlan
from tessera.workflows.dp import run_private_query
from tessera.workflows.environment import init_environment
from tessera.workflows.nodes import stop_nodes
from tessera.workflows.policies import installed_policy, node_budgets, remaining
from tessera.workflows.tables import import_csv

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).with_name("tessera")
PASSPHRASE = "test passphrase"
CUSTODIAN = (
    "import json, sys; from tessera.dp import ReleasePlan, sample_noise_share; "
    "plan = ReleasePlan.from_dict(json.load(sys.stdin)); "
    "print(json.dumps(sample_noise_share(plan).tolist()))"
)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An environment with a 300-row table 'cohort' (schema inferred: bounds unconfirmed)."""
    monkeypatch.setenv("TESSERA_PASSPHRASE", PASSPHRASE)
    monkeypatch.delenv("TESSERA_PERSON", raising=False)
    monkeypatch.delenv("TESSERA_HOME", raising=False)
    env = init_environment(tmp_path / "env", nodes=3, passphrase=PASSPHRASE.encode())
    csv = tmp_path / "cohort.csv"
    csv.write_text("age\n" + "".join(f"{20 + i % 71}\n" for i in range(300)))
    try:
        import_csv(env, csv, "cohort")
        yield env.home
    finally:
        stop_nodes(env)


def custodian_processes(plan: ReleasePlan) -> dict[str, list[int]]:
    """Three separate processes draw their shares from the serialised plan."""
    exact = {"count": [300], "sum:age": [300 * 55]}
    doc = json.dumps(plan.to_dict())
    procs = [
        subprocess.run(
            [sys.executable, "-c", CUSTODIAN],
            input=doc,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        for _ in range(plan.custodians)
    ]
    shares = [json.loads(p.stdout) for p in procs]
    assert shares[0] != shares[1]
    return {k: [exact[k][0] + sum(s[i][0] for s in shares)] for i, k in enumerate(plan.keys)}


def test_policy_release_refusal_and_budget_show(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = Environment.load(home)
    args = ["budget", "policy", "cohort", "--mode", "dp", "--total-epsilon", "1.2"]
    args += ["--default-epsilon", "1", "--home", str(home), "--json"]
    # the bounds were inferred from the data: the steward must confirm them
    assert main(args) == 2
    assert "--confirm-bounds" in capsys.readouterr().err
    assert installed_policy(env, "cohort") is None
    assert main([*args, "--confirm-bounds"]) == 0
    policy = json.loads(capsys.readouterr().out)
    assert policy["mode"] == "dp" and policy["total_epsilon"] == pytest.approx(1.2, rel=1e-6)
    assert policy["bounds"] == {"age": [20, 90]} and policy["signed_by"] == ["owner"]
    installed = installed_policy(env, "cohort")
    assert installed is not None and installed.steward == "owner" and installed.serial == 1

    # the release itself: three processes draw noise shares from the serialised plan
    answer = run_private_query(
        policy=installed.policy,
        aggregates=[Aggregate("count"), Aggregate("avg", "age", 0, 120)],
        cells=1,
        custodians=3,
        threshold=1,
        execute=custodian_processes,
        budget=lambda: remaining(node_budgets(env, "cohort")),
    )
    privacy = answer.privacy
    assert privacy is not None and privacy["epsilon"] <= 1.0
    low, high = privacy["columns"][1]["intervals"][0]
    assert low <= answer.rows[0][1] <= high
    # the requester charges nothing itself: only the custodians' ledgers count
    assert privacy["budget_remaining"]["cohort"]["rho"] == pytest.approx(installed.policy.total_rho)

    # through the custodians: charged by each, then refused once the budget is spent
    sql = "SELECT COUNT(*), AVG(age) FROM cohort"
    capsys.readouterr()
    assert main(["query", sql, "--epsilon", "1", "--json", "--home", str(home)]) == 0
    charged = json.loads(capsys.readouterr().out)["privacy"]["charged_rho"]
    assert main(["query", sql, "--home", str(home)]) == 1
    err = capsys.readouterr().err
    assert "budget exhausted" in err and "remaining" in err

    assert main(["budget", "show", "--home", str(home), "--json"]) == 0
    budgets = json.loads(capsys.readouterr().out)["budgets"]
    assert budgets[0]["table"] == "cohort"
    assert budgets[0]["spent_rho"] == pytest.approx(charged, rel=1e-9)

    # The real entry point, in its own process.
    out = subprocess.run(
        [str(BIN), "budget", "show", "--home", str(home), "--researcher", "owner"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env=dict(os.environ),
    )
    assert "cohort" in out.stdout


def test_bad_policy_is_a_one_line_error(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    h = ["--home", str(home)]
    code = main(["budget", "policy", "cohort", "--mode", "dp", "--confirm-bounds", *h])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("tessera: error:") and len(err.strip().splitlines()) == 1
    assert "total budget" in err
    assert main(["budget", "show", "--table", "nope", *h]) == 1


def test_table_policy_attaches_to_a_table_group(home: Path) -> None:
    table_app = typer.Typer()
    table_app.command("ls")(lambda: None)
    register_table_policy(table_app)
    result = CliRunner().invoke(table_app, ["policy", "cohort", "--home", str(home), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {
        "table": "cohort",
        "version": 1,
        "mode": "none",
        "min_group_size": 5,
        "grants": None,
        "bounds": {},
        "approval": "none",
        "output_checks": None,
        "set": False,
    }
