"""Chaos on real custodian processes: a node killed during a DP job, a node whose clock
is off by more than a job's freshness window.

Either way the requester gets one line and exit status 1 (no traceback), no surviving
custodian charges any budget, and the next job after the node is back runs and is
charged normally.  Every process a test starts (nodes, their MPC parties, the
``tessera`` commands) is killed at the end, and the tests check that none outlives its
node.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tessera.config import Environment
from tessera.dp import Policy
from tessera.samples.cohort import write_cohort
from tessera.workflows import nodes as node_client
from tessera.workflows.custodian import store_root
from tessera.workflows.environment import init_environment
from tessera.workflows.nodes import NodeClient, ensure_nodes, start_node, stop_nodes
from tessera.workflows.people import add_person, unlock
from tessera.workflows.policies import catalog_bounds, set_policy
from tessera.workflows.tables import import_csv
from tessera.workflows.validation import validate_table

# one worker runs the module: its tests share one environment and its node processes
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("chaos_nodes")]

PASS = b"chaos test passphrase"
SQL = "SELECT sex, COUNT(*), AVG(age) FROM patients GROUP BY sex"
TESSERA = Path(sys.executable).with_name("tessera")
SKEW_S = 1200  # 20 minutes, beyond the 5-minute freshness window


# ----- helpers ---------------------------------------------------------------------------
def _under(pid: int, root: Path) -> bool:
    """Whether process ``pid`` runs in ``root`` (its working folder) or names it."""
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    return cwd == str(root) or cwd.startswith(f"{root}{os.sep}") or str(root) in cmdline


def processes_under(root: Path) -> list[int]:
    """Live processes (not zombies) working in ``root`` or naming it on their command line:
    the nodes of an environment there, their warm and running MPC parties."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z" and _under(int(entry.name), root):
            found.append(int(entry.name))
    return found


def wait_gone(root: Path, seconds: float = 20.0) -> list[int]:
    """Wait until no process works in ``root``; those still there after ``seconds``."""
    deadline = time.monotonic() + seconds
    while (left := processes_under(root)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def kill_all(pids: list[int]) -> None:
    """SIGKILL these processes (ones this test started, directly or through a node)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def node_pid(env: Environment, node_id: int) -> int:
    info = node_client._known(env, node_id)
    assert info is not None, f"node {node_id} is not registered"
    return int(info["pid"])


def wait_serving(env: Environment, node_id: int, seconds: float = 40.0) -> None:
    """Wait until node ``node_id`` registered itself and answers its health check."""
    deadline = time.monotonic() + seconds
    host = next(n.host for n in env.nodes if n.id == node_id)
    while True:
        info = node_client._known(env, node_id)
        if info is not None:
            client = NodeClient(env, node_id, host, int(info["port"]))
            try:
                if client.healthy():
                    return
            finally:
                client.close()
        assert time.monotonic() < deadline, f"node {node_id} did not start"
        time.sleep(0.1)


def _ppid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def warm_party(node: int, seconds: float = 40.0) -> int:
    """The pid of the warm party process node process ``node`` keeps ready."""
    deadline = time.monotonic() + seconds
    while True:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or _ppid(int(entry.name)) != node:
                continue
            with contextlib.suppress(OSError):
                if b"--zygote" in (entry / "cmdline").read_bytes():
                    return int(entry.name)
        assert time.monotonic() < deadline, "the node started no warm party"
        time.sleep(0.1)


def running_job(env: Environment, node_id: int) -> bool:
    """Whether node ``node_id`` has a job folder: it admitted a job and runs it."""
    jobs = store_root(env, node_id) / "jobs"
    return jobs.is_dir() and any(p.is_dir() for p in jobs.iterdir())


def ledger(env: Environment, node_id: int) -> dict[str, Any]:
    """Node ``node_id``'s own balance of 'patients' (GET /v1/budgets on that node)."""
    info = node_client._known(env, node_id)
    assert info is not None
    host = next(n.host for n in env.nodes if n.id == node_id)
    client = NodeClient(env, node_id, host, int(info["port"]))
    try:
        rows = client.request("GET", "/v1/budgets", params={"researcher": "rita"})
    finally:
        client.close()
    return dict(next(r for r in rows if r["table"] == "patients"))


def reservations(env: Environment, node_id: int) -> list[tuple[str, str]]:
    """(state, note) of every charge in node ``node_id``'s ledger file, read directly."""
    path = store_root(env, node_id) / "budget.sqlite3"
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [(str(s), str(n)) for s, n in db.execute("SELECT state, note FROM charges")]
    finally:
        db.close()


def tessera(env: Environment, *args: str) -> subprocess.Popen[str]:
    """``tessera ARGS`` as rita, in a fresh process (the installed entry point)."""
    environ = {
        **os.environ,
        "TESSERA_HOME": str(env.home),
        "TESSERA_PASSPHRASE": PASS.decode(),
        "TESSERA_PERSON": "rita",
    }
    environ.pop("TESSERA_DEBUG", None)
    return subprocess.Popen(
        [str(TESSERA), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environ,
    )


def finish(proc: subprocess.Popen[str], seconds: float = 120.0) -> tuple[int, str, str]:
    """Wait for a ``tessera`` command: exit status, stdout, stderr (killed if it hangs)."""
    try:
        out, err = proc.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"tessera {proc.args!r} hung: {err[-2000:]}")
    return proc.returncode, out, err


def assert_one_line(err: str) -> str:
    """The error a command printed: exactly one line, no traceback."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ----- the environment -------------------------------------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """3 custodians; 'patients' under DP, granted to rita, its chunks validated."""
    base = tmp_path_factory.mktemp("chaos")
    paths = write_cohort(base / "data", 120, hospitals=1, seed=7)
    env = init_environment(base / "home", nodes=3, passphrase=PASS)
    owner = unlock(env, "owner", PASS, record=False)
    try:
        import_csv(env, paths[0], "patients", schema_path=base / "data" / "patients.schema.yaml")
        add_person(env, "rita", ["researcher"], PASS, [owner])
        bounds, _ = catalog_bounds(env, "patients")
        policy = Policy.dp(total_epsilon=20.0, default_epsilon=1.0, grants=("rita",), bounds=bounds)
        set_policy(env, "patients", policy, steward=owner)
        validate_table(env, "patients", owner)  # the jobs below are the DP queries alone
        yield {"env": env, "owner": owner}
    finally:
        stop_nodes(env)
        kill_all(wait_gone(env.home, 10))  # nothing outlives the tests


# ----- a node killed during the job ------------------------------------------------------
def test_node_killed_during_a_dp_job(world: dict[str, Any]) -> None:
    """``kill -9`` of node 3 while every custodian holds the job's reservation.

    Node 3's warm party is frozen (SIGSTOP) before the query, so the MPC cannot finish
    however slowly this test polls: node 3 hands the job to it and waits, the other
    parties wait for it.  Once every node has admitted the job, node 3 is killed; its
    party is let go only after the command ended, and must then leave on its own.
    """
    env = world["env"]
    clients = ensure_nodes(env)
    clients[3].request("GET", "/v1/mpc-port")  # a job's first step: node 3 warms a party
    for client in clients.values():
        client.close()
    before = {i: ledger(env, i) for i in (1, 2, 3)}
    victim = node_pid(env, 3)
    warm = warm_party(victim)
    os.kill(warm, signal.SIGSTOP)
    try:
        query = tessera(env, "query", SQL)
        try:
            # every node admitted the job (reserved its budget, wrote its job folder)
            while query.poll() is None and not all(running_job(env, i) for i in (1, 2, 3)):
                time.sleep(0.05)
            assert query.poll() is None, f"the query ended before the kill: {query.communicate()}"
            os.kill(victim, signal.SIGKILL)
            code, out, err = finish(query)
        finally:
            if query.poll() is None:
                query.kill()
                query.communicate()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(warm, signal.SIGCONT)
    line = assert_one_line(err)
    assert code == 1, (code, out, err)
    assert "node 3" in line, line
    # the surviving custodians refunded their reservation: nothing charged, nothing pending
    for i in (1, 2):
        now = ledger(env, i)
        assert now["spent_rho"] == before[i]["spent_rho"], (i, now, before[i])
        assert now["pending_rho"] == 0, (i, now)
    # the killed node's party did not outlive it (nor keep the MPC going)
    assert not wait_gone(store_root(env, 3)), "node 3's MPC party outlived it"
    # it left its reservation behind; it never answered, so it gives it back on restart
    assert any(state == "reserved" for state, _ in reservations(env, 3))

    start_node(env, 3)
    wait_serving(env, 3)
    restarted = ledger(env, 3)
    assert restarted["pending_rho"] == 0 and restarted["spent_rho"] == before[3]["spent_rho"]
    assert all(state != "reserved" for state, _ in reservations(env, 3))
    said = (env.home / "run" / "node-3.log").read_text(errors="replace")
    assert "was cut short when this node stopped; its budget reservation is refunded" in said

    # the next job works and is charged normally, on every custodian alike
    code, out, err = finish(tessera(env, "query", SQL, "--json"))
    assert code == 0, err
    rho = float(json.loads(out)["privacy"]["rho"])
    for i in (1, 2, 3):
        now = ledger(env, i)
        assert now["pending_rho"] == 0, (i, now)
        assert now["spent_rho"] == pytest.approx(before[i]["spent_rho"] + rho), (i, now)


# ----- a node whose clock is skewed ------------------------------------------------------
def _libfaketime() -> str | None:
    for pattern in (
        "/usr/lib/*/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
        "/usr/local/lib/faketime/libfaketime.so.1",
    ):
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    return None


@pytest.fixture
def skewed_node(world: dict[str, Any]) -> Iterator[int]:
    """Node 2 restarted with its clock 20 minutes ahead (libfaketime); its pid."""
    lib = _libfaketime()
    if lib is None:
        pytest.skip("libfaketime is not installed (apt-get install faketime)")
    env = world["env"]
    stop_nodes(env)
    environ = {
        **os.environ,
        "LD_PRELOAD": lib,
        "FAKETIME": f"+{SKEW_S}s",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
    argv = ["--home", str(env.home), "--id", "2", "--any-port", "--idle-exit", "300"]
    log = open(env.home / "run" / "node-2.skewed.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "tessera.node", *argv],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=environ,
        start_new_session=True,
    )
    try:
        wait_serving(env, 2)
        yield proc.pid
    finally:
        with_parties = processes_under(store_root(env, 2))
        stop_nodes(env)  # node 2 by its run file, the others this process started
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        log.close()
        kill_all([p for p in with_parties if p != proc.pid])


def test_clock_skew_beyond_the_window_is_refused(world: dict[str, Any], skewed_node: int) -> None:
    env = world["env"]
    for client in ensure_nodes(env).values():  # starts nodes 1 and 3 on the true clock
        client.close()
    assert node_pid(env, 2) == skewed_node
    before = {i: ledger(env, i) for i in (1, 2, 3)}

    code, out, err = finish(tessera(env, "query", SQL))
    line = assert_one_line(err)
    assert code == 1, (code, out, err)
    assert "node 2" in line and "300 s time window" in line and "clock" in line, line
    seconds = int(re.search(r"(\d+) s ", line).group(1))  # type: ignore[union-attr]
    assert SKEW_S - 120 <= seconds <= SKEW_S + 120, line  # the skew, as node 2 measured it
    for i in (1, 2, 3):
        now = ledger(env, i)
        assert now["spent_rho"] == before[i]["spent_rho"], (i, now, before[i])
        assert now["pending_rho"] == 0, (i, now)
