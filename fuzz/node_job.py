"""Fuzz what a custodian node does with a ``POST /v1/jobs`` body before running anything:
the JSON body parser, the signed envelope (``SignedDocument``), the signature check
against a roster key and the job spec check (``tessera.mpc.jobs.validate_job``).  The
same body is also read as a roster or policy document (``POST /v1/roster``)."""

from __future__ import annotations

import contextlib
from typing import Any

from fuzz.harness import instrumented, run, tessera_only

with instrumented(__name__):
    from tessera.errors import TesseraError
    from tessera.keys.documents import SignedDocument, verified_signers
    from tessera.keys.signing import SigningKey
    from tessera.mpc.jobs import validate_job
    from tessera.node.app import parse_body
    from tessera.workflows.custodian import JOB_CONTEXT

_TRUSTED = {"rita": SigningKey(bytes(range(32))).verify_key}


def _envelope(body: Any) -> None:
    if not isinstance(body, dict) or "signatures" not in body:
        return
    document = SignedDocument.from_dict({"body": body.get("job"), "signatures": body["signatures"]})
    verified_signers(document, _TRUSTED, context=JOB_CONTEXT)
    job = validate_job(document.body, parties=3)
    float(job["issued_at"])  # the node's time-window check


@tessera_only
def TestOneInput(data: bytes) -> None:  # noqa: N802 (the name atheris expects)
    body = parse_body(data)
    with contextlib.suppress(TesseraError):
        SignedDocument.from_dict(body)
    _envelope(body)


def main() -> None:
    run(TestOneInput)


if __name__ == "__main__":
    main()
