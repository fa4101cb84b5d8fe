"""The suite-end check finds processes tied to the run's temporary folder."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

_SPEC = importlib.util.spec_from_file_location(
    "suite_conftest", Path(__file__).resolve().parents[1] / "conftest.py"
)
assert _SPEC is not None and _SPEC.loader is not None
suite = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(suite)


def test_finds_processes_by_folder_and_by_command_line(tmp_path: Path) -> None:
    root = tmp_path.resolve()
    by_cwd = subprocess.Popen(["sleep", "60"], cwd=root)
    marker = root / "marker"
    by_args = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(marker)])
    try:
        deadline = time.monotonic() + 30
        found = suite._stragglers(root)
        while not {by_cwd.pid, by_args.pid} <= found.keys() and time.monotonic() < deadline:
            time.sleep(0.05)  # until both have exec'd (a fork still shows pytest's own line)
            found = suite._stragglers(root)
        assert by_cwd.pid in found and by_args.pid in found
        assert suite._stragglers(root / "elsewhere") == {}
    finally:
        for proc in (by_cwd, by_args):
            proc.kill()
            proc.wait()
    assert by_cwd.pid not in suite._stragglers(root)  # reaped: gone
