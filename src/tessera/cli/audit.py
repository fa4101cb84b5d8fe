"""``tessera audit``: record, verify, export and cross-check the tamper-evident logs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from tessera.audit import fhir_bundle, validate_bundle, write_fhir_bundle
from tessera.cli._common import HomeOption, JsonOption, emit_json, resolve_home
from tessera.core.audit_sink import OUTCOMES, AuditEvent, DetailValue
from tessera.errors import UsageError
from tessera.workflows import audit as flow
from tessera.workflows import audit_witness as witnessing

__all__ = ["app"]

app = typer.Typer(help="Tamper-evident audit trail (FHIR AuditEvents in a signed Merkle log).")

NodeOption = Annotated[
    int | None, typer.Option("--node", help="A custodian node's log instead of the gateway's.")
]


def _detail(pairs: list[str]) -> dict[str, DetailValue]:
    out: dict[str, DetailValue] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--detail wants KEY=VALUE, got {pair!r}")
        parsed: DetailValue = value
        if value.lstrip("-").isdigit():
            parsed = int(value)
        elif value in ("true", "false"):
            parsed = value == "true"
        out[key] = parsed
    return out


@app.command("record")
def record(
    action: Annotated[str, typer.Option("--action", help="e.g. login, vault.get, query.")],
    outcome: Annotated[
        str, typer.Option("--outcome", help="success|failure|denied|not_found|error")
    ] = "success",
    user: Annotated[str, typer.Option("--user")] = "",
    role: Annotated[str, typer.Option("--role")] = "",
    address: Annotated[str, typer.Option("--address", help="Client network address.")] = "",
    client: Annotated[str, typer.Option("--client", help="Client application.")] = "",
    source: Annotated[str, typer.Option("--source", help="Node that saw it.")] = "",
    entity: Annotated[str, typer.Option("--entity", help="Object, table, job …")] = "",
    entity_type: Annotated[str, typer.Option("--entity-type")] = "",
    patient: Annotated[str, typer.Option("--patient", help="Pseudonymous patient id.")] = "",
    purpose: Annotated[str, typer.Option("--purpose", help="v3 ActReason, e.g. HRESCH.")] = "",
    detail: Annotated[
        list[str] | None, typer.Option("--detail", help="KEY=VALUE (repeat).")
    ] = None,
    node: NodeOption = None,
    home: HomeOption = None,
    json_out: JsonOption = False,
) -> None:
    """Append one event (nothing secret!) and sign the new tree head."""
    if outcome not in OUTCOMES:
        raise UsageError(f"--outcome must be one of {', '.join(sorted(OUTCOMES))}")
    event = AuditEvent(
        action=action,
        outcome=outcome,
        user=user,
        role=role,
        address=address,
        client=client,
        source=source or (f"node-{node}" if node else "gateway"),
        entity=entity,
        entity_type=entity_type,
        patient=patient,
        purpose=purpose,
        detail=_detail(detail or []),
    )
    head = flow.record(resolve_home(home), [event], node=node)
    if json_out:
        emit_json({"seq": head.size - 1, "head": head.to_json()})
    else:
        typer.echo(
            f"recorded entry {head.size - 1}; signed tree head {head.size} {head.root.hex()[:16]}…"
        )


OfflineOption = Annotated[
    bool,
    typer.Option(
        "--offline",
        help="Do not ask the custodians for the heads they witnessed (a rollback or a "
        "replaced log then goes unnoticed).",
    ),
]


@app.command("verify")
def verify(
    node: NodeOption = None,
    offline: OfflineOption = False,
    home: HomeOption = None,
    json_out: JsonOption = False,
) -> None:
    """Check every entry and signed head, and the heads the custodians witnessed; exit 1
    and name the first bad entry or the custodian that holds a newer head."""
    result = witnessing.verify_witnessed(resolve_home(home), node=node, offline=offline)
    report = result.report
    if offline:
        typer.echo(
            "warning: --offline: the custodians' heads were not checked "
            "(a rollback or a replaced log would go unnoticed)",
            err=True,
        )
    elif result.custodians.no_custodians:
        typer.echo("warning: no custodians in this environment witness this log", err=True)
    if json_out:
        emit_json(result.to_json())
    elif result.ok:
        line = f"ok: {report.entries} entries, {report.heads} signed tree heads"
        if report.unsigned:
            line += f", not yet signed: {report.unsigned}"
        if result.custodians.checked:
            line += "; witnessed by custodians " + ", ".join(map(str, result.custodians.checked))
        typer.echo(line)
    elif result.custodians.problems:
        typer.echo(f"TAMPERED: {result.problem}")
        for problem in result.custodians.problems[1:] + (
            [report.problem] if report.problem else []
        ):
            typer.echo(f"  also: {problem}")
    elif not report.ok:
        typer.echo(f"TAMPERED: first bad entry {report.first_bad}: {report.problem}")
    else:
        typer.echo(f"NOT VERIFIED: {result.problem} (--offline skips the custodians)")
    if not result.ok:
        raise typer.Exit(1)


@app.command("export")
def export(
    format_: Annotated[str, typer.Option("--format", help="Only 'fhir' (an R4 Bundle).")] = "fhir",
    out: Annotated[Path | None, typer.Option("--out", help="File (default: stdout).")] = None,
    node: NodeOption = None,
    home: HomeOption = None,
) -> None:
    """Write the log as a FHIR R4 Bundle of AuditEvents (validated with fhir.resources)."""
    if format_ != "fhir":
        raise UsageError("--format must be fhir")
    root = resolve_home(home)
    log = (
        flow.gateway_log(root, create=False)
        if node is None
        else flow.node_log(root, node, create=False)
    )
    if out is None:
        bundle = fhir_bundle(log)
        validate_bundle(bundle)
        sys.stdout.write(json.dumps(bundle, indent=1) + "\n")
    else:
        count = write_fhir_bundle(log, out)
        typer.echo(f"wrote {count} AuditEvents to {out}", err=True)


@app.command("head")
def head(node: NodeOption = None, home: HomeOption = None, json_out: JsonOption = False) -> None:
    """Sign what is pending and show the newest signed tree head."""
    root = resolve_home(home)
    log = (
        flow.gateway_log(root, create=False)
        if node is None
        else flow.node_log(root, node, create=False)
    )
    log.sign_pending()  # entries still waiting for their batch's head are signed now
    latest = log.latest_head()
    doc = latest.to_json() if latest else None
    if json_out:
        emit_json(doc)
    elif latest is None:
        typer.echo("no signed tree head yet")
    else:
        typer.echo(f"{latest.origin}: {latest.size} entries, root {latest.root.hex()}")


@app.command("cross-check")
def cross_check(home: HomeOption = None, json_out: JsonOption = False) -> None:
    """Gateway and custodians witness each other's newest heads (exit 1 on any
    inconsistency; the custodians are started when they are not running)."""
    results = witnessing.cross_check_all(resolve_home(home))
    if json_out:
        emit_json({"ok": all(r.ok for r in results), "checks": [r.to_json() for r in results]})
    else:
        for r in results:
            status = "ok" if r.ok else f"FAILED: {r.problem}"
            typer.echo(f"{r.observer} checked {r.origin} at {r.size}: {status}")
    if not all(r.ok for r in results):
        raise typer.Exit(1)
