"""Audit use cases: where logs live in an environment, appending, verifying, cross-checks.

Layout under an environment home::

    HOME/audit/                 the gateway log (origin "gateway") + signing.key
    HOME/audit/witness/         heads of the node logs the gateway has accepted
    HOME/nodes/<i>/audit/       node i's log (origin "node-<i>") + signing.key
    HOME/nodes/<i>/audit/witness/  heads of the gateway and the other nodes node i accepted

Node services call :func:`node_log` (an ``AuditSink``) to append, and :func:`cross_check`
to publish their heads and check everyone else's.  The signing key sits next to its log,
sealed under this account's audit unlock key (:func:`unlock_key`, outside the
environment folder); the pinned public keys held by the witnesses are what make
re-signing a rewritten log with a fresh key detectable.

Logs opened here are batched: one signed head per :data:`HEAD_EVERY` entries or per
:data:`HEAD_INTERVAL_S` seconds, whichever comes first, and one when the process exits
(:func:`close_logs`, registered with ``atexit``), so one command signs one head and a
flood of requests costs its entries, not a 5.8 KB head each.  Each process keeps one
open log per folder.
"""

from __future__ import annotations

import atexit
import os
import secrets
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tessera.audit import AuditLog, TreeHead, VerifyReport, Witness
from tessera.audit.heads import MldsaSigner
from tessera.audit.keyfile import UNLOCK_SIZE, load_or_create_sealed_signer
from tessera.core.audit_sink import Action, AuditEvent
from tessera.errors import ChainBrokenError, ConfigError, NotFoundError, UsageError

__all__ = [
    "HEAD_EVERY",
    "HEAD_INTERVAL_S",
    "CrossCheck",
    "close_logs",
    "cross_check",
    "gateway_log",
    "load_signer",
    "log_folder",
    "node_ids",
    "node_log",
    "note_verify",
    "open_log",
    "record",
    "unlock_key",
    "verify_log",
]

GATEWAY = "gateway"
HEAD_EVERY = 256
HEAD_INTERVAL_S = 1.0
UNLOCK_ENV = "TESSERA_AUDIT_UNLOCK_FILE"
_OPEN: dict[Path, tuple[tuple[int, int, int, int] | None, AuditLog]] = {}
_OPEN_LOCK = threading.Lock()


def log_folder(home: Path, node: int | None = None) -> Path:
    """The folder of the gateway log (``node`` None) or of node ``node``'s log."""
    if node is None:
        return home / "audit"
    if node < 1:
        raise UsageError("node ids start at 1")
    return home / "nodes" / str(node) / "audit"


def _origin(node: int | None) -> str:
    return GATEWAY if node is None else f"node-{node}"


def unlock_file() -> Path:
    """Where this account keeps its audit unlock key: ``$TESSERA_AUDIT_UNLOCK_FILE``, else
    ``$XDG_CONFIG_HOME/tessera/audit-unlock.key`` (default ``~/.config/...``)."""
    explicit = os.environ.get(UNLOCK_ENV)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "tessera" / "audit-unlock.key"


def unlock_key() -> bytes:
    """This account's audit unlock key (32 random bytes, 0600, made on first use)."""
    path = unlock_file()
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_bytes(UNLOCK_SIZE)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key)
        try:
            os.link(tmp, path)  # never replace a key another process made meanwhile
        except FileExistsError:
            key = path.read_bytes()
        finally:
            tmp.unlink()
    if len(key) != UNLOCK_SIZE:
        raise ConfigError(f"{path} is not an audit unlock key ({UNLOCK_SIZE} bytes)")
    return key


def load_signer(folder: Path, origin: str) -> MldsaSigner:
    """The head-signing key of the log in ``folder``, unsealed (made on first use)."""
    return load_or_create_sealed_signer(folder / "signing.key", origin, unlock_key())


def _identity(folder: Path) -> tuple[int, int, int, int] | None:
    """What tells a log description apart from a replaced or rewritten one."""
    try:
        st = (folder / "log.json").stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_ctime_ns, st.st_mtime_ns, st.st_size


def _opened(folder: Path) -> AuditLog | None:
    identity = _identity(folder)
    cached = _OPEN.get(folder.resolve())
    return cached[1] if cached is not None and cached[0] == identity else None


def open_log(folder: Path, origin: str, *, create: bool = True) -> AuditLog:
    """The log in ``folder`` with its signing key (made, with the log, on first use).

    One instance per folder and process, batched (see the module notes).
    """
    with _OPEN_LOCK:
        log = _opened(folder)
        if log is not None:
            return log
        options: dict[str, Any] = {"head_every": HEAD_EVERY, "head_interval_s": HEAD_INTERVAL_S}
        if not (folder / "log.json").exists():
            if not create:
                raise NotFoundError(f"no audit log at {folder}")
            signer = load_signer(folder, origin)
            log = AuditLog.create(folder, origin, signer.public_key, signer=signer, **options)
        else:
            meta = AuditLog(folder)
            log = AuditLog(folder, signer=load_signer(folder, meta.origin), **options)
        stale = _OPEN.pop(folder.resolve(), None)
        if stale is not None:  # its key is not this log's: stop its timer, sign nothing
            stale[1].close(sign=False)
        _OPEN[folder.resolve()] = (_identity(folder), log)
        return log


def close_logs() -> None:
    """Sign what is pending in every log this process opened (run at exit)."""
    with _OPEN_LOCK:
        logs = [log for _, log in _OPEN.values()]
        _OPEN.clear()
    for log in logs:
        try:
            log.close()
        except Exception as exc:
            name = getattr(exc, "code", exc.__class__.__name__)
            print(f"tessera: warning: audit head not signed at exit ({name})", file=sys.stderr)


atexit.register(close_logs)


def gateway_log(home: Path, *, create: bool = True) -> AuditLog:
    """The gateway's audit log of environment ``home``."""
    return open_log(log_folder(home), GATEWAY, create=create)


def node_log(home: Path, node: int, *, create: bool = True) -> AuditLog:
    """Custodian node ``node``'s audit log (an AuditSink the node service emits into)."""
    return open_log(log_folder(home, node), _origin(node), create=create)


def node_ids(home: Path) -> list[int]:
    """The nodes of ``home`` that have an audit log."""
    root = home / "nodes"
    if not root.is_dir():
        return []
    return sorted(
        int(p.name)
        for p in root.iterdir()
        if p.name.isdigit() and (p / "audit" / "log.json").exists()
    )


def record(home: Path, events: Sequence[AuditEvent], *, node: int | None = None) -> TreeHead:
    """Append ``events`` to the gateway log (or node ``node``'s) under one signed head."""
    if not events:
        raise UsageError("nothing to record")
    log = gateway_log(home) if node is None else node_log(home, node)
    log.append(events)
    head = log.sign_pending()
    if head is None:
        head = log.latest_head()
    assert head is not None
    return head


def _witnessed(home: Path, origin: str) -> tuple[bytes | None, list[TreeHead]]:
    """Pinned key and every head of ``origin`` that the other parties accepted."""
    folders = [log_folder(home) / "witness"] + [
        log_folder(home, i) / "witness" for i in node_ids(home)
    ]
    heads: list[TreeHead] = []
    pinned: bytes | None = None
    for folder in folders:
        witness = Witness(folder)
        seen = witness.heads(origin)
        if seen and pinned is None:
            pinned = witness.pinned_key(origin)
        heads.extend(seen)
    return pinned, heads


def verify_log(home: Path, *, node: int | None = None, note: bool = True) -> VerifyReport:
    """Verify one log against its signed heads and the heads others witnessed locally.

    With ``note`` the check itself is recorded in the gateway log (see
    :func:`note_verify`).  The custodians' heads are compared by
    :func:`tessera.workflows.audit_witness.verify_witnessed`.
    """
    folder = log_folder(home, node)
    if not (folder / "log.json").exists():
        raise NotFoundError(f"no audit log at {folder}")
    log = AuditLog(folder)
    pinned, witnessed = _witnessed(home, log.origin)
    report = log.verify(trusted_key=pinned, witnessed=witnessed)
    if note:
        note_verify(home, node, log.origin, report, ok=report.ok)
    return report


def note_verify(
    home: Path, node: int | None, origin: str, report: VerifyReport, *, ok: bool
) -> None:
    """Record a verification in the gateway log (DICOM 110101 Audit Log Used; a failed
    node log is recorded as a failure, which the monitor turns into an audit-log
    tampering alert).  A gateway log that failed is left untouched: new entries would
    move the evidence."""
    if node is None and not ok:
        return
    detail: dict[str, str | int] = {"entries": report.entries}
    if report.first_bad is not None:
        detail["first_bad"] = report.first_bad
    event = AuditEvent(
        Action.AUDIT_VERIFY,
        outcome="success" if ok else "failure",
        user="tessera",
        source=GATEWAY,
        entity=origin,
        entity_type="log",
        detail=detail,
    )
    gateway_log(home).append([event])


@dataclass(frozen=True)
class CrossCheck:
    """One party's check of another log's newest signed head."""

    observer: str
    origin: str
    size: int
    ok: bool
    problem: str | None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "observer": self.observer,
            "origin": self.origin,
            "size": self.size,
            "ok": self.ok,
            "problem": self.problem,
        }


def cross_check(home: Path) -> list[CrossCheck]:
    """Every party (gateway, nodes) checks every other log's newest head for consistency."""
    parties: list[tuple[str, Path, AuditLog | None]] = []
    if (log_folder(home) / "log.json").exists():
        parties.append((GATEWAY, log_folder(home), gateway_log(home)))
    for i in node_ids(home):
        parties.append((_origin(i), log_folder(home, i), node_log(home, i)))
    for _, _, log in parties:
        if log is not None:
            log.sign_pending()
    results: list[CrossCheck] = []
    for observer, folder, _ in parties:
        witness = Witness(folder / "witness")
        for origin, _, log in parties:
            if origin == observer or log is None:
                continue
            head = log.latest_head()
            if head is None:
                continue
            last = witness.latest(origin)
            try:
                proof = log.consistency_proof(last.size, head.size) if last else []
                if last is not None and head.size < last.size:
                    proof = []
                witness.observe(head, log.public_key, proof)
                results.append(CrossCheck(observer, origin, head.size, True, None))
            except (ChainBrokenError, UsageError) as exc:
                results.append(CrossCheck(observer, origin, head.size, False, str(exc)))
    return results
