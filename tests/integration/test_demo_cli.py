"""`tessera demo` through the installed entry point (the full tour runs in `make demo`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).with_name("tessera")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN), "demo", *args], capture_output=True, text=True, check=False, timeout=300
    )


def test_list_names_every_step() -> None:
    done = _run("--list")
    assert done.returncode == 0
    assert "…" not in done.stdout  # titles are whole, never cut
    assert "vault      The vault\n" in done.stdout
    names = [line.split()[0] for line in done.stdout.splitlines()]
    assert names == [
        "share",
        "vault",
        "mount",
        "sql",
        "recommend",
        "dp",
        "custodians",
        "requests",
        "dicom",
        "gateway",
        "risk",
        "he",
        "consortium",
        "audit",
    ]


def test_one_step_runs_in_a_kept_folder(tmp_path: Path) -> None:
    done = _run("--step", "share", "--dir", str(tmp_path / "demo"))
    assert done.returncode == 0, done.stderr
    assert "restored.bin is identical to scan.bin" in done.stdout
    assert "damaged data in block" in done.stderr  # the corrupted fragment is named
    assert (tmp_path / "demo" / "restored.bin").exists()
    title = "Split a file 3-of-5, lose a fragment, corrupt another, restore it anyway."
    assert f"== 10-share.sh: {title}\n" in done.stdout
    last = done.stdout.rstrip("\n").splitlines()[-3:]  # the three commands to try next
    assert [line.split()[:3] for line in last] == [
        ["tessera", "init", "~/tessera-env"],
        ["tessera", "vault", "put"],
        ["tessera", "vault", "ls"],
    ]
    assert not (tmp_path / "demo" / ".config" / "tessera" / "home").exists()  # nothing inited


def test_scratch_folder_is_removed_and_errors_are_one_line(tmp_path: Path) -> None:
    done = _run("--step", "risk")
    assert done.returncode == 0, done.stderr
    folder = Path(done.stdout.splitlines()[0].split("folder ", 1)[1])
    assert not folder.exists()
    lines = done.stdout.splitlines()
    said = lines.index("== risk: the anonymised table, re-assessed (JSON for scripts)")
    assert "rows" in json.loads(lines[said + 1])  # JSON, not a Python dict
    bad = _run("--step", "nope")
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "no demo step 'nope'" in bad.stderr
