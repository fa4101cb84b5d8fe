"""Custodian nodes as real processes over mutual TLS; the CLI end to end."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tessera.cli.main import main
from tessera.config import Environment
from tessera.errors import InputError
from tessera.keys import generate
from tessera.workflows.environment import init_environment
from tessera.workflows.nodes import ensure_nodes, sign_job, stop_nodes
from tessera.workflows.people import Signer, unlock
from tessera.workflows.tables import import_csv

pytestmark = pytest.mark.integration

TESSERA = Path(sys.executable).with_name("tessera")
PASSPHRASE = b"test passphrase"

CSV = "age,sex,smoker\n" + "".join(
    f"{20 + i % 50},{'F' if i % 3 else 'M'},{'true' if i % 4 == 0 else 'false'}\n"
    for i in range(60)
)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Environment]:
    home = tmp_path_factory.mktemp("tls") / "home"
    environment = init_environment(home, nodes=3, passphrase=PASSPHRASE)
    try:
        yield environment
    finally:
        stop_nodes(environment)


def _start(env: Environment) -> None:
    for client in ensure_nodes(env).values():
        client.close()


def _port(env: Environment, node_id: int) -> int:
    info = json.loads((env.home / "run" / f"node-{node_id}.json").read_text())
    return int(info["port"])


def test_nodes_require_client_certificates(env: Environment) -> None:
    _start(env)
    ca = ssl.create_default_context(cafile=str(env.home / "pki" / "ca.crt"))
    url = f"https://127.0.0.1:{_port(env, 1)}/v1/health"
    with pytest.raises(httpx.HTTPError), httpx.Client(verify=ca) as client:
        client.get(url).raise_for_status()  # no client certificate: handshake refused
    with pytest.raises(httpx.TransportError):  # plaintext HTTP is not served
        httpx.get(url.replace("https", "http"), timeout=3)
    ca.load_cert_chain(str(env.home / "pki" / "client.crt"), str(env.home / "pki" / "client.key"))
    with httpx.Client(verify=ca) as client:
        assert client.get(url).json()["node"] == 1


def test_unsigned_and_replayed_jobs_refused_over_https(env: Environment) -> None:
    _start(env)
    ctx = ssl.create_default_context(cafile=str(env.home / "pki" / "ca.crt"))
    ctx.load_cert_chain(str(env.home / "pki" / "client.crt"), str(env.home / "pki" / "client.key"))
    base = f"https://127.0.0.1:{_port(env, 2)}"
    job: dict[str, Any] = {
        "version": 1,
        "type": "sql",
        "job_id": os.urandom(16).hex(),
        "issued_at": int(time.time()),
        "parties": [["127.0.0.1", 1], ["127.0.0.1", 2], ["127.0.0.1", 3]],
        "inputs": [{"alias": "t", "table": "nosuch", "parts": ["age.th"]}],
        "noise": None,
        "params": {"plan": _plan("nosuch")},
    }
    owner = unlock(env, "owner", PASSPHRASE)
    with httpx.Client(base_url=base, verify=ctx, timeout=30) as client:
        r = client.post("/v1/jobs", json={"job": job})
        assert r.status_code == 403 and r.json()["error"] == "integrity_error"
        # signed under the owner's name by a key the custodians' roster does not hold
        forged = sign_job(job, Signer("owner", generate()))
        r = client.post("/v1/jobs", json=forged)
        assert r.status_code == 403 and r.json()["error"] == "integrity_error"
        signed = sign_job(job, owner)
        r = client.post("/v1/jobs", json=signed)  # signed, but the table is unknown
        assert r.status_code == 404
        r = client.post("/v1/jobs", json=signed)
        assert r.status_code == 403 and r.json()["error"] == "job_replayed"
        r = client.post("/v1/jobs", content=b"{not json")
        assert r.status_code == 400


def test_bad_csv_refused_with_lines_and_nothing_stored(env: Environment, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("age,sex\n30,F\nforty,M\n50,F,extra\n")
    schema = tmp_path / "s.yaml"
    schema.write_text(
        "columns:\n- {name: age, type: integer, min: 0, max: 120}\n"
        "- {name: sex, type: categorical, categories: [F, M]}\n"
    )
    with pytest.raises(InputError, match=r"2 invalid rows, nothing stored: line 3: column age"):
        import_csv(env, bad, "badtable", schema_path=schema)
    assert not (env.home / "tables" / "badtable.json").exists()
    report = import_csv(env, bad, "badtable", schema_path=schema, skip_invalid=True)
    assert report["rows"] == 1 and len(report["skipped"]) == 2


def test_cli_import_query_and_nodes_through_entry_point(
    env: Environment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    csv = tmp_path / "clinic-a.csv"
    csv.write_text(CSV)
    monkeypatch.setenv("TESSERA_PASSPHRASE", PASSPHRASE.decode())
    run_env = dict(os.environ, TESSERA_HOME=str(env.home))
    out = subprocess.run(
        [str(TESSERA), "table", "import", str(csv), "--name", "visits", "--json"],
        capture_output=True,
        text=True,
        env=run_env,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["rows"] == 60 and doc["hospital"] == "clinic-a" and doc["schema_written"]
    sql = "SELECT sex, COUNT(*), AVG(age) FROM visits WHERE NOT smoker GROUP BY sex"
    out = subprocess.run(
        [str(TESSERA), "query", sql, "--json"],
        capture_output=True,
        text=True,
        env=run_env,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["columns"] == ["sex", "COUNT(*)", "AVG(age)"] and result["privacy"] is None
    rows = [r for r in CSV.splitlines()[1:] if r.endswith("false")]
    want = {s: [int(r.split(",")[0]) for r in rows if r.split(",")[1] == s] for s in "FM"}
    got = {r[0]: (r[1], r[2]) for r in result["rows"]}
    for s, ages in want.items():
        assert got[s][0] == len(ages)
        assert got[s][1] == pytest.approx(sum(ages) / len(ages))
    # through main(): an unsupported construct is one line on stderr, exit 1
    assert main(["query", "SELECT age FROM visits", "--home", str(env.home)]) == 1
    assert main(["table", "ls", "--home", str(env.home), "--json"]) == 0
    assert main(["node", "status", "--home", str(env.home), "--json"]) == 0


def _plan(table: str, alias: str = "") -> dict[str, Any]:
    """A well-formed plan over a table the custodians do not hold (or without its part)."""
    from tessera.mpc.sql import compile_sql

    sql = f"SELECT COUNT(*) FROM {table}" + (f" {alias}" if alias else "")
    return compile_sql(sql, {table: {"name": table, "columns": [], "hospitals": []}}).to_dict()
