"""The DP commands end to end: policy, budget show, a release and a refusal."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from tessera.cli.main import main
from tessera.cli.policy import register_table_policy
from tessera.dp import Aggregate, ReleasePlan
from tessera.errors import BudgetExhaustedError
from tessera.workflows.dp import open_ledger, run_private_query
from tessera.workflows.environment import init_environment

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).with_name("tessera")
CUSTODIAN = (
    "import json, sys; from tessera.dp import ReleasePlan, sample_noise_share; "
    "plan = ReleasePlan.from_dict(json.load(sys.stdin)); "
    "print(json.dumps(sample_noise_share(plan).tolist()))"
)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return init_environment(tmp_path / "env", nodes=3).home


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
    code = main(
        [
            "budget",
            "policy",
            "cohort",
            "--mode",
            "dp",
            "--total-epsilon",
            "1.2",
            "--default-epsilon",
            "1",
            "--home",
            str(home),
            "--json",
        ]
    )
    assert code == 0
    policy = json.loads(capsys.readouterr().out)
    assert policy["mode"] == "dp" and policy["total_epsilon"] == pytest.approx(1.2, rel=1e-6)

    ledger = open_ledger(home)
    kwargs = dict(
        tables=["cohort"],
        researcher="alice",
        aggregates=[Aggregate("count"), Aggregate("avg", "age", 0, 120)],
        cells=1,
        custodians=3,
        threshold=1,
        execute=custodian_processes,
    )
    answer = run_private_query(ledger, **kwargs)  # type: ignore[arg-type]
    privacy = answer.privacy
    assert privacy is not None and privacy["epsilon"] <= 1.0
    low, high = privacy["columns"][1]["intervals"][0]
    assert low <= answer.rows[0][1] <= high  # type: ignore[operator]
    with pytest.raises(BudgetExhaustedError, match="remaining"):
        run_private_query(ledger, **kwargs)  # type: ignore[arg-type]

    assert main(["budget", "show", "--home", str(home), "--json"]) == 0
    budgets = json.loads(capsys.readouterr().out)["budgets"]
    assert budgets[0]["table"] == "cohort"
    assert budgets[0]["spent_rho"] == pytest.approx(privacy["charged_rho"], rel=1e-9)

    # The real entry point, in its own process.
    out = subprocess.run(
        [str(BIN), "budget", "show", "--home", str(home), "--researcher", "alice"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert "cohort" in out.stdout


def test_bad_policy_is_a_one_line_error(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["budget", "policy", "t", "--mode", "dp", "--home", str(home)])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("tessera: error:") and len(err.strip().splitlines()) == 1
    assert main(["budget", "show", "--table", "nope", "--home", str(home)]) == 1


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
        "set": False,
    }
