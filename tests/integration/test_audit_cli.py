"""The real ``tessera`` entry point: record, tamper, verify names the entry, export."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

TESSERA = Path(sys.executable).with_name("tessera")


def _tessera(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TESSERA_HOME": str(home)}
    return subprocess.run(
        [str(TESSERA), *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def test_audit_through_the_entry_point(tmp_path: Path) -> None:
    home = tmp_path / "env"
    for i in range(4):
        done = _tessera(home, "audit", "record", "--action", "vault.get", "--user", f"u{i}")
        assert done.returncode == 0, done.stderr
    ok = _tessera(home, "audit", "verify", "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["entries"] == 4
    records = home / "audit" / "records.jsonl"
    lines = records.read_bytes().splitlines(keepends=True)
    del lines[1]
    records.write_bytes(b"".join(lines))
    bad = _tessera(home, "audit", "verify", "--json")
    assert bad.returncode == 1
    doc = json.loads(bad.stdout)
    assert doc.pop("custodians")["no_custodians"] is True  # a bare log: nobody witnesses it
    assert doc == {
        "ok": False,
        "entries": 4,
        "first_bad": 1,
        "problem": "entry is out of place (deleted, inserted or reordered)",
        "heads": 5,
        "signed_size": 5,
        "unsigned": 0,
        "offline": False,
    }
    out = tmp_path / "b.json"
    exported = _tessera(home, "audit", "export", "--format", "fhir", "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    assert json.loads(out.read_text())["type"] == "collection"
