"""Nodes that commands start by themselves do not outlive their environment or their use.

A node exits within seconds when its environment folder is removed, and after
``--idle-exit`` seconds without a request; its warm party process goes with it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tessera.errors import ConfigError
from tessera.workflows import nodes as node_client
from tessera.workflows.environment import init_environment
from tessera.workflows.nodes import ensure_nodes, stop_nodes

pytestmark = pytest.mark.integration

PASS = b"lifetime test passphrase"


def _wait_exit(proc: subprocess.Popen[bytes], seconds: float) -> int | None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return proc.returncode
        time.sleep(0.2)
    return None


def test_nodes_exit_when_their_environment_is_removed(tmp_path: Path) -> None:
    env = init_environment(tmp_path / "home", nodes=3, passphrase=PASS)
    clients = ensure_nodes(env)
    for client in clients.values():
        client.close()
    procs = [p for p in node_client._CHILDREN.values() if p.poll() is None]
    mine = [p for p in procs if str(env.home) in " ".join(map(str, p.args))]  # type: ignore[arg-type]
    assert len(mine) == 3
    try:
        shutil.rmtree(env.home)
        for proc in mine:
            assert _wait_exit(proc, 20) is not None, "a node outlived its environment"
    finally:
        for proc in mine:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_idle_node_exits(tmp_path: Path) -> None:
    env = init_environment(tmp_path / "home", nodes=3, passphrase=PASS)
    argv = ["--home", str(env.home), "--id", "1", "--any-port", "--idle-exit", "2"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tessera.node", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert _wait_exit(proc, 40) == 0
        assert proc.stderr is not None
        assert b"stopping, idle for 2 s" in proc.stderr.read()
        assert not (env.home / "run" / "node-1.json").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
        stop_nodes(env)


def test_configured_idle_exit_applies_to_nodes_commands_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = init_environment(tmp_path / "home", nodes=3, passphrase=PASS)
    env.extra["node"] = {"idle_exit": 2}
    env.save()
    assert node_client.idle_exit_s(env) == 2
    clients = ensure_nodes(env)
    for client in clients.values():
        client.close()
    mine = [
        p
        for p in node_client._CHILDREN.values()
        if p.poll() is None and str(env.home) in " ".join(map(str, p.args))  # type: ignore[arg-type]
    ]
    assert len(mine) == 3
    try:
        for proc in mine:
            assert _wait_exit(proc, 40) == 0, "a node outlived its idle time"
        assert not list((env.home / "run").glob("node-*.json"))
    finally:
        stop_nodes(env)
    monkeypatch.setenv("TESSERA_NODE_IDLE_EXIT", "soon")
    with pytest.raises(ConfigError, match="idle_exit"):
        node_client.idle_exit_s(env)
    monkeypatch.setenv("TESSERA_NODE_IDLE_EXIT", "0")
    assert node_client.idle_exit_s(env) == 0
