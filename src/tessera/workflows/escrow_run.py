"""The run document of a re-identification request: who runs it, and the one-time key
the custodians seal their key shares to.

An approved request (:class:`tessera.workflows.escrow.ReidentifyRequest`) is valid for
days and is seen by its approvers; on its own it must not release anything, or anyone
holding it (a custodian it was sent to) could replay it to the others and collect
``t + 1`` shares.  So the person running it makes a fresh
:class:`~tessera.keys.ephemeral.Receiver` and signs, under :data:`RUN_CONTEXT`, the body::

    {"format": "tessera-reidentify-run", "version": 1, "nonce": <the request's nonce>,
     "receiver": <the receiver's public key, base64>, "issued_at": unix s}

A custodian checks (:func:`admit_run`) that the requester (the request's
``requested_by``) signed it, that its nonce is the request's and that it was issued
within :data:`RUN_WINDOW_S` of its own clock, then seals every share it releases to
``receiver`` under :func:`share_label`.  Only the holder of the receiver's private half
(kept in the requester's memory) opens them.
"""

from __future__ import annotations

import math
import time
from typing import Any

from tessera.errors import InputError, PolicyError, ReplayError
from tessera.keys.documents import SignedDocument, verified_signers
from tessera.keys.ephemeral import seal_to
from tessera.keys.people import Roster

__all__ = ["RUN_CONTEXT", "RUN_FORMAT", "RUN_WINDOW_S", "admit_run", "run_body", "share_label"]

RUN_CONTEXT = b"tessera-reidentify-run-v1"
RUN_FORMAT = "tessera-reidentify-run"
RUN_WINDOW_S = 300


def run_body(nonce: str, receiver: str, now: float | None = None) -> dict[str, Any]:
    """The body of a run document for the request with ``nonce``, sealing to ``receiver``
    (a :attr:`~tessera.keys.ephemeral.Receiver.public` key)."""
    issued = int(time.time() if now is None else now)
    return {
        "format": RUN_FORMAT,
        "version": 1,
        "nonce": nonce,
        "receiver": receiver,
        "issued_at": issued,
    }


def share_label(nonce: str, name: str, digest: str) -> str:
    """What a released key share is sealed under (the request, the object, the envelope)."""
    return f"escrow:{nonce}:{name}:{digest}"


def _issued_at(body: dict[str, Any]) -> float:
    issued = body.get("issued_at")
    if isinstance(issued, bool) or not isinstance(issued, int | float):
        raise InputError("a run document carries issued_at (unix seconds)")
    if not (isinstance(issued, int) or math.isfinite(issued)) or not 0 <= issued < 1e11:
        raise InputError("a run document carries issued_at (unix seconds)")
    return float(issued)


def _receiver(body: dict[str, Any]) -> str:
    receiver = body.get("receiver")
    if not isinstance(receiver, str) or len(receiver) > 64:
        raise InputError("a run document carries a receiver key (base64 X25519)")
    try:
        seal_to(receiver, b"", label="check")  # a malformed or low-order key fails here
    except ValueError:
        raise InputError("the receiver key is not a usable X25519 public key") from None
    return receiver


def admit_run(roster: Roster, nonce: str, requested_by: str, raw: Any, now: float) -> str:
    """The receiver key of the run document ``raw`` for the request with ``nonce``, filed
    by ``requested_by``; InputError if malformed, PolicyError unless that person signed it
    (verified against ``roster``), ReplayError unless issued within 300 s of ``now``."""
    if raw is None:
        raise InputError("a release carries the run document of the person running it (run)")
    document = SignedDocument.from_dict(raw)
    body = document.body
    if body.get("format") != RUN_FORMAT or body.get("version") != 1:
        raise InputError("not a run document (format tessera-reidentify-run v1)")
    issued = _issued_at(body)
    receiver = _receiver(body)
    if not isinstance(body.get("nonce"), str) or body["nonce"] != nonce:
        raise PolicyError("the run document is for another re-identification request")
    signers = verified_signers(document, roster.keys(), context=RUN_CONTEXT)
    if requested_by not in signers:
        raise PolicyError(
            f"the run document is not signed by the person who filed the request ({requested_by})"
        )
    age = now - issued
    if abs(age) > RUN_WINDOW_S:
        when = "ago" if age > 0 else "in the future"
        raise ReplayError(
            f"the run document was signed {round(abs(age))} s {when} by this custodian's "
            f"clock; it is valid for {RUN_WINDOW_S} s: run the request again"
        )
    return receiver
