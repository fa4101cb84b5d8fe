"""The content commitment a vault manifest signs: a digest of the fragments' tag lists.

Every block record of every fragment ends with the same tag list: the tag of that block
in each of the n fragments, then the plaintext (or data) tag.  Those tags are keyed
MACs of the data, identical in all fragments of one object generation, so one SHA-256
over the object's fixed header fields and every block's tag list commits to the whole
content.  Any single fragment gives it: :class:`TagDigest` computes it while a fragment
is written (put, refresh), :func:`fragment_digest` from a stored fragment by reading
only its header and tag lists (get, verify).  Repair rewrites fragments with the same
tags, so the digest stays valid; refresh re-keys them and signs a new manifest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any, BinaryIO

from tessera.core.fragfmt import (
    HEADER_SIZE,
    TAG_SIZE,
    FragmentHeader,
    block_lengths,
    payload_length,
)
from tessera.errors import InputError, InvalidShareError

__all__ = ["TagDigest", "TagTap", "fragment_digest"]

_DOMAIN = b"tessera-vault-tags-v1"


def _start(header: FragmentHeader) -> hashlib._Hash:
    h = hashlib.sha256(_DOMAIN)
    h.update(header.object_id)
    h.update(
        f"|{header.version}|{header.scheme}|{header.k}|{header.n}|{header.generation}"
        f"|{header.padded_size}|{header.block_size}|".encode()
    )
    return h


def _layout(header: FragmentHeader) -> Iterator[tuple[int, int]]:
    """(payload bytes to skip, tag-list bytes to hash) for each block record."""
    tags = TAG_SIZE * (header.n + 1)
    for block_len in block_lengths(header.padded_size, header.block_size):
        yield payload_length(header.scheme, block_len, header.k), tags


class TagDigest:
    """A write-only sink that computes the tag digest of the fragment written through it."""

    def __init__(self) -> None:
        self._head = bytearray()
        self._hash: hashlib._Hash | None = None
        self._records: Iterator[tuple[int, int]] = iter(())
        self._skip = 0
        self._take = 0
        self.error: str | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Feed the next bytes of the fragment."""
        view = memoryview(data).cast("B")
        if self._hash is None:
            need = HEADER_SIZE - len(self._head)
            self._head += view[:need]
            view = view[need:]
            if len(self._head) < HEADER_SIZE:
                return
            try:
                header = FragmentHeader.parse(bytes(self._head))
            except InputError as exc:
                self.error = str(exc)
                return
            self._hash = _start(header)
            self._records = _layout(header)
        while view.nbytes and self.error is None:
            if not self._skip and not self._take:
                try:
                    self._skip, self._take = next(self._records)
                except StopIteration:
                    self.error = "fragment is longer than its header says"
                    return
            step = min(self._skip, view.nbytes)
            self._skip -= step
            view = view[step:]
            step = min(self._take, view.nbytes) if not self._skip else 0
            self._hash.update(view[:step])
            self._take -= step
            view = view[step:]

    def hexdigest(self) -> str:
        """The digest; InvalidShareError if what was written is not a whole fragment."""
        if self._hash is None or self.error is not None or self._skip or self._take:
            raise InvalidShareError(f"cannot commit to the fragment: {self.error or 'cut short'}")
        if next(self._records, None) is not None:
            raise InvalidShareError("cannot commit to the fragment: cut short")
        return self._hash.hexdigest()


class TagTap:
    """Passes writes on to ``inner`` (a fragment being written) and digests them."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.digest = TagDigest()

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Write to ``inner``; feed the digest."""
        self.digest.write(data)
        return int(self.inner.write(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def fragment_digest(f: BinaryIO) -> str:
    """The tag digest of a stored fragment (reads its header and tag lists only)."""
    f.seek(0)
    head = f.read(HEADER_SIZE)
    try:
        header = FragmentHeader.parse(head)
    except InputError as exc:
        raise InvalidShareError(f"not a fragment: {exc}") from None
    h = _start(header)
    offset = HEADER_SIZE
    for skip, take in _layout(header):
        offset += skip
        f.seek(offset)
        tags = f.read(take)
        if len(tags) != take:
            raise InvalidShareError("fragment is truncated")
        h.update(tags)
        offset += take
    return h.hexdigest()
