"""Streamed imports (issue 22): blocks of rows uploaded to the real custodian nodes and
stored as checksummed columns; answers equal DuckDB's; nothing stored from a CSV with a
bad row or one that changed under the import; a damaged share file is named, never used."""

from __future__ import annotations

import csv
import importlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tessera.config import Environment
from tessera.errors import InputError, TesseraError
from tessera.tables import encode, stream
from tessera.tables.store import Catalog, ShareStore
from tessera.workflows import tables as table_flow
from tessera.workflows.custodian import store_root
from tessera.workflows.environment import init_environment
from tessera.workflows.nodes import stop_nodes
from tessera.workflows.people import unlock
from tessera.workflows.query import run_query

pytestmark = pytest.mark.integration

PASSPHRASE = b"streaming test passphrase"
ROWS = 150
QUERIES = [
    "SELECT hospital, COUNT(*), AVG(age), SUM(viral_load) FROM patients GROUP BY hospital",
    "SELECT MIN(age), MAX(age), MIN(visit), MAX(visit) FROM patients WHERE sex = 'F'",
    "SELECT MAX(viral_load), MIN(cd4) FROM patients WHERE regimen IN ('A', 'B')",
    "SELECT COUNT(*), AVG(cd4) FROM patients WHERE age >= 50 AND viral_load > 1000",
    "SELECT p.sex, COUNT(*), AVG(l.hba1c) FROM patients p JOIN labs l "
    "ON p.patient_id = l.patient_id WHERE l.ldl > 100 GROUP BY p.sex",
]


def _interleave(paths: list[Path], out: Path) -> None:
    """The hospitals' rows in one CSV, one hospital after the other row by row (so
    every upload block of one origin is built while the others' are waiting)."""
    tables = []
    for p in paths:
        with p.open(newline="") as fh:
            tables.append(list(csv.reader(fh)))
    with out.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["hospital", *tables[0][0]])
        for rows in zip(*[t[1:] for t in tables], strict=False):
            for path, row in zip(paths, rows, strict=True):
                writer.writerow([path.stem, *row])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("streaming")
    data = base / "data"
    cohort = importlib.import_module("tessera.samples.cohort")
    paths = cohort.write_cohort(data, ROWS, hospitals=3, seed=13)
    _interleave(paths, data / "all.csv")
    env = init_environment(base / "home", nodes=3, passphrase=PASSPHRASE)
    patch = pytest.MonkeyPatch()
    patch.setattr(stream, "MIN_BLOCK_ROWS", 1)
    patch.setattr(stream, "BLOCK_BYTES", 7 * 8 * 317)  # 7 patients per upload block
    try:
        read: list[tuple[int, int]] = []
        table_flow.import_csv(
            env,
            data / "all.csv",
            "patients",
            schema_path=data / "patients.schema.yaml",
            origin_column="hospital",
            keys=("patient_id",),
            progress=lambda done, total: read.append((done, total)),
        )
        for p in paths:
            table_flow.import_csv(
                env,
                data / p.name.replace("hospital", "labs"),
                "labs",
                schema_path=data / "labs.schema.yaml",
                keys=("patient_id",),
                hospital=p.stem,
            )
        yield {
            "env": env,
            "data": data,
            "paths": paths,
            "read": read,
            "signer": unlock(env, "owner", PASSPHRASE, record=False),
        }
    finally:
        patch.undo()
        stop_nodes(env)


def _duck(world: dict[str, Any]) -> Any:
    con = duckdb.connect()
    data = world["data"]
    con.execute(
        f"CREATE TABLE patients AS SELECT * FROM read_csv('{data / 'all.csv'}', header=true, "
        "columns={'hospital': 'VARCHAR', 'patient_id': 'VARCHAR', 'age': 'INTEGER', "
        "'sex': 'VARCHAR', 'bmi': 'DOUBLE', 'viral_load': 'BIGINT', 'cd4': 'INTEGER', "
        "'regimen': 'VARCHAR', 'smoker': 'BOOLEAN', 'visit': 'DATE'})"
    )
    labs = [f"'{data / p.name.replace('hospital', 'labs')}'" for p in world["paths"]]
    con.execute(
        f"CREATE TABLE labs AS SELECT * FROM read_csv([{', '.join(labs)}], header=true, "
        "columns={'patient_id': 'VARCHAR', 'hba1c': 'DOUBLE', 'ldl': 'INTEGER'})"
    )
    return con


def _same(got: list[list[Any]], want: list[tuple[Any, ...]]) -> bool:
    def norm(row: Any) -> list[Any]:
        return [v.isoformat() if hasattr(v, "isoformat") else v for v in row]

    a = sorted((norm(r) for r in got), key=repr)
    b = sorted((norm(r) for r in want), key=repr)
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        for u, v in zip(x, y, strict=True):
            if isinstance(u, float) or isinstance(v, float):
                if not math.isclose(float(u), float(v), rel_tol=1e-9, abs_tol=1e-9):
                    return False
            elif u != v:
                return False
    return True


def _stores(env: Environment) -> list[ShareStore]:
    return [ShareStore(store_root(env, n.id)) for n in env.nodes]


def test_uploaded_in_blocks_the_answers_equal_duckdb(world: dict[str, Any]) -> None:
    env, signer = world["env"], world["signer"]
    manifest = Catalog(env.home).get("patients")
    assert manifest["rows"] == ROWS and len(manifest["chunks"]) == 3  # one chunk per origin
    con = _duck(world)
    for sql in QUERIES:
        got = run_query(env, sql, signer=signer)["rows"]
        assert _same(got, con.execute(sql).fetchall()), sql
    done, total = world["read"][-1]  # every byte of both passes reported, in order
    assert done == total == 2 * (world["data"] / "all.csv").stat().st_size
    assert [d for d, _ in world["read"]] == sorted(d for d, _ in world["read"])
    for store in _stores(env):  # nothing left staged
        assert not list((store.root / "tables" / "patients").glob(".upload-*"))


def _held(env: Environment) -> list[int]:
    return [int(s.manifest("patients")["rows"]) for s in _stores(env)]


def test_a_bad_row_at_the_end_stores_nothing(world: dict[str, Any], tmp_path: Path) -> None:
    env, data = world["env"], world["data"]
    text = (data / "all.csv").read_text()
    bad = tmp_path / "bad.csv"
    bad.write_text(text + "hospital-1,PX,999,F,25.0,1,1,A,true,2016-01-01\n")
    before = Catalog(env.home).get("patients")["rows"]
    with pytest.raises(InputError, match=r"1 invalid rows, nothing stored: line \d+: column age"):
        table_flow.import_csv(env, bad, "patients", origin_column="hospital", keys=("patient_id",))
    assert Catalog(env.home).get("patients")["rows"] == before
    assert _held(env) == [before] * 3


def test_a_csv_that_changes_under_the_import_stores_nothing(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second pass finds fewer rows than the first counted (the file changed, or a
    client dropped rows): the chunks' last blocks are never sent, nothing is stored."""
    env, data = world["env"], world["data"]
    real = encode.encode_rows

    def drop_one(*args: Any, **kw: Any) -> Any:
        args = (args[0], args[1], list(args[2])[1:], *args[3:])
        return real(*args, **kw)

    monkeypatch.setattr(table_flow, "encode_rows", drop_one)
    before = Catalog(env.home).get("patients")["rows"]
    with pytest.raises(InputError, match="the CSV changed while it was imported"):
        table_flow.import_csv(
            env, data / "all.csv", "patients", origin_column="hospital", keys=("patient_id",)
        )
    assert Catalog(env.home).get("patients")["rows"] == before
    assert _held(env) == [before] * 3


def test_a_damaged_share_file_is_named_and_not_used(world: dict[str, Any]) -> None:
    """A custodian's disk flips a bit in a stored share: its party refuses to compute
    with it (the chunk's checksums), the query fails in one line, nothing is released."""
    env, signer = world["env"], world["signer"]
    store = _stores(env)[1]
    folder = Path(store.chunk_dirs("patients")[0]["dir"])
    path = folder / "age.th.npy"
    original = path.read_bytes()
    damaged = bytearray(original)
    damaged[-3] ^= 0x10  # the last sub-column
    path.write_bytes(bytes(damaged))
    try:
        with pytest.raises(TesseraError, match=r"node 2: .*age\.th\[\d+\] is damaged"):
            run_query(env, "SELECT MAX(age) FROM patients", signer=signer)
    finally:
        path.write_bytes(original)
    assert run_query(env, "SELECT COUNT(*) FROM patients", signer=signer)["rows"] == [[ROWS]]
