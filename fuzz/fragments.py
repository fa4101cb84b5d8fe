"""Fuzz reading a set of fragment files: open (headers, grouping, key recovery),
combine and verify.  One input holds several files (see ``harness.split_parts``)."""

from __future__ import annotations

import contextlib
import io
from typing import BinaryIO

from fuzz.harness import instrumented, run, split_parts, tessera_only

with instrumented(__name__):
    from tessera.core.fragment import combine_stream, verify_fragments
    from tessera.core.fragread import open_fragments
    from tessera.errors import TesseraError


def _files(data: bytes) -> list[BinaryIO]:
    return [io.BytesIO(p) for p in split_parts(data)]


@tessera_only
def TestOneInput(data: bytes) -> None:  # noqa: N802 (the name atheris expects)
    files = _files(data)
    if not files:
        return
    with contextlib.suppress(TesseraError):
        verify_fragments(files)
    with contextlib.suppress(TesseraError):
        open_fragments(files)
    combine_stream(files, io.BytesIO(), workers=1)


def main() -> None:
    run(TestOneInput)


if __name__ == "__main__":
    main()
