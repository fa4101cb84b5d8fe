"""``tessera dicom``: de-identify files, run the receiving node, re-identify."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TimeRemainingColumn,
)

from tessera.cli._common import HomeOption, JsonOption, emit_json, resolve_home, stderr
from tessera.cli._keys import AsOption, acting_name, unlock_person
from tessera.config import Environment
from tessera.dicom import Outcome
from tessera.errors import ConfigError, UsageError
from tessera.keys.documents import SignedDocument
from tessera.workflows import dicom as workflow
from tessera.workflows import reidentify as reidentification
from tessera.workflows.people import Signer

__all__ = ["app"]

app = typer.Typer(
    help="DICOM de-identification (PS3.15 Annex E), a DICOM node, and re-identification "
    "under a quorum of stewards or officers."
)

OptionsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--option",
        help="Profile option by CID 7050 code or name, e.g. 113105 or clean-descriptors "
        "(repeatable).",
    ),
]
KeyFileOption = Annotated[
    Path | None,
    typer.Option("--key-file", help="Project key (hex or raw); default HOME/dicom/project.key."),
]
KeepOption = Annotated[
    bool,
    typer.Option("--keep-burned-in", help="De-identify files at risk of burned-in text too."),
]


def _quiet_pydicom() -> None:
    # pydicom logs warnings about quirks of the input; the report already covers them
    logging.getLogger("pydicom").addHandler(logging.NullHandler())
    logging.getLogger("pydicom").propagate = False


class _Bar:
    """A transient progress bar of a batch on a terminal (none for a single file)."""

    def __init__(self) -> None:
        self.progress: Progress | None = None
        self.task: TaskID | None = None

    def start(self, total: int) -> None:
        if sys.stderr.isatty() and total > 1:
            self.progress = Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=stderr,
                transient=True,
            )
            self.progress.start()
            self.task = self.progress.add_task("de-identifying", total=total)

    def done(self) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.advance(self.task)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()


@app.command("deidentify")
def deidentify(
    source: Annotated[Path, typer.Argument(help="A DICOM file or a folder (recursive).")],
    out: Annotated[Path, typer.Argument(help="Folder for the de-identified files.")],
    option: OptionsOption = None,
    key_file: KeyFileOption = None,
    keep_burned_in: KeepOption = False,
    workers: Annotated[
        int | None, typer.Option("--workers", min=1, help="Worker processes (default: CPUs).")
    ] = None,
    strict: Annotated[
        bool, typer.Option("--strict", hidden=True, help="Kept for old scripts: the default.")
    ] = False,
    json_out: JsonOption = False,
    home: HomeOption = None,
) -> int:
    """De-identify DICOM files to the Basic Application Level Confidentiality Profile."""
    _quiet_pydicom()
    bar = _Bar()
    try:
        document = workflow.deidentify_paths(
            source,
            out,
            home=resolve_home(home),
            options=option or [],
            key_file=key_file,
            keep_burned_in=keep_burned_in,
            workers=workers,
            on_start=bar.start,
            on_done=bar.done,
        )
    finally:
        bar.stop()
    _print_batch(document, out, json_out=json_out)
    if document["summary"]["failed"]:
        # The report above lists every file; the exit code says the batch was not clean.
        sys.stderr.write(f"tessera: error: {document['summary']['failed']} file(s) failed\n")
        raise typer.Exit(1)
    return 0


def _print_batch(document: dict[str, Any], out: Path, *, json_out: bool) -> None:
    """The batch report: the JSON document, or each file not cleanly de-identified (on
    stderr) and the counts."""
    summary = document["summary"]
    if json_out:
        emit_json(document)
        return
    for entry in document["files"]:
        if entry["status"] != "deidentified" or entry["reason"]:
            sys.stderr.write(f"{entry['status']}: {entry['input']}: {entry['reason']}\n")
    typer.echo(
        f"{summary['deidentified']} de-identified, {summary['quarantined']} quarantined, "
        f"{summary['failed']} failed -> {out}"
    )


def _log_outcome(outcome: Outcome, where: str | None) -> None:
    detail = where if outcome.status == "deidentified" else outcome.reason
    sys.stderr.write(f"{outcome.status}: {detail}\n")
    sys.stderr.flush()


@app.command("serve")
def serve(
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="0: any free port.")
    ] = 11112,
    ae_title: Annotated[str, typer.Option("--ae-title", help="This node's AE title.")] = "TESSERA",
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Folder for received files (default HOME/dicom/received)."),
    ] = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    option: OptionsOption = None,
    key_file: KeyFileOption = None,
    keep_burned_in: KeepOption = False,
    to_vault: Annotated[
        bool, typer.Option("--vault", help="Store into the environment's vault, not --out.")
    ] = False,
    keep_original: Annotated[
        bool | None,
        typer.Option(
            "--keep-original/--no-keep-original",
            help="Also keep each instance as received, secret-shared in the vault "
            "(needs --vault; default: [dicom] keep_original in tessera.toml).",
        ),
    ] = None,
    home: HomeOption = None,
) -> int:
    """Receive studies over DICOM (C-STORE), de-identify them and store them."""
    _quiet_pydicom()
    root = resolve_home(home)
    target = out if out is not None else root / "dicom" / "received"
    node = workflow.start_node(
        home=root,
        out=target,
        host=host,
        port=port,
        ae_title=ae_title,
        options=option or [],
        key_file=key_file,
        keep_burned_in=keep_burned_in,
        to_vault=to_vault,
        keep_original=keep_original,
        on_outcome=_log_outcome,
    )
    _run_until_signalled(node, "the vault" if to_vault else str(target))
    counts = node.receiver.counts
    typer.echo("stopped: " + (", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "none"))
    return 0


def _run_until_signalled(node: workflow.NodeHandle, where: str) -> None:
    """Announce the listening ``node`` (storing in ``where``) and keep it serving until
    SIGTERM or SIGINT; then stop it."""
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    if node.receiver.originals is not None:
        where += " (originals kept, secret-shared)"
    typer.echo(f"listening on {node.host}:{node.port} as {node.ae_title}; storing in {where}")
    sys.stdout.flush()
    try:
        stop.wait()
    finally:
        node.stop()


ReasonOption = Annotated[
    str | None,
    typer.Option(
        "--reason",
        help="Why (required in an environment; recorded by every custodian and in the audit log).",
        show_default=False,
    ),
]
RequestOption = Annotated[
    Path | None,
    typer.Option(
        "--request",
        help="A signed re-identification request (JSON of a signed document) carrying "
        "the approvals; sent as it is, without signing anything here.",
        show_default=False,
    ),
]


def _environment(folder: Path) -> Environment | None:
    """The environment at ``folder`` when it has a vault (else the folder fallback)."""
    if not (folder / "tessera.toml").exists():
        return None
    env = Environment.load(folder)
    return env if "vault" in env.extra else None


def _request(
    env: Environment,
    refs: list[str],
    *,
    reason: str | None,
    request: Path | None,
    acting: str | None,
) -> tuple[SignedDocument, Signer]:
    """The request to send and the acting person, who runs it (its requester):
    ``--request FILE`` as it is, or a new one for ``refs`` signed by the acting person
    alone (enough only when the roster's quorum is 1)."""
    if request is not None:
        if reason is not None:
            raise UsageError("--request carries its own reason: leave out --reason")
        document = reidentification.load_request(request)
        requester = str(document.body.get("requested_by", ""))
        if acting is not None and acting != requester:
            raise UsageError(f"only {requester}, who filed the request, runs it: --as {requester}")
        return document, unlock_person(env, requester)
    if reason is None or not reason.strip():
        raise UsageError("re-identification needs a reason: --reason TEXT")
    signer = unlock_person(env, acting_name(env, acting))
    body = reidentification.reidentify_body(refs, reason, signer.name)
    return reidentification.sign_reidentify(body, signer), signer


@app.command("reidentify")
def reidentify(
    pseudonym: Annotated[str, typer.Argument(help="A patient pseudonym (TS...).")],
    reason: ReasonOption = None,
    request: RequestOption = None,
    acting: AsOption = None,
    json_out: JsonOption = False,
    home: HomeOption = None,
) -> int:
    """Show the identity behind a patient pseudonym (escrowed; needs a quorum of people).

    In an environment, every custodian releases its share of the record's key only for
    a request signed by enough stewards or officers of its roster (by default 2) with a
    reason; each logs the release or the refusal. Without --request, the acting person
    (--as) signs a request alone: refused unless the roster's quorum is 1. With
    --request FILE, the signed request (e.g. from 'tessera request') is sent as it is.
    Only the requester runs it: their key signs a run document naming a one-time key,
    and the custodians seal their shares to that key.
    """
    folder = resolve_home(home)
    env = _environment(folder)
    if env is None:
        identity = workflow.reidentify(folder, pseudonym)
    else:
        ref = reidentification.identity_ref(pseudonym)
        document, signer = _request(env, [ref], reason=reason, request=request, acting=acting)
        if ref not in document.body.get("refs", []):
            raise UsageError("the request does not name this pseudonym")
        found = reidentification.run_reidentify(folder, document, signer)
        identity = found[ref.rsplit("/", 1)[1]]
    if json_out:
        emit_json({"pseudonym": pseudonym.strip(), "identity": identity})
    else:
        for key, value in identity.items():
            typer.echo(f"{key}: {value}")
    return 0


@app.command("original")
def original(
    ref: Annotated[
        str,
        typer.Argument(
            help="A de-identified SOP Instance UID, a patient pseudonym (TS...), or the "
            "vault name of the de-identified copy."
        ),
    ],
    out: Annotated[
        Path,
        typer.Option("--out", help="File to write (a folder when several originals match)."),
    ],
    reason: ReasonOption = None,
    request: RequestOption = None,
    acting: AsOption = None,
    json_out: JsonOption = False,
    home: HomeOption = None,
) -> int:
    """Restore the original(s) kept by 'serve --keep-original' (escrowed; needs a quorum).

    The same rule as 'reidentify': every custodian releases its key shares only for a
    request signed by enough stewards or officers, with a reason, and logs it. With
    --request FILE, the request must name the originals REF designates, and only its
    requester runs it.
    """
    folder = resolve_home(home)
    env = _environment(folder)
    if env is None:
        raise ConfigError(f"no environment with a vault at {folder}: originals are kept only there")
    if request is not None:
        document, signer = _request(env, [], reason=reason, request=request, acting=acting)
        refs = [str(r) for r in document.body.get("refs", [])]
        if not refs or not all(workflow.matches_original(r, ref) for r in refs):
            raise UsageError(f"the request names objects that {ref!r} does not designate")
    else:
        if reason is None or not reason.strip():
            raise UsageError("retrieving originals needs a reason: --reason TEXT")
        names = workflow.original_names(folder, ref)
        document, signer = _request(env, names, reason=reason, request=None, acting=acting)
    fetched = reidentification.run_fetch_originals(folder, document, out, signer)
    if json_out:
        emit_json({"originals": fetched})
    else:
        for item in fetched:
            typer.echo(f"{item['name']} -> {item['path']}")
    return 0
