"""The one binary layout of every HE file and message: a JSON header and opaque blobs.

::

    b"TSRHE" | version (1 byte, 1) | header length (4 bytes, big-endian, <= 1 MiB)
           | header: UTF-8 JSON object {"format": str, "version": int, ...,
                                         "blobs": [size, ...]}
           | blob 0 | blob 1 | ...            (nothing after the last blob)

Readers check everything before they trust anything: the magic, the version, the header
size, the JSON, the format name, that the blob sizes add up to exactly the bytes left,
and the caller's limits on the number of blobs and each blob's size.  A digest of a
container (:func:`digest`) is SHA-256 over all of its bytes.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tessera.errors import InputError

__all__ = ["MAGIC", "Container", "digest", "pack", "unpack"]

MAGIC = b"TSRHE\x01"
_LEN = struct.Struct(">I")
MAX_HEADER = 1 << 20
#: A blob larger than this is refused whatever the caller allows (one ciphertext of
#: N = 32768 with a 881-bit modulus and four polynomials is about 7.3 MB).
MAX_BLOB = 64 << 20
DEFAULT_MAX_BLOBS = 100_000


@dataclass(frozen=True)
class Container:
    """A parsed container: its header (without ``blobs``) and its blobs."""

    header: dict[str, Any]
    blobs: tuple[bytes, ...]

    @property
    def format(self) -> str:
        """The header's ``format`` name."""
        return str(self.header["format"])


def pack(header: dict[str, Any], blobs: Sequence[bytes] = ()) -> bytes:
    """The bytes of a container holding ``header`` (it must name its ``format``) and ``blobs``."""
    if "format" not in header or "blobs" in header:
        raise ValueError("a container header names its format and leaves 'blobs' to pack()")
    full = {**header, "blobs": [len(b) for b in blobs]}
    text = json.dumps(full, sort_keys=True, separators=(",", ":")).encode()
    if len(text) > MAX_HEADER:
        raise ValueError("container header too large")
    return b"".join([MAGIC, _LEN.pack(len(text)), text, *blobs])


def unpack(
    data: bytes,
    *,
    expect: str | Sequence[str],
    what: str = "file",
    max_blobs: int = DEFAULT_MAX_BLOBS,
    max_blob: int = MAX_BLOB,
) -> Container:
    """Parse ``data`` as a container whose format is ``expect`` (or one of them).

    InputError, naming ``what``, for anything that is not exactly such a container.
    """
    formats = (expect,) if isinstance(expect, str) else tuple(expect)
    view = memoryview(data)
    head = len(MAGIC) + _LEN.size
    if len(view) < head or bytes(view[: len(MAGIC) - 1]) != MAGIC[:-1]:
        raise InputError(f"{what} is not a Tessera HE file")
    if view[len(MAGIC) - 1] != MAGIC[-1]:
        raise InputError(f"{what} has HE container version {view[len(MAGIC) - 1]}, not 1")
    (size,) = _LEN.unpack(view[len(MAGIC) : head])
    if size > MAX_HEADER or head + size > len(view):
        raise InputError(f"{what} is truncated or its header is too large")
    try:
        header = json.loads(bytes(view[head : head + size]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise InputError(f"{what} has a damaged header") from None
    if not isinstance(header, dict) or header.get("format") not in formats:
        raise InputError(f"{what} is not a {' or '.join(formats)} file")
    if header.get("version") != 1:
        raise InputError(f"{what}: unsupported {header.get('format')} version")
    sizes = header.pop("blobs", None)
    if (
        not isinstance(sizes, list)
        or len(sizes) > max_blobs
        or not all(type(s) is int and 0 <= s <= max_blob for s in sizes)
    ):
        raise InputError(f"{what} lists too many or oversized parts")
    offset = head + size
    if offset + sum(sizes) != len(view):
        raise InputError(f"{what} is truncated or has trailing bytes")
    blobs = []
    for s in sizes:
        blobs.append(bytes(view[offset : offset + s]))
        offset += s
    return Container(header, tuple(blobs))


def digest(data: bytes) -> str:
    """``sha256:<hex>`` of ``data`` (a container's identity)."""
    return "sha256:" + hashlib.sha256(data).hexdigest()
