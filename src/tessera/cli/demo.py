"""``tessera demo``: every capability end to end on the embedded default."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated

import typer

from tessera.workflows.demo import demo_steps, run_demo

__all__ = ["demo", "register"]


def demo(
    step: Annotated[
        list[str] | None,
        typer.Option("--step", help="Run only this step (repeatable; see --list)."),
    ] = None,
    folder: Annotated[
        Path | None,
        typer.Option("--dir", help="Work in this folder and keep it (default: scratch)."),
    ] = None,
    list_steps: Annotated[bool, typer.Option("--list", help="List the steps and exit.")] = False,
) -> None:
    """Run the narrated tour: sharing, vault, secure SQL, recommendations, differential
    privacy, DICOM, risk and the audit trail, on local stores and custodian processes."""
    if list_steps:
        with resources.as_file(resources.files("tessera.samples")) as samples:
            for s in demo_steps(samples):
                typer.echo(f"{s.name:10} {s.headline}")
        return
    run_demo(only=step or (), folder=folder, announce=typer.echo)


def register(app: typer.Typer) -> None:
    """Add ``tessera demo`` to the top-level command."""
    app.command("demo")(demo)
