"""The roster: the people a custodian trusts, their roles and their public keys.

Each custodian pins a roster (``tessera init`` installs serial 1 on every node) and
accepts a newer one only when people of the roster it already holds signed it:

* a privileged person (role ``steward`` or ``officer``) signs every change;
* giving anyone a privileged role, changing a privileged person's key, or removing a
  privileged person needs **two** distinct privileged signers, except while the
  current roster has a single privileged person (bootstrap: the environment's creator
  adds the second one);
* the serial only grows, so an old roster cannot be replayed.

Role ``researcher`` may sign query jobs; ``steward`` signs table policies; ``officer``
co-signs what weakens a policy.  One person may hold several roles.
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
    """A versioned list of people (serial 1 is the environment's first)."""

    serial: int
    people: tuple[Person, ...]

    def __post_init__(self) -> None:
        names = [p.name for p in self.people]
        if len(set(names)) != len(names):
            raise InputError("a roster names each person once")
        if self.serial < 1:
            raise InputError("a roster's serial starts at 1")

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
        return Roster(self.serial + 1, (*kept, person))

    def without(self, name: str) -> Roster:
        """The next roster, without ``name``."""
        if self.get(name) is None:
            raise InputError(f"no person {name!r} in the roster")
        return Roster(self.serial + 1, tuple(p for p in self.people if p.name != name))

    def body(self) -> dict[str, Any]:
        """The signed body."""
        return {
            "format": ROSTER_FORMAT,
            "version": 1,
            "serial": self.serial,
            "people": [p.to_dict() for p in sorted(self.people, key=lambda p: p.name)],
        }

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Roster:
        """Parse a roster body; InputError if it is not one."""
        if body.get("format") != ROSTER_FORMAT or body.get("version") != 1:
            raise InputError("not a Tessera roster (format tessera-roster version 1)")
        serial, people = body.get("serial"), body.get("people")
        if not isinstance(serial, int) or not isinstance(people, list) or len(people) > 10_000:
            raise InputError("malformed roster")
        return cls(serial, tuple(Person.from_dict(p) for p in people))


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
