"""Fuzz reading an audit log: entry lines (``records.jsonl``: sequence number and FHIR
AuditEvent), signed tree heads (``heads.jsonl``) and the log description (``log.json``)
through ``AuditLog`` (open, tail, events, heads, verify).

The input is up to three files separated by :data:`SEP`: records, heads, log.json (the
ones left out keep a small valid log's contents)."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from fuzz.harness import instrumented, run, tessera_only

with instrumented(__name__):
    from tessera.audit.heads import MldsaSigner
    from tessera.audit.log import AuditLog
    from tessera.core.audit_sink import AuditEvent

SEP = b"\n\x00--\x00\n"
_NAMES = ("records.jsonl", "heads.jsonl", "log.json")


def _clock() -> datetime:
    return datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _base_log() -> tuple[Path, dict[str, bytes]]:
    folder = Path(tempfile.mkdtemp(prefix="tessera-fuzz-audit-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    signer = MldsaSigner(bytes(32))
    log = AuditLog.create(folder / "log", "gateway", signer.public_key, signer=signer, clock=_clock)
    log.append([AuditEvent("login", user="rita", address="10.0.0.1")])
    log.append([AuditEvent("query", user="rita", entity="cohort", detail={"rows": 7})])
    files = {name: (log.folder / name).read_bytes() for name in (*_NAMES, "leaves.bin")}
    return log.folder, files


FOLDER, BASE = _base_log()


def base_input() -> bytes:
    """The valid log as one input (a seed)."""
    return SEP.join(BASE[name] for name in _NAMES)


def _write(data: bytes) -> None:
    given = data.split(SEP, len(_NAMES) - 1)
    for name in (*_NAMES, "leaves.bin"):
        (FOLDER / name).write_bytes(BASE[name])
    for name, content in zip(_NAMES, given, strict=False):
        (FOLDER / name).write_bytes(content)


@tessera_only
def TestOneInput(data: bytes) -> None:  # noqa: N802 (the name atheris expects)
    _write(data)
    log = AuditLog(FOLDER)
    log.tail(3)
    list(log.events())
    log.latest_head()
    log.verify(workers=1)


def main() -> None:
    run(TestOneInput)


if __name__ == "__main__":
    main()
