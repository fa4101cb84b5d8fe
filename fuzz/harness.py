"""Shared harness of the atheris fuzz targets: only ``TesseraError`` may escape a parser.

Every target module ``fuzz/<name>.py`` defines ``TestOneInput(data: bytes)`` wrapped in
:func:`tessera_only` and a ``main()`` that calls :func:`run`.  Run one with::

    .venv/bin/python -m fuzz.<name> [libFuzzer flags] [corpus dirs]

(from the repository root); ``bench/fuzz.sh`` runs them all for longer, and
``tests/unit/test_fuzz_targets.py`` replays the seed corpora and runs each briefly.
Tessera's modules are imported under :func:`instrumented`, so coverage guides the
fuzzer when a target runs as ``__main__`` (a plain import, as in the tests, does not
instrument anything).
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import atheris

from tessera.errors import TesseraError

__all__ = [
    "CORPUS",
    "NOT_JSON",
    "AcceptAll",
    "Target",
    "instrumented",
    "json_or_none",
    "run",
    "set_known_guard",
    "skip_known",
    "split_parts",
    "tessera_only",
    "text_of",
]

Target = Callable[[bytes], None]
CORPUS = Path(__file__).resolve().parent / "corpus"
NOT_JSON = object()
"""What :func:`json_or_none` gives for bytes that are not a JSON document."""


class AcceptAll:
    """A signature verifier that takes every signature, so that fuzzed bodies reach the
    parsers behind the check (a body signed by a trusted key is still outside input)."""

    def verify(self, message: bytes, signature: bytes, *, context: bytes = b"") -> None:
        return None


def tessera_only(fn: Target) -> Target:
    """The target as atheris calls it: a ``TesseraError`` is a refusal (fine); any other
    exception propagates, and atheris reports it as a crash."""

    @functools.wraps(fn)
    def wrapper(data: bytes) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                fn(data)
            except TesseraError:
                return

    return wrapper


@contextlib.contextmanager
def instrumented(module: str, extra: Sequence[str] = ()) -> Iterator[None]:
    """Instrument the imports in the block when ``module`` (the target's ``__name__``) runs
    as the fuzzer's main module; otherwise import plainly."""
    if module != "__main__":
        yield
        return
    with atheris.instrument_imports(include=["tessera", *extra]):
        yield


def run(test_one_input: Target) -> None:
    """Fuzz ``test_one_input`` with the libFuzzer flags and corpus dirs in ``sys.argv``."""
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


def text_of(data: bytes) -> str:
    """The bytes as text the way a command line hands it over (undecodable bytes become
    lone surrogates, as ``os.fsdecode`` does)."""
    return data.decode("utf-8", "surrogateescape")


def json_or_none(data: bytes) -> Any:
    """The JSON document in ``data``, or :data:`NOT_JSON` (the JSON layer itself is
    fuzzed by the targets that own the real body parsers)."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return NOT_JSON


def split_parts(data: bytes, most: int = 8) -> list[bytes]:
    """Several files in one input: the first byte is the count (1..``most``), the rest is
    cut into that many pieces of equal length (the last one takes the remainder)."""
    if not data:
        return []
    count = data[0] % most + 1
    body = data[1:]
    size = len(body) // count
    parts = [body[i * size : (i + 1) * size] for i in range(count - 1)]
    return [*parts, body[(count - 1) * size :]]


def join_parts(parts: Sequence[bytes], most: int = 8) -> bytes:
    """The inverse of :func:`split_parts` for equal-length ``parts`` (seed corpora)."""
    assert 1 <= len(parts) <= most
    return bytes([len(parts) - 1]) + b"".join(parts)


_guard = {"on": True}


def set_known_guard(on: bool) -> None:
    """Whether targets skip inputs that hit bugs reported but not yet fixed (the replay
    of ``known-*`` reproducers turns this off, to show the bug is still there)."""
    _guard["on"] = on


def skip_known(hits_known_bug: bool) -> bool:
    """True when the target should skip an input because it hits a reported bug (no
    target needs this today: every reported bug is fixed)."""
    return hits_known_bug and _guard["on"]
