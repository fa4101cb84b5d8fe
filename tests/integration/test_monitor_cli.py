"""The real ``tessera`` entry point: an injected attack is found and exported as STIX."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

TESSERA = Path(sys.executable).with_name("tessera")


def test_scan_and_export_through_the_entry_point(tmp_path: Path) -> None:
    env = {**os.environ, "TESSERA_HOME": str(tmp_path / "env")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(TESSERA), *args], capture_output=True, text=True, env=env, timeout=300, check=False
        )

    done = run("monitor", "simulate", "--scenario", "brute-force", "--days", "8", "--users", "15")
    assert done.returncode == 0, done.stderr
    stix = tmp_path / "out.json"
    done = run("monitor", "export", "--stix", str(stix), "--no-anomaly", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["alerts"] >= 1
    kinds = {o.get("name") for o in json.loads(stix.read_text())["objects"]}
    assert "Brute-force login" in kinds
