"""``tessera budget show``: where each table's privacy budget stands."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from tessera.cli._common import HomeOption, JsonOption, emit_json, human, out_console, resolve_home
from tessera.cli.policy import policy
from tessera.config import Environment
from tessera.workflows.policies import node_budgets

__all__ = ["app"]

app = typer.Typer(help="Differential-privacy budgets per table.", no_args_is_help=True)


@app.command("show")
def show(
    table: Annotated[
        str | None, typer.Option("--table", help="Only this table.", show_default=False)
    ] = None,
    researcher: Annotated[
        str | None,
        typer.Option("--researcher", help="Also show this researcher's share.", show_default=False),
    ] = None,
    home: HomeOption = None,
    json_out: JsonOption = False,
) -> None:
    """Show total, spent, pending and remaining budget (rho, and epsilon at the policy delta).

    The figures are the custodians' own ledgers (the largest spend any of them counts).
    """
    env = Environment.load(resolve_home(home))
    balances = node_budgets(env, table, researcher)
    if json_out:
        emit_json({"budgets": balances})
        return
    out = out_console()
    if not balances:
        out.print("no table has a differential-privacy policy")
        return
    grid = Table("table", "total ρ", "spent ρ", "pending ρ", "remaining ρ", "remaining ε", "δ")
    if researcher:
        grid.add_column(f"{researcher} spent ρ")
    for b in balances:
        keys = ("total_rho", "spent_rho", "pending_rho", "remaining_rho", "remaining_epsilon")
        cells = [str(b["table"]), *(human(float(b[k])) for k in keys), human(float(b["delta"]))]
        if researcher:
            cells.append(human(float(b["researcher_spent_rho"] or 0.0)))
        grid.add_row(*cells)
    out.print(grid)


# Alias of ``tessera table policy`` so budgets can be set where they are shown.
app.command("policy")(policy)
