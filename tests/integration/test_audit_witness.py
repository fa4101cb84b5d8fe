"""Witnessed audit, played by an attacker against real custodian nodes.

The custodians keep the largest gateway head they witnessed (in their store folders) and
``tessera audit verify`` compares the log with them: a rollback to an earlier consistent
copy, a deleted log started afresh and a forked history are each named, with the
custodian that holds the newer head; a forked head presented to a custodian is refused.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from keyscan import plain_keys

from tessera.audit import AuditLog
from tessera.config import Environment
from tessera.core.audit_sink import AuditEvent
from tessera.errors import ChainBrokenError
from tessera.workflows.audit import close_logs, load_signer, log_folder
from tessera.workflows.environment import init_environment
from tessera.workflows.nodes import ensure_nodes, stop_nodes

pytestmark = pytest.mark.integration

TESSERA = Path(sys.executable).with_name("tessera")
PASSPHRASE = "witness test passphrase"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.delenv("TESSERA_HOME", raising=False)
    home = tmp_path / "env"
    init_environment(home, nodes=3, passphrase=PASSPHRASE.encode())
    close_logs()  # this process's pending entries are signed: the commands below own the log
    try:
        yield home
    finally:
        stop_nodes(Environment.load(home))


def _tessera(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TESSERA_HOME": str(home), "TESSERA_PASSPHRASE": PASSPHRASE}
    return subprocess.run(
        [str(TESSERA), *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def _record(home: Path, count: int, tag: str) -> None:
    for i in range(count):
        done = _tessera(home, "audit", "record", "--action", "vault.get", "--user", f"{tag}{i}")
        assert done.returncode == 0, done.stderr


def _verify(home: Path) -> tuple[int, dict[str, object]]:
    done = _tessera(home, "audit", "verify", "--json")
    return done.returncode, json.loads(done.stdout)


def _cross_check(home: Path) -> int:
    done = _tessera(home, "audit", "cross-check", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads(done.stdout)
    witnessed = [c["size"] for c in doc["checks"] if c["origin"] == "gateway"]
    return max(witnessed)


def test_rollback_and_a_fresh_log_are_named(home: Path, tmp_path: Path) -> None:
    audit = log_folder(home)
    _record(home, 3, "a")
    code, doc = _verify(home)
    assert code == 0 and doc["ok"] is True, doc
    custodians = doc["custodians"]
    assert isinstance(custodians, dict) and custodians["checked"] == [1, 2, 3]
    copy = tmp_path / "copy"
    shutil.copytree(audit, copy)  # the attacker keeps an earlier, consistent state
    size_then = AuditLog(copy).size
    _record(home, 2, "b")
    witnessed = _cross_check(home)
    assert witnessed > size_then
    # every audit signing key (gateway, nodes) is sealed: none is a key in the clear
    assert len(list(home.rglob("audit/signing.key"))) == 4 and plain_keys(home) == []
    # roll back: records, leaves and heads together
    shutil.rmtree(audit)
    shutil.copytree(copy, audit)
    assert AuditLog(audit).verify().ok  # on its own, the copy is a perfectly good log
    code, doc = _verify(home)
    assert code == 1 and doc["ok"] is False
    problem = str(doc["problem"])
    assert problem.startswith(f"rolled back: custodian 1 witnessed size {witnessed} (root ")
    assert problem.endswith(f"but the log has {size_then} entries")
    text = _tessera(home, "audit", "verify")
    assert text.returncode == 1 and "TAMPERED: rolled back: custodian 1" in text.stdout
    # delete the log: the next command starts a new one under a new key
    shutil.rmtree(audit)
    _record(home, 1, "c")
    code, doc = _verify(home)
    assert code == 1
    assert str(doc["problem"]).startswith("replaced by a fresh log: custodian 1 witnessed size")
    # --offline skips the custodians, and says so (the node logs' local copies of the
    # gateway's key still catch this one)
    offline = _tessera(home, "audit", "verify", "--offline")
    assert "--offline" in offline.stderr
    assert offline.returncode == 1 and "not the trusted key" in offline.stdout


def test_a_forked_head_is_refused_and_named(home: Path, tmp_path: Path) -> None:
    audit = log_folder(home)
    _record(home, 3, "a")
    copy = tmp_path / "copy"
    shutil.copytree(audit, copy)
    _record(home, 3, "b")
    witnessed = _cross_check(home)
    # the attacker (holding the unlocked key) grows the earlier copy with other events
    fork = AuditLog(copy, signer=load_signer(copy, "gateway"))
    fork.append([AuditEvent("vault.get", user=f"x{i}") for i in range(witnessed - fork.size)])
    head = fork.latest_head()
    assert head is not None and head.size == witnessed
    env = Environment.load(home)
    clients = ensure_nodes(env)
    try:
        doc = {"head": head.to_json(), "public_key": fork.public_key.hex(), "proof": []}
        with pytest.raises(ChainBrokenError, match="not consistent"):
            clients[2].request("POST", "/v1/audit/witness", json=doc)
    finally:
        for client in clients.values():
            client.close()
    shutil.rmtree(audit)
    shutil.copytree(copy, audit)
    code, report = _verify(home)
    assert code == 1
    problem = str(report["problem"])
    assert problem.startswith(f"forked: custodian 1 witnessed size {witnessed} (root ")
    assert f"but the log's first {witnessed} entries have root" in problem


def _held_sizes(home: Path) -> dict[int, int]:
    clients = ensure_nodes(Environment.load(home))
    try:
        out = {}
        for i, client in clients.items():
            heads = client.request("GET", "/v1/audit/witness")["heads"]
            out[i] = max(
                (h["head"]["size"] for h in heads if h["head"]["origin"] == "gateway"), default=0
            )
        return out
    finally:
        for client in clients.values():
            client.close()


def test_custodians_witness_at_each_job_and_refuse_a_rolled_back_log(
    home: Path, tmp_path: Path
) -> None:
    csv = tmp_path / "p.csv"
    csv.write_text("age,sex\n34,F\n51,M\n47,F\n62,M\n29,F\n70,M\n")
    done = _tessera(home, "table", "import", str(csv), "--name", "patients")
    assert done.returncode == 0, done.stderr
    sql = "SELECT COUNT(*) FROM patients WHERE age > 30"
    copy = tmp_path / "copy"
    shutil.copytree(log_folder(home), copy)
    for _ in range(2):
        done = _tessera(home, "query", sql, "--json")
        assert done.returncode == 0, done.stderr
    # the second job saw the head the first query's command signed at its exit
    held = _held_sizes(home)
    assert set(held) == {1, 2, 3} and min(held.values()) > AuditLog(copy).size
    # a custodian's own log is witnessed by the other custodians
    done = _tessera(home, "audit", "cross-check", "--json")
    checks = json.loads(done.stdout)["checks"]
    assert done.returncode == 0 and all(c["ok"] for c in checks)
    assert {c["observer"] for c in checks if c["origin"] == "node-1"} >= {"node-2", "node-3"}
    mine = _tessera(home, "audit", "verify", "--node", "1")
    assert mine.returncode == 0 and "witnessed by custodians 2, 3" in mine.stdout, mine.stdout
    shutil.rmtree(log_folder(home))
    shutil.copytree(copy, log_folder(home))
    refused = _tessera(home, "query", sql, "--json")
    assert refused.returncode != 0
    assert "log gateway shrank from" in refused.stderr, refused.stderr
    # each node recorded its jobs (and the refusal) and signed them when it stopped
    stop_nodes(Environment.load(home))
    for node in (1, 2, 3):
        log = AuditLog(log_folder(home, node))
        outcomes = [e.outcome for _, e in log.events() if e.action == "mpc.job"]
        assert outcomes == ["success", "success", "denied"] and log.unsigned == 0
        assert log.verify().ok
