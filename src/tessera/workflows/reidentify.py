"""Re-identification under a quorum of people, enforced by the custodian nodes.

The identity records (``dicom-identity/<pseudonym>``) and kept originals
(``dicom-original/<pseudonym>/<uid>.dcm``) are escrowed in the vault
(:mod:`tessera.workflows.escrow`): ciphertext there, the data key's shares on the
custodians.  Reading one back takes a *re-identification request*, a
:class:`~tessera.keys.documents.SignedDocument` with the body::

    {"format": "tessera-reidentify", "version": 1, "refs": [vault names],
     "reason": str (non-empty), "requested_by": name, "issued_at": unix s,
     "nonce": 32 hex}

signed under :data:`REIDENTIFY_CONTEXT` by the requester and co-signed until it carries
the signatures of the roster's ``reidentify_quorum`` (default 2) distinct stewards or
officers.  Only the requester runs it: each run makes a fresh one-time
:class:`~tessera.keys.ephemeral.Receiver` and a *run document* signed by the requester
under :data:`~tessera.workflows.escrow_run.RUN_CONTEXT` (the request's nonce, the
receiver's public key, issued now).  Every custodian checks both on its own against its
pinned roster (signatures, reason, request at most 7 days old, nonce never released
for, run document by the requester and at most 5 minutes old) and releases its key
shares once, each sealed to the receiver key; ``t + 1`` custodians' shares, opened
with the receiver's private half (in memory only), open the objects here.  A custodian
that replays the approved request to the others gets refusals or ciphertexts it
cannot open.  Each custodian logs every release
and refusal in its own audit log; this side logs one ``dicom.reidentify`` event per
object in the gateway log.

The API (``tessera dicom reidentify|original`` and ``tessera request`` use it)::

    REIDENTIFY_CONTEXT = b"tessera-reidentify-v1"
    identity_ref(pseudonym: str) -> str             # "dicom-identity/<pseudonym>"
    reidentify_body(refs: list[str], reason: str, requested_by: str) -> dict[str, Any]
        # a fresh body: issued_at = now, a new random nonce; a bare pseudonym in refs
        # becomes its identity record's name
    sign_reidentify(body: dict[str, Any], signer: Signer) -> SignedDocument
        # the requester's signature (signer.name must be body["requested_by"])
    cosign(document: SignedDocument, signer: Signer) -> SignedDocument
        # one more signature (an approver's); replaces an earlier one of theirs
    load_request(path: Path) -> SignedDocument      # a file of SignedDocument.to_dict()
    run_reidentify(home: Path, document: SignedDocument, signer: Signer)
        -> dict[str, dict[str, str]]
        # pseudonym -> identity; every ref must be an identity object; signer must be
        # the request's requested_by (PolicyError otherwise)
    run_fetch_originals(home: Path, document: SignedDocument, out: Path, signer: Signer)
        -> list[dict]
        # [{"name", "pseudonym", "path"}]; every ref must be a kept original; one is
        # written to the file ``out`` (into it as <uid>.dcm if ``out`` is a folder),
        # several into the folder ``out`` as <uid>.dcm (mode 0600)

When the custodians refuse, PolicyError (or ReplayError for a used or stale request)
says why in one line, e.g. ``refused by every custodian: re-identification needs 2
signatures of stewards or officers; this request has 1 (file it for a second person:
tessera request file --reidentify TS... --purpose ...)``; no part of any identity is in
an error.  An approved request is spent even when reading the vault then fails: file a
new one.

Legacy objects (written before escrow, plaintext in the vault) still need the same
approval: the custodians release nothing for them (no deposit), and this client reads
them only after ``t + 1`` custodians approved the request.  That check runs here, in
the client: a patched client skips it, so re-write legacy objects to escrow them.
"""

from __future__ import annotations

import os
import secrets
import tempfile
import time
from collections.abc import Mapping, Sequence
from hmac import compare_digest
from pathlib import Path
from typing import Any

from tessera.config import Environment, missing_environment
from tessera.core.audit_sink import Action, AuditEvent
from tessera.errors import (
    InputError,
    InsufficientSharesError,
    IntegrityError,
    PolicyError,
    TesseraError,
    UsageError,
)
from tessera.keys.documents import SignedDocument
from tessera.keys.ephemeral import Receiver, open_sealed
from tessera.keys.people import valid_name
from tessera.vault import Vault
from tessera.workflows import audit
from tessera.workflows.escrow import (
    REIDENTIFY_CONTEXT,
    REQUEST_FORMAT,
    ReidentifyRequest,
    decode_share,
    envelope_digest,
    is_sealed,
    open_with_shares,
)
from tessera.workflows.escrow_run import RUN_CONTEXT, run_body, share_label
from tessera.workflows.nodes import NodeClient, _raise_refusals, each_node, ensure_nodes
from tessera.workflows.people import Signer

__all__ = [
    "REIDENTIFY_CONTEXT",
    "cosign",
    "identity_ref",
    "load_request",
    "reidentify_body",
    "run_fetch_originals",
    "run_reidentify",
    "sign_reidentify",
]

Released = dict[int, dict[str, list[dict[str, str]]]]
_MAX_REQUEST_FILE = 1 << 20


def identity_ref(pseudonym: str) -> str:
    """The vault name of ``pseudonym``'s identity record (UsageError if not one)."""
    from tessera.workflows.dicom import IDENTITY_PREFIX, PSEUDONYM_FORM

    if not isinstance(pseudonym, str) or not PSEUDONYM_FORM.fullmatch(pseudonym.strip()):
        raise UsageError("not a Tessera patient pseudonym")
    return IDENTITY_PREFIX + pseudonym.strip()


def reidentify_body(refs: list[str], reason: str, requested_by: str) -> dict[str, Any]:
    """A new request body for ``refs`` (vault names; a bare pseudonym stands for its
    identity record), with a fresh nonce and issued_at."""
    from tessera.workflows.dicom import PSEUDONYM_FORM

    if not isinstance(reason, str) or not reason.strip():
        raise UsageError("a re-identification request needs a reason (--reason TEXT)")
    names = [
        identity_ref(r) if isinstance(r, str) and PSEUDONYM_FORM.fullmatch(r.strip()) else r
        for r in refs
    ]
    body = {
        "format": REQUEST_FORMAT,
        "version": 1,
        "refs": names,
        "reason": reason.strip(),
        "requested_by": valid_name(requested_by),
        "issued_at": int(time.time()),
        "nonce": secrets.token_hex(16),
    }
    try:
        ReidentifyRequest.from_body(body)
    except InputError as exc:
        raise UsageError(str(exc)) from None
    return body


def sign_reidentify(body: dict[str, Any], signer: Signer) -> SignedDocument:
    """The request ``body`` signed by its requester."""
    ReidentifyRequest.from_body(body)
    if body.get("requested_by") != signer.name:
        raise UsageError(f"the request names {body.get('requested_by')} as its requester")
    return signer.sign(SignedDocument(dict(body)), context=REIDENTIFY_CONTEXT)


def cosign(document: SignedDocument, signer: Signer) -> SignedDocument:
    """``document`` with ``signer``'s signature added (an approval)."""
    ReidentifyRequest.from_body(document.body)
    return signer.sign(document, context=REIDENTIFY_CONTEXT)


def load_request(path: Path) -> SignedDocument:
    """A signed request from a JSON file (``SignedDocument.to_dict()``)."""
    import json

    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"no request file {path}") from None
    if len(raw) > _MAX_REQUEST_FILE:
        raise InputError(f"{path}: too large for a request")
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        raise InputError(f"{path}: not a JSON signed document") from None
    document = SignedDocument.from_dict(doc)
    ReidentifyRequest.from_body(document.body)
    return document


# ----- asking the custodians --------------------------------------------------------------
def _hint(refs: Sequence[str]) -> str:
    from tessera.workflows.dicom import IDENTITY_PREFIX

    ref = refs[0].removeprefix(IDENTITY_PREFIX)
    return f"file it for a second person: tessera request file --reidentify {ref} --purpose ..."


def _opened(item: dict[str, Any], name: str, nonce: str, receiver: Receiver) -> dict[str, str]:
    """A released share opened with ``receiver``; IntegrityError if it does not open."""
    digest = str(item.get("digest", ""))
    share = open_sealed(receiver, item.get("sealed"), label=share_label(nonce, name, digest))
    try:
        return {"digest": digest, "share": share.decode("ascii")}
    except UnicodeDecodeError:
        raise IntegrityError("a custodian released a malformed key share") from None


def _parse_released(
    answer: Any, refs: Sequence[str], nonce: str, receiver: Receiver
) -> dict[str, list[dict[str, str]]]:
    released = answer.get("released") if isinstance(answer, dict) else None
    if not isinstance(released, dict):
        raise InputError("a custodian answered the release without shares")
    out: dict[str, list[dict[str, str]]] = {}
    for name in refs:
        items = released.get(name, [])
        out[name] = [
            _opened(i, name, nonce, receiver)
            for i in (items if isinstance(items, list) else [])
            if isinstance(i, dict)
        ]
    return out


def _run_document(request: ReidentifyRequest, signer: Signer, receiver: Receiver) -> SignedDocument:
    """The requester's signed run document: the custodians seal to ``receiver``."""
    body = run_body(request.nonce, receiver.public)
    return signer.sign(SignedDocument(body), context=RUN_CONTEXT)


def _release(
    env: Environment, document: SignedDocument, refs: Sequence[str], signer: Signer
) -> Released:
    """Every custodian's shares for ``refs``, opened; the refusal when fewer than t+1
    approve."""
    request = ReidentifyRequest.from_body(document.body)
    receiver = Receiver.new()  # one-time: the custodians seal their shares to it
    run = _run_document(request, signer, receiver)
    payload = {"request": document.to_dict(), "run": run.to_dict()}
    clients = ensure_nodes(env)

    def ask(_: int, client: NodeClient) -> Any:
        return client.request("POST", "/v1/escrow/release", json=payload)

    try:
        results, errors = each_node(clients, ask)
    finally:
        for client in clients.values():
            client.close()
    if len(results) < env.mpc_threshold + 1:
        try:
            _raise_refusals(errors, len(clients))
        except PolicyError as exc:
            if "signatures of stewards or officers" in str(exc):
                raise type(exc)(f"{exc} ({_hint(refs)})") from None
            raise
        raise PolicyError("too few custodians approved the request")
    return {i: _parse_released(r, refs, request.nonce, receiver) for i, r in results.items()}


def _open(vault: Vault, name: str, released: Released, t: int) -> bytes:
    """The plaintext of escrowed object ``name`` (or a legacy object as it is)."""
    from tessera.workflows.dicom import read_object

    data = read_object(vault, name)
    if not is_sealed(data):
        return data  # legacy (pre-escrow): the custodians approved the request above
    digest = envelope_digest(data)
    shares: dict[int, int] = {}
    for node, by_name in released.items():
        for item in by_name.get(name, []):
            if compare_digest(item["digest"].encode(), digest.encode()):
                shares[node] = decode_share(item["share"])
                break
    if len(shares) < t + 1:
        raise InsufficientSharesError(
            f"{name}: {len(shares)} custodians released a key share for this object, "
            f"{t + 1} are needed"
        )
    return open_with_shares(name, data, shares, t)


def _detail(request: Mapping[str, Any], document: SignedDocument) -> dict[str, str]:
    return {
        "reason": str(request.get("reason", ""))[:500],
        "signers": ",".join(sorted({s.signer for s in document.signatures})),
        "nonce": str(request.get("nonce", ""))[:32],
    }


def _record_refusal(
    home: Path, document: SignedDocument, refs: Sequence[str], kind: str, exc: TesseraError
) -> None:
    """One gateway event per ref for a request the custodians did not approve."""
    from tessera.workflows.dicom import _outcome_of

    body = document.body
    events = [
        AuditEvent(
            action=Action.DICOM_REIDENTIFY,
            outcome=_outcome_of(exc),
            user=str(body.get("requested_by", "")),
            patient=name.split("/")[1] if "/" in name else "",
            entity=name,
            entity_type=kind,
            purpose=f"re-identification{'' if kind == 'identity' else ' (original instance)'}",
            detail={**_detail(body, document), "error": exc.code},
        )
        for name in refs
    ]
    audit.record(home, events)


def _approved(
    home: Path, document: SignedDocument, kind: str, signer: Signer
) -> tuple[Environment, Vault, Released]:
    """The environment, its vault and the custodians' releases for ``document``, run by
    ``signer``."""
    from tessera.workflows.dicom import _vault

    opened = _vault(home, write=False)
    if opened is None:
        raise missing_environment(home)
    env, vault, _ = opened
    refs = [str(r) for r in document.body.get("refs", [])]
    try:
        released = _release(env, document, refs, signer)
    except TesseraError as exc:
        _record_refusal(home, document, refs, kind, exc)
        raise
    return env, vault, released


def _requested(document: SignedDocument, signer: Signer) -> ReidentifyRequest:
    """The request in ``document``; PolicyError unless ``signer`` filed it."""
    try:
        request = ReidentifyRequest.from_body(document.body)
    except InputError as exc:
        raise UsageError(str(exc)) from None
    if signer.name != request.requested_by:
        raise PolicyError(
            f"only {request.requested_by}, who filed the re-identification request, may run "
            f"it (not {signer.name})"
        )
    return request


# ----- the use cases ----------------------------------------------------------------------
def run_reidentify(
    home: Path, document: SignedDocument, signer: Signer
) -> dict[str, dict[str, str]]:
    """The identities behind the request's refs (``dicom-identity/<pseudonym>`` each),
    by pseudonym, once the custodians approved ``document``; ``signer`` is its requester
    (``requested_by``), who signs the run document (PolicyError for anyone else)."""
    from tessera.workflows.dicom import _audited_reidentify, identity_pseudonym, parse_identity

    request = _requested(document, signer)
    pseudonyms = {ref: identity_pseudonym(ref) for ref in request.refs}
    env, vault, released = _approved(home, document, "identity", signer)
    found: dict[str, dict[str, str]] = {}
    for ref, pseudonym in pseudonyms.items():
        with _audited_reidentify(
            home,
            user=request.requested_by,
            patient=pseudonym,
            entity=ref,
            entity_type="identity",
            purpose="re-identification",
            detail=_detail(document.body, document),
        ):
            found[pseudonym] = parse_identity(_open(vault, ref, released, env.mpc_threshold))
    return found


def _write_private(target: Path, data: bytes) -> None:
    """``data`` into ``target`` (mode 0600), whole or not at all."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tessera-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run_fetch_originals(
    home: Path, document: SignedDocument, out: Path, signer: Signer
) -> list[dict[str, str]]:
    """Restore the kept originals the request names into ``out``, once the custodians
    approved ``document``; ``[{"name", "pseudonym", "path"}]``.  ``signer`` is the
    request's requester (PolicyError for anyone else)."""
    from tessera.workflows.dicom import ORIGINAL_PREFIX, _audited_reidentify, matches_original

    request = _requested(document, signer)
    for ref in request.refs:
        if not matches_original(ref, ref):
            raise UsageError(f"not a kept original: {ref[:80]}")
    env, vault, released = _approved(home, document, "dicom-original", signer)
    many = len(request.refs) > 1 or out.is_dir()
    if many:
        out.mkdir(parents=True, exist_ok=True)
    fetched: list[dict[str, str]] = []
    for name in request.refs:
        pseudonym, _, file = name.removeprefix(ORIGINAL_PREFIX).partition("/")
        target = out / file if many else out
        with _audited_reidentify(
            home,
            user=request.requested_by,
            patient=pseudonym,
            entity=name,
            entity_type="dicom-original",
            purpose="re-identification (original instance)",
            detail=_detail(document.body, document),
        ):
            _write_private(target, _open(vault, name, released, env.mpc_threshold))
        fetched.append({"name": name, "pseudonym": pseudonym, "path": str(target)})
    return fetched
