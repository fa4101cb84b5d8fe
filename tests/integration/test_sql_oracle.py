"""Secure SQL through three real custodian nodes (TLS, MPyC --ssl) against DuckDB.

Every query runs on the secret-shared tables and on DuckDB over the plaintext union of
the same CSVs; answers must agree (fixed-point within its precision).  The tables'
policies (signed by the steward and co-signed, since they lower the custodians' default
minimum group of 5) let groups of one be released, so every row can be compared.
"""

from __future__ import annotations

import datetime as dt
import importlib
import math
from collections.abc import Iterator
from typing import Any

import duckdb
import pytest

from tessera.config import Environment
from tessera.dp import Policy
from tessera.errors import UnsupportedError
from tessera.workflows.environment import init_environment
from tessera.workflows.nodes import stop_nodes
from tessera.workflows.people import Signer, add_person, unlock
from tessera.workflows.policies import set_policy
from tessera.workflows.query import run_query
from tessera.workflows.tables import import_csv

pytestmark = pytest.mark.integration

PASSPHRASE = b"test passphrase"
Cohort = tuple[Environment, Any, Signer]


def _cohort_module() -> Any:
    return importlib.import_module("tessera.samples.cohort")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cohort]:
    base = tmp_path_factory.mktemp("sql")
    data = base / "data"
    paths = _cohort_module().write_cohort(data, 450, hospitals=3, seed=11)
    env = init_environment(base / "home", nodes=3, passphrase=PASSPHRASE)
    con = duckdb.connect()
    try:
        for p in paths:
            import_csv(
                env, p, "patients", schema_path=data / "patients.schema.yaml", keys=("patient_id",)
            )
            labs = data / p.name.replace("hospital", "labs")
            import_csv(
                env,
                labs,
                "labs",
                schema_path=data / "labs.schema.yaml",
                keys=("patient_id",),
                hospital=p.stem,
            )
        union = " UNION ALL ".join(
            f"SELECT *, '{p.stem}' AS hospital FROM read_csv('{p}', header=true, "
            "columns={'patient_id': 'VARCHAR', 'age': 'INTEGER', 'sex': 'VARCHAR', "
            "'bmi': 'DOUBLE', 'viral_load': 'BIGINT', 'cd4': 'INTEGER', 'regimen': 'VARCHAR', "
            "'smoker': 'BOOLEAN', 'visit': 'DATE'})"
            for p in paths
        )
        con.execute(f"CREATE TABLE patients AS {union}")
        lab_union = " UNION ALL ".join(
            f"SELECT * FROM read_csv('{data / p.name.replace('hospital', 'labs')}', header=true, "
            "columns={'patient_id': 'VARCHAR', 'hba1c': 'DOUBLE', 'ldl': 'INTEGER'})"
            for p in paths
        )
        con.execute(f"CREATE TABLE labs AS {lab_union}")
        owner = unlock(env, "owner", PASSPHRASE)
        add_person(env, "steward2", ["steward"], b"second passphrase", [owner])
        cosigner = unlock(env, "steward2", b"second passphrase")
        for table in ("patients", "labs"):
            set_policy(
                env, table, Policy.none(min_group_size=1), steward=owner, cosigners=[cosigner]
            )
        yield env, con, owner
    finally:
        stop_nodes(env)
        con.close()


def _norm(v: Any) -> Any:
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, float):
        return round(v, 6)
    return v


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-6)
    return _norm(a) == _norm(b)


QUERIES = [
    "SELECT COUNT(*) FROM patients WHERE age > 60",
    "SELECT COUNT(*), COUNT(bmi), SUM(viral_load), AVG(bmi) FROM patients "
    "WHERE sex = 'F' AND smoker",
    "SELECT regimen, COUNT(*), AVG(age), STDDEV(bmi), VARIANCE(cd4), VAR_POP(age) "
    "FROM patients WHERE age BETWEEN 40 AND 70 GROUP BY regimen",
    "SELECT hospital, MIN(age), MAX(age), MIN(viral_load), MAX(viral_load), MIN(visit), "
    "MAX(visit), MAX(bmi) FROM patients GROUP BY hospital",
    "SELECT sex, smoker, COUNT(*) FROM patients WHERE viral_load >= 1000 OR cd4 < 200 "
    "GROUP BY sex, smoker",
    "SELECT COUNT(*) FROM patients WHERE regimen IN ('A', 'C') AND NOT (age <= 50) "
    "AND bmi IS NOT NULL",
    "SELECT COUNT(*), SUM(age) FROM patients WHERE visit >= '2020-01-01' AND visit < '2021-06-30' "
    "OR age IS NULL",
    "SELECT regimen, COUNT(*) AS n FROM patients GROUP BY regimen HAVING COUNT(*) > 50 "
    "ORDER BY n DESC LIMIT 3",
    "SELECT p.sex, COUNT(*), AVG(l.hba1c), MAX(l.ldl), MIN(p.age) FROM patients p "
    "JOIN labs l ON p.patient_id = l.patient_id WHERE p.age > 50 GROUP BY p.sex",
    "SELECT COUNT(*) FROM patients WHERE age <> 60 AND viral_load NOT IN (0, 100) AND bmi > 30.5",
    "SELECT COUNT(cd4), SUM(cd4), MIN(bmi) FROM patients WHERE hospital = 'hospital-2' "
    "AND NOT smoker AND bmi <= 25.0",
    "SELECT COUNT(*) FROM patients WHERE NOT (smoker OR sex <> 'M') AND cd4 BETWEEN 200 AND 650",
]


@pytest.mark.parametrize("sql", QUERIES)
def test_matches_duckdb(cohort: Cohort, sql: str) -> None:
    env, con, owner = cohort
    got = run_query(env, sql, signer=owner, min_group=1)
    want = [list(r) for r in con.execute(sql).fetchall()]
    ordered = "ORDER BY" in sql
    rows = got["rows"] if ordered else sorted(got["rows"], key=repr)
    want = want if ordered else sorted(want, key=lambda r: repr([_norm(v) for v in r]))
    if not ordered:
        rows = sorted(got["rows"], key=lambda r: repr([_norm(v) for v in r]))
    assert len(rows) == len(want), (rows, want)
    for a, b in zip(rows, want, strict=True):
        assert all(_same(x, y) for x, y in zip(a, b, strict=True)), (a, b)


def test_small_groups_suppressed_inside(cohort: Cohort) -> None:
    env, con, owner = cohort
    sql = "SELECT regimen, COUNT(*) FROM patients WHERE age > 85 GROUP BY regimen"
    want = {r[0]: r[1] for r in con.execute(sql).fetchall()}
    got = run_query(env, sql, signer=owner, min_group=5)
    shown = {r[0]: r[1] for r in got["rows"]}
    assert shown == {k: v for k, v in want.items() if v >= 5}
    assert got["suppressed_groups"] >= sum(1 for v in want.values() if v < 5)
    assert got["privacy"] is None


def test_unsupported_construct_is_named(cohort: Cohort) -> None:
    env, _, owner = cohort
    with pytest.raises(UnsupportedError, match="comparison of two columns"):
        run_query(env, "SELECT COUNT(*) FROM patients WHERE age < cd4", signer=owner)
