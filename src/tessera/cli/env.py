"""``tessera init``: create an embedded environment with the owner's keys."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from tessera.cli._common import HomeOption, JsonOption, emit_json
from tessera.cli._keys import ask_new_passphrase
from tessera.config import HOME_ENV, LOCAL_HOME, remember_home
from tessera.errors import PolicyError, UsageError
from tessera.workflows.environment import init_environment
from tessera.workflows.vault import init_vault

__all__ = ["init", "next_steps", "register"]


def init(
    directory: Annotated[
        Path | None,
        typer.Argument(
            help="Environment folder (default: --home, $TESSERA_HOME, else ./.tessera); "
            "later commands use it by default until another one is made.",
            show_default=False,
        ),
    ] = None,
    nodes: Annotated[int, typer.Option("--nodes", help="Number of custodians (stores).")] = 5,
    threshold: Annotated[
        int | None,
        typer.Option("--threshold", help="k: fragments needed to restore (default majority)."),
    ] = None,
    person: Annotated[
        str,
        typer.Option(
            "--person",
            help="The first person: steward, security officer and researcher of the "
            "environment (more people: tessera person add).",
        ),
    ] = "owner",
    unencrypted_key: Annotated[
        bool,
        typer.Option("--unencrypted-key", hidden=True, help="No longer offered."),
    ] = False,
    home: HomeOption = None,
    json_out: JsonOption = False,
) -> None:
    """Create an embedded environment: N local stores, the custodians' PKI and roster,
    and the first person's ML-DSA-65 key (encrypted under their passphrase)."""
    if unencrypted_key:
        raise PolicyError(
            "--unencrypted-key is no longer offered: every person's key is encrypted "
            "(scripts set $TESSERA_PASSPHRASE)"
        )
    # Not the remembered environment: a new one goes to ./.tessera unless named.
    target = directory or home or Path(os.environ.get(HOME_ENV) or LOCAL_HOME)
    if (target / "tessera.toml").exists():
        raise UsageError(f"{target} already holds a Tessera environment")
    passphrase = ask_new_passphrase(person)
    env = init_environment(
        target, nodes=nodes, threshold=threshold, founder=person, passphrase=passphrase
    )
    key_file = init_vault(env, owner=person)
    remembered = remember_home(env.home) if _remembers() else None
    if json_out:
        emit_json(
            {
                "home": str(env.home.resolve()),
                "nodes": env.n,
                "threshold": env.threshold,
                "stores": [s.url for s in env.stores],
                "signing_key": str(key_file),
                "key_encrypted": True,
                "person": person,
                "remembered_in": str(remembered) if remembered else None,
            }
        )
        return
    typer.echo(
        f"created {env.home.resolve()}: {env.threshold}-of-{env.n} over {env.n} local stores"
    )
    typer.echo(f"{person}: steward, officer and researcher; key {key_file} (encrypted)")
    for line in next_steps(env.home.resolve(), remembered):
        typer.echo(line)


def _remembers() -> bool:
    """Whether ``init`` remembers the environment it made for later commands: for a
    person at a terminal only; scripts and services say where ($TESSERA_HOME, --home),
    and test runs or the demo must not replace the environment a person made last."""
    return sys.stdin.isatty() and not os.environ.get(HOME_ENV)


def next_steps(home: Path, remembered: Path | None) -> list[str]:
    """How later commands find ``home``: what applies today, and the explicit way."""
    quoted = shlex.quote(str(home))
    export = f"  export {HOME_ENV}={quoted}"
    current = os.environ.get(HOME_ENV)
    if current and Path(current).resolve() != home:
        return [f"${HOME_ENV} points at {current}; to use this environment instead:", export]
    if current:
        return [f"later commands in this shell find it through ${HOME_ENV}"]
    if remembered is None:
        return [f"later commands find it with --home {quoted}, or after:", export]
    if LOCAL_HOME.exists() and LOCAL_HOME.resolve() != home:
        return [f"./{LOCAL_HOME} here takes precedence; to use this environment:", export]
    return [
        f"later commands use it by default (the environment made last, kept in {remembered}); "
        "to name it explicitly, in every shell:",
        export,
    ]


def register(app: typer.Typer) -> None:
    """Add ``tessera init`` to the top-level command."""
    app.command("init")(init)
