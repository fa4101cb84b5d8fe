"""Who may use the mount, and one audit event per request: the outermost WSGI layer of
``tessera vault mount``.

* **Transport.** Credentials are accepted only over TLS, or from a loopback address; a
  plain-HTTP request from anywhere else is refused (403) without a challenge, so no
  client is asked to send its token in the clear.
* **Sign-in.** HTTP Basic with a gateway user's name and API token (``tessera user
  add``), checked as the gateway checks tokens (SHA-256 in constant time, accepted
  tokens cached until ``users.json`` changes) and the name compared as well.  A request
  without credentials gets the challenge (401) and is no sign-in attempt; wrong ones are
  a ``login`` failure in the audit log and count toward the gateway's lockout (per
  address and per token; 429 with ``Retry-After`` while locked out; floods are digested
  into one event per window, as the gateway does).
* **Grants** (the gateway's): a ``steward`` reads (the gateway lists the vault to
  stewards only); writing needs the vault owner's key: the mount holds it when the person
  who started it unlocked it (then every steward may write, and the audit log names who
  did), or the vault's key is a gateway user's, whose token unlocks it for each write
  (then only that user writes, as with the console's upload).  ``--read-only`` refuses
  every write, locks included.
* **Audit.** Every request of a signed-in user is one event, recorded before the last
  byte of the answer leaves: ``vault.get`` (with ``bytes`` sent), ``vault.put``,
  ``vault.rm``, ``vault.ls`` (PROPFIND, HEAD), ``vault.mkdir``, ``vault.copy``,
  ``vault.move``, ``vault.lock`` ..., the file's vault name as the entity, the user,
  role, address and outcome; a file the stores lost is ``error=vault_lost``, which the
  monitor raises an alert on.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tessera.config import Environment
from tessera.core.audit_sink import Action, AuditEvent, DetailValue
from tessera.errors import (
    AuthenticationError,
    ForbiddenError,
    IntegrityError,
    NotFoundError,
    TesseraError,
    TooManyAttemptsError,
)
from tessera.server.cache import Tokens
from tessera.server.dav.answer import (
    METHODS,
    check_request,
    destination_path,
    plain_response,
    request_path,
)
from tessera.server.dav.provider import ERROR_KEY, SIGNER_KEY, status_of
from tessera.server.journal import Journal
from tessera.server.throttle import Digest, Throttle, account_key, address_key
from tessera.vault import VaultLostError
from tessera.workflows.audit_cli import CommandCall, command_event, outcome_of
from tessera.workflows.people import unlock
from tessera.workflows.users import User, list_users
from tessera.workflows.vault_dav import ReadOnlyError, is_loopback

__all__ = ["CLIENT", "READ_METHODS", "REALM", "Gate", "Grants"]

CLIENT = "tessera-webdav"
REALM = "Tessera vault"
READ_METHODS = frozenset({"OPTIONS", "GET", "HEAD", "PROPFIND"})
#: The longest token looked at (tokens are 43 characters).
TOKEN_MAX = 256
_VERBS = {
    "GET": "get",
    "HEAD": "ls",
    "PROPFIND": "ls",
    "OPTIONS": "options",
    "PUT": "put",
    "DELETE": "rm",
    "MKCOL": "mkdir",
    "COPY": "copy",
    "MOVE": "move",
    "PROPPATCH": "proppatch",
    "LOCK": "lock",
    "UNLOCK": "unlock",
}
_ACCESS = logging.getLogger("tessera.vault.access")


@dataclass(frozen=True)
class Grants:
    """Who may write: ``read_only`` refuses all writes; ``owner_user`` (a gateway user
    whose own key signs the vault) writes with the key their token unlocks; else
    ``can_write`` says whether the mount holds the owner's key (stewards write)."""

    read_only: bool
    can_write: bool
    owner_user: str | None = None


@dataclass
class Gate:
    """The environment's users, the lockout, the audit journal and the grants."""

    env: Environment
    grants: Grants
    throttle: Throttle
    refused: Digest  # attempts refused while locked out: one event per address and window
    failures: Digest  # failed sign-ins from everywhere: individually up to a bound
    journal: Journal = field(init=False)
    tokens: Tokens = field(init=False)

    def __post_init__(self) -> None:
        self.journal = Journal(self.env.home)
        self.tokens = Tokens(self.env.home)

    @classmethod
    def create(
        cls, env: Environment, grants: Grants, *, max_failed_logins: int = 20, window_s: float = 600
    ) -> Gate:
        """A gate with the gateway's lockout settings."""
        clock = time.monotonic
        return cls(
            env=env,
            grants=grants,
            throttle=Throttle(max_failed_logins, window_s, clock),
            refused=Digest(window_s, clock),
            failures=Digest(window_s, clock, free=10 * max_failed_logins),
        )

    @property
    def home(self) -> Path:
        return self.env.home

    def wrap(self, app: Callable[..., Any]) -> Callable[..., Any]:
        """``app`` behind this gate (a WSGI application)."""

        def gated(environ: dict[str, Any], start_response: Any) -> Any:
            answer = self(app, environ, start_response)
            return _bodiless(answer) if environ.get("REQUEST_METHOD") == "HEAD" else answer

        return gated

    # -- the request ---------------------------------------------------------------
    def __call__(self, app: Callable[..., Any], environ: dict[str, Any], start: Any) -> Any:
        started = time.perf_counter()
        start_response = _hardened(start)
        address = str(environ.get("REMOTE_ADDR", ""))
        secure = environ.get("wsgi.url_scheme") == "https"
        credentials = _basic(environ.get("HTTP_AUTHORIZATION"))
        if not secure and not is_loopback(address):
            if credentials is not None:
                self._login_failure(address, credentials[0], "cleartext")
            return plain_response(
                start_response, 403, "sign-in needs TLS (https) from anywhere but this host"
            )
        if credentials is None:
            return self._challenge(start_response, "a user name and API token are needed")
        name, token = credentials
        keys = [address_key(address), account_key(token)]
        wait = self.throttle.wait_s(*keys)
        if wait > 0:
            self._login_failure(address, name, "throttled")
            error = TooManyAttemptsError(
                f"too many failed sign-ins; try again in {math.ceil(wait)} s"
            )
            return plain_response(
                start_response, 429, str(error), [("Retry-After", str(math.ceil(wait)))]
            )
        user = self._user(name, token)
        if user is None:
            self.throttle.failed(*keys)
            self._login_failure(address, name, "bad credentials")
            return self._challenge(start_response, "unknown user name or token")
        environ["wsgidav.auth.user_name"] = user.name
        environ["wsgidav.auth.realm"] = REALM
        request = _Request(self, environ, user, address, started)
        try:
            check_request(environ)
            self._grant(environ, user, token)
        except TesseraError as exc:
            environ[ERROR_KEY] = exc
            status = status_of(exc)
            headers = [("Allow", ", ".join(sorted(METHODS)))] if status in (405, 501) else []
            answer = plain_response(request.start(start_response), status, str(exc), headers)
            return request.finish(answer)
        return request.finish(app(environ, request.start(start_response)))

    def _user(self, name: str, token: str) -> User | None:
        if not 0 < len(token) <= TOKEN_MAX:
            return None
        user = self.tokens.cached(token) or self.tokens.authenticate(token)
        if user is None or not hmac.compare_digest(user.name.encode(), name.encode()):
            return None
        return user

    def _grant(self, environ: dict[str, Any], user: User, token: str) -> None:
        """Refuse what ``user`` may not do; for a write, the key it signs with."""
        if user.role != "steward":
            raise ForbiddenError(f"role {user.role!r} may not use the vault (steward only)")
        method = str(environ.get("REQUEST_METHOD"))
        if method in READ_METHODS:
            return
        grants = self.grants
        if grants.read_only:
            raise ReadOnlyError("this mount is read-only (tessera vault mount --read-only)")
        if grants.owner_user is not None:
            if user.name != grants.owner_user:
                raise ForbiddenError(
                    f"only the vault's owner ({grants.owner_user}) may write to it"
                )
            try:
                signer = unlock(self.env, user.name, token.encode(), record=False, gateway=True)
            except (NotFoundError, IntegrityError) as exc:
                raise ForbiddenError(f"the owner's key cannot be used: {exc}") from None
            environ[SIGNER_KEY] = signer.key
            return
        if not grants.can_write:
            raise ReadOnlyError("this mount cannot write (started without the owner's key)")

    def _challenge(self, start_response: Any, text: str) -> list[bytes]:
        header = ("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"')
        return plain_response(start_response, 401, text, [header])

    def _login_failure(self, address: str, name: str, reason: str) -> None:
        """A ``login`` failure event, unless it is one of a flood (then counted)."""
        digest, key = (self.refused, address) if reason == "throttled" else (self.failures, "")
        count = digest.note(key)
        if count is None:
            return
        detail: dict[str, DetailValue] = {"method": "basic", "reason": reason}
        if count > 1:
            detail["count"] = count
        # The name only when it is a user's: a token typed into the name field is never kept.
        known = name if any(u.name == name for u in list_users(self.home)) else ""
        event = AuditEvent(
            Action.LOGIN,
            outcome="failure",
            user=known,
            address=address,
            client=CLIENT,
            source="gateway",
            detail=detail,
        )
        self.journal.submit(event).result()


class _Request:
    """One signed-in request: its status, its bytes, and its event once it ends."""

    def __init__(
        self, gate: Gate, environ: dict[str, Any], user: User, address: str, started: float
    ) -> None:
        self.gate, self.environ, self.user, self.address = gate, environ, user, address
        self.started = started
        # Read now: wsgidav re-encodes PATH_INFO in place once it runs.
        self.method = str(environ.get("REQUEST_METHOD", ""))
        self.name = _vault_name(environ)
        self.destination = _destination_name(environ) if self.method in ("COPY", "MOVE") else ""
        self.status = 500
        self.bytes_out = 0
        self.recorded = False

    def start(self, start_response: Any) -> Callable[..., Any]:
        def noting(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            self.status = int(status.split(" ", 1)[0])
            return start_response(status, headers, exc_info)

        return noting

    def finish(self, answer: Any) -> Iterator[bytes]:
        """``answer``'s chunks, the last one held back until the event is recorded."""
        held: bytes | None = None
        error: BaseException | None = None
        try:
            for chunk in answer:
                self.bytes_out += len(chunk)
                if held is not None:
                    yield held
                held = chunk
        except BaseException as exc:
            error = exc
            raise
        finally:
            close = getattr(answer, "close", None)
            if close is not None:
                close()
            self.record(error)
        if held is not None:
            yield held

    def record(self, error: BaseException | None) -> None:
        if self.recorded:
            return
        self.recorded = True
        environ = self.environ
        failed = environ.get(ERROR_KEY)
        if isinstance(error, GeneratorExit) or (error is not None and failed is None):
            failed = failed or _InterruptedError("the client went away before the answer ended")
        outcome, code = _outcome(self.status, failed)
        method = self.method
        verb = _VERBS.get(method, "unsupported")
        detail: dict[str, DetailValue] = {"method": method[:16], "status": self.status}
        if method == "GET":
            detail["bytes"] = self.bytes_out
        if "tessera.dav.bytes_in" in environ:
            detail["bytes"] = int(environ["tessera.dav.bytes_in"])
        if method in ("COPY", "MOVE"):
            detail["destination"] = self.destination
        if isinstance(failed, VaultLostError):
            detail["reason"] = "vault-lost"
        event = command_event(
            CommandCall(("vault", verb), {"name": self.name}),
            outcome,
            code,
            user=self.user.name,
            extra=detail,
        )
        event = replace(event, role=self.user.role, address=self.address, client=CLIENT)
        try:
            self.gate.journal.submit(event).result()
        finally:
            self._log()

    def _log(self) -> None:
        if not _ACCESS.isEnabledFor(logging.INFO):
            return
        path = "/" + self.name
        _ACCESS.info(
            "%s %s %s %s %s %d %.1f ms",
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            _printable(self.address),
            _printable(self.user.name, 64),
            _printable(self.method or "-", 16),
            _printable(path),
            self.status,
            1000 * (time.perf_counter() - self.started),
        )


class _InterruptedError(TesseraError):
    code = "interrupted"


def _outcome(status: int, error: Any) -> tuple[str, str]:
    if isinstance(error, TesseraError):
        return outcome_of(error) or ("failure", error.code)
    if status < 400:
        return "success", ""
    if status == 403:
        return "denied", "forbidden"
    if status == 404:
        return "not_found", NotFoundError.code
    if status == 401:
        return "failure", AuthenticationError.code
    return ("error" if status >= 500 else "failure"), f"http_{status}"


def _vault_name(environ: dict[str, Any]) -> str:
    try:
        return request_path(environ).lstrip("/")
    except TesseraError:
        return ""


def _destination_name(environ: dict[str, Any]) -> str:
    try:
        return (destination_path(environ) or "").lstrip("/")
    except TesseraError:
        return ""


def _printable(text: str, limit: int = 200) -> str:
    return "".join(c if c.isprintable() else "?" for c in text[:limit])


def _basic(header: Any) -> tuple[str, str] | None:
    """(name, token) from a Basic Authorization header; None when absent or another
    scheme; ("", "") when malformed (a failed sign-in)."""
    if not header:
        return None
    scheme, _, value = str(header).partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        text = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return "", ""
    name, colon, token = text.partition(":")
    return (name, token) if colon else ("", "")


def _bodiless(answer: Any) -> Iterator[bytes]:
    """A HEAD answer: its status and headers, no body (errors write one otherwise)."""
    try:
        for _chunk in answer:
            pass
    finally:
        close = getattr(answer, "close", None)
        if close is not None:
            close()
    yield b""


def _hardened(start_response: Any) -> Callable[..., Any]:
    """Every answer says not to sniff its type and not to keep it in shared caches."""

    def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        names = {h.lower() for h, _ in headers}
        extra = [("X-Content-Type-Options", "nosniff")]
        if "cache-control" not in names:
            extra.append(("Cache-Control", "private, no-cache"))
        return start_response(status, [*headers, *extra], exc_info)

    return start
