"""Shared pieces of the ``tessera`` command: options, output, progress.

Output rules: data goes to stdout, everything said to the person goes to stderr; on a
terminal rich lays text and tables out at its width, but piped output is never wrapped
(a value cut over two lines breaks ``grep`` and ``cut``); numbers are shown to
:data:`SIGNIFICANT` significant digits, while ``--json`` keeps full precision.
"""

from __future__ import annotations

import json
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

from tessera.config import default_home

__all__ = [
    "SIGNIFICANT",
    "HomeOption",
    "JsonOption",
    "byte_progress",
    "emit_json",
    "human",
    "out_console",
    "resolve_home",
    "stderr",
]

SIGNIFICANT = 6
PIPE_WIDTH = 1 << 16  # "no limit": rich needs a width; no line of ours comes near it

HomeOption = Annotated[
    Path | None,
    typer.Option(
        "--home",
        help="Tessera environment folder (default: $TESSERA_HOME, else ./.tessera where it "
        "exists, else the one 'tessera init' made last).",
        show_default=False,
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON document on stdout and nothing else.")
]


def _console(*, to_stderr: bool) -> Console:
    stream = sys.stderr if to_stderr else sys.stdout
    if stream.isatty():
        return Console(stderr=to_stderr, highlight=False)
    return Console(stderr=to_stderr, highlight=False, width=PIPE_WIDTH, soft_wrap=True)


stderr = _console(to_stderr=True)


def out_console() -> Console:
    """A console on stdout: the terminal's width on a terminal; piped, never wrapped
    (tables are laid out at their natural width)."""
    return _console(to_stderr=False)


def resolve_home(home: Path | None) -> Path:
    """The environment folder: --home, else :func:`tessera.config.default_home`
    ($TESSERA_HOME, ./.tessera where it exists, the one ``tessera init`` made last)."""
    return home if home is not None else default_home()


def human(value: Any, digits: int = SIGNIFICANT) -> str:
    """``value`` for people: floats to ``digits`` significant digits (2.9999999999180353
    is 3), containers item by item, anything else as ``str``."""
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {human(v, digits)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(human(v, digits) for v in value) + "]"
    return str(value)


def emit_json(document: Any) -> None:
    """Write one JSON document on stdout (numbers at full precision)."""
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
