"""``tessera query "SQL"``: secure SQL across the custodians."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from tessera.cli._common import HomeOption, JsonOption, emit_json, resolve_home, stderr
from tessera.config import Environment
from tessera.errors import UnsupportedError
from tessera.workflows.query import run_query

__all__ = ["query", "register"]


def query(
    sql: Annotated[str, typer.Argument(help="SELECT ... (see docs/sql.md).")],
    epsilon: Annotated[
        float | None, typer.Option("--epsilon", help="Differential privacy budget for this query.")
    ] = None,
    min_group: Annotated[
        int | None,
        typer.Option("--min-group", help="Suppress groups smaller than this (policy default 5)."),
    ] = None,
    home: HomeOption = None,
    json_out: JsonOption = False,
) -> None:
    """Answer SQL on the secret-shared tables; only you see the result."""
    env = Environment.load(resolve_home(home))
    if epsilon is not None:
        raise UnsupportedError("--epsilon: differential privacy is not available in this build")
    result = run_query(env, sql, min_group=min_group)
    if json_out:
        emit_json(result)
        return
    out = Table(*result["columns"])
    for row in result["rows"]:
        out.add_row(
            *("NULL" if v is None else f"{v:.6g}" if isinstance(v, float) else str(v) for v in row)
        )
    Console().print(out)
    if result["suppressed_groups"]:
        stderr.print(
            f"{result['suppressed_groups']} group(s) empty or with fewer than "
            f"{result['min_group']} rows suppressed"
        )


def register(app: typer.Typer) -> None:
    """Add ``tessera query`` to the top-level command."""
    app.command("query")(query)
