"""Who acts, and their passphrase: ``--as NAME``, prompts on a terminal, or the environment.

Every command that signs something (a job, a policy, a roster change, a
re-identification) unlocks the acting person's key here:

* ``$TESSERA_PASSPHRASE`` when set (scripts, services);
* otherwise a hidden prompt on the terminal, asked again after a typo (three tries);
* otherwise (no terminal) a one-line error naming the variable.

A new passphrase is asked twice, must have at least
:data:`tessera.workflows.people.MIN_PASSPHRASE` characters, and an empty or mismatched
entry is asked again, saying why.
"""

from __future__ import annotations

import getpass
import os
import sys
from typing import Annotated

import typer

from tessera import keys
from tessera.config import Environment
from tessera.errors import ConfigError, IntegrityError, UsageError
from tessera.keys.consortium import short_fingerprint
from tessera.workflows.people import (
    MIN_PASSPHRASE,
    Signer,
    check_new_passphrase,
    local_people,
    unlock,
)

__all__ = [
    "ATTEMPTS",
    "AsOption",
    "CosignOption",
    "acting_name",
    "acting_signers",
    "ask_new_passphrase",
    "confirm_fingerprint",
    "unlock_all",
    "unlock_person",
]

ATTEMPTS = 3
NEW_ATTEMPTS = 5
PERSON_ENV = "TESSERA_PERSON"

AsOption = Annotated[
    str | None,
    typer.Option(
        "--as",
        help="Act as this person (default $TESSERA_PERSON, else the only person with a key "
        "in the environment folder).",
        show_default=False,
    ),
]
CosignOption = Annotated[
    list[str] | None,
    typer.Option(
        "--cosign",
        help="A second person who co-signs (an officer or another steward); repeatable.",
        show_default=False,
    ),
]


def _tell(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def _interactive() -> bool:
    return sys.stdin.isatty()


def acting_name(env: Environment, explicit: str | None) -> str:
    """The person acting: ``--as``, else ``$TESSERA_PERSON``, else the only local key."""
    name = explicit or os.environ.get(PERSON_ENV)
    if name:
        return name
    people = local_people(env)
    if len(people) == 1:
        return people[0]
    if not people:
        raise UsageError(f"no person's key in {env.home / 'keys'}; say who acts with --as NAME")
    raise UsageError(f"several people have keys here ({', '.join(people)}): say who with --as NAME")


def _passphrase_for(name: str) -> bytes | None:
    """``$TESSERA_PASSPHRASE_<NAME>`` (name upper-cased, other characters as _), else
    ``$TESSERA_PASSPHRASE``."""
    own = "".join(c if c.isalnum() else "_" for c in name.upper())
    value = os.environ.get(f"{keys.PASSPHRASE_ENV}_{own}")
    return value.encode() if value else keys.passphrase_from_env()


def unlock_person(env: Environment, name: str) -> Signer:
    """``name``'s key, unlocked with $TESSERA_PASSPHRASE or a prompt (three tries)."""
    from_env = _passphrase_for(name)
    if from_env is not None:
        return unlock(env, name, from_env)
    if not _interactive():
        raise ConfigError(
            f"{name}'s key is encrypted: run on a terminal or set ${keys.PASSPHRASE_ENV}"
        )
    for attempt in range(1, ATTEMPTS + 1):
        entered = getpass.getpass(f"Passphrase for {name}'s key: ")
        if not entered:
            _tell("empty passphrase; try again")
            continue
        try:
            return unlock(env, name, entered.encode())
        except IntegrityError:
            if attempt < ATTEMPTS:
                _tell("wrong passphrase; try again")
    raise IntegrityError(f"wrong passphrase for {name}'s key ({ATTEMPTS} attempts)")


def ask_new_passphrase(whose: str) -> bytes:
    """A new passphrase for ``whose`` key: from the environment, or asked twice."""
    from_env = _passphrase_for(whose)
    if from_env is not None:
        return check_new_passphrase(from_env)
    if not _interactive():
        raise UsageError(
            f"{whose}'s key needs a passphrase: run on a terminal or set ${keys.PASSPHRASE_ENV}"
        )
    for _ in range(NEW_ATTEMPTS):
        first = getpass.getpass(f"New passphrase for {whose}'s key: ")
        if not first:
            _tell("empty passphrase; try again")
            continue
        if len(first) < MIN_PASSPHRASE:
            _tell(f"too short: at least {MIN_PASSPHRASE} characters; try again")
            continue
        if getpass.getpass("Repeat the passphrase: ") != first:
            _tell("the passphrases differ; try again")
            continue
        return first.encode()
    raise UsageError(f"no passphrase set for {whose}'s key")


def unlock_all(env: Environment, names: list[str] | None) -> list[Signer]:
    """Co-signers' keys, each unlocked in turn."""
    return [unlock_person(env, n) for n in names or []]


def acting_signers(env: Environment, acting: str | None, cosign: list[str] | None) -> list[Signer]:
    """The acting person's key and their co-signers' keys, each unlocked in turn."""
    return [unlock_person(env, acting_name(env, acting)), *unlock_all(env, cosign)]


def confirm_fingerprint(actual: str, given: str | None) -> None:
    """The manifest's fingerprint, compared with the stewards' (out of band): given, or
    confirmed on a terminal; refused otherwise."""
    if given is not None:
        wanted = "".join(given.split()).lower()
        if len(wanted) < 20 or not actual.startswith(wanted):
            raise IntegrityError(
                "the manifest's fingerprint differs from the one given: do not install it"
            )
        return
    if not sys.stdin.isatty():
        raise UsageError(
            "pass --fingerprint HEX: the manifest's fingerprint as the consortium's stewards "
            "read it out (tessera consortium show on their side)"
        )
    typer.echo(f"manifest fingerprint: {short_fingerprint(actual)}")
    if not typer.confirm("Does it match what the consortium's members read out?", default=False):
        raise UsageError("not installed: the fingerprint was not confirmed")
