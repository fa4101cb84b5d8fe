"""``tessera init``: create an embedded environment with the owner's keys."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tessera.cli._common import HomeOption, JsonOption, emit_json, resolve_home
from tessera.cli._keys import ask_new_passphrase
from tessera.errors import PolicyError, UsageError
from tessera.workflows.environment import init_environment
from tessera.workflows.vault import init_vault

__all__ = ["init", "register"]


def init(
    directory: Annotated[
        Path | None,
        typer.Argument(help="Environment folder (default: --home, $TESSERA_HOME, ./.tessera)."),
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
    target = directory or resolve_home(home)
    if (target / "tessera.toml").exists():
        raise UsageError(f"{target} already holds a Tessera environment")
    passphrase = ask_new_passphrase(person)
    env = init_environment(
        target, nodes=nodes, threshold=threshold, founder=person, passphrase=passphrase
    )
    key_file = init_vault(env, owner=person)
    if json_out:
        emit_json(
            {
                "home": str(env.home),
                "nodes": env.n,
                "threshold": env.threshold,
                "stores": [s.url for s in env.stores],
                "signing_key": str(key_file),
                "key_encrypted": True,
                "person": person,
            }
        )
        return
    typer.echo(f"created {env.home}: {env.threshold}-of-{env.n} over {env.n} local stores")
    typer.echo(f"{person}: steward, officer and researcher; key {key_file} (encrypted)")
    typer.echo(f"later commands find it with --home {env.home} or TESSERA_HOME={env.home}")


def register(app: typer.Typer) -> None:
    """Add ``tessera init`` to the top-level command."""
    app.command("init")(init)
