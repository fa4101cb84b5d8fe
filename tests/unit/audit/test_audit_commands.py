"""``tessera audit`` through the CLI entry function, and the audit workflows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tessera.cli.main import main
from tessera.workflows import audit as flow


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_record_verify_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = str(tmp_path / "env")
    for user in ("alice", "bob"):
        code, out, _ = _run(
            capsys,
            "audit",
            "record",
            "--home",
            home,
            "--action",
            "login",
            "--user",
            user,
            "--address",
            "10.1.1.1",
            "--detail",
            "attempt=1",
            "--json",
        )
        assert code == 0 and json.loads(out)["head"]["origin"] == "gateway"
    code, out, _ = _run(capsys, "audit", "verify", "--home", home, "--json")
    assert code == 0
    assert json.loads(out) == {
        "ok": True,
        "entries": 2,
        "first_bad": None,
        "problem": None,
        "heads": 2,
        "signed_size": 2,
        "unsigned": 0,
        "custodians": {"checked": [], "unreachable": None, "problems": [], "no_custodians": True},
        "offline": False,
    }
    target = tmp_path / "bundle.json"
    code, _, _ = _run(
        capsys, "audit", "export", "--home", home, "--format", "fhir", "--out", str(target)
    )
    assert code == 0
    bundle = json.loads(target.read_text())
    # verify recorded itself (DICOM 110101 Audit Log Used)
    assert [e["resource"]["subtype"][-1]["code"] for e in bundle["entry"]] == [
        "login",
        "login",
        "audit.verify",
    ]
    code, out, _ = _run(capsys, "audit", "export", "--home", home)
    assert code == 0 and json.loads(out)["resourceType"] == "Bundle"
    code, out, _ = _run(capsys, "audit", "head", "--home", home, "--json")
    assert json.loads(out)["size"] == 3


def test_verify_names_the_tampered_entry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "env"
    for i in range(5):
        _run(capsys, "audit", "record", "--home", str(home), "--action", "query", "--user", f"u{i}")
    records = home / "audit" / "records.jsonl"
    lines = records.read_bytes().splitlines(keepends=True)
    lines[3] = lines[3].replace(b'"u3"', b'"u9"')
    records.write_bytes(b"".join(lines))
    code, out, _ = _run(capsys, "audit", "verify", "--home", str(home), "--json")
    assert code == 1
    doc = json.loads(out)
    assert doc["ok"] is False and doc["first_bad"] == 3 and doc["entries"] == 5
    code, out, _ = _run(capsys, "audit", "verify", "--home", str(home))
    assert code == 1 and "first bad entry 3" in out


def test_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = str(tmp_path / "env")
    code, _, err = _run(capsys, "audit", "verify", "--home", home)
    assert code == 1 and "no audit log" in err
    code, _, err = _run(
        capsys, "audit", "record", "--home", home, "--action", "x", "--outcome", "meh"
    )
    assert code == 2 and "--outcome" in err
    code, _, err = _run(
        capsys, "audit", "record", "--home", home, "--action", "x", "--detail", "nokey"
    )
    assert code == 2
    code, _, err = _run(capsys, "audit", "export", "--home", home, "--format", "csv")
    assert code == 2


def test_nodes_cross_check_and_node_tampering(tmp_path: Path) -> None:
    from tessera.core.audit_sink import AuditEvent

    home = tmp_path / "env"
    flow.record(home, [AuditEvent("login", user="a")])
    for node in (1, 2, 3):
        log = flow.node_log(home, node)
        log.append([AuditEvent("fragment.store", source=f"node-{node}", entity="o1")])
    assert flow.node_ids(home) == [1, 2, 3]
    results = flow.cross_check(home)
    assert len(results) == 12 and all(r.ok for r in results)
    # node 2 grows honestly: still consistent
    flow.node_log(home, 2).append([AuditEvent("fragment.fetch", entity="o1")])
    assert all(r.ok for r in flow.cross_check(home))
    # node 3 rewrites its history and re-signs it with its own key: others notice
    folder = flow.log_folder(home, 3)
    for name in ("records.jsonl", "leaves.bin", "heads.jsonl"):
        (folder / name).write_bytes(b"")
    log3 = flow.node_log(home, 3)
    log3.append([AuditEvent("fragment.store", source="node-3", entity="forged")])
    log3.append([AuditEvent("fragment.store", source="node-3", entity="forged2")])
    bad = [r for r in flow.cross_check(home) if not r.ok]
    assert {r.origin for r in bad} == {"node-3"} and len(bad) == 3
    # ... and its own verify fails against the witnessed heads, and is recorded
    report = flow.verify_log(home, node=3)
    assert not report.ok and report.first_bad == 0
    gw = list(flow.gateway_log(home).events())
    assert gw[-1][1].action == "audit.verify" and gw[-1][1].outcome == "failure"
