"""``tessera user``: the gateway's users, their roles and API tokens."""

from __future__ import annotations

from typing import Annotated

import typer

from tessera.cli._common import HomeOption, JsonOption, emit_json, resolve_home, stderr
from tessera.cli._keys import AsOption, CosignOption, acting_signers
from tessera.config import Environment
from tessera.workflows.people import remove_person, roster_from_nodes
from tessera.workflows.users import ROLES, add_user, list_users, remove_user

__all__ = ["app"]

app = typer.Typer(help="Gateway users: researchers, stewards and security officers.")

NameArg = Annotated[str, typer.Argument(help="User name (letters, digits, . _ @ -).")]


@app.command("add")
def add(
    name: NameArg,
    role: Annotated[str, typer.Option("--role", help=f"One of: {', '.join(ROLES)}.")],
    acting: AsOption = None,
    cosign: CosignOption = None,
    home: HomeOption = None,
    json_out: JsonOption = False,
) -> None:
    """Add a user and print their API token, alone on stdout (shown once; only its hash
    is kept).

    The user joins the custodians' roster with a signing key encrypted under the token:
    you sign that change (a steward or officer: --as); a steward or officer needs a
    second signature (--cosign) once the roster has two privileged people.
    """
    env = Environment.load(resolve_home(home))
    signers = acting_signers(env, acting, cosign)
    token = add_user(env.home, name, role, signers)
    if json_out:
        emit_json({"name": name, "role": role, "token": token})
        return
    # The token alone on stdout, so that TOKEN=$(tessera user add ...) captures just it.
    stderr.print(f"added {name} ({role}); API token on stdout (shown once, keep it secret)")
    typer.echo(token)


@app.command("ls")
def ls(home: HomeOption = None, json_out: JsonOption = False) -> None:
    """List the gateway's users (never their tokens)."""
    users = list_users(Environment.load(resolve_home(home)).home)
    if json_out:
        emit_json([{"name": u.name, "role": u.role, "created": u.created} for u in users])
        return
    for u in users:
        typer.echo(f"{u.name:24} {u.role:11} {u.created}")


@app.command("rm")
def rm(
    name: NameArg,
    acting: AsOption = None,
    cosign: CosignOption = None,
    home: HomeOption = None,
) -> None:
    """Remove a user; their token stops working at once and the custodians drop them."""
    env = Environment.load(resolve_home(home))
    remove_user(env.home, name)
    if roster_from_nodes(env).get(name) is not None:
        signers = acting_signers(env, acting, cosign)
        remove_person(env, name, signers)
    typer.echo(f"removed {name}")
