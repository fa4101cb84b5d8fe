"""Fuzz a custodian node's ``PUT /v1/tables/{name}/chunks/{chunk}``: the manifest header
(base64url JSON), the party check and the npz chunk of shares
(``tessera.tables.store.ShareStore.append``, which unpacks before storing anything).
The input is the header and the body separated by the first newline."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from fuzz.harness import instrumented, run, tessera_only

with instrumented(__name__):
    from tessera.node.app import parse_manifest_header
    from tessera.node.service import check_party
    from tessera.tables.store import ShareStore

CHUNK_ID = "0123456789abcdef0123456789abcdef"


@tessera_only
def TestOneInput(data: bytes) -> None:  # noqa: N802 (the name atheris expects)
    header, _, body = data.partition(b"\n")
    manifest = parse_manifest_header(header.decode("latin-1"))
    check_party(manifest, 0)
    root = Path(tempfile.mkdtemp(prefix="tessera-fuzz-"))
    try:
        ShareStore(root).append("cohort", manifest, CHUNK_ID, body)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    run(TestOneInput)


if __name__ == "__main__":
    main()
