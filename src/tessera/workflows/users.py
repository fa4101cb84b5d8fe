"""The gateway's users: a name, a role and an API token.

Tokens are 256-bit random strings (``secrets``) shown once when the user is added; the
environment keeps only their SHA-256 in ``gateway/users.json`` (mode 0600), so a copy of
the file does not let anyone in.  Checking a token compares its hash with every user's
in constant time.

Roles (what the gateway lets them do, see :mod:`tessera.server.app`):

* ``researcher`` — list tables, run queries (charged to their own budget), see it;
* ``steward`` — also list the vault and every budget and policy;
* ``officer`` — the security officer: the audit trail, its verification, the alerts.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tessera.config import missing_environment
from tessera.errors import InputError, NotFoundError, UsageError

__all__ = ["ROLES", "User", "add_user", "authenticate", "list_users", "remove_user"]

ROLES = ("researcher", "steward", "officer")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


@dataclass(frozen=True)
class User:
    """A gateway user (never carries the token)."""

    name: str
    role: str
    created: str


def _path(home: Path) -> Path:
    return home / "gateway" / "users.json"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _load(home: Path) -> list[dict[str, Any]]:
    path = _path(home)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (ValueError, UnicodeDecodeError):
        raise InputError(f"{path} is not a gateway user list") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("users"), list):
        raise InputError(f"{path} is not a gateway user list")
    return [u for u in doc["users"] if isinstance(u, dict)]


def _save(home: Path, users: list[dict[str, Any]]) -> None:
    path = _path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump({"version": 1, "users": users}, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)


#: The roster roles a gateway user gets (stewards may also run queries in the console).
ROSTER_ROLES = {
    "researcher": ("researcher",),
    "steward": ("steward", "researcher"),
    "officer": ("officer",),
}


def add_user(home: Path, name: str, role: str, signers: Sequence[Any] = ()) -> str:
    """Add ``name`` with ``role``; return its new API token (shown once, never stored).

    The user is also a person of the custodians' roster: their signing key is made now,
    encrypted under the token (so the gateway can sign for them only while they present
    it), and the roster change is signed by ``signers`` (people.Signer; a steward or
    officer, two for a privileged role once the roster has two privileged people).
    """
    if not (home / "tessera.toml").exists():
        raise missing_environment(home)
    if not _NAME.match(name):
        raise UsageError("a user name is 1-64 letters, digits, '.', '_', '@' or '-'")
    if role not in ROLES:
        raise UsageError(f"role must be one of {', '.join(ROLES)}")
    users = _load(home)
    if any(u.get("name") == name for u in users):
        raise UsageError(f"user {name!r} exists (remove it first to issue a new token)")
    token = secrets.token_urlsafe(32)
    if signers:
        from tessera.config import Environment
        from tessera.workflows.people import add_person

        env = Environment.load(home)
        add_person(env, name, ROSTER_ROLES[role], token.encode(), signers, gateway=True)
    users.append(
        {
            "name": name,
            "role": role,
            "token_sha256": _digest(token),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
    )
    _save(home, users)
    return token


def list_users(home: Path) -> list[User]:
    """Every user, in the order they were added."""
    return [
        User(str(u.get("name")), str(u.get("role")), str(u.get("created", ""))) for u in _load(home)
    ]


def remove_user(home: Path, name: str) -> None:
    """Remove ``name``; its token stops working at once."""
    users = _load(home)
    kept = [u for u in users if u.get("name") != name]
    if len(kept) == len(users):
        raise NotFoundError(f"no gateway user {name!r}")
    _save(home, kept)


def authenticate(home: Path, token: str) -> User | None:
    """The user whose token this is, or None (every entry compared in constant time)."""
    wanted = _digest(token)
    found = None
    for u in _load(home):
        stored = str(u.get("token_sha256", ""))
        if hmac.compare_digest(stored.encode(), wanted.encode()) and u.get("role") in ROLES:
            found = User(str(u["name"]), str(u["role"]), str(u.get("created", "")))
    return found
