"""Shared pieces of the ``tessera`` command: options, output, progress."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

__all__ = ["HomeOption", "JsonOption", "byte_progress", "emit_json", "resolve_home", "stderr"]

HomeOption = Annotated[
    Path | None,
    typer.Option(
        "--home",
        help="Tessera environment folder (default: $TESSERA_HOME, else ./.tessera).",
        show_default=False,
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON document on stdout and nothing else.")
]

stderr = Console(stderr=True, highlight=False)


def resolve_home(home: Path | None) -> Path:
    """The environment folder: --home, else $TESSERA_HOME, else ./.tessera."""
    if home is not None:
        return home
    env = os.environ.get("TESSERA_HOME")
    return Path(env) if env else Path(".tessera")


def emit_json(document: Any) -> None:
    """Write one JSON document on stdout."""
    sys.stdout.write(json.dumps(document, indent=2, sort_keys=False, default=str) + "\n")


def byte_progress(total: int, description: str, *, threshold: int = 64 << 20) -> Progress | None:
    """A rich progress bar on a TTY for work over ``threshold`` bytes, else None."""
    if total < threshold or not sys.stderr.isatty():
        return None
    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=stderr,
        transient=True,
    )
