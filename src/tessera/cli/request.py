"""``tessera request file | ls | show | approve | refuse | run``: requests and approvals.

A researcher files a request (SQL, purpose, epsilon); the steward of its tables approves
or refuses it with a reason; the researcher runs it once approved.  Releases the
custodians held back for the steward (they failed a disclosure check) appear here too,
as ``output`` requests the steward reviews (``show --result``) and releases or withholds.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from tessera.cli._common import (
    HomeOption,
    JsonOption,
    emit_json,
    out_console,
    resolve_home,
    stderr,
)
from tessera.cli._keys import AsOption, acting_name, unlock_person
from tessera.config import Environment
from tessera.errors import OutputHeldError
from tessera.workflows import requests as flow

__all__ = ["app"]

app = typer.Typer(
    help="Requests and approvals: file, list, show, approve, refuse, run.",
    no_args_is_help=True,
)

IdArgument = Annotated[str, typer.Argument(help="The request id (tessera request ls).")]
ReasonOption = Annotated[
    str, typer.Option("--reason", help="Why (kept with the signed decision).", show_default=False)
]


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _env(home: Any) -> Environment:
    return Environment.load(resolve_home(home))


def _print_request(req: flow.Request) -> None:
    out = out_console()
    out.print(f"request {req.id} ({req.kind}): {req.state}", markup=False)
    out.print(f"  by {req.researcher}, filed {_when(req.filed_at)}", markup=False)
    out.print(f"  purpose: {req.purpose}", markup=False)
    if req.sql:
        out.print(f"  sql: {req.sql}", markup=False)
    if req.tables:
        out.print(f"  tables: {', '.join(req.tables)}", markup=False)
    if req.epsilon is not None:
        out.print(f"  epsilon: {req.epsilon:g}", markup=False)
    if req.refs:
        out.print(f"  refs: {', '.join(req.refs)}", markup=False)
    for reason in req.reasons:
        out.print(f"  held: {reason}", markup=False)
    if req.parent:
        out.print(f"  answers request {req.parent}", markup=False)
    for d in req.decisions:
        out.print(f"  {d.decision} by {d.by} at {_when(d.at)}: {d.reason}", markup=False)


@app.command("file")
def file(
    purpose: Annotated[
        str, typer.Option("--purpose", help="What the answer is for.", show_default=False)
    ],
    sql: Annotated[
        str | None, typer.Option("--sql", help="The SQL to run (see docs/sql.md).")
    ] = None,
    epsilon: Annotated[
        float | None, typer.Option("--epsilon", help="DP epsilon the query may spend.")
    ] = None,
    reidentify: Annotated[
        list[str] | None,
        typer.Option(
            "--reidentify",
            help="A patient pseudonym or kept original to re-identify (repeat for more); "
            "a second steward or officer must approve.",
        ),
    ] = None,
    acting: AsOption = None,
    home: HomeOption = None,
    json_out: JsonOption = False,
) -> None:
    """File a request for the steward of its tables to approve."""
    env = _env(home)
    signer = unlock_person(env, acting_name(env, acting))
    kind = "reidentify" if reidentify else "sql"
    req = flow.file_request(
        env, signer, kind=kind, purpose=purpose, sql=sql, epsilon=epsilon, refs=reidentify or ()
    )
    if json_out:
        emit_json(req.to_dict())
        return
    out_console().print(f"filed request {req.id}", markup=False)
    stderr.print(
        escape(f"next: the steward approves it (tessera request approve {req.id} --reason ...)")
    )


@app.command("ls")
def ls(
    mine: Annotated[
        bool, typer.Option("--mine", help="Only the requests you filed (--as).")
    ] = False,
    acting: AsOption = None,
    home: HomeOption = None,
    json_out: JsonOption = False,
) -> None:
    """List the requests and held outputs, newest first."""
    env = _env(home)
    viewer = acting_name(env, acting) if mine else None
    found = flow.list_requests(env, viewer=viewer)
    if json_out:
        emit_json([r.to_dict() for r in found])
        return
    out = out_console()
    if not found:
        stderr.print("no requests")
    for r in found:
        what = r.sql or ", ".join(r.refs) or ""
        line = f"{r.id}  {r.kind:<10} {r.state:<9} {r.researcher:<12} {_when(r.filed_at)}  "
        out.print(line + what[:60], markup=False)


@app.command("show")
def show(
    request_id: IdArgument,
    result: Annotated[
        bool,
        typer.Option(
            "--result",
            help="Fetch a held output's answer (its steward, to review; its researcher, "
            "once released).",
        ),
    ] = False,
    acting: AsOption = None,
    home: HomeOption = None,
    json_out: JsonOption = False,
) -> None:
    """Show one request, with its decisions (and, with --result, a held output)."""
    env = _env(home)
    req = flow.show_request(env, request_id)
    answer = None
    if result:
        signer = unlock_person(env, acting_name(env, acting))
        answer = flow.request_result(env, req.id, signer)
    if json_out:
        emit_json({**req.to_dict(), "result": answer})
        return
    _print_request(req)
    if answer is not None:
        from tessera.cli.query import print_answer

        print_answer(answer)


def _decide(request_id: str, reason: str, acting: str | None, home: Any, approve: bool) -> None:
    env = _env(home)
    signer = unlock_person(env, acting_name(env, acting))
    req = flow.decide(env, request_id, signer, approve=approve, reason=reason)
    out_console().print(f"request {req.id}: {req.state}", markup=False)


@app.command("approve")
def approve(
    request_id: IdArgument, reason: ReasonOption, acting: AsOption = None, home: HomeOption = None
) -> None:
    """Approve a request (its tables' steward), release a held output, or co-sign a
    re-identification (a second steward or officer)."""
    _decide(request_id, reason, acting, home, True)


@app.command("refuse")
def refuse(
    request_id: IdArgument, reason: ReasonOption, acting: AsOption = None, home: HomeOption = None
) -> None:
    """Refuse a request, or withhold a held output (its shares are deleted)."""
    _decide(request_id, reason, acting, home, False)


@app.command("run")
def run(
    request_id: IdArgument,
    out_path: Annotated[
        Path | None,
        typer.Option("--out", help="Where kept originals go (a re-identification request)."),
    ] = None,
    acting: AsOption = None,
    home: HomeOption = None,
    json_out: JsonOption = False,
) -> None:
    """Run an approved request (the person who filed it); once only."""
    env = _env(home)
    signer = unlock_person(env, acting_name(env, acting))
    answer = flow.run_request(env, request_id, signer, out=out_path)
    if answer.get("held"):
        if json_out:
            emit_json(answer)
        raise OutputHeldError(
            "held for the steward's review: "
            + "; ".join(answer["reasons"])
            + f" (tessera request show {answer['request']})"
        )
    if json_out:
        emit_json(answer)
        return
    if "originals" in answer:
        for item in answer["originals"]:
            out_console().print(f"{item['name']} -> {item['path']}", markup=False)
        return
    if "identities" in answer:
        out = out_console()
        for pseudonym, identity in answer["identities"].items():
            out.print(pseudonym, markup=False)
            for key, value in identity.items():
                out.print(f"  {key}: {value}", markup=False)
        return
    from tessera.cli.query import print_answer

    print_answer(answer)
