"""``tessera table policy NAME ...``: a data steward sets or shows a table's privacy policy.

The ``table`` group belongs to src/tessera/cli/table.py; it attaches this command with
``register_table_policy(app)`` (one line).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console

from tessera.cli._common import HomeOption, JsonOption, emit_json, resolve_home
from tessera.config import Environment
from tessera.dp import Policy
from tessera.errors import UsageError
from tessera.workflows.dp import open_ledger, set_table_policy

__all__ = ["policy", "register_table_policy"]


def _opt(flag: str, text: str) -> Any:
    return typer.Option(flag, help=text, show_default=False)


def policy(
    name: Annotated[str, typer.Argument(help="Table name.")],
    mode: Annotated[
        str | None, _opt("--mode", "'dp' (differential privacy) or 'none' (exact answers).")
    ] = None,
    total_epsilon: Annotated[
        float | None, _opt("--total-epsilon", "Table budget as epsilon (at --delta).")
    ] = None,
    total_rho: Annotated[float | None, _opt("--total-rho", "Table budget as zCDP rho.")] = None,
    researcher_epsilon: Annotated[
        float | None, _opt("--researcher-epsilon", "Per-researcher budget as epsilon.")
    ] = None,
    researcher_rho: Annotated[
        float | None, _opt("--researcher-rho", "Per-researcher budget as rho.")
    ] = None,
    default_epsilon: Annotated[
        float, typer.Option("--default-epsilon", help="Epsilon a query spends by default.")
    ] = 1.0,
    max_epsilon: Annotated[
        float | None, _opt("--max-epsilon", "Largest epsilon one query may ask for.")
    ] = None,
    delta: Annotated[float, typer.Option("--delta", help="Delta for (epsilon, delta).")] = 1e-6,
    min_group_size: Annotated[
        int, typer.Option("--min-group-size", help="Suppress groups with fewer rows.")
    ] = 5,
    home: HomeOption = None,
    json_out: JsonOption = False,
) -> None:
    """Set a table's privacy policy (--mode dp|none ...), or show it (no --mode)."""
    env = Environment.load(resolve_home(home))
    ledger = open_ledger(env.home)
    if mode is None:
        current = ledger.policy(name)
        doc = (current or Policy.none()).to_dict()
        doc["set"] = current is not None
    else:
        try:
            if mode == "none":
                chosen = Policy.none(min_group_size=min_group_size)
            elif mode == "dp":
                chosen = Policy.dp(
                    total_epsilon=total_epsilon,
                    total_rho=total_rho,
                    researcher_epsilon=researcher_epsilon,
                    researcher_rho=researcher_rho,
                    default_epsilon=default_epsilon,
                    max_epsilon=max_epsilon,
                    delta=delta,
                    min_group_size=min_group_size,
                )
            else:
                raise UsageError("--mode must be 'dp' or 'none'")
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        doc = set_table_policy(ledger, name, chosen).to_dict()
        doc["set"] = True
    doc = {"table": name, **doc}
    if json_out:
        emit_json(doc)
        return
    out = Console(highlight=False)
    for key, value in doc.items():
        if value is not None:
            out.print(f"{key}: {value}")


def register_table_policy(table_app: typer.Typer) -> None:
    """Attach ``policy`` to the ``tessera table`` group."""
    table_app.command("policy")(policy)
