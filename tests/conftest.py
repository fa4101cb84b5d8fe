"""Suite-wide checks.

At the end of a run (on the xdist controller, after every worker finished) no process
may be left that the tests started: nothing whose command line names, or whose working
folder lies in, this run's temporary folder (nodes, MPC parties, servers, CLI children).
Stragglers are named, killed, and fail the run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import time
from pathlib import Path

import pytest

_GRACE_S = 15.0  # processes told to stop (or whose environment went) get this long
# The modules with the longest tests (a minute or so each under load): sent to the
# workers first, so that the many short tests fill in around them rather than one
# of them running alone at the end.
_LONG_FIRST = (
    "test_federation.py",
    "test_readme.py",
    "test_demo_keys.py",
    "test_secrets_hygiene.py",
    "test_gateway.py",
    "test_custodian_enforcement.py",
    "test_vault_servers.py",
    "test_vault_chaos.py",
    "test_audit_witness.py",
)


def pytest_configure(config: pytest.Config) -> None:
    """Tests never read or write the user's own configuration (the remembered home)."""
    del config
    if not os.environ.get("TESSERA_TEST_CONFIG_HOME"):
        os.environ["TESSERA_TEST_CONFIG_HOME"] = tempfile.mkdtemp(prefix="tessera-xdg-")
    os.environ["XDG_CONFIG_HOME"] = os.environ["TESSERA_TEST_CONFIG_HOME"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The long modules first (in the order above), everything else as collected."""
    rank = {name: n for n, name in enumerate(_LONG_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root + os.sep)


def _stragglers(root: Path) -> dict[int, str]:
    """pid -> command line of every process tied to ``root`` (other than this one)."""
    mine = {os.getpid(), os.getppid()}
    found: dict[int, str] = {}
    text = str(root)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        try:
            args = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state == "Z":
            continue
        if text in args or _under(cwd, text):
            found[int(entry.name)] = args.strip()[:200]
    return found


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if hasattr(session.config, "workerinput"):
        return  # an xdist worker: the controller checks once every worker is done
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is None or getattr(factory, "_basetemp", None) is None:
        return  # no test used a temporary folder
    root = factory.getbasetemp().resolve()
    deadline = time.monotonic() + _GRACE_S
    left = _stragglers(root)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = _stragglers(root)
    if not left:
        return
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = [f"tests left {len(left)} process(es) running (now killed):"]
    lines += [f"  pid {pid}: {args}" for pid, args in sorted(left.items())]
    if reporter is not None:
        reporter.write_line("\n".join(lines), red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
