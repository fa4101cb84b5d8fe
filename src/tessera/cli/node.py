"""``tessera node``: run custodian nodes (foreground or, embedded, in the background),
and set up a federated custodian on its own host (``init``, ``join``, ``start --config``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from tessera.cli._common import HomeOption, JsonOption, emit_json, resolve_home
from tessera.cli._keys import confirm_fingerprint
from tessera.config import Environment, NodeSettings
from tessera.errors import PolicyError, UsageError
from tessera.keys.consortium import NodeEntry, short_fingerprint
from tessera.workflows.federation import (
    JOIN_FILE,
    accept_manifest,
    installed_manifest,
    load_manifest_file,
    node_init,
)
from tessera.workflows.nodes import ensure_nodes, node_status, stop_nodes

__all__ = ["app"]

app = typer.Typer(help="Custodian nodes.", no_args_is_help=True)


ConfigOption = Annotated[
    Path,
    typer.Option(
        "--config",
        metavar="FILE",
        help="The custodian's node.toml (a federated node on its own host).",
    ),
]


def _address(text: str, what: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise UsageError(f"{what} must be HOST:PORT, not {text[:60]!r}")
    return host.strip("[]"), int(port)


def _store_options(items: list[str] | None) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--store-option must be KEY=VALUE, not {item[:40]!r}")
        out[key] = value
    return out


@app.command("init")
def init(
    config: ConfigOption,
    node_id: Annotated[int, typer.Option("--id", help="This custodian's seat, 1..n.")],
    address: Annotated[
        str,
        typer.Option(
            "--address",
            metavar="HOST:PORT",
            help="Where the other custodians and the clients reach this node.",
        ),
    ],
    listen: Annotated[
        str | None,
        typer.Option("--listen", metavar="ADDR:PORT", help="Where to bind (default --address)."),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option("--data", metavar="DIR", help="Data folder (default: beside the config)."),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="A name for this custodian (the hospital).")
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(
            "--store", metavar="URL", help="This custodian's fragment store for the vault."
        ),
    ] = None,
    store_option: Annotated[
        list[str] | None,
        typer.Option(
            "--store-option",
            metavar="KEY=VALUE",
            help="An fsspec option of the store (no credentials); repeatable.",
        ),
    ] = None,
    log: Annotated[str, typer.Option("--log", help="Log format on stdout: text or json.")] = "text",
    json_out: JsonOption = False,
) -> None:
    """Make this custodian's TLS key (it never leaves this host) and its node.toml, and
    print the join request to hand to the consortium's members."""
    if log not in ("text", "json"):
        raise UsageError("--log is text or json")
    settings, request = node_init(
        config,
        node_id=node_id,
        address=_address(address, "--address"),
        listen=_address(listen, "--listen") if listen else None,
        data=data,
        name=name,
        store={"url": store, "options": _store_options(store_option)} if store else None,
        log=log,
    )
    request_file = settings.path.parent / JOIN_FILE
    if json_out:
        emit_json(
            {**request.to_dict(), "config": str(settings.path), "request_file": str(request_file)}
        )
        return
    typer.echo(
        f"node {node_id}: key and certificate in {settings.tls_key.parent} (the key stays here)"
    )
    typer.echo(f"configuration: {settings.path}")
    typer.echo(f"join request: {request_file}  (give it to the consortium's members)")
    typer.echo(f"fingerprint: {short_fingerprint(request.fingerprint)}")
    typer.echo("  read it to the members out of band; they compare it with what they pin")


@app.command("join")
def join(
    manifest_file: Annotated[
        Path, typer.Argument(metavar="MANIFEST", help="The signed consortium manifest.")
    ],
    config: ConfigOption,
    fingerprint: Annotated[
        str | None,
        typer.Option(
            "--fingerprint",
            metavar="HEX",
            help="The manifest's fingerprint as the members read it out (at least 20 hex "
            "digits); asked on a terminal when not given.",
        ),
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """Install the consortium manifest on this custodian: check that it pins this node's
    own certificate and that the roster's stewards signed it, then pin the others."""
    settings = NodeSettings.load(config)
    manifest, document = load_manifest_file(manifest_file)
    if installed_manifest(settings) is None:
        confirm_fingerprint(manifest.fingerprint(), fingerprint)
    manifest, member = accept_manifest(settings, document)
    if not member:
        raise PolicyError(f"the manifest no longer lists node {settings.id}")
    if json_out:
        emit_json(
            {
                "node": settings.id,
                "serial": manifest.serial,
                "fingerprint": manifest.fingerprint(),
                "nodes": [_node_doc(e) for e in manifest.nodes],
            }
        )
        return
    typer.echo(f"node {settings.id} joined {manifest.name} (manifest serial {manifest.serial})")
    for e in manifest.nodes:
        typer.echo(f"  node {e.id} {e.name} {e.host}:{e.port}  {short_fingerprint(e.fingerprint)}")
    typer.echo(f"start it: tessera node start --config {settings.path}")


def _node_doc(e: NodeEntry) -> dict[str, object]:
    return {
        "id": e.id,
        "name": e.name,
        "host": e.host,
        "port": e.port,
        "fingerprint": e.fingerprint,
    }


@app.command("start")
def start(
    node_id: Annotated[
        int | None, typer.Option("--id", help="Run node I in the foreground.")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            metavar="FILE",
            help="Run the federated custodian of this node.toml in the foreground.",
        ),
    ] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="Start every local node in the background.")
    ] = False,
    port: Annotated[
        int | None, typer.Option("--port", help="Listen port (default: configured).")
    ] = None,
    home: HomeOption = None,
    json_out: JsonOption = False,
) -> None:
    """Start a custodian node (mutual TLS)."""
    if config is not None:
        if all_ or node_id is not None:
            raise UsageError("--config runs one federated node: no --id or --all with it")
        NodeSettings.load(config)  # a readable error before the process starts
        sys.stdout.flush()
        sys.stderr.flush()
        # become the node: SIGTERM from systemd, docker stop or the kubelet reaches it
        os.execv(sys.executable, [sys.executable, "-m", "tessera.node", "--config", str(config)])  # noqa: S606
    root = resolve_home(home).resolve()
    if all_ == (node_id is not None):
        raise UsageError("give --id I (foreground), --all (background) or --config FILE")
    if all_:
        env = Environment.load(root)
        clients = ensure_nodes(env)
        doc = [{"id": i, "url": c.base} for i, c in clients.items()]
        for c in clients.values():
            c.close()
        if json_out:
            emit_json(doc)
        else:
            for d in doc:
                typer.echo(f"node {d['id']} at {d['url']}")
        return
    args = [sys.executable, "-m", "tessera.node", "--home", str(root), "--id", str(node_id)]
    if port is not None:
        args += ["--port", str(port)]
    _foreground(args)


def _foreground(args: list[str]) -> None:
    try:
        code = subprocess.call(args)
    except KeyboardInterrupt:
        code = 0
    if code:
        raise typer.Exit(code)


@app.command("stop")
def stop(home: HomeOption = None, json_out: JsonOption = False) -> None:
    """Stop the background nodes of this environment."""
    env = Environment.load(resolve_home(home))
    stopped = stop_nodes(env)
    if json_out:
        emit_json({"stopped": stopped})
    else:
        typer.echo(f"stopped {len(stopped)} node(s)")


@app.command("status")
def status(home: HomeOption = None, json_out: JsonOption = False) -> None:
    """Show which nodes answer."""
    env = Environment.load(resolve_home(home))
    doc = node_status(env)
    if json_out:
        emit_json(doc)
        return
    for d in doc:
        state = "running" if d["running"] else "stopped"
        typer.echo(f"node {d['id']} {d['host']}:{d['port']} {state}")
