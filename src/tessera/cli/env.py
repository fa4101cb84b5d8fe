"""``tessera init``: create an embedded environment with the owner's keys."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from tessera import keys
from tessera.cli._common import HomeOption, JsonOption, emit_json, resolve_home
from tessera.errors import UsageError
from tessera.workflows.environment import init_environment
from tessera.workflows.vault import init_vault

__all__ = ["init", "register"]


def _passphrase(unencrypted: bool) -> bytes | None:
    if unencrypted:
        return None
    from_env = keys.passphrase_from_env()
    if from_env is not None:
        return from_env
    if sys.stdin.isatty():
        first = typer.prompt("Passphrase for the owner's key", hide_input=True)
        again = typer.prompt("Repeat the passphrase", hide_input=True)
        if first != again or not first:
            raise UsageError("the passphrases differ or are empty")
        return str(first).encode()
    raise UsageError(
        f"set ${keys.PASSPHRASE_ENV} to encrypt the owner's key, or pass --unencrypted-key"
    )


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
    unencrypted_key: Annotated[
        bool,
        typer.Option(
            "--unencrypted-key",
            help="Store the owner's signing key without a passphrase (demos only).",
        ),
    ] = False,
    home: HomeOption = None,
    json_out: JsonOption = False,
) -> None:
    """Create an embedded environment: N local stores and the owner's ML-DSA-65 keys."""
    passphrase = _passphrase(unencrypted_key)
    env = init_environment(directory or resolve_home(home), nodes=nodes, threshold=threshold)
    key_file = init_vault(env, passphrase=passphrase)
    if json_out:
        emit_json(
            {
                "home": str(env.home),
                "nodes": env.n,
                "threshold": env.threshold,
                "stores": [s.url for s in env.stores],
                "signing_key": str(key_file),
                "key_encrypted": passphrase is not None,
            }
        )
        return
    typer.echo(f"created {env.home}: {env.threshold}-of-{env.n} over {env.n} local stores")
    if passphrase is None:
        typer.echo(f"warning: {key_file} is not encrypted (only file permissions protect it)")


def register(app: typer.Typer) -> None:
    """Add ``tessera init`` to the top-level command."""
    app.command("init")(init)
