"""``tessera table``: create, import (one or several hospitals), list, describe, alter
and remove secret-shared tables."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from tessera.cli._common import (
    HomeOption,
    JsonOption,
    byte_progress,
    emit_json,
    resolve_home,
    stderr,
)
from tessera.cli._keys import AsOption, acting_name, unlock_person
from tessera.cli.policy import register_table_policy
from tessera.config import Environment
from tessera.errors import UsageError
from tessera.tables.schema import Schema
from tessera.tables.store import Catalog
from tessera.workflows.table_admin import alter_table, create_table, remove_table, widened_schema
from tessera.workflows.tables import describe_table, import_csv, list_tables, read_schema
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
    origin_column: Annotated[
        str | None,
        typer.Option(
            "--origin-column",
            help="CSV column holding each row's hospital: one chunk per distinct value "
            "(the labels are public, as the hospital column in queries).",
        ),
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
    size = csv.stat().st_size if csv.is_file() else 0
    bar = byte_progress(2 * size, f"importing {csv.name}")  # two passes over the file
    with bar if bar is not None else contextlib.nullcontext():
        task = bar.add_task(f"importing {csv.name}", total=2 * size) if bar else None

        def progress(done: int, total: int) -> None:
            if bar is not None and task is not None:
                bar.update(task, completed=done, total=total)

        report = import_csv(
            env,
            csv,
            name,
            schema_path=schema,
            hospital=hospital,
            origin_column=origin_column,
            skip_invalid=skip_invalid,
            keys=tuple(key or ()),
            linkage_key_path=linkage_key,
            progress=progress,
        )
    if json_out:
        emit_json(report)
        return
    origins = ", ".join(f"{c['hospital']} ({c['rows']})" for c in report["chunks"])
    typer.echo(
        f"imported {report['rows']} rows from {origins} into {report['table']} "
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


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Table name.")],
    schema: Annotated[Path, typer.Option("--schema", help="Schema YAML (bounds, categories).")],
    home: HomeOption = None,
    json_out: JsonOption = False,
) -> None:
    """Declare a table and its schema before any hospital imports (the bounds are then
    declared, not inferred from the first hospital's rows)."""
    env = Environment.load(resolve_home(home))
    report = create_table(env, name, schema)
    if json_out:
        emit_json(report)
        return
    typer.echo(
        f"created {name} ({len(report['columns'])} columns); import each hospital with "
        f"'tessera table import CSV --name {name}'"
    )


def _pairs(values: list[str] | None, flag: str) -> list[tuple[str, str]]:
    out = []
    for value in values or []:
        col, sep, rest = value.partition("=")
        if not sep or not col.strip() or not rest.strip():
            raise UsageError(f"{flag} takes COLUMN=VALUE, e.g. {flag} age=0:120")
        out.append((col.strip(), rest.strip()))
    return out


def _bounds(values: list[str] | None) -> dict[str, tuple[str, str]]:
    out = {}
    for col, rest in _pairs(values, "--bounds"):
        lo, sep, hi = rest.partition(":")
        if not sep or not lo or not hi:
            raise UsageError("--bounds takes COLUMN=MIN:MAX, e.g. --bounds age=0:120")
        out[col] = (lo, hi)
    return out


def _categories(values: list[str] | None) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for col, cat in _pairs(values, "--add-category"):
        out.setdefault(col, []).append(cat)
    return out


@app.command("alter")
def alter(
    name: Annotated[str, typer.Argument(help="Table name.")],
    schema: Annotated[
        Path | None, typer.Option("--schema", help="The widened schema YAML (whole).")
    ] = None,
    bounds: Annotated[
        list[str] | None,
        typer.Option("--bounds", help="COLUMN=MIN:MAX, wider than now (repeatable)."),
    ] = None,
    add_category: Annotated[
        list[str] | None,
        typer.Option("--add-category", help="COLUMN=VALUE, a new category (repeatable)."),
    ] = None,
    confirm_bounds: Annotated[
        bool,
        typer.Option(
            "--confirm-bounds",
            help="The table has a DP policy: sign it again with the widened bounds.",
        ),
    ] = False,
    acting: AsOption = None,
    home: HomeOption = None,
    json_out: JsonOption = False,
) -> None:
    """Widen bounds or add categories; every custodian re-encodes its shares (steward).

    Chunks are validated again before the next DP release; a table under a DP policy
    needs --confirm-bounds (its confirmed bounds are signed again, wider).
    """
    env = Environment.load(resolve_home(home))
    if schema is None and not bounds and not add_category:
        raise UsageError("give --schema FILE, --bounds COLUMN=MIN:MAX or --add-category COL=VALUE")
    if schema is not None and (bounds or add_category):
        raise UsageError("give --schema, or --bounds/--add-category, not both")
    current = Schema.from_dict(Catalog(env.home).get(name)["schema"])
    new = (
        read_schema(schema)
        if schema is not None
        else widened_schema(current, bounds=_bounds(bounds), categories=_categories(add_category))
    )
    signer = unlock_person(env, acting_name(env, acting))
    report = alter_table(env, name, new, signer, confirm_bounds=confirm_bounds)
    if json_out:
        emit_json(report)
        return
    typer.echo(f"{name}: widened {', '.join(report['altered'])} on every custodian")
    if report["policy_bounds"]:
        stderr.print(
            f"the DP policy of {name} was signed again with the new bounds "
            f"(serial {report['policy_bounds']['serial']})"
        )


@app.command("rm")
def rm(
    name: Annotated[str, typer.Argument(help="Table name.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    acting: AsOption = None,
    home: HomeOption = None,
    json_out: JsonOption = False,
) -> None:
    """Remove a table: every custodian deletes its shares (the table's steward signs)."""
    env = Environment.load(resolve_home(home))
    Catalog(env.home).get(name)  # refused before asking anything when there is no table
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError(f"this deletes every custodian's shares of {name}: add --yes")
        typer.confirm(f"Delete every custodian's shares of {name}?", abort=True)
    signer = unlock_person(env, acting_name(env, acting))
    report = remove_table(env, name, signer)
    if json_out:
        emit_json(report)
        return
    typer.echo(f"removed {name} ({report['rows']} rows) from {report['custodians']} custodian(s)")


register_table_policy(app)  # `tessera table policy NAME ...` (differential privacy, issue 7)
