"""One CSV of three hospitals, split by its ``hospital`` column in one import (#18)."""

from __future__ import annotations

import csv
import importlib
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tessera.cli.main import main
from tessera.config import Environment
from tessera.workflows.environment import init_environment
from tessera.workflows.nodes import stop_nodes
from tessera.workflows.people import unlock
from tessera.workflows.query import run_query
from tessera.workflows.tables import describe_table

pytestmark = pytest.mark.integration

PASSPHRASE = b"test passphrase"


def _merge(paths: list[Path], out: Path) -> None:
    """The hospitals' CSVs as one, with a ``hospital`` column (its file stem)."""
    with out.open("w", newline="") as fh:
        writer = csv.writer(fh)
        for i, path in enumerate(paths):
            with path.open(newline="") as src:
                reader = csv.reader(src)
                header = next(reader)
                if i == 0:
                    writer.writerow(["hospital", *header])
                for row in reader:
                    writer.writerow([path.stem, *row])


@pytest.fixture(scope="module")
def merged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Environment, Path]]:
    base = tmp_path_factory.mktemp("origins")
    data = base / "data"
    cohort = importlib.import_module("tessera.samples.cohort")
    paths = cohort.write_cohort(data, 120, hospitals=3, seed=5)
    _merge(paths, data / "all.csv")
    env = init_environment(base / "home", nodes=3, passphrase=PASSPHRASE)
    try:
        yield env, data
    finally:
        stop_nodes(env)


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)
    return bool(a == b)


def test_three_hospitals_in_one_import_group_by_hospital_equals_duckdb(
    merged: tuple[Environment, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    env, data = merged
    args = ["table", "import", str(data / "all.csv"), "--name", "patients"]
    args += ["--schema", str(data / "patients.schema.yaml"), "--key", "patient_id"]
    assert main([*args, "--home", str(env.home)]) == 1  # the column name is reserved
    assert "--origin-column hospital" in capsys.readouterr().err
    assert main([*args, "--origin-column", "hospital", "--home", str(env.home), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [c["hospital"] for c in report["chunks"]] == ["hospital-1", "hospital-2", "hospital-3"]
    assert report["rows"] == 120
    assert describe_table(env, "patients")["hospitals"] == [
        "hospital-1",
        "hospital-2",
        "hospital-3",
    ]
    owner = unlock(env, "owner", PASSPHRASE)
    sql = (
        "SELECT hospital, COUNT(*), AVG(age), SUM(cd4) FROM patients "
        "WHERE age > 30 GROUP BY hospital ORDER BY hospital"
    )
    got = run_query(env, sql, signer=owner)["rows"]
    con = duckdb.connect()
    try:
        want = con.execute(
            sql.replace("FROM patients", f"FROM read_csv('{data / 'all.csv'}', header=true)")
        ).fetchall()
    finally:
        con.close()
    assert len(got) == len(want) == 3
    for row, expected in zip(got, want, strict=True):
        assert all(_close(a, b) for a, b in zip(row, expected, strict=True)), (row, expected)
