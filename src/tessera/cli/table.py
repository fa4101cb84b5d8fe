"""``tessera table``: import CSVs as secret-shared tables, list and describe them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from tessera.cli._common import HomeOption, JsonOption, emit_json, resolve_home, stderr
from tessera.cli._keys import AsOption, acting_name, unlock_person
from tessera.cli.policy import register_table_policy
from tessera.config import Environment
from tessera.workflows.tables import describe_table, import_csv, list_tables
from tessera.workflows.validation import validate_table

__all__ = ["app"]

app = typer.Typer(help="Secret-shared tables on the custodians.", no_args_is_help=True)


@app.command("import")
def import_(
    csv: Annotated[Path, typer.Argument(help="CSV file (header row, UTF-8).")],
    name: Annotated[str, typer.Option("--name", help="Table name (appends if it exists).")],
    schema: Annotated[
        Path | None, typer.Option("--schema", help="Schema YAML (else inferred and written).")
    ] = None,
    hospital: Annotated[
        str | None,
        typer.Option("--hospital", help="Origin label of these rows (default: file stem)."),
    ] = None,
    skip_invalid: Annotated[
        bool, typer.Option("--skip-invalid", help="Store the valid rows, report the rest.")
    ] = False,
    key: Annotated[
        list[str] | None,
        typer.Option("--key", help="Pseudonymous linkage key column (repeatable)."),
    ] = None,
    linkage_key: Annotated[
        Path | None,
        typer.Option("--linkage-key", help="Linkage key file shared by the data owners."),
    ] = None,
    home: HomeOption = None,
    json_out: JsonOption = False,
) -> None:
    """Encode and split a CSV into shares, one per custodian."""
    env = Environment.load(resolve_home(home))
    report = import_csv(
        env,
        csv,
        name,
        schema_path=schema,
        hospital=hospital,
        skip_invalid=skip_invalid,
        keys=tuple(key or ()),
        linkage_key_path=linkage_key,
    )
    if json_out:
        emit_json(report)
        return
    typer.echo(
        f"imported {report['rows']} rows from {report['hospital']} into {report['table']} "
        f"({report['total_rows']} rows in all)"
    )
    for item in report["skipped"]:
        stderr.print(f"skipped {item['error']}")
    if report["schema_written"]:
        stderr.print(f"inferred schema written to {report['schema_written']}; check its bounds")


@app.command("ls")
def ls(home: HomeOption = None, json_out: JsonOption = False) -> None:
    """List the shared tables."""
    env = Environment.load(resolve_home(home))
    tables = list_tables(env)
    if json_out:
        emit_json(tables)
        return
    out = Table("name", "rows", "columns", "hospitals")
    for t in tables:
        out.add_row(t["name"], str(t["rows"]), str(t["columns"]), ", ".join(t["hospitals"]))
    Console().print(out)


@app.command("describe")
def describe(
    name: Annotated[str, typer.Argument(help="Table name.")],
    home: HomeOption = None,
    json_out: JsonOption = False,
) -> None:
    """Show a table's schema, encodings and chunks."""
    env = Environment.load(resolve_home(home))
    doc = describe_table(env, name)
    if json_out:
        emit_json(doc)
        return
    typer.echo(f"{doc['name']}: {doc['rows']} rows from {', '.join(doc['hospitals'])}")
    out = Table("column", "type", "bounds", "encoding")
    for c in doc["columns"]:
        bounds = (
            f"{c['min']} .. {c['max']}" if "min" in c else ", ".join(c.get("categories", [])) or ""
        )
        out.add_row(c["name"], c["type"], bounds, " ".join(c["encoding"]))
    Console().print(out)


@app.command("validate")
def validate(
    name: Annotated[str, typer.Argument(help="Table name.")],
    acting: AsOption = None,
    home: HomeOption = None,
    json_out: JsonOption = False,
) -> None:
    """Have the custodians check, inside the MPC, that every chunk's shares encode valid
    rows (values within the bounds, bits that are bits); DP releases read only chunks
    every custodian validated (query and recommend run this first by themselves)."""
    env = Environment.load(resolve_home(home))
    signer = unlock_person(env, acting_name(env, acting))
    outcome = validate_table(env, name, signer)
    if json_out:
        emit_json(outcome)
    else:
        typer.echo(
            f"{name}: {len(outcome['valid'])} chunk(s) valid, {len(outcome['failed'])} failed "
            f"({outcome['checked_now']} checked now)"
        )
        for chunk in outcome["failed"]:
            stderr.print(f"chunk {chunk}: its shares do not encode valid rows")
    if outcome["failed"]:
        raise typer.Exit(1)


register_table_policy(app)  # `tessera table policy NAME ...` (differential privacy, issue 7)
