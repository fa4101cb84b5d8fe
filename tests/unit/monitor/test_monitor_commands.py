"""``tessera monitor`` through the CLI entry function: simulate, scan, export, tampering."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tessera.cli.main import main


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_simulate_scan_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = str(tmp_path / "env")
    code, out, _ = _run(
        capsys,
        "monitor",
        "simulate",
        "--home",
        home,
        "--scenario",
        "share-harvesting",
        "--days",
        "8",
        "--users",
        "20",
        "--json",
    )
    assert code == 0
    injected = set(json.loads(out)["injected"])
    code, out, _ = _run(capsys, "monitor", "scan", "--home", home, "--json", "--no-anomaly")
    assert code == 0
    doc = json.loads(out)
    assert doc["logs"] == {"gateway": True}
    harvest = [a for a in doc["alerts"] if a["kind"] == "share-harvesting"]
    assert len(harvest) == 1 and set(harvest[0]["event_ids"]) <= injected
    assert (
        harvest[0]["severity"] == "critical"
        and "without a sanctioned job" in harvest[0]["explanation"]
    )
    assert [a["kind"] for a in doc["alerts"]] == ["share-harvesting"]
    stix = tmp_path / "alerts.stix.json"
    code, out, _ = _run(
        capsys, "monitor", "export", "--home", home, "--stix", str(stix), "--json", "--no-anomaly"
    )
    assert code == 0 and json.loads(out)["alerts"] == 1
    assert json.loads(stix.read_text())["type"] == "bundle"
    code, out, _ = _run(capsys, "monitor", "scan", "--home", home)
    assert code == 0 and "[CRITICAL] Fragment (share) harvesting" in out


def test_tampered_log_becomes_an_alert(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "env"
    for i in range(3):
        _run(capsys, "audit", "record", "--home", str(home), "--action", "login", "--user", f"u{i}")
    records = home / "audit" / "records.jsonl"
    lines = records.read_bytes().splitlines(keepends=True)
    records.write_bytes(lines[0] + lines[2] + lines[1])
    code, out, _ = _run(capsys, "monitor", "scan", "--home", str(home), "--json")
    alerts = json.loads(out)["alerts"]
    assert code == 0 and alerts[0]["kind"] == "audit-tampering"
    assert "first bad entry 1" in alerts[0]["explanation"]


def test_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = str(tmp_path / "env")
    code, _, err = _run(capsys, "monitor", "simulate", "--home", home, "--scenario", "nope")
    assert code == 2 and "unknown scenario" in err
    code, _, err = _run(
        capsys,
        "monitor",
        "export",
        "--home",
        home,
        "--stix",
        str(tmp_path / "x"),
        "--taxii",
        "http://127.0.0.1:9/api1/",
    )
    assert code == 2 and "--collection" in err
    code, _, err = _run(capsys, "monitor", "scan", "--home", home, "--node", "4")
    assert code == 1 and "no audit log" in err


def test_unreadable_entry_still_gives_the_tamper_alert(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "env"
    for i in range(3):
        _run(capsys, "audit", "record", "--home", str(home), "--action", "login", "--user", f"u{i}")
    records = home / "audit" / "records.jsonl"
    lines = records.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1][:40] + b"\n"
    records.write_bytes(b"".join(lines))
    code, out, _ = _run(capsys, "monitor", "scan", "--home", str(home), "--json")
    doc = json.loads(out)
    assert code == 0 and doc["logs"] == {"gateway": False}
    assert doc["alerts"][0]["kind"] == "audit-tampering"
    assert doc["alerts"][0]["event_ids"] == ["gateway.1"]
