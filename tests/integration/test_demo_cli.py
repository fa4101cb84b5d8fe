"""`tessera demo` through the installed entry point (the full tour runs in `make demo`)."""

from __future__ import annotations

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
    names = [line.split()[0] for line in done.stdout.splitlines()]
    assert names == [
        "share",
        "vault",
        "sql",
        "recommend",
        "dp",
        "custodians",
        "dicom",
        "gateway",
        "risk",
        "audit",
    ]


def test_one_step_runs_in_a_kept_folder(tmp_path: Path) -> None:
    done = _run("--step", "share", "--dir", str(tmp_path / "demo"))
    assert done.returncode == 0, done.stderr
    assert "restored.bin is identical to scan.bin" in done.stdout
    assert "damaged data in block" in done.stderr  # the corrupted fragment is named
    assert (tmp_path / "demo" / "restored.bin").exists()


def test_scratch_folder_is_removed_and_errors_are_one_line(tmp_path: Path) -> None:
    done = _run("--step", "risk")
    assert done.returncode == 0, done.stderr
    folder = Path(done.stdout.splitlines()[0].split("folder ", 1)[1])
    assert not folder.exists()
    bad = _run("--step", "nope")
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "no demo step 'nope'" in bad.stderr
