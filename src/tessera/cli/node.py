"""``tessera node``: run custodian nodes (foreground or, embedded, in the background)."""

from __future__ import annotations

import subprocess
import sys
from typing import Annotated

import typer

from tessera.cli._common import HomeOption, JsonOption, emit_json, resolve_home
from tessera.config import Environment
from tessera.errors import UsageError
from tessera.workflows.nodes import ensure_nodes, node_status, stop_nodes

__all__ = ["app"]

app = typer.Typer(help="Custodian nodes.", no_args_is_help=True)


@app.command("start")
def start(
    node_id: Annotated[
        int | None, typer.Option("--id", help="Run node I in the foreground.")
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
    root = resolve_home(home).resolve()
    if all_ == (node_id is not None):
        raise UsageError("give --id I (foreground) or --all (background)")
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
