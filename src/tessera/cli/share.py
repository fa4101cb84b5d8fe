"""``tessera share``: split a file into k-of-n fragments and combine them again."""

from __future__ import annotations

import typer

app = typer.Typer(help="Split files into k-of-n fragments and restore them.", no_args_is_help=True)
