"""People and their keys: create, unlock, and change the custodians' roster.

Every person (a table's steward, a researcher, a security officer) has an ML-DSA-65
signing key kept at ``HOME/keys/NAME.key``, always encrypted (scrypt + AES-256-GCM)
under their passphrase, or, for a gateway user, under their API token.  Their public
key is in the roster every custodian pins (:mod:`tessera.keys.people`); a custodian
trusts a signature only from a key of its own roster, so a folder, a gateway or a
stolen requester machine grants no authority without the person's passphrase.

:func:`found_environment` makes the first person (all three roles) and pins roster
serial 1 in every custodian's folder; later changes (:func:`add_person`,
:func:`remove_person`) are signed documents each custodian checks against the roster
it already holds (two privileged signers for privileged changes).
"""

from __future__ import annotations

import contextlib
import getpass
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tessera import keys
from tessera.config import Environment
from tessera.core.audit_sink import Action, AuditEvent
from tessera.errors import ConfigError, IntegrityError, NotFoundError, PolicyError
from tessera.keys.documents import SignedDocument
from tessera.keys.people import ROSTER_CONTEXT, Person, Roster, valid_name
from tessera.workflows import audit
from tessera.workflows.audit_cli import CLIENT, LOCAL_ADDRESS
from tessera.workflows.custodian import Custodian, store_root

__all__ = [
    "MIN_PASSPHRASE",
    "Signer",
    "add_person",
    "add_person_key",
    "check_new_passphrase",
    "create_key",
    "first_roster",
    "found_environment",
    "key_path",
    "local_people",
    "publish_roster",
    "record_login",
    "remove_person",
    "require_role",
    "roster_from_nodes",
    "unlock",
]

MIN_PASSPHRASE = 10


@dataclass(frozen=True)
class Signer:
    """A person acting: their roster name and their unlocked key (kept in memory only)."""

    name: str
    key: keys.SigningKey

    def sign(self, document: SignedDocument, *, context: bytes) -> SignedDocument:
        """``document`` with this person's signature added."""
        return document.signed_by(self.name, self.key, context=context)


def check_new_passphrase(passphrase: bytes) -> bytes:
    """``passphrase`` if it is long enough to protect a key; PolicyError otherwise."""
    if len(passphrase) < MIN_PASSPHRASE:
        raise PolicyError(f"a passphrase needs at least {MIN_PASSPHRASE} characters")
    return passphrase


def key_path(env: Environment, name: str, *, gateway: bool = False) -> Path:
    """Where ``name``'s encrypted signing key lives: ``HOME/keys`` for people who use the
    command line, ``HOME/gateway/keys`` (encrypted under their API token) for gateway users."""
    folder = env.home / "gateway" / "keys" if gateway else env.home / "keys"
    return folder / f"{valid_name(name)}.key"


def local_people(env: Environment) -> list[str]:
    """The people whose keys are in this environment folder."""
    folder = env.home / "keys"
    return sorted(p.stem for p in folder.glob("*.key")) if folder.is_dir() else []


def create_key(
    env: Environment, name: str, passphrase: bytes, *, gateway: bool = False
) -> keys.SigningKey:
    """A new key for ``name``, stored encrypted under ``passphrase`` (never in the clear)."""
    path = key_path(env, name, gateway=gateway)
    if path.exists():
        raise ConfigError(f"{path} already exists; refusing to replace {name}'s key")
    key = keys.generate()
    keys.write_signing_key(path, key, passphrase=passphrase)
    keys.write_verify_key(path.with_suffix(".pub"), key.verify_key)
    return key


def record_login(env: Environment, name: str, entity: str, outcome: str) -> None:
    """One ``login`` event (unlocking ``name``'s key ``entity``) in the gateway's log:
    the person as the user, the OS user in the detail, nothing about the passphrase."""
    event = AuditEvent(
        Action.LOGIN,
        outcome=outcome,
        user=name,
        role=os.environ.get("TESSERA_ROLE", ""),
        address=LOCAL_ADDRESS,
        client=CLIENT,
        source="gateway",
        entity=entity,
        entity_type="key",
        detail={"method": "passphrase", "os_user": getpass.getuser()},
    )
    audit.record(env.home, [event])


def _login(env: Environment, name: str, outcome: str) -> None:
    with contextlib.suppress(OSError, ConfigError):
        record_login(env, name, f"keys/{name}.key", outcome)


def unlock(
    env: Environment,
    name: str,
    passphrase: bytes,
    *,
    record: bool = True,
    gateway: bool = False,
) -> Signer:
    """``name``'s key, decrypted with ``passphrase`` (IntegrityError if it is wrong).

    Each attempt is a login event in the gateway's audit log (nothing about the
    passphrase is recorded).
    """
    path = key_path(env, name, gateway=gateway)
    if not path.exists():
        if gateway:  # said to API clients: no server paths
            raise NotFoundError(f"{name} has no key on this gateway (tessera user add {name})")
        raise NotFoundError(f"no key for {name} in {path.parent}")
    try:
        key = keys.read_signing_key(path, passphrase=passphrase)
    except IntegrityError:
        if record:
            _login(env, name, "failure")
        raise IntegrityError(f"wrong passphrase for {name}'s key") from None
    if record:
        _login(env, name, "success")
    return Signer(name, key)


def first_roster(
    env: Environment, founder: str, passphrase: bytes
) -> tuple[Signer, SignedDocument]:
    """Make the first person's key (every role) and roster 1, signed by them."""
    key = create_key(env, founder, check_new_passphrase(passphrase))
    signer = Signer(founder, key)
    everything = frozenset({"researcher", "steward", "officer"})
    roster = Roster(1, (Person(founder, everything, key.verify_key),))
    return signer, signer.sign(SignedDocument(roster.body()), context=ROSTER_CONTEXT)


def found_environment(env: Environment, founder: str, passphrase: bytes) -> Signer:
    """Make the first person (every role) and pin roster 1 on every custodian's folder."""
    signer, document = first_roster(env, founder, passphrase)
    for node in env.nodes:
        custodian = Custodian(store_root(env, node.id), parties=env.n, threshold=env.mpc_threshold)
        try:
            custodian.pin_roster(document)
        finally:
            custodian.close()
    return signer


def roster_from_nodes(env: Environment) -> Roster:
    """The roster every custodian holds (ConsistencyError-like PolicyError if they differ)."""
    from tessera.workflows.nodes import broadcast

    docs = broadcast(env, "GET", "/v1/roster")
    bodies = {i: SignedDocument.from_dict(d).body for i, d in docs.items()}
    serials = {i: int(b.get("serial", 0)) for i, b in bodies.items()}
    if len(set(serials.values())) != 1:
        detail = ", ".join(f"node {i}: {s}" for i, s in sorted(serials.items()))
        raise PolicyError(f"the custodians hold different rosters ({detail})")
    return Roster.from_body(next(iter(bodies.values())))


def require_role(env: Environment, signer: Signer, roles: Sequence[str], what: str) -> None:
    """Refuse unless the custodians' roster gives ``signer`` one of ``roles``."""
    person = roster_from_nodes(env).get(signer.name)
    if person is None or person.key != signer.key.verify_key or not person.roles & set(roles):
        raise PolicyError(f"{what} needs a {' or '.join(roles)} of the custodians' roster")


def publish_roster(env: Environment, roster: Roster, signers: Sequence[Signer]) -> None:
    """Sign ``roster`` by every signer and install it on every custodian."""
    from tessera.workflows.nodes import broadcast

    document = SignedDocument(roster.body())
    for signer in signers:
        document = signer.sign(document, context=ROSTER_CONTEXT)
    broadcast(env, "POST", "/v1/roster", json=document.to_dict())


def add_person(
    env: Environment,
    name: str,
    roles: Sequence[str],
    passphrase: bytes,
    signers: Sequence[Signer],
    *,
    gateway: bool = False,
) -> Person:
    """Create ``name``'s key (encrypted under ``passphrase``) and add them to the roster."""
    valid_name(name)
    current = roster_from_nodes(env)
    if current.get(name) is not None:
        raise ConfigError(f"{name} is already in the roster")
    path = key_path(env, name, gateway=gateway)
    key = create_key(env, name, passphrase, gateway=gateway)
    person = Person(name, frozenset(roles), key.verify_key)
    try:
        publish_roster(env, current.replaced(person), signers)
    except BaseException:
        path.unlink(missing_ok=True)
        path.with_suffix(".pub").unlink(missing_ok=True)
        raise
    return person


def add_person_key(env: Environment, person: Person, signers: Sequence[Signer]) -> Person:
    """Add ``person`` (a public key made on their own machine) to the roster."""
    current = roster_from_nodes(env)
    if current.get(person.name) is not None:
        raise ConfigError(f"{person.name} is already in the roster")
    publish_roster(env, current.replaced(person), signers)
    return person


def remove_person(env: Environment, name: str, signers: Sequence[Signer]) -> None:
    """Take ``name`` off the roster (their key file is deleted from this folder)."""
    current = roster_from_nodes(env)
    publish_roster(env, current.without(name), signers)
    for gateway in (False, True):
        path = key_path(env, name, gateway=gateway)
        path.unlink(missing_ok=True)
        path.with_suffix(".pub").unlink(missing_ok=True)
