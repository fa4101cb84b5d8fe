"""DP releases of secure SQL through the CLI with three real custodian nodes.

The noise is drawn by each node (OpenDP) and added inside the MPC; the requester sees
only noisy statistics.  Checks: the guarantee and intervals in the JSON, intervals that
cover the exact answer, MIN/MAX refused, a refusal once the budget is spent (exit 1,
remaining budget named, nothing charged), and budgets surviving a restart of the nodes
and of the CLI process (the real ``tessera`` entry point).  The policies and the budget
ledgers are the custodians' own: every node charges its own ledger, and the requester
keeps none.
"""

from __future__ import annotations

import csv
import importlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tessera.cli.main import main
from tessera.config import Environment
from tessera.dp import Ledger
from tessera.workflows.environment import init_environment
from tessera.workflows.nodes import stop_nodes
from tessera.workflows.people import add_person, unlock
from tessera.workflows.policies import installed_policy, node_budgets
from tessera.workflows.tables import import_csv

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).with_name("tessera")
PASSPHRASE = "test passphrase"
ALICE = "alice's passphrase"


def _spent(env: Environment, table: str) -> float:
    """The table's spent budget, as the custodians count it (they must all agree)."""
    per_node = [
        Ledger(env.home / "stores" / f"node-{n.id}" / "budget.sqlite3").balance(table).spent_rho
        for n in env.nodes
    ]
    assert len(set(per_node)) == 1, per_node
    assert node_budgets(env, table)[0]["spent_rho"] == pytest.approx(per_node[0])
    assert not (env.home / "gateway" / "privacy-ledger.sqlite3").exists()  # none kept here
    return per_node[0]


def _cohort_module() -> Any:
    return importlib.import_module("tessera.samples.cohort")


@pytest.fixture(scope="module")
def cohort(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Environment, list[dict[str, str]]]]:
    """300 patients from 3 hospitals, as 'patients' (DP), 'ward' (DP, 1 query) and 'plain'."""
    base = tmp_path_factory.mktemp("dpsql")
    data = base / "data"
    paths = _cohort_module().write_cohort(data, 300, hospitals=3, seed=5)
    env = init_environment(base / "home", nodes=3, passphrase=PASSPHRASE.encode())
    rows: list[dict[str, str]] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TESSERA_PASSPHRASE", PASSPHRASE)  # the owner's (steward, researcher)
        mp.setenv("TESSERA_PASSPHRASE_ALICE", ALICE)
        mp.setenv("TESSERA_PERSON", "owner")  # who acts unless --researcher says otherwise
        mp.delenv("TESSERA_HOME", raising=False)
        yield from _cohort_env(env, data, paths, rows)


def _cohort_env(
    env: Environment, data: Path, paths: list[Path], rows: list[dict[str, str]]
) -> Iterator[tuple[Environment, list[dict[str, str]]]]:
    try:
        owner = unlock(env, "owner", PASSPHRASE.encode())
        add_person(env, "alice", ["researcher"], ALICE.encode(), [owner])
        for p in paths:
            for name in ("patients", "ward", "plain"):
                import_csv(env, p, name, schema_path=data / "patients.schema.yaml", hospital=p.stem)
            with p.open() as fh:
                rows.extend({**r, "hospital": p.stem} for r in csv.DictReader(fh))
        home = str(env.home)
        assert (
            main(
                [
                    "table",
                    "policy",
                    "patients",
                    "--mode",
                    "dp",
                    "--total-epsilon",
                    "3",
                    "--default-epsilon",
                    "1",
                    "--home",
                    home,
                ]
            )
            == 0
        )
        assert (
            main(
                [
                    "table",
                    "policy",
                    "ward",
                    "--mode",
                    "dp",
                    "--total-epsilon",
                    "1",
                    "--default-epsilon",
                    "1",
                    "--home",
                    home,
                ]
            )
            == 0
        )
        yield env, rows
    finally:
        stop_nodes(env)


def _query(env: Environment, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any]:
    capsys.readouterr()
    code = main(["query", *args, "--home", str(env.home)])
    out = capsys.readouterr()
    return code, (json.loads(out.out) if code == 0 and "--json" in args else out)


def test_dp_release_with_intervals(
    cohort: tuple[Environment, list[dict[str, str]]], capsys: pytest.CaptureFixture[str]
) -> None:
    env, rows = cohort
    sql = "SELECT hospital, COUNT(*) AS n, AVG(age), SUM(cd4) FROM patients GROUP BY hospital"
    code, doc = _query(env, capsys, sql, "--json", "--researcher", "alice", "--epsilon", "2")
    assert code == 0
    privacy = doc["privacy"]
    assert privacy is not None and privacy["mechanism"] == "distributed discrete Gaussian"
    assert privacy["epsilon"] <= 2.0 + 1e-9 and privacy["epsilon"] > 1.9
    assert privacy["honest_custodians_needed"] == 2 and privacy["custodians"] == 3
    assert doc["columns"] == ["hospital", "n", "AVG(age)", "SUM(cd4)"]
    cols = {c["column"]: c for c in privacy["columns"]}
    assert cols["hospital"]["intervals"] is None
    assert len(doc["rows"]) == 3  # 100 patients each: none suppressed
    stats = {s["statistic"]: s for s in privacy["statistics"]}
    # age is nullable in the schema: AVG(age) divides by its own non-null count
    assert set(stats) == {"count", "count:patients.age", "sum:patients.age", "sum:patients.cd4"}
    assert stats["sum:patients.cd4"]["sensitivity"] == 2000  # schema bound max(|0|, |2000|)
    for r, row in enumerate(doc["rows"]):
        mine = [x for x in rows if x["hospital"] == row[0]]
        ages = [int(x["age"]) for x in mine if x["age"]]
        exact = {
            "n": len(mine),
            "AVG(age)": sum(ages) / len(ages),
            "SUM(cd4)": sum(int(x["cd4"]) for x in mine if x["cd4"]),
        }
        for j, name in enumerate(doc["columns"][1:], start=1):
            lo, hi = cols[name]["intervals"][r]
            assert lo <= row[j] <= hi
            # the intervals hold with >= 95% (per row); twice the half-width almost surely
            width = hi - lo
            assert lo - width / 2 <= exact[name] <= hi + width / 2, (name, row, exact)
    remaining = privacy["budget_remaining"]["patients"]
    installed = installed_policy(env, "patients")
    assert installed is not None and installed.steward == "owner"
    assert 0 < remaining["rho"] < installed.policy.total_rho
    # the same researcher's ledger entry
    code = main(
        [
            "budget",
            "show",
            "--table",
            "patients",
            "--researcher",
            "alice",
            "--json",
            "--home",
            str(env.home),
        ]
    )
    balance = json.loads(capsys.readouterr().out)["budgets"][0]
    assert code == 0 and balance["researcher_spent_rho"] == pytest.approx(privacy["charged_rho"])
    assert _spent(env, "patients") == pytest.approx(privacy["charged_rho"])


def test_min_max_and_having_refused_before_spending(
    cohort: tuple[Environment, list[dict[str, str]]], capsys: pytest.CaptureFixture[str]
) -> None:
    env, _ = cohort
    before = _spent(env, "patients")
    code, out = _query(env, capsys, "SELECT MIN(age) FROM patients")
    assert code == 1 and "MIN and MAX cannot be released under differential privacy" in out.err
    code, out = _query(env, capsys, "SELECT COUNT(*) * 2 FROM patients")
    assert code == 1 and "one aggregate" in out.err
    assert _spent(env, "patients") == before
    # a table without a policy is still answered exactly, privacy null
    code, doc = _query(env, capsys, "SELECT COUNT(*), MIN(age) FROM plain", "--json")
    assert code == 0 and doc["privacy"] is None and doc["rows"][0][0] == 300
    code, out = _query(env, capsys, "SELECT COUNT(*) FROM plain", "--epsilon", "1")
    assert code == 1 and "no differential privacy policy" in out.err


def test_refusal_when_spent_and_budget_survives_restart(
    cohort: tuple[Environment, list[dict[str, str]]], capsys: pytest.CaptureFixture[str]
) -> None:
    env, _ = cohort
    sql = "SELECT sex, COUNT(*), STDDEV(bmi) FROM ward GROUP BY sex"
    code, out = _query(env, capsys, sql)
    assert code == 0, out.err
    assert "differential privacy" in out.err and "[" in out.out  # guarantee and intervals
    spent = _spent(env, "ward")
    assert spent > 0
    code, out = _query(env, capsys, sql)
    assert code == 1
    assert "budget exhausted" in out.err and "remaining" in out.err
    assert len(out.err.strip().splitlines()) == 1
    assert _spent(env, "ward") == spent  # nothing charged, on any custodian
    # restart the custodians and use a fresh process (the installed entry point)
    stop_nodes(env)
    environ = {**os.environ, "TESSERA_HOME": str(env.home)}
    shown = subprocess.run(
        [str(BIN), "budget", "show", "--table", "ward", "--json"],
        capture_output=True,
        text=True,
        env=environ,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["budgets"][0]["spent_rho"] == pytest.approx(spent)
    again = subprocess.run(
        [str(BIN), "query", sql], capture_output=True, text=True, env=environ, timeout=120
    )
    assert again.returncode == 1 and "budget exhausted" in again.stderr
    ok = subprocess.run(
        [str(BIN), "query", "SELECT COUNT(*) FROM patients", "--json", "--epsilon", "0.5"],
        capture_output=True,
        text=True,
        env=environ,
        timeout=180,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["privacy"]["epsilon"] <= 0.5 + 1e-9
