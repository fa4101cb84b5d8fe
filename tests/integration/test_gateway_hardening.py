"""Issue #17 over a real ``tessera serve`` on loopback (no custodian nodes needed: every
request here is refused before any work): bad epsilons answer 422 in the one error
shape and the connection stays usable, X-Forwarded-For is ignored unless its sender is
a configured proxy, lockout by address and by token, and SIGTERM stops the server."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from gateway_fixtures import serve

from tessera.core.audit_sink import AuditEvent
from tessera.workflows import audit
from tessera.workflows.environment import init_environment
from tessera.workflows.users import add_user

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).with_name("tessera")
SECURITY_HEADERS = {  # docs/gateway.md: on every answer, errors included
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _newest(home: Path, n: int = 1) -> list[AuditEvent]:
    return [ev for _, ev in audit.gateway_log(home).tail(n)]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("hardening") / "home"
    init_environment(home, nodes=3, passphrase=b"hardening test passphrase")
    return home


@pytest.fixture(scope="module")
def token(home: Path) -> str:
    return add_user(home, "rita", "researcher")


def _stop(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    _, _ = proc.communicate(timeout=60)  # a guard against a hang, not a measurement
    return proc.returncode


@pytest.fixture
def server(home: Path) -> Iterator[str]:
    proc, url = serve(home)
    try:
        yield url
    finally:
        if proc.poll() is None:
            _stop(proc)


def _shape(resp: httpx.Response, status: int) -> None:
    assert resp.status_code == status, resp.text
    assert set(resp.json()) == {"error", "message"}
    for key, value in SECURITY_HEADERS.items():
        assert resp.headers[key] == value


@pytest.mark.parametrize("epsilon", ["1e-17", "5e-324", "1e308", "Infinity", "NaN"])
def test_bad_epsilon_answers_422_and_the_connection_lives_on(
    server: str, token: str, epsilon: str
) -> None:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    body = '{"sql": "SELECT COUNT(*) FROM t", "epsilon": ' + epsilon + "}"
    with httpx.Client(base_url=server, timeout=60) as client:
        resp = client.post("api/v1/query", content=body, headers=headers)
        _shape(resp, 422)
        assert resp.json()["error"] == "invalid_request"
        assert resp.headers.get("connection", "keep-alive") != "close"
        again = client.get("api/v1/me", headers=headers)  # same pooled connection
        assert again.status_code == 200 and again.json()["name"] == "rita"


def test_forwarded_for_is_ignored_by_default(server: str, home: Path) -> None:
    forged = {"Authorization": "Bearer wrong", "X-Forwarded-For": "203.0.113.9"}
    assert httpx.get(server + "api/v1/me", headers=forged).status_code == 401
    newest = _newest(home)[0]
    assert newest.action == "login" and newest.address == "127.0.0.1"


def test_25_wrong_tokens_from_forged_addresses_are_locked_out(home: Path, token: str) -> None:
    proc, url = serve(home)
    try:
        statuses = [
            httpx.get(
                url + "api/v1/me",
                headers={"Authorization": f"Bearer guess-{i}", "X-Forwarded-For": f"10.1.{i}.1"},
            ).status_code
            for i in range(25)
        ]
        assert statuses == [401] * 20 + [429] * 5
        locked = httpx.get(url + "api/v1/me", headers={"Authorization": f"Bearer {token}"})
        _shape(locked, 429)
        assert int(locked.headers["retry-after"]) >= 1
        # one audit event for the four refused attempts after the first (one per window)
        refused = [
            ev
            for _, ev in audit.gateway_log(home).tail(10)
            if ev.detail.get("reason") == "throttled"
        ]
        assert len(refused) == 1
    finally:
        assert _stop(proc) == 0


def test_a_trusted_proxy_is_believed_and_a_token_is_locked_everywhere(home: Path) -> None:
    proc, url = serve(home, "--trusted-proxies", "127.0.0.1", "--max-failed-logins", "3")
    try:
        for i in range(3):
            headers = {"Authorization": "Bearer stolen", "X-Forwarded-For": f"198.51.100.{i}"}
            assert httpx.get(url + "api/v1/me", headers=headers).status_code == 401
        newest = _newest(home)[0]
        assert newest.address == "198.51.100.2"  # the proxy's word, as configured
        headers = {"Authorization": "Bearer stolen", "X-Forwarded-For": "198.51.100.77"}
        assert httpx.get(url + "api/v1/me", headers=headers).status_code == 429
    finally:
        assert _stop(proc) == 0


def test_sigterm_stops_the_server(home: Path) -> None:
    proc, url = serve(home)
    assert httpx.get(url + "api/v1/health").status_code == 200
    assert _stop(proc) == 0
    assert not (home / "run" / "gateway.json").exists()


_PATCHED = """
import sys
import tessera.workflows.tables as tables
from tessera.server.__main__ import main

def spin(env):
    while True:  # the old rho_for_epsilon on a tiny epsilon: a request that never ends
        pass

def fail(env):
    raise OverflowError("int too large, secret detail")  # the old ledger on epsilon 1e308

tables.list_tables = spin if sys.argv[1] == "spin" else fail
sys.exit(main(sys.argv[2:]))
"""


def _serve_patched(home: Path, how: str) -> tuple[subprocess.Popen[str], str, Path]:
    """The gateway with ``GET /api/v1/tables`` made to spin or to fail unexpectedly."""
    log = home / f"patched-{how}.err"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", _PATCHED, how, "--home", str(home), "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().split(" on ", 1)[1].strip(), log


def test_an_unexpected_error_is_a_500_in_the_shape_and_the_connection_lives_on(
    home: Path, token: str
) -> None:
    proc, url, log = _serve_patched(home, "fail")
    try:
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, timeout=60) as client:
            resp = client.get("api/v1/tables", headers=headers)
            _shape(resp, 500)
            assert resp.json()["error"] == "internal_error" and "secret" not in resp.text
            assert client.get("api/v1/me", headers=headers).status_code == 200
    finally:
        assert _stop(proc) == 0
    assert "OverflowError" in log.read_text()  # the traceback is in the server's log only


def test_sigterm_stops_the_server_with_a_request_stuck_in_a_thread(home: Path, token: str) -> None:
    proc, url, log = _serve_patched(home, "spin")
    with pytest.raises(httpx.ReadTimeout):  # the request spins; the client gives up
        httpx.get(url + "api/v1/tables", headers={"Authorization": f"Bearer {token}"}, timeout=2)
    assert _stop(proc) == 0
    assert "still running" in log.read_text()


def test_serve_refuses_a_trusted_proxy_that_is_no_address(home: Path) -> None:
    done = subprocess.run(
        [
            str(BIN),
            "serve",
            "--port",
            "0",
            "--trusted-proxies",
            "proxy.example",
            "--home",
            str(home),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2 and "--trusted-proxies" in done.stderr
    assert not (home / "run" / "gateway.json").exists()
