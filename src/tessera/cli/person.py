"""``tessera person``: the people the custodians trust (roster), and their keys.

Each person has an ML-DSA-65 key encrypted under their own passphrase in
``HOME/keys/NAME.key``; the custodians pin the roster of public keys and roles and accept
a change only when a steward or officer signs it (two of them for privileged changes).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from tessera.cli._common import HomeOption, JsonOption, emit_json, out_console, resolve_home
from tessera.cli._keys import (
    AsOption,
    CosignOption,
    acting_signers,
    ask_new_passphrase,
)
from tessera.config import Environment
from tessera.errors import UsageError
from tessera.keys.people import ROLES
from tessera.workflows.people import add_person, local_people, remove_person, roster_from_nodes

__all__ = ["app"]

app = typer.Typer(
    help="People, their roles and keys (the custodians' roster).", no_args_is_help=True
)

NameArg = Annotated[str, typer.Argument(help="Person name (letters, digits, . _ @ -).")]


@app.command("add")
def add(
    name: NameArg,
    role: Annotated[
        list[str], typer.Option("--role", help=f"One of {', '.join(ROLES)} (repeatable).")
    ],
    acting: AsOption = None,
    cosign: CosignOption = None,
    home: HomeOption = None,
    json_out: JsonOption = False,
) -> None:
    """Make NAME's key (their passphrase asked twice) and add them to every custodian's roster.

    You sign the change (--as, a steward or officer); giving someone the steward or
    officer role needs a second signature (--cosign) once two privileged people exist.
    """
    unknown = sorted(set(role) - set(ROLES))
    if unknown:
        raise UsageError(f"--role must be among {', '.join(ROLES)} (not {unknown[0]})")
    env = Environment.load(resolve_home(home))
    signers = acting_signers(env, acting, cosign)
    passphrase = ask_new_passphrase(name)
    person = add_person(env, name, role, passphrase, signers)
    doc = {"name": person.name, "roles": sorted(person.roles), "key_id": person.key.key_id}
    if json_out:
        emit_json(doc)
        return
    typer.echo(f"added {name} ({', '.join(doc['roles'])}); key id {doc['key_id']}")


@app.command("ls")
def ls(home: HomeOption = None, json_out: JsonOption = False) -> None:
    """The custodians' roster: names, roles, key ids, and whose key is in this folder."""
    env = Environment.load(resolve_home(home))
    roster = roster_from_nodes(env)
    here = set(local_people(env))
    rows: list[dict[str, Any]] = [
        {
            "name": p.name,
            "roles": sorted(p.roles),
            "key_id": p.key.key_id,
            "key_here": p.name in here,
        }
        for p in sorted(roster.people, key=lambda p: p.name)
    ]
    if json_out:
        emit_json({"serial": roster.serial, "people": rows})
        return
    grid = Table("name", "roles", "key id", "key here", title=f"roster serial {roster.serial}")
    for r in rows:
        grid.add_row(r["name"], ", ".join(r["roles"]), r["key_id"], "yes" if r["key_here"] else "")
    out_console().print(grid)


@app.command("rm")
def rm(
    name: NameArg,
    acting: AsOption = None,
    cosign: CosignOption = None,
    home: HomeOption = None,
) -> None:
    """Take NAME off every custodian's roster (a steward or officer signs; two for one of them)."""
    env = Environment.load(resolve_home(home))
    signers = acting_signers(env, acting, cosign)
    remove_person(env, name, signers)
    typer.echo(f"removed {name}")
