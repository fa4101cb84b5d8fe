"""The WebDAV mount's gate, called as a WSGI application in this process: transport
(credentials only over TLS or from loopback), sign-in, grants, the checks every request
passes, and the audit events they leave."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest

from tessera.config import Environment
from tessera.errors import (
    AuthenticationError,
    ForbiddenError,
    InsufficientSharesError,
    NotFoundError,
    StorageUnavailableError,
    TooManyAttemptsError,
)
from tessera.server.dav.answer import BODY_MAX, MethodNotSupportedError, check_request
from tessera.server.dav.gate import Gate, Grants
from tessera.server.dav.provider import SIGNER_KEY, status_of
from tessera.vault import VaultLostError
from tessera.workflows.audit import gateway_log
from tessera.workflows.environment import init_environment
from tessera.workflows.users import add_user
from tessera.workflows.vault_dav import InvalidPathError, NameTooLongError
from tessera.workflows.vault_dav_put import UploadInterruptedError


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Environment, dict[str, str]]:
    env = init_environment(
        tmp_path_factory.mktemp("dav-gate") / "home", nodes=3, passphrase=b"gate test phrase"
    )
    tokens = {n: add_user(env.home, n, r) for n, r in (("sam", "steward"), ("rita", "researcher"))}
    return env, tokens


class Called:
    """The application behind the gate: records whether it ran."""

    def __init__(self) -> None:
        self.environ: dict[str, Any] | None = None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        self.environ = environ
        start_response("200 OK", [("Content-Length", "2")])
        yield b"ok"


def _call(gate: Gate, method: str = "PROPFIND", path: str = "/", **extra: str) -> tuple[Any, ...]:
    app = Called()
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc: Any = None) -> None:
        seen["status"], seen["headers"] = int(status.split()[0]), dict(headers)

    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.url_scheme": "http",
        **extra,
    }
    body = b"".join(gate.wrap(app)(environ, start_response))
    return seen["status"], seen["headers"], body, app.environ


def _basic(user: str, token: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()


def _gate(env: Environment, **grants: Any) -> Gate:
    defaults: dict[str, Any] = {"read_only": False, "can_write": True}
    return Gate.create(env, Grants(**{**defaults, **grants}), max_failed_logins=50)


def test_credentials_are_refused_in_the_clear_beyond_loopback(
    world: tuple[Environment, dict[str, str]],
) -> None:
    env, tokens = world
    gate = _gate(env)
    auth = _basic("sam", tokens["sam"])
    status, headers, body, ran = _call(gate, REMOTE_ADDR="10.0.0.7", HTTP_AUTHORIZATION=auth)
    assert status == 403 and ran is None and "www-authenticate" not in {h.lower() for h in headers}
    assert b"TLS" in body
    status, headers, _, ran = _call(gate, REMOTE_ADDR="10.0.0.7")  # no challenge either
    assert status == 403 and "WWW-Authenticate" not in headers
    status, _, body, ran = _call(
        gate, REMOTE_ADDR="10.0.0.7", HTTP_AUTHORIZATION=auth, **{"wsgi.url_scheme": "https"}
    )
    assert status == 200 and body == b"ok" and ran is not None
    gate.journal.close()
    [event] = [
        e for _, e in gateway_log(env.home).events() if e.detail.get("reason") == "cleartext"
    ]
    assert event.action == "login" and event.outcome == "failure" and event.user == "sam"


def test_sign_in_roles_and_write_grants(world: tuple[Environment, dict[str, str]]) -> None:
    env, tokens = world
    sam, rita = _basic("sam", tokens["sam"]), _basic("rita", tokens["rita"])
    gate = _gate(env)
    status, headers, _, ran = _call(gate)
    assert status == 401 and headers["WWW-Authenticate"].startswith('Basic realm="Tessera vault"')
    for bad in ("Basic %%%", "Basic " + base64.b64encode(b"no-colon").decode(), _basic("sam", "x")):
        assert _call(gate, HTTP_AUTHORIZATION=bad)[0] == 401
    assert _call(gate, HTTP_AUTHORIZATION=rita)[0] == 403
    status, _, body, ran = _call(gate, "PUT", "/a.txt", HTTP_AUTHORIZATION=sam)
    assert status == 200 and ran is not None and ran["wsgidav.auth.user_name"] == "sam"
    assert ran.get(SIGNER_KEY) is None  # the mount's own key signs (none per request)
    # the mount holds no key: reads only
    keyless = _gate(env, can_write=False)
    assert _call(keyless, "GET", "/a.txt", HTTP_AUTHORIZATION=sam)[0] == 200
    status, _, body, ran = _call(keyless, "DELETE", "/a.txt", HTTP_AUTHORIZATION=sam)
    assert status == 403 and ran is None and b"cannot write" in body
    # read-only: every write, locks included
    ro = _gate(env, read_only=True)
    for method in ("PUT", "DELETE", "MKCOL", "MOVE", "COPY", "PROPPATCH", "LOCK", "UNLOCK"):
        status, _, body, ran = _call(ro, method, "/a.txt", HTTP_AUTHORIZATION=sam)
        assert status == 403 and ran is None and b"read-only" in body, method
    # the vault's key is another gateway user's: only she writes
    owned = _gate(env, owner_user="ann")
    status, _, body, _ = _call(owned, "PUT", "/a.txt", HTTP_AUTHORIZATION=sam)
    assert status == 403 and b"owner (ann)" in body
    # HEAD answers carry no body, errors included
    status, headers, body, _ = _call(gate, "HEAD", "/a//b", HTTP_AUTHORIZATION=sam)
    assert status == 400 and body == b"" and int(headers["Content-Length"]) > 0
    for g in (gate, keyless, ro, owned):
        g.journal.close()


def _environ(method: str, path: str = "/", **extra: Any) -> dict[str, Any]:
    return {"REQUEST_METHOD": method, "PATH_INFO": path, **extra}


def test_requests_are_checked_before_wsgidav_sees_them() -> None:
    check_request(_environ("PROPFIND", "/a/b/"))
    check_request(_environ("OPTIONS", "*"))
    check_request(_environ("PUT", "/big.bin", CONTENT_LENGTH=str(10 * BODY_MAX)))
    utf8 = "/ré".encode().decode("latin-1")  # WSGI hands bytes over as latin-1
    check_request(_environ("GET", utf8))
    refused: list[tuple[dict[str, Any], type[Exception], int]] = [
        (_environ("FROB"), MethodNotSupportedError, 501),
        (_environ("TRACE"), MethodNotSupportedError, 405),
        (_environ("GET", "/\xff\xfe"), InvalidPathError, 400),
        (_environ("GET", "/a/../b"), InvalidPathError, 400),
        (_environ("GET", "/" + "x" * 300), NameTooLongError, 414),
        (_environ("COPY", "/a", HTTP_DESTINATION="http://h/%2e%2e/etc"), InvalidPathError, 400),
        (_environ("MOVE", "/a", HTTP_DESTINATION="http://h/a%2F%2Fb"), InvalidPathError, 400),
        (_environ("PROPFIND", CONTENT_LENGTH=str(BODY_MAX + 1)), Exception, 413),
    ]
    for environ, kind, status in refused:
        with pytest.raises(kind) as caught:
            check_request(environ)
        assert status_of(caught.value) == status, environ  # type: ignore[arg-type]


def test_vault_failures_map_to_statuses() -> None:
    assert status_of(AuthenticationError("x")) == 401
    assert status_of(TooManyAttemptsError("x")) == 429
    assert status_of(ForbiddenError("x")) == 403
    assert status_of(NotFoundError("x")) == 404
    assert status_of(UploadInterruptedError("x")) == 400
    assert status_of(StorageUnavailableError("x")) == 503
    assert status_of(InsufficientSharesError("x")) == 500
    assert status_of(VaultLostError("x")) == 500
