"""``tessera query "SQL"``: secure SQL across the custodians, with DP where policy says so."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tessera.cli._common import HomeOption, JsonOption, emit_json, resolve_home, stderr
from tessera.cli._keys import acting_name, unlock_person
from tessera.config import Environment
from tessera.workflows.query import run_sql

__all__ = ["query", "register"]


def _fmt(v: Any) -> str:
    return "NULL" if v is None else f"{v:.6g}" if isinstance(v, float) else str(v)


def _cell(value: Any, interval: list[float] | None) -> str:
    if interval is None or value is None:
        return _fmt(value)
    return escape(f"{_fmt(value)} [{interval[0]:.4g}, {interval[1]:.4g}]")


def _guarantee(privacy: dict[str, Any]) -> str:
    left = ", ".join(
        f"{table} epsilon {b['epsilon']:.3g} (rho {b['rho']:.3g})"
        for table, b in (privacy.get("budget_remaining") or {}).items()
    )
    return escape(
        f"differential privacy: this answer is ({privacy['epsilon']:.3g}, "
        f"{privacy['delta']:g})-DP (rho {privacy['rho']:.3g} zCDP), "
        f"{privacy['mechanism']} noise from any {privacy['honest_custodians_needed']} of "
        f"{privacy['custodians']} custodians; the [intervals] of a row hold together with "
        f"{privacy['confidence']:.0%} probability; budget left: {left or 'n/a'}"
    )


def query(
    sql: Annotated[str, typer.Argument(help="SELECT ... (see docs/sql.md).")],
    epsilon: Annotated[
        float | None,
        typer.Option(
            "--epsilon", help="DP epsilon for this query (within the table policy's maximum)."
        ),
    ] = None,
    researcher: Annotated[
        str | None,
        typer.Option(
            "--researcher",
            "--as",
            help="The researcher who signs the job and whose budget is charged (default "
            "$TESSERA_PERSON, else the only person with a key here).",
            show_default=False,
        ),
    ] = None,
    min_group: Annotated[
        int | None,
        typer.Option(
            "--min-group",
            help="Suppress groups smaller than this; may raise the tables' minimum, never "
            "lower it.",
        ),
    ] = None,
    home: HomeOption = None,
    json_out: JsonOption = False,
) -> None:
    """Answer SQL on the secret-shared tables; only you see the result.

    Tables with a differential privacy policy (tessera table policy) are released with
    noise added inside the MPC; each number comes with its 95% interval.
    """
    env = Environment.load(resolve_home(home))
    signer = unlock_person(env, acting_name(env, researcher))
    result = run_sql(env, sql, signer=signer, epsilon=epsilon, min_group=min_group)
    used = result.get("min_group")
    if min_group is not None and isinstance(used, int) and used > min_group:
        stderr.print(
            f"note: --min-group {min_group} is below the tables' minimum group size {used} "
            f"(the custodians' policy); groups under {used} rows were suppressed"
        )
    if json_out:
        emit_json(result)
        return
    privacy = result.get("privacy")
    intervals = (
        [c["intervals"] for c in privacy["columns"]] if privacy else [None] * len(result["columns"])
    )
    out = Table(*result["columns"])
    for r, row in enumerate(result["rows"]):
        out.add_row(
            *(
                _cell(v, None if ivs is None else ivs[r])
                for v, ivs in zip(row, intervals, strict=True)
            )
        )
    Console().print(out)
    if privacy:
        stderr.print(_guarantee(privacy))
    if result["suppressed_groups"]:
        basis = "a noisy count below" if privacy else "no rows or fewer than"
        stderr.print(
            f"{result['suppressed_groups']} group(s) with {basis} {result['min_group']} "
            "rows suppressed"
        )


def register(app: typer.Typer) -> None:
    """Add ``tessera query`` to the top-level command."""
    app.command("query")(query)
