"""A hospital that uploads shares of invalid rows cannot move a DP statistic.

Real custodian processes: each table gets one honest chunk and one chunk whose shares
were tampered with before upload (an age far outside its bounds with a consistent
square, a "bit" of 7, a digit-encoded value above the column's maximum).  The
custodians' validation job finds each, every custodian records it, and DP releases
of the table are refused; the honest table is released.  A patched client that skips
validation, or a validation job that leaves a column out, is refused by every node.
"""

from __future__ import annotations

import copy
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from tessera.dp import Policy
from tessera.errors import PolicyError
from tessera.samples.cohort import write_cohort
from tessera.tables import encode
from tessera.workflows import nodes as node_client
from tessera.workflows import tables as table_flow
from tessera.workflows.environment import init_environment
from tessera.workflows.nodes import ensure_nodes, sign_job, stop_nodes
from tessera.workflows.people import Signer, unlock
from tessera.workflows.policies import catalog_bounds, set_policy
from tessera.workflows.query import run_sql
from tessera.workflows.validation import chunk_states, validate_table

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("chunk_validation")]

PASS = b"validation test passphrase"
Tamper = Callable[[dict[str, Any]], None]


def big_age(parts: dict[str, Any]) -> None:
    parts["age.val"][0] = 100_000  # the thermometer still says a valid age
    parts["age.sq"][0] = 100_000**2


def bad_bit(parts: dict[str, Any]) -> None:
    parts["smoker.valid"][1] = 7


def above_max(parts: dict[str, Any]) -> None:
    # viral_load is digit-encoded (0..1,000,000 in 5 base-16 digits): all digits 15
    # is 1,048,575, a valid digit thermometer but above the column's maximum
    value = 16**5 - 1
    for j in range(5):
        parts[f"viral_load.th{j}"][2, :] = 1
    parts["viral_load.valid"][2] = 1
    parts["viral_load.val"][2] = value
    parts["viral_load.sq"][2] = value * value


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("validation")
    paths = write_cohort(base / "data", 90, hospitals=2, seed=11)
    schema = base / "data" / "patients.schema.yaml"
    env = init_environment(base / "home", nodes=3, passphrase=PASS)
    owner = unlock(env, "owner", PASS, record=False)
    tampers: dict[str, Tamper | None] = {
        "honest": None,
        "ages": big_age,
        "bits": bad_bit,
        "digits": above_max,
    }
    real = table_flow.encode_rows
    try:
        for table, tamper in tampers.items():
            table_flow.import_csv(env, paths[0], table, schema_path=schema, hospital="good")

            def tampered(*args: Any, _t: Tamper | None = tamper, **kw: Any) -> Any:
                encoded = real(*args, **kw)
                if _t is not None:
                    parts = {k: np.array(v, copy=True) for k, v in encoded.parts.items()}
                    _t(parts)
                    encoded = encode.Encoded(encoded.rows, parts, encoded.keys, encoded.errors)
                return encoded

            table_flow.encode_rows = tampered  # type: ignore[assignment]
            try:
                table_flow.import_csv(env, paths[1], table, schema_path=schema, hospital="bad")
            finally:
                table_flow.encode_rows = real
            bounds, _ = catalog_bounds(env, table)
            set_policy(env, table, Policy.dp(total_epsilon=50.0, bounds=bounds), steward=owner)
        yield {"env": env, "owner": owner}
    finally:
        table_flow.encode_rows = real
        stop_nodes(env)


def test_patched_client_skipping_validation_is_refused(world: dict[str, Any]) -> None:
    env, owner = world["env"], world["owner"]
    seen: list[dict[str, Any]] = []
    real = node_client.sign_job

    def keep(job: dict[str, Any], signer: Signer) -> dict[str, Any]:
        envelope = real(job, signer)
        seen.append(copy.deepcopy(envelope))
        return envelope

    node_client.sign_job = keep  # type: ignore[assignment]
    try:
        run_sql(env, "SELECT COUNT(*) FROM honest", signer=owner)
    finally:
        node_client.sign_job = real
    job = copy.deepcopy(seen[-1]["job"])
    job["inputs"][0]["table"] = "ages"  # never validated: the client skipped it
    job["inputs"][0].pop("chunks", None)
    clients = ensure_nodes(env)
    try:
        for client in clients.values():
            job.update(job_id=secrets.token_hex(16), issued_at=int(time.time()))
            with pytest.raises(PolicyError, match="not validated yet"):
                client.request("POST", "/v1/jobs", json=sign_job(job, owner))
    finally:
        for client in clients.values():
            client.close()


def test_validation_job_must_cover_every_column(world: dict[str, Any]) -> None:
    env, owner = world["env"], world["owner"]
    states = chunk_states(env, "bits")
    manifest = table_flow.Catalog(env.home).get("bits")
    columns = [c for c in manifest["columns"] if c["name"] != "smoker"]  # the bad one left out
    parts = sorted(
        f"{c['name']}.{p}" for c in columns if c["kind"] != "pseudonym" for p in c["parts"]
    )
    inputs = [{"alias": "t", "table": "bits", "parts": parts, "chunks": sorted(states)}]
    with pytest.raises(PolicyError, match="every custodian: the validate job does not check"):
        node_client.run_job(
            env,
            "validate",
            inputs,
            {"columns": columns, "alias": "t", "prime": 2**61 - 1},
            prime=2**61 - 1,
            signer=owner,
        )
    assert set(chunk_states(env, "bits").values()) == {None}


@pytest.mark.parametrize("table", ["ages", "bits", "digits"])
def test_invalid_chunks_are_found_and_refused(world: dict[str, Any], table: str) -> None:
    env, owner = world["env"], world["owner"]
    outcome = validate_table(env, table, owner)
    assert len(outcome["failed"]) == 1 and len(outcome["valid"]) == 1, outcome
    with pytest.raises(PolicyError, match=r"from bad .*failed the custodians. validation"):
        run_sql(env, f"SELECT COUNT(*), SUM(age) FROM {table}", signer=owner)


def test_honest_table_is_validated_and_released(world: dict[str, Any]) -> None:
    env, owner = world["env"], world["owner"]
    result = run_sql(env, "SELECT COUNT(*), AVG(age) FROM honest", signer=owner)
    assert result["privacy"] is not None
    assert set(chunk_states(env, "honest").values()) == {True}


def test_cli_validate_names_the_failed_chunk(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tessera.cli.main import main

    monkeypatch.setenv("TESSERA_PASSPHRASE", PASS.decode())
    home = ["--home", str(world["env"].home), "--as", "owner"]
    assert main(["table", "validate", "honest", *home]) == 0
    assert "2 chunk(s) valid, 0 failed" in capsys.readouterr().out
    assert main(["table", "validate", "digits", *home]) == 1
    captured = capsys.readouterr()
    assert "1 chunk(s) valid, 1 failed" in captured.out
    assert "do not encode valid rows" in captured.err
