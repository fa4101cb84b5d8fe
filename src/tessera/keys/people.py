"""The roster: the people a custodian trusts, their roles and their public keys.

Each custodian pins a roster (``tessera init`` installs serial 1 on every node) and
accepts a newer one only when people of the roster it already holds signed it:

* a privileged person (role ``steward`` or ``officer``) signs every change;
* giving anyone a privileged role, changing a privileged person's key, or removing a
  privileged person needs **two** distinct privileged signers, except while the
  current roster has a single privileged person (bootstrap: the environment's creator
  adds the second one);
* the serial only grows, so an old roster cannot be replayed.

``reidentify_quorum`` (optional, default :data:`DEFAULT_REIDENTIFY_QUORUM`, at least 1)
is how many distinct stewards or officers must sign a re-identification request before
a custodian releases its key shares (:mod:`tessera.workflows.escrow`); lowering it is a
privileged change (two signers).

Role ``researcher`` may sign query jobs; ``steward`` signs table policies; ``officer``
co-signs what weakens a policy; stewards and officers approve re-identification.  One
person may hold several roles.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tessera.errors import InputError, PolicyError
from tessera.keys.documents import SignedDocument, verified_signers
from tessera.keys.signing import VerifyKey

__all__ = [
    "DEFAULT_REIDENTIFY_QUORUM",
    "MAX_REIDENTIFY_QUORUM",
    "PRIVILEGED",
    "ROLES",
    "ROSTER_CONTEXT",
    "Person",
    "Roster",
    "admit_roster",
    "valid_name",
]

ROSTER_CONTEXT = b"tessera-roster-v1"
ROLES = ("researcher", "steward", "officer")
PRIVILEGED = frozenset({"steward", "officer"})
ROSTER_FORMAT = "tessera-roster"
DEFAULT_REIDENTIFY_QUORUM = 2
MAX_REIDENTIFY_QUORUM = 8  # a signed document carries at most 8 signatures
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


def valid_name(name: str) -> str:
    """``name`` if it is a valid person name; InputError otherwise."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise InputError(
            f"invalid person name {str(name)[:40]!r} (letters, digits, . _ @ -; at most 64)"
        )
    return name


@dataclass(frozen=True)
class Person:
    """A person of the roster: a name, roles and an ML-DSA-65 public key."""

    name: str
    roles: frozenset[str]
    key: VerifyKey

    def __post_init__(self) -> None:
        valid_name(self.name)
        unknown = set(self.roles) - set(ROLES)
        if unknown or not self.roles:
            raise InputError(f"roles must be among {', '.join(ROLES)}")

    @property
    def privileged(self) -> bool:
        """True for stewards and officers."""
        return bool(self.roles & PRIVILEGED)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "name": self.name,
            "roles": sorted(self.roles),
            "key_id": self.key.key_id,
            "key": base64.b64encode(self.key.to_bytes()).decode("ascii"),
        }

    @classmethod
    def from_dict(cls, doc: Any) -> Person:
        """Parse one roster entry; InputError if malformed."""
        try:
            key = VerifyKey.from_bytes(base64.b64decode(doc["key"], validate=True))
            roles = doc["roles"]
            if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
                raise ValueError("roles")
            return cls(str(doc["name"]), frozenset(roles), key)
        except (KeyError, TypeError, ValueError):
            raise InputError("malformed roster entry") from None


@dataclass(frozen=True)
class Roster:
    """A versioned list of people (serial 1 is the environment's first).

    ``reidentify_quorum``: distinct stewards or officers who must sign a
    re-identification request (see :mod:`tessera.workflows.escrow`).
    """

    serial: int
    people: tuple[Person, ...]
    reidentify_quorum: int = DEFAULT_REIDENTIFY_QUORUM

    def __post_init__(self) -> None:
        names = [p.name for p in self.people]
        if len(set(names)) != len(names):
            raise InputError("a roster names each person once")
        if self.serial < 1:
            raise InputError("a roster's serial starts at 1")
        quorum = self.reidentify_quorum
        if type(quorum) is not int or not 1 <= quorum <= MAX_REIDENTIFY_QUORUM:
            raise InputError(
                f"reidentify_quorum must be an integer from 1 to {MAX_REIDENTIFY_QUORUM}"
            )

    def get(self, name: str) -> Person | None:
        """The person called ``name``, or None."""
        return next((p for p in self.people if p.name == name), None)

    def keys(self) -> dict[str, VerifyKey]:
        """Name -> public key."""
        return {p.name: p.key for p in self.people}

    def with_roles(self, *roles: str) -> list[Person]:
        """The people holding any of ``roles``."""
        return [p for p in self.people if p.roles & set(roles)]

    def replaced(self, person: Person) -> Roster:
        """The next roster, with ``person`` added or updated."""
        kept = tuple(p for p in self.people if p.name != person.name)
        return Roster(self.serial + 1, (*kept, person), self.reidentify_quorum)

    def without(self, name: str) -> Roster:
        """The next roster, without ``name``."""
        if self.get(name) is None:
            raise InputError(f"no person {name!r} in the roster")
        kept = tuple(p for p in self.people if p.name != name)
        return Roster(self.serial + 1, kept, self.reidentify_quorum)

    def with_reidentify_quorum(self, quorum: int) -> Roster:
        """The next roster, with re-identification needing ``quorum`` privileged signers."""
        return Roster(self.serial + 1, self.people, quorum)

    def body(self) -> dict[str, Any]:
        """The signed body (``reidentify_quorum`` only when it is not the default)."""
        body: dict[str, Any] = {
            "format": ROSTER_FORMAT,
            "version": 1,
            "serial": self.serial,
            "people": [p.to_dict() for p in sorted(self.people, key=lambda p: p.name)],
        }
        if self.reidentify_quorum != DEFAULT_REIDENTIFY_QUORUM:
            body["reidentify_quorum"] = self.reidentify_quorum
        return body

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Roster:
        """Parse a roster body; InputError if it is not one."""
        if body.get("format") != ROSTER_FORMAT or body.get("version") != 1:
            raise InputError("not a Tessera roster (format tessera-roster version 1)")
        serial, people = body.get("serial"), body.get("people")
        if not isinstance(serial, int) or not isinstance(people, list) or len(people) > 10_000:
            raise InputError("malformed roster")
        quorum = body.get("reidentify_quorum", DEFAULT_REIDENTIFY_QUORUM)
        return cls(serial, tuple(Person.from_dict(p) for p in people), quorum)


def _privileged_changes(current: Roster, new: Roster) -> list[str]:
    """What in ``new`` touches privileged people (needs two signers)."""
    out = []
    for person in new.people:
        old = current.get(person.name)
        gained = person.roles & PRIVILEGED - (old.roles if old else frozenset())
        if gained:
            out.append(f"{person.name} gains {', '.join(sorted(gained))}")
        elif old is not None and old.privileged and old.key != person.key:
            out.append(f"{person.name}'s key changes")
    for old in current.people:
        if old.privileged and new.get(old.name) is None:
            out.append(f"{old.name} is removed")
    if new.reidentify_quorum < current.reidentify_quorum:
        out.append(
            f"the re-identification quorum drops from {current.reidentify_quorum} "
            f"to {new.reidentify_quorum}"
        )
    return out


def _names(people: Iterable[Person]) -> set[str]:
    return {p.name for p in people}


def admit_roster(current: Roster, document: SignedDocument) -> Roster:
    """The roster in ``document`` if ``current``'s people allow it; PolicyError if not."""
    new = Roster.from_body(document.body)
    if new.serial <= current.serial:
        raise PolicyError(
            f"roster serial {new.serial} is not newer than the installed {current.serial}"
        )
    signers = verified_signers(document, current.keys(), context=ROSTER_CONTEXT)
    privileged = signers & _names(current.with_roles(*PRIVILEGED))
    if not privileged:
        raise PolicyError("the roster change is not signed by a steward or officer")
    changes = _privileged_changes(current, new)
    bootstrap = len(current.with_roles(*PRIVILEGED)) < 2
    if changes and len(privileged) < 2 and not bootstrap:
        raise PolicyError(
            f"roster change ({changes[0]}) needs a second steward's or officer's signature"
        )
    if not new.with_roles(*PRIVILEGED):
        raise PolicyError("a roster must keep at least one steward or officer")
    return new
