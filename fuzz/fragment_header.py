"""Fuzz the fragment header parser (``FragmentHeader.parse``) and the inner header."""

from __future__ import annotations

from fuzz.harness import instrumented, run, tessera_only

with instrumented(__name__):
    from tessera.core.fragfmt import (
        INNER_HEADER_SIZE,
        FragmentHeader,
        fragment_length,
        parse_inner_header,
    )


@tessera_only
def TestOneInput(data: bytes) -> None:  # noqa: N802 (the name atheris expects)
    header = FragmentHeader.parse(data)
    fragment_length(header)
    parse_inner_header(data[-INNER_HEADER_SIZE:], header.padded_size)


def main() -> None:
    run(TestOneInput)


if __name__ == "__main__":
    main()
