"""Every ``tessera`` command leaves one AuditEvent in the environment's gateway log."""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tessera.cli.main import main
from tessera.core.audit_sink import AuditEvent, MemoryAuditSink
from tessera.errors import BudgetExhaustedError, NotFoundError, PolicyError, StorageUnavailableError
from tessera.node.service import NodeService
from tessera.workflows.audit import gateway_log, node_log
from tessera.workflows.audit_cli import CommandCall, command_event, outcome_of
from tessera.workflows.nodes import sign_job
from tessera.workflows.people import unlock

pytestmark = pytest.mark.integration

TESSERA = Path(sys.executable).with_name("tessera")
PASSPHRASE = "test passphrase"


def _events(home: Path, node: int | None = None) -> list[AuditEvent]:
    log = gateway_log(home, create=False) if node is None else node_log(home, node, create=False)
    return [event for _, event in log.events()]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("TESSERA_HOME", raising=False)
    monkeypatch.delenv("TESSERA_ROLE", raising=False)
    monkeypatch.delenv("TESSERA_PERSON", raising=False)
    monkeypatch.setenv("TESSERA_PASSPHRASE", PASSPHRASE)  # the owner's key is encrypted
    monkeypatch.chdir(tmp_path)
    home = tmp_path / "env"
    assert main(["init", str(home), "--nodes", "3"]) == 0
    return home


def test_unencrypted_key_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("TESSERA_HOME", raising=False)
    monkeypatch.setenv("TESSERA_PASSPHRASE", PASSPHRASE)
    home = tmp_path / "env"
    assert main(["init", str(home), "--nodes", "3", "--unencrypted-key"]) == 1
    assert "--unencrypted-key is no longer offered" in capsys.readouterr().err
    assert not (home / "tessera.toml").exists() and not (home / "keys").exists()
    monkeypatch.setenv("TESSERA_PASSPHRASE", "short")  # under 10 characters
    assert main(["init", str(home), "--nodes", "3"]) != 0
    assert not (home / "tessera.toml").exists()


def test_vault_commands_recorded_with_outcomes(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TESSERA_ROLE", "clinician")
    scan = tmp_path / "scan.bin"
    scan.write_bytes(os.urandom(2048))
    h = ["--home", str(home)]
    assert main(["vault", "put", str(scan), "--name", "scan-17", *h]) == 0
    assert main(["vault", "get", "scan-17", "--out", str(tmp_path / "back.bin"), *h]) == 0
    assert main(["vault", "get", "no-such", "--out", str(tmp_path / "x.bin"), *h]) == 1
    # Neither help, a group without a command nor Click's usage errors are operations.
    assert main(["vault", "--help"]) == 0
    assert main(["vault", *h]) in (0, 2)
    assert main(["vault", "put", *h]) == 2
    assert main(["vault", "get", "--oops", *h]) == 2
    monkeypatch.setenv("TESSERA_HOME", str(home))  # the home from the environment variable
    assert main(["vault", "rm", "scan-17"]) == 0
    capsys.readouterr()

    assert main(["audit", "verify", "--offline", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True

    seen = [(e.action, e.outcome, e.entity) for e in _events(home)]
    assert seen == [
        ("environment.init", "success", ""),
        ("login", "success", "keys/owner.key"),  # the owner's encrypted key unlocked
        ("vault.put", "success", "scan-17"),
        ("vault.get", "success", "scan-17"),
        ("vault.get", "not_found", "no-such"),
        ("login", "success", "keys/owner.key"),  # rm re-signs the owner's catalogue record
        ("vault.rm", "success", "scan-17"),
        ("audit.verify", "success", "gateway"),  # recorded by the audit command itself
    ]
    put, get, missing = _events(home)[2:5]
    assert put.user == getpass.getuser() and put.role == "clinician"
    assert put.address == "127.0.0.1" and put.client == "tessera-cli"
    assert put.source == "gateway" and put.entity_type == "object"
    assert dict(get.detail) == {"command": "vault get"}
    assert missing.detail["error"] == "not_found"


def test_audit_commands_are_not_recorded_by_the_hook(home: Path) -> None:
    before = len(_events(home))
    assert main(["audit", "head", "--home", str(home), "--json"]) == 0
    assert (
        main(["audit", "export", "--format", "fhir", "--out", "b.json", "--home", str(home)]) == 0
    )
    assert len(_events(home)) == before


def test_query_recorded_as_a_hash_never_the_text(home: Path) -> None:
    sql = "SELECT count(*) FROM patients WHERE surname = 'Janssen'"
    assert main(["query", sql, "--home", str(home)]) == 1  # no such table: refused
    last = _events(home)[-1]
    assert last.action == "query" and last.outcome == "failure"
    assert last.entity == "patients" and last.entity_type == "table"
    assert last.detail["query_hash"] == hashlib.sha256(sql.encode()).hexdigest()
    assert last.detail["error"] == "input_error"
    assert b"Janssen" not in (home / "audit" / "records.jsonl").read_bytes()


def test_policy_change_and_read(home: Path, tmp_path: Path) -> None:
    from tessera.config import Environment
    from tessera.workflows.nodes import stop_nodes

    csv = tmp_path / "visits.csv"
    csv.write_text("age\n" + "".join(f"{20 + i}\n" for i in range(10)))
    h = ["--home", str(home)]
    dp = ["table", "policy", "visits", "--mode", "dp", "--total-epsilon", "2", *h]
    try:
        assert main(["table", "import", str(csv), "--name", "visits", *h]) == 0
        assert main([*dp, "--confirm-bounds"]) == 0  # signed by the owner, on the custodians
        assert main(["budget", "show", "--table", "visits", *h]) == 0
        assert main(["table", "policy", "visits", *h]) == 0
    finally:
        stop_nodes(Environment.load(home))
    tail = [(e.action, e.outcome, e.entity) for e in _events(home)[-4:]]
    assert tail == [
        ("login", "success", "keys/owner.key"),  # the steward's key signs the policy
        ("policy.change", "success", "visits"),
        ("budget.show", "success", "visits"),
        ("policy.show", "success", "visits"),
    ]


def test_outcomes_follow_the_error_class() -> None:
    assert outcome_of(None) == ("success", "")
    assert outcome_of(SystemExit(0)) == ("success", "")
    assert outcome_of(SystemExit(2)) is None
    assert outcome_of(SystemExit(1)) == ("failure", "exit_1")
    assert outcome_of(PolicyError("no")) == ("denied", "policy_refused")
    assert outcome_of(BudgetExhaustedError("no")) == ("denied", "budget_exhausted")
    assert outcome_of(NotFoundError("no")) == ("not_found", "not_found")
    assert outcome_of(StorageUnavailableError("down")) == ("failure", "storage_unavailable")
    assert outcome_of(OSError("disk")) == ("error", "os_error")
    assert outcome_of(RuntimeError("bug")) == ("error", "internal_error")
    event = command_event(
        CommandCall(("query",), {"sql": "SELECT 1 FROM t", "epsilon": 0.5}),
        "denied",
        "budget_exhausted",
        user="r1",
    )
    assert event.detail["reason"] == "budget" and event.detail["epsilon"] == 0.5


def test_nothing_written_outside_an_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TESSERA_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "note.txt").write_bytes(b"plain file")
    out = tmp_path / "frags"
    out.mkdir()
    assert main(["share", "split", "note.txt", "-n", "3", "-k", "2", "--out", str(out)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frags", "note.txt"]
    assert len(list(out.iterdir())) == 3


def test_unwritable_log_warns_and_keeps_the_exit_code(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (home / "audit" / "log.json").write_text("not json")
    assert main(["vault", "ls", "--home", str(home)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["tessera: warning: the audit event was not recorded (input_error)"]
    assert main(["vault", "get", "gone", "--out", "x", "--home", str(home)]) == 1
    assert "tessera: error: no file named 'gone'" in capsys.readouterr().err


def test_entry_point_records_the_os_user(home: Path) -> None:
    env = {**os.environ, "TESSERA_HOME": str(home), "TESSERA_ROLE": "steward"}
    done = subprocess.run(
        [str(TESSERA), "vault", "ls", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    last = _events(home)[-1]
    assert (last.action, last.user, last.role) == ("vault.ls", getpass.getuser(), "steward")


def _job(env: Any, **over: Any) -> dict[str, Any]:
    import secrets

    owner = unlock(env, "owner", PASSPHRASE.encode(), record=False)

    job: dict[str, Any] = {
        "version": 1,
        "type": "sql",
        "job_id": secrets.token_hex(16),
        "issued_at": int(time.time()),
        "parties": [["127.0.0.1", 1000], ["127.0.0.1", 1001], ["127.0.0.1", 1002]],
        "inputs": [{"alias": "p", "table": "patients", "parts": ["age.v"]}],
        "noise": None,
        "params": {"plan": _stub_plan()},
    }
    job.update(over)
    return sign_job(job, owner)


def test_node_records_refused_and_failed_jobs(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tessera.config import Environment

    env = Environment.load(home)
    service = NodeService(env, 2, warm=False)  # default sink: HOME/nodes/2/audit
    try:
        with pytest.raises(Exception, match="unsigned"):
            service.run_job({"job": {"job_id": "forged"}})
        envelope = _job(env)
        with pytest.raises(NotFoundError):  # no shares of 'patients' at this node
            service.run_job(envelope)
        with pytest.raises(Exception, match="replayed"):
            service.run_job(envelope)
    finally:
        service.close()
    events = _events(home, node=2)
    assert [(e.action, e.outcome, e.source) for e in events] == [
        ("mpc.job", "denied", "node-2"),
        ("mpc.job", "not_found", "node-2"),
        ("mpc.job", "denied", "node-2"),
    ]
    assert dict(events[0].detail) == {"error": "integrity_error"}  # nothing unverified kept
    job_id = envelope["job"]["job_id"]
    assert events[1].detail["job"] == job_id and events[1].detail["type"] == "sql"
    assert events[1].entity == "patients" and events[1].user == "owner"  # who signed it
    assert events[2].detail["error"] == "job_replayed"
    capsys.readouterr()
    assert main(["audit", "verify", "--node", "2", "--offline", "--json", "--home", str(home)]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True


def test_node_emits_into_a_given_sink(home: Path) -> None:
    from tessera.config import Environment

    sink = MemoryAuditSink()
    service = NodeService(Environment.load(home), 3, warm=False, audit=sink)
    try:
        with pytest.raises(Exception, match="unsigned"):
            service.run_job("not an envelope")
    finally:
        service.close()
    assert [(e.action, e.outcome) for e in sink.events] == [("mpc.job", "denied")]


def test_query_on_custodian_nodes_recorded_at_gateway_and_nodes(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real import and SQL query: the gateway and every node keep their own events."""
    from tessera.config import Environment
    from tessera.workflows.nodes import stop_nodes

    csv = tmp_path / "p.csv"
    csv.write_text("age,sex\n34,F\n51,M\n47,F\n62,M\n29,F\n70,M\n")
    h = ["--home", str(home)]
    me = [*h, "--as", "owner"]  # once a second person has a key here
    sql = "SELECT COUNT(*) FROM patients WHERE age > 30"
    try:
        assert main(["table", "import", str(csv), "--name", "patients", *h]) == 0
        capsys.readouterr()
        assert main(["query", sql, "--json", *h]) == 0  # the only person with a key here
        assert json.loads(capsys.readouterr().out)["rows"] == [[5]]
        grouped = "SELECT sex, COUNT(*) FROM patients WHERE age > 30 GROUP BY sex"
        # the custodians' default minimum group (5) cannot be lowered by the requester
        assert main(["query", grouped, "--min-group", "3", "--json", *me]) == 0
        floor = json.loads(capsys.readouterr().out)
        assert floor["rows"] == [] and floor["min_group"] == 5
        # lowering it is a weaker policy: the steward signs it, a second steward co-signs
        assert main(["person", "add", "steward2", "--role", "steward", *me]) == 0
        small = ["table", "policy", "patients", "--mode", "none", "--min-group-size", "3", *me]
        assert main(small) == 1  # one signature is not enough
        assert "co-sign" in capsys.readouterr().err
        assert main([*small, "--cosign", "steward2"]) == 0
        capsys.readouterr()
        assert main(["query", grouped, "--min-group", "3", "--json", *me]) == 0
        answer = json.loads(capsys.readouterr().out)  # F has 2 rows: suppressed
        assert answer["rows"] == [["M", 3]] and answer["suppressed_groups"] >= 1
        assert main(["query", grouped, "--json", *me]) == 0  # min group 5: all hidden
        hidden = json.loads(capsys.readouterr().out)
        assert hidden["rows"] == []
        mean = "SELECT AVG(age) FROM patients"  # no COUNT(*): no cohort size recorded
        assert main(["query", mean, "--min-group", "3", "--json", *me]) == 0
    finally:
        stop_nodes(Environment.load(home))
    events = _events(home)
    gateway = [(e.action, e.outcome, e.entity) for e in events if e.action != "login"]
    assert gateway[1:3] == [
        ("table.import", "success", "patients"),
        ("query", "success", "patients"),
    ]
    queries = [e for e in events if e.action == "query"]
    assert all(e.user == getpass.getuser() and e.outcome == "success" for e in queries)
    # the cohort size the monitor's differencing / small-cell rules read (revealed counts)
    assert [(e.detail.get("rows"), e.detail.get("suppressed_groups")) for e in queries] == [
        (5, None),
        (None, floor["suppressed_groups"]),
        (3, answer["suppressed_groups"]),
        (None, hidden["suppressed_groups"]),
        (None, None),
    ]
    # every signed command unlocked the acting person's key first: a login each
    logins = [e for e in events if e.action == "login"]
    owner, cosigner = "keys/owner.key", "keys/steward2.key"
    assert [e.entity for e in logins] == [owner] * 5 + [cosigner] + [owner] * 3
    for node in (1, 2, 3):
        job = _events(home, node)[0]
        assert (job.action, job.outcome, job.entity) == ("mpc.job", "success", "patients")
        assert job.source == f"node-{node}" and job.detail["type"] == "sql"
        assert job.user == "owner"  # the person who signed the job
        assert main(["audit", "verify", "--node", str(node), "--offline", "--json", *h]) == 0


def test_unlocking_the_owner_key_is_a_login(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = "correct horse battery staple"
    monkeypatch.delenv("TESSERA_HOME", raising=False)
    monkeypatch.setenv("TESSERA_PASSPHRASE", secret)
    home = tmp_path / "env"
    assert main(["init", str(home), "--nodes", "3"]) == 0  # the key is encrypted
    scan = tmp_path / "scan.bin"
    scan.write_bytes(os.urandom(512))
    h = ["--home", str(home)]
    monkeypatch.setenv("TESSERA_PASSPHRASE", "not the passphrase")
    assert main(["vault", "put", str(scan), "--name", "scan-1", *h]) == 1
    assert "passphrase" in capsys.readouterr().err
    monkeypatch.setenv("TESSERA_PASSPHRASE", secret)
    assert main(["vault", "put", str(scan), "--name", "scan-1", *h]) == 0
    monkeypatch.delenv("TESSERA_PASSPHRASE")
    assert main(["vault", "get", "scan-1", "--out", str(tmp_path / "back"), *h]) == 0  # no key

    events = _events(home)
    seen = [(e.action, e.outcome) for e in events]
    assert seen == [
        ("environment.init", "success"),
        ("login", "failure"),
        ("vault.put", "failure"),
        ("login", "success"),
        ("vault.put", "success"),
        ("vault.get", "success"),
    ]
    failed, ok = events[1], events[3]
    for login in (failed, ok):
        assert login.user == "owner" and login.address == "127.0.0.1"  # the person unlocked
        assert login.entity == "keys/owner.key"
        assert dict(login.detail) == {"method": "passphrase", "os_user": getpass.getuser()}
    raw = (home / "audit" / "log.json").read_bytes()
    for p in (home / "audit").rglob("*"):
        if p.is_file():
            raw += p.read_bytes()
    assert secret.encode() not in raw and b"not the passphrase" not in raw


def _stub_plan() -> dict[str, Any]:
    """A well-formed plan over 'patients p' (the job's inputs name a part it lacks)."""
    from tessera.mpc.sql import compile_sql

    tables = {"patients": {"name": "patients", "columns": [], "hospitals": []}}
    return compile_sql("SELECT COUNT(*) FROM patients p", tables).to_dict()
