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
from tessera.mpc.result import (
    NO_VALUES,
    NOISY_EMPTY,
    NULL_GROUP,
    NULL_OPERAND,
    TOO_FEW,
    UNINFORMATIVE,
    interval_decimals,
)
from tessera.workflows.requests import run_sql_recorded

__all__ = ["print_answer", "query", "register"]


# Short tags printed next to a NULL or uninformative cell; the legend explains them.
_TAGS = {
    NO_VALUES: "no rows",
    TOO_FEW: "< 2 rows",
    NULL_GROUP: "value not recorded",
    NULL_OPERAND: "NULL operand",
    NOISY_EMPTY: "noisy count < 1",
    UNINFORMATIVE: "uninformative",
}


def _fmt(v: Any, decimals: int | None = None) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, float):
        return f"{v:.{decimals}f}" if decimals is not None else f"{v:.6g}"
    return str(v)


def _cell(value: Any, interval: list[float] | None, note: str | None) -> str:
    tag = f" ({_TAGS.get(note, 'see notes')})" if note else ""
    if interval is None or value is None:
        return escape(_fmt(value) + tag)
    d = 0 if isinstance(value, int) else interval_decimals(interval)  # counts are whole
    lo, hi = (_fmt(float(x), d) for x in interval)
    shown = _fmt(value, d) if isinstance(value, float) else _fmt(value)
    return escape(f"{shown} [{lo}, {hi}]{tag}")


def _legend(notes: list[list[str | None]]) -> list[str]:
    """One line per kind of note the table shows."""
    used = sorted({n for row in notes for n in row if n})
    return [f"({_TAGS.get(n, 'see notes')}): {n}" for n in used]


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
    result = run_sql_recorded(env, sql, signer=signer, epsilon=epsilon, min_group=min_group)
    used = result.get("min_group")
    if min_group is not None and isinstance(used, int) and used > min_group:
        stderr.print(
            f"note: --min-group {min_group} is below the tables' minimum group size {used} "
            f"(the custodians' policy); groups under {used} rows were suppressed"
        )
    if json_out:
        emit_json(result)
        return
    print_answer(result)


def print_answer(result: dict[str, Any]) -> None:
    """The answer as a table on stdout; notes, the guarantee and suppressions on stderr."""
    privacy = result.get("privacy")
    intervals = (
        [c["intervals"] for c in privacy["columns"]] if privacy else [None] * len(result["columns"])
    )
    notes = result.get("notes") or [[None] * len(row) for row in result["rows"]]
    out = Table(*result["columns"])
    for r, row in enumerate(result["rows"]):
        out.add_row(
            *(
                _cell(v, None if ivs is None else ivs[r], note)
                for v, ivs, note in zip(row, intervals, notes[r], strict=True)
            )
        )
    Console().print(out)
    for line in _legend(notes):
        stderr.print(escape(line))
    if privacy:
        stderr.print(_guarantee(privacy))
    if result["suppressed_groups"]:
        basis = "a noisy count below" if privacy else "no rows or fewer than"
        stderr.print(
            f"{result['suppressed_groups']} group(s) with {basis} {result['min_group']} "
            "rows suppressed (the minimum group size the custodians enforce)"
        )


def register(app: typer.Typer) -> None:
    """Add ``tessera query`` to the top-level command."""
    app.command("query")(query)
