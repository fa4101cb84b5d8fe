"""``tessera serve`` writes one line per request on standard error, never a secret."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from gateway_fixtures import PASSPHRASE, serve

from tessera.config import Environment
from tessera.workflows.environment import init_environment
from tessera.workflows.nodes import stop_nodes
from tessera.workflows.people import unlock
from tessera.workflows.users import add_user

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("gateway-access-log")]

LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ 127\.0\.0\.1 (\S+) (GET|POST) (\S+) (\d{3}) \d+\.\d ms$"
)


def _lines(log: Path, count: int) -> list[re.Match[str]]:
    deadline = time.monotonic() + 30
    while True:
        found = [m for m in map(LINE.match, log.read_text().splitlines()) if m]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    if proc.stdout is not None:
        proc.stdout.close()


def test_one_line_per_request_without_tokens_or_queries(tmp_path: Path) -> None:
    env = init_environment(tmp_path / "env", nodes=3, passphrase=PASSPHRASE.encode())
    try:
        _check(env.home, env)
    finally:
        stop_nodes(env)


def _check(home: Path, env: Environment) -> None:
    owner = unlock(env, "owner", PASSPHRASE.encode(), record=False)
    token = add_user(home, "alice", "researcher", [owner])
    proc, url = serve(home)
    try:
        assert httpx.get(url + "api/v1/health").status_code == 200
        me = httpx.get(url + "api/v1/me", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200
        bad = httpx.get(url + "api/v1/me?secret=s3cr3t", headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401
        log = next(home.glob("serve-*.err"))
        found = _lines(log, 3)
        seen = [(m[1], m[2], m[3], m[4]) for m in found]
        assert ("-", "GET", "/api/v1/health", "200") in seen
        assert ("alice", "GET", "/api/v1/me", "200") in seen
        assert ("-", "GET", "/api/v1/me", "401") in seen
        text = log.read_text()
        assert token not in text and "nope" not in text and "s3cr3t" not in text
    finally:
        _stop(proc)
    quiet, url = serve(home, "--no-access-log")
    try:
        assert httpx.get(url + "api/v1/health").status_code == 200
        log = sorted(home.glob("serve-*.err"))[-1]
        time.sleep(0.5)
        assert not [m for m in map(LINE.match, log.read_text().splitlines()) if m]
    finally:
        _stop(quiet)
