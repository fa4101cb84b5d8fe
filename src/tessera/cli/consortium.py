"""``tessera consortium``: the signed manifest of a federated consortium's custodians.

``show`` prints what operators compare out of band; ``add-node``, ``remove-node`` and
``add-client`` write the next manifest signed by the person acting; ``sign`` adds
another steward's or officer's signature; ``push`` hands it to every custodian, each of
which checks the signatures itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from tessera.cli._common import HomeOption, JsonOption, emit_json, resolve_home
from tessera.cli._keys import AsOption, CosignOption, acting_name, acting_signers, unlock_person
from tessera.config import Environment
from tessera.errors import InputError
from tessera.keys.consortium import ClientEntry, Manifest, short_fingerprint
from tessera.keys.documents import SignedDocument
from tessera.keys.people import Person
from tessera.workflows.federation import (
    CONSORTIUM_FILE,
    cosign,
    current_roster_document,
    load_manifest_file,
    local_manifest,
    propose,
    push_manifest,
    read_join_request,
)
from tessera.workflows.people import Signer, add_person_key

__all__ = ["app"]

app = typer.Typer(help="A federated consortium's manifest.", no_args_is_help=True)

OutOption = Annotated[
    Path | None,
    typer.Option(
        "--out",
        metavar="FILE",
        help="Where to write the proposed manifest (default HOME/consortium-next.json).",
    ),
]


def describe(manifest: Manifest, doc: SignedDocument) -> dict[str, Any]:
    """The JSON form of ``show``."""
    return {
        "name": manifest.name,
        "serial": manifest.serial,
        "fingerprint": manifest.fingerprint(),
        "threshold": manifest.threshold,
        "mpc_threshold": manifest.mpc_threshold,
        "quorum": manifest.quorum,
        "protocol": manifest.protocol,
        "nodes": [
            {
                "id": e.id,
                "name": e.name,
                "address": f"{e.host}:{e.port}",
                "fingerprint": e.fingerprint,
                "store": e.store.get("url"),
            }
            for e in sorted(manifest.nodes, key=lambda e: e.id)
        ],
        "clients": [{"name": c.name, "fingerprint": c.fingerprint} for c in manifest.clients],
        "people": [
            {"name": p.name, "roles": sorted(p.roles)} for p in manifest.roster_object().people
        ],
        "signed_by": [s.signer for s in doc.signatures],
    }


@app.command("show")
def show(
    manifest_file: Annotated[
        Path | None,
        typer.Argument(
            metavar="[FILE]",
            help="A manifest file (default: this environment's).",
            show_default=False,
        ),
    ] = None,
    home: HomeOption = None,
    json_out: JsonOption = False,
) -> None:
    """Show a manifest: its fingerprint and each custodian's, to compare out of band."""
    if manifest_file is None:
        manifest, doc = local_manifest(Environment.load(resolve_home(home)))
    else:
        manifest, doc = load_manifest_file(manifest_file)
    info = describe(manifest, doc)
    if json_out:
        emit_json(info)
        return
    typer.echo(f"consortium {manifest.name}, manifest serial {manifest.serial}")
    typer.echo(f"fingerprint: {short_fingerprint(info['fingerprint'])}")
    typer.echo(
        f"vault threshold {manifest.threshold} of {manifest.n}; secret tables t = "
        f"{manifest.mpc_threshold}; changes need {manifest.quorum} steward/officer signatures"
    )
    for node in info["nodes"]:
        typer.echo(
            f"  node {node['id']} {node['name']} {node['address']}  "
            f"{short_fingerprint(node['fingerprint'])}"
        )
    for client in info["clients"]:
        typer.echo(f"  client {client['name']}  {short_fingerprint(client['fingerprint'])}")
    typer.echo(f"signed by: {', '.join(info['signed_by'])}")


def _write(path: Path, doc: SignedDocument) -> None:
    path.write_text(json.dumps(doc.to_dict(), indent=2) + "\n", encoding="utf-8")


def _propose(
    home: Path | None,
    acting: str | None,
    out: Path | None,
    change: Callable[[Manifest], Manifest],
    signer: Signer | None = None,
) -> None:
    env = Environment.load(resolve_home(home))
    signer = signer or unlock_person(env, acting_name(env, acting))
    doc = propose(env, change, signer, roster_doc=current_roster_document(env))
    target = out or env.home / "consortium-next.json"
    _write(target, doc)
    manifest = Manifest.from_body(doc.body)
    typer.echo(
        f"wrote manifest serial {manifest.serial} to {target}, signed by {signer.name}; "
        f"it needs {manifest.quorum} steward/officer signatures: others run "
        f"'tessera consortium sign {target}', then 'tessera consortium push {target}'"
    )


@app.command("add-node")
def add_node(
    request_file: Annotated[
        Path, typer.Argument(metavar="REQUEST", help="The custodian's join request.")
    ],
    out: OutOption = None,
    acting: AsOption = None,
    home: HomeOption = None,
) -> None:
    """Propose the next manifest with this custodian (a new seat, or replacing the
    custodian of its seat), signed by the person acting."""
    request = read_join_request(request_file)
    entry = request.node_entry()
    _propose(home, acting, out, lambda m: m.with_node(entry))


@app.command("remove-node")
def remove_node(
    node_id: Annotated[int, typer.Argument(metavar="ID", help="The seat to remove (the last).")],
    out: OutOption = None,
    acting: AsOption = None,
    home: HomeOption = None,
) -> None:
    """Propose the next manifest without the custodian of seat ID."""
    _propose(home, acting, out, lambda m: m.without_node(node_id))


@app.command("add-client")
def add_client(
    request_file: Annotated[
        Path, typer.Argument(metavar="REQUEST", help="The client machine's join request.")
    ],
    role: Annotated[
        list[str] | None,
        typer.Option(
            "--role",
            help="Also add the request's person to the roster with this role (repeatable; "
            "steward or officer needs --cosign once two privileged people exist).",
            show_default=False,
        ),
    ] = None,
    cosign: CosignOption = None,
    out: OutOption = None,
    acting: AsOption = None,
    home: HomeOption = None,
) -> None:
    """Propose the next manifest that lets this client machine reach the custodians,
    and with --role add the person who made the request to the roster (their public key
    only: their signing key stays on their machine)."""
    request = read_join_request(request_file)
    if request.kind != "client":
        raise InputError(f"{request_file} is a {request.kind}'s join request, not a client's")
    entry = ClientEntry(request.name, request.cert)
    signer = None
    if role:
        if request.person is None:
            raise InputError(f"{request_file} names no person to add with --role")
        env = Environment.load(resolve_home(home))
        signers = acting_signers(env, acting, cosign)
        person = Person(request.person.name, frozenset(role), request.person.key)
        add_person_key(env, person, signers)
        typer.echo(f"added {person.name} ({', '.join(sorted(person.roles))}) to the roster")
        signer = signers[0]
    _propose(home, acting, out, lambda m: m.with_client(entry), signer)


@app.command("sign")
def sign(
    manifest_file: Annotated[Path, typer.Argument(metavar="FILE", help="The proposed manifest.")],
    acting: AsOption = None,
    home: HomeOption = None,
) -> None:
    """Add the acting steward's or officer's signature to a proposed manifest."""
    env = Environment.load(resolve_home(home))
    _, doc = load_manifest_file(manifest_file)
    signer = unlock_person(env, acting_name(env, acting))
    signed = cosign(doc, signer)
    _write(manifest_file, signed)
    names = ", ".join(s.signer for s in signed.signatures)
    typer.echo(f"signed {manifest_file}: now signed by {names}")


@app.command("push")
def push(
    manifest_file: Annotated[Path, typer.Argument(metavar="FILE", help="The signed manifest.")],
    home: HomeOption = None,
    json_out: JsonOption = False,
) -> None:
    """Hand a signed manifest to every custodian (each checks the signatures itself) and
    install it here once a majority of the new node set took it."""
    env = Environment.load(resolve_home(home))
    manifest, doc = load_manifest_file(manifest_file)
    outcome = push_manifest(env, doc)
    if json_out:
        emit_json({"serial": manifest.serial, "nodes": {str(k): v for k, v in outcome.items()}})
        return
    for node_id, what in outcome.items():
        typer.echo(f"node {node_id}: {what}")
    typer.echo(f"manifest serial {manifest.serial} installed in {env.home / CONSORTIUM_FILE}")
