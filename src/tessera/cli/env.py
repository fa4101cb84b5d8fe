"""``tessera init``: create an embedded environment with the owner's keys."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from tessera.cli._common import HomeOption, JsonOption, emit_json
from tessera.cli._keys import ask_new_passphrase, confirm_fingerprint
from tessera.config import HOME_ENV, LOCAL_HOME, remember_home
from tessera.errors import PolicyError, UsageError
from tessera.keys.consortium import Manifest, short_fingerprint
from tessera.workflows.environment import init_environment
from tessera.workflows.federation import (
    CONSORTIUM_FILE,
    JOIN_FILE,
    init_consortium,
    join_as_client,
    load_manifest_file,
    read_join_request,
)
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
    node_requests: Annotated[
        list[Path] | None,
        typer.Option(
            "--node",
            metavar="REQUEST",
            help="A federated custodian's join request (tessera node init on its host); "
            "repeatable, at least 3: this environment becomes the first client of a new "
            "consortium instead of an embedded one.",
            show_default=False,
        ),
    ] = None,
    client_requests: Annotated[
        list[Path] | None,
        typer.Option(
            "--client",
            metavar="REQUEST",
            help="Another client machine's join request to pin as well; repeatable.",
            show_default=False,
        ),
    ] = None,
    consortium: Annotated[
        Path | None,
        typer.Option(
            "--consortium",
            metavar="MANIFEST",
            help="Join an existing consortium as a client machine: pin the custodians from "
            "its manifest and write a join request for its stewards.",
            show_default=False,
        ),
    ] = None,
    fingerprint: Annotated[
        str | None,
        typer.Option(
            "--fingerprint",
            metavar="HEX",
            help="With --consortium: the manifest's fingerprint as the stewards read it out.",
            show_default=False,
        ),
    ] = None,
    quorum: Annotated[
        int,
        typer.Option(
            "--quorum",
            help="Stewards' or officers' signatures a change of the node set needs.",
        ),
    ] = 2,
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
    if consortium is not None:
        if node_requests or client_requests:
            raise UsageError("--consortium joins an existing consortium: no --node or --client")
        _join_consortium(target, person, consortium, fingerprint, json_out)
        return
    if node_requests:
        _init_consortium(
            target, person, node_requests, client_requests or [], threshold, quorum, json_out
        )
        return
    if client_requests:
        raise UsageError("--client pins a client of a consortium: give the nodes with --node")
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


def _init_consortium(
    target: Path,
    person: str,
    node_requests: list[Path],
    client_requests: list[Path],
    threshold: int | None,
    quorum: int,
    json_out: bool,
) -> None:
    """``tessera init DIR --node REQUEST ...``: the first client of a new consortium."""
    requests = [read_join_request(p) for p in node_requests]
    if any(r.kind != "node" for r in requests):
        raise UsageError("--node takes custodians' join requests (tessera node init)")
    clients = [read_join_request(p) for p in client_requests]
    if any(r.kind != "client" for r in clients):
        raise UsageError("--client takes client machines' join requests")
    passphrase = ask_new_passphrase(person)
    env, doc = init_consortium(
        target,
        founder=person,
        passphrase=passphrase,
        requests=[*requests, *clients],
        threshold=threshold,
        quorum=quorum,
    )
    key_file = init_vault(env, owner=person)
    remembered = remember_home(env.home) if _remembers() else None
    manifest = Manifest.from_body(doc.body)
    manifest_file = env.home / CONSORTIUM_FILE
    if json_out:
        emit_json(
            {
                "home": str(env.home),
                "nodes": env.n,
                "threshold": env.threshold,
                "person": person,
                "signing_key": str(key_file),
                "manifest": str(manifest_file),
                "fingerprint": manifest.fingerprint(),
                "remembered_in": str(remembered) if remembered else None,
            }
        )
        return
    typer.echo(f"created {env.home}: a client of consortium {manifest.name}, {env.n} custodians")
    typer.echo(f"{person}: steward, officer and researcher; key {key_file} (encrypted)")
    typer.echo(f"manifest: {manifest_file}")
    typer.echo(f"fingerprint: {short_fingerprint(manifest.fingerprint())}")
    typer.echo(
        "give the manifest to each custodian's operator, read them the fingerprint, and "
        "have each run: tessera node join MANIFEST --config node.toml"
    )
    for line in next_steps(env.home, remembered):
        typer.echo(line)


def _join_consortium(
    target: Path, person: str, manifest_file: Path, fingerprint: str | None, json_out: bool
) -> None:
    """``tessera init DIR --consortium MANIFEST``: a client machine of a consortium."""
    manifest, doc = load_manifest_file(manifest_file)
    confirm_fingerprint(manifest.fingerprint(), fingerprint)
    passphrase = ask_new_passphrase(person)
    env, request = join_as_client(target, doc, person=person, passphrase=passphrase)
    request_file = env.home / JOIN_FILE
    if json_out:
        emit_json({"home": str(env.home), "request_file": str(request_file), **request.to_dict()})
        return
    typer.echo(f"created {env.home}: a client of consortium {manifest.name}")
    typer.echo(f"{person}'s key: {env.home / 'keys' / (person + '.key')} (encrypted)")
    typer.echo(f"join request: {request_file}  (give it to a steward of the consortium)")
    typer.echo(f"fingerprint: {short_fingerprint(request.fingerprint)}")
    typer.echo(
        "  a steward pins this machine and adds you: tessera consortium add-client "
        "REQUEST --role researcher, then sign and push"
    )


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
