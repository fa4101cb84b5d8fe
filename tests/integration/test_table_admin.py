"""`tessera table create/alter/rm` on three real custodian nodes (#18).

The first hospital's rows fit the declared bounds, the second's do not: the import is
refused naming `tessera table alter`; the steward widens the table (every custodian
re-encodes its own shares), the second hospital imports, and queries (thermometer and
digit predicates on the re-encoded shares) equal DuckDB's answers.  The re-encoded
chunks pass the custodians' validation; a DP table's bounds are not widened silently;
`rm` needs a steward and removes the shares on every node.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest

from tessera.cli.main import main
from tessera.config import Environment
from tessera.dp import Policy
from tessera.errors import InputError
from tessera.workflows.environment import init_environment
from tessera.workflows.nodes import broadcast, stop_nodes
from tessera.workflows.people import Signer, add_person, unlock
from tessera.workflows.policies import installed_policy, set_policy
from tessera.workflows.query import run_query
from tessera.workflows.tables import import_csv
from tessera.workflows.validation import validate_table

pytestmark = pytest.mark.integration

PASS = "table admin passphrase"
SCHEMA = """columns:
- {name: age, type: integer, min: 20, max: 60}
- {name: sex, type: categorical, categories: [F, M]}
- {name: load, type: integer, min: 0, max: 5000}
"""


def _write(path: Path, rows: list[tuple[Any, ...]]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["age", "sex", "load"])
        writer.writerows(rows)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Environment, Path, Signer]]:
    base = tmp_path_factory.mktemp("admin")
    rng = np.random.default_rng(4)
    a = [
        (int(x), s, int(v))
        for x, s, v in zip(
            rng.integers(20, 61, 40),
            rng.choice(["F", "M"], 40),
            rng.integers(0, 5001, 40),
            strict=True,
        )
    ]
    b = [
        (int(x), s, int(v))
        for x, s, v in zip(
            rng.integers(5, 100, 40),
            rng.choice(["F", "M", "X"], 40),
            rng.integers(0, 90001, 40),
            strict=True,
        )
    ]
    _write(base / "a.csv", a)
    _write(base / "b.csv", b)
    (base / "schema.yaml").write_text(SCHEMA)
    env = init_environment(base / "home", nodes=3, passphrase=PASS.encode())
    owner = unlock(env, "owner", PASS.encode(), record=False)
    add_person(env, "res", ["researcher"], b"researcher passphrase", [owner])
    try:
        yield env, base, owner
    finally:
        stop_nodes(env)


def _cli(env: Environment, *args: str) -> int:
    return main([*args, "--home", str(env.home)])


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)
    return bool(a == b)


def test_create_alter_import_query_validate_rm(
    world: tuple[Environment, Path, Signer],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env, base, owner = world
    monkeypatch.setenv("TESSERA_PASSPHRASE", PASS)
    assert _cli(env, "table", "create", "t", "--schema", str(base / "schema.yaml")) == 0
    assert _cli(env, "table", "import", str(base / "a.csv"), "--name", "t") == 0
    with pytest.raises(InputError, match="tessera table alter t --bounds"):
        import_csv(env, base / "b.csv", "t")  # bounds declared for hospital a only
    capsys.readouterr()
    widen = ["--bounds", "age=0:120", "--bounds", "load=0:90000", "--add-category", "sex=X"]
    assert _cli(env, "table", "alter", "t", *widen, "--as", "owner") == 0
    assert "widened age, sex, load" in capsys.readouterr().out
    import_csv(env, base / "b.csv", "t")
    sql = (
        "SELECT sex, COUNT(*), AVG(age), SUM(load) FROM t WHERE age > 40 AND load >= 1000 "
        "GROUP BY sex ORDER BY sex"
    )
    got = run_query(env, sql, signer=owner)["rows"]
    con = duckdb.connect()
    try:
        union = f"(SELECT * FROM read_csv(['{base / 'a.csv'}', '{base / 'b.csv'}']))"
        want = con.execute(sql.replace("FROM t ", f"FROM {union} ")).fetchall()
    finally:
        con.close()
    want = [r for r in want if r[1] >= 5]  # the default minimum group
    assert len(got) == len(want) > 0
    for row, expected in zip(got, want, strict=True):
        assert all(_close(x, y) for x, y in zip(row, expected, strict=True)), (row, expected)
    # the re-encoded shares are well formed: the custodians' own check inside the MPC
    outcome = validate_table(env, "t", owner)
    assert outcome["failed"] == [] and len(outcome["valid"]) == 2

    # a DP table keeps its confirmed bounds unless the steward confirms wider ones
    bounds = (("age", 0, 120), ("load", 0, 90000))
    set_policy(env, "t", Policy.dp(total_epsilon=5.0, bounds=bounds), steward=owner)
    assert _cli(env, "table", "alter", "t", "--bounds", "age=0:130", "--as", "owner") == 1
    assert "--confirm-bounds" in capsys.readouterr().err
    args = ["table", "alter", "t", "--bounds", "age=0:130", "--confirm-bounds", "--as", "owner"]
    assert _cli(env, *args) == 0
    current = installed_policy(env, "t")
    assert current is not None and current.policy.bound("age") == (0, 130)

    # removal: a steward's signature, every custodian, then the catalogue
    monkeypatch.setenv("TESSERA_PASSPHRASE", "researcher passphrase")
    assert _cli(env, "table", "rm", "t", "--yes", "--as", "res") == 1
    assert "needs a steward" in capsys.readouterr().err
    monkeypatch.setenv("TESSERA_PASSPHRASE", PASS)
    assert _cli(env, "table", "rm", "t", "--as", "owner") == 2  # not a terminal: --yes
    assert _cli(env, "table", "rm", "t", "--yes", "--as", "owner") == 0
    assert "removed t (80 rows) from 3 custodian(s)" in capsys.readouterr().out
    held = broadcast(env, "GET", "/v1/tables")
    assert all(not any(m.get("name") == "t" for m in tables) for tables in held.values())
    assert _cli(env, "table", "ls", "--json") == 0
    assert capsys.readouterr().out.strip() == "[]"
