"""Issue #17 (load): ``bench/api.py --quick`` over a real gateway and three custodian
nodes: every phase runs, metadata requests all succeed, the queries beyond
``--max-queries`` are refused with 503 and Retry-After and none times out, and
nothing is left running.  No timing is asserted (the figures are the bench's)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench" / "api.py"


def _processes_under(folder: Path) -> list[str]:
    """Command lines of live processes that name ``folder`` (servers, nodes)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(folder) in cmd:
            found.append(cmd)
    return found


def test_bench_quick_runs_every_phase_and_leaves_nothing_behind(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--json", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,  # a guard against a hang, not a measurement
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    for name in ("baseline", "ours"):
        for phase in report[name].values():
            assert phase["requests"] > 0 and phase["errors"] == 0, phase
    meta, queries = report["mixed"]["metadata"], report["mixed"]["queries"]
    assert meta["requests"] > 0 and meta["errors"] == 0
    assert queries["answered"] >= 1
    assert queries["refused"] >= 1 and queries["refused_without_retry_after"] == 0
    assert queries["timeouts"] == 0 and queries["other"] == {}
    assert report["verdict"]["excess_queries_503_with_retry_after"]
    assert list(tmp_path.iterdir()) == []  # its folder removed
    assert _processes_under(tmp_path) == []


def test_serve_refuses_a_max_queries_below_one(tmp_path: Path) -> None:
    tessera = Path(sys.executable).with_name("tessera")
    proc = subprocess.run(
        [str(tessera), "serve", "--max-queries", "0", "--home", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "max-queries" in proc.stderr
