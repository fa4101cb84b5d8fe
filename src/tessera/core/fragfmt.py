"""Fragment file format (version 2; version 1 still read): header, block records, key
derivation and tags.

Documented for users in ``docs/formats.md``.  All integers are little-endian.

Header (128 bytes)::

    0   8  magic  b"TSSRFRAG"
    8   2  format version (2; 1 is still read)
    10  1  scheme: 1 = shamir, 2 = ssms
    11  1  k          12  1  n          13  1  index i (1..n; the share's x = i)
    14  2  flags (0)
    16  4  generation (incremented by every refresh)
    20  4  block size B (plaintext bytes per block, multiple of 64)
    24  8  padded size P (plaintext length after padding; a Padmé bucket)
    32 16  object id (random)
    48 64  share i of the object keys K_p || K_f (byte-wise Shamir, same k and x)
    112 16 header tag: AES-GMAC over bytes 0..112 under a key derived from K_f

Then one record per plaintext block ``b`` (``ceil(P / B)`` of them)::

    payload   share of block b (shamir: the block's length; ssms: one erasure-coded
              piece of the ciphertext of block b)
    tags      (n + 1) x 16 bytes: the tag of block b of *every* fragment
              1..n, then the plaintext tag of block b (shamir), the data tag
              over its ciphertext pieces (ssms, v2) or zeros (ssms, v1, whose
              AES-GCM tag inside the ciphertext authenticates the plaintext)

Versions 1 and 2 differ only in how ssms encrypts (v1: one AES-GCM message per block;
v2: one per bit-plane under the inner key, see :mod:`tessera.core.sealing`).

Every fragment therefore carries the tags of all the others: once ``k`` fragments
give back the keys, any fragment can be checked and a damaged or foreign one named.
Tags are keyed (see :class:`TagKeys`): ``K_f`` is fresh for every generation (so
refreshed and stale fragments never verify together), ``K_p`` keys the plaintext tags
and the inner hash (and is the data key of ``ssms``): kept by a ``shamir`` refresh,
drawn anew by an ``ssms`` refresh, which re-encrypts (:mod:`tessera.core.fragrefresh`).
No hash of the plaintext is ever stored: tags are keyed with keys only ``k``
fragments reveal.

The plaintext is prefixed with a 16-byte inner header (``b"TSRI"``, version, exact
size) and zero-padded to ``P``, so stores see only the bucketed size.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tessera.errors import InputError

__all__ = [
    "HEADER_SIZE",
    "INNER_HEADER_SIZE",
    "MAGIC",
    "MAX_BLOCKS",
    "SCHEMES",
    "SUPPORTED_VERSIONS",
    "VERSION",
    "FragmentHeader",
    "TagKeys",
    "block_lengths",
    "fragment_length",
    "inner_header",
    "padded_size",
    "parse_inner_header",
    "payload_length",
    "piece_length",
]

MAGIC: Final = b"TSSRFRAG"
VERSION: Final = 2
SUPPORTED_VERSIONS: Final = (1, 2)
HEADER_SIZE: Final = 128
TAG_SIZE: Final = 16
KEY_MATERIAL: Final = 64
INNER_HEADER_SIZE: Final = 16
INNER_MAGIC: Final = b"TSRI"
SCHEMES: Final = {"shamir": 1, "ssms": 2}
_SCHEME_NAMES: Final = {v: k for k, v in SCHEMES.items()}
_FIELDS = struct.Struct("<8sHBBBBHII Q16s")
_MIN_PADDED = 4096
MAX_BLOCK: Final = 1 << 26
MAX_BLOCKS: Final = 1 << 24
"""Most blocks a fragment may have (16 TiB at the default 1 MiB blocks): headers are
read before anything authenticates them, so their sizes must bound the work they cause."""


def padded_size(length: int) -> int:
    """Padmé bucket of ``length`` (at most ~12% overhead; leaks O(log log L) bits),
    rounded up to a multiple of 64 and at least 4 KiB."""
    if length < 0:
        raise ValueError("length must be >= 0")
    length = max(length, _MIN_PADDED)
    e = length.bit_length() - 1
    s = e.bit_length()
    mask = (1 << max(e - s, 0)) - 1
    bucket = (length + mask) & ~mask
    return (bucket + 63) & ~63


def inner_header(size: int) -> bytes:
    """The 16 bytes prepended to the plaintext before sharing."""
    return INNER_MAGIC + struct.pack("<HHQ", 1, 0, size)


def parse_inner_header(data: bytes, padded: int) -> int:
    """The exact size recorded in the first plaintext block; InputError if implausible."""
    magic, version, _flags, size = struct.unpack("<4sHHQ", data[:INNER_HEADER_SIZE])
    if magic != INNER_MAGIC or version != 1 or size + INNER_HEADER_SIZE > padded:
        raise InputError("restored data has no valid inner header")
    return int(size)


def block_lengths(padded: int, block_size: int) -> list[int]:
    """Plaintext length of every block."""
    full, rest = divmod(padded, block_size)
    return [block_size] * full + ([rest] if rest else [])


def piece_length(block_len: int, k: int) -> int:
    """ssms: bytes of each erasure-coded piece for a block of ``block_len`` bytes."""
    ct = block_len + TAG_SIZE
    per = -(-ct // k)
    return (per + 63) & ~63


def payload_length(scheme: str, block_len: int, k: int) -> int:
    """Bytes of one fragment's payload for one block."""
    return block_len if scheme == "shamir" else piece_length(block_len, k)


@dataclass(frozen=True)
class FragmentHeader:
    """The parsed fixed header of a fragment file."""

    version: int
    scheme: str
    k: int
    n: int
    index: int
    object_id: bytes
    generation: int
    padded_size: int
    block_size: int
    key_share: bytes = b""
    tag: bytes = b""

    @property
    def group(self) -> tuple[bytes, int, str, int, int, int, int, int]:
        """Fields every fragment of one object and generation shares."""
        return (
            self.object_id,
            self.generation,
            self.scheme,
            self.k,
            self.n,
            self.padded_size,
            self.block_size,
            self.version,
        )

    def fields_bytes(self) -> bytes:
        """Bytes 0..112 (everything the header tag covers)."""
        return (
            _FIELDS.pack(
                MAGIC,
                self.version,
                SCHEMES[self.scheme],
                self.k,
                self.n,
                self.index,
                0,
                self.generation,
                self.block_size,
                self.padded_size,
                self.object_id,
            )
            + self.key_share
        )

    def to_bytes(self) -> bytes:
        """The 128 header bytes."""
        data = self.fields_bytes() + self.tag
        assert len(data) == HEADER_SIZE
        return data

    @classmethod
    def parse(cls, data: bytes) -> FragmentHeader:
        """Parse 128 bytes; InputError naming what is wrong."""
        if len(data) < HEADER_SIZE:
            if data[: len(MAGIC)] == MAGIC[: len(data)] and data:
                raise InputError("truncated fragment header")
            raise InputError("not a Tessera fragment")
        fields = _FIELDS.unpack_from(data)
        magic, version, scheme, k, n, index, flags, generation, block_size, padded, oid = fields
        if magic != MAGIC:
            raise InputError("not a Tessera fragment")
        if version not in SUPPORTED_VERSIONS:
            raise InputError(f"unsupported fragment format version {version}")
        if flags:
            raise InputError("fragment header has unknown flags")
        if scheme not in _SCHEME_NAMES:
            raise InputError(f"unknown sharing scheme {scheme}")
        if not (2 <= k <= n and 1 <= index <= n):
            raise InputError("fragment header has impossible k, n or index")
        if block_size == 0 or block_size % 64 or block_size > MAX_BLOCK or padded % 64:
            raise InputError("fragment header has an invalid block or padded size")
        if -(-padded // block_size) > MAX_BLOCKS:
            raise InputError("fragment header claims more blocks than any fragment has")
        return cls(
            version=version,
            scheme=_SCHEME_NAMES[scheme],
            k=k,
            n=n,
            index=index,
            object_id=oid,
            generation=generation,
            padded_size=padded,
            block_size=block_size,
            key_share=bytes(data[_FIELDS.size : _FIELDS.size + KEY_MATERIAL]),
            tag=bytes(data[_FIELDS.size + KEY_MATERIAL : HEADER_SIZE]),
        )


def record_length(header: FragmentHeader, block_len: int) -> int:
    """Bytes of one block record (payload and tag list)."""
    return payload_length(header.scheme, block_len, header.k) + TAG_SIZE * (header.n + 1)


def fragment_length(header: FragmentHeader) -> int:
    """Total byte length of a complete fragment file (computed, not summed per block)."""
    full, rest = divmod(header.padded_size, header.block_size)
    total = HEADER_SIZE + full * record_length(header, header.block_size)
    return total + (record_length(header, rest) if rest else 0)


class TagKeys:
    """Keys and tags of one object generation (hash-then-MAC, Carter-Wegman style).

    Inner hash: every 8th of a block payload (a bit-plane) is hashed with GHASH under a
    key ``H_in`` derived from ``K_p`` (computed as AES-GCM with empty plaintext, the plane
    as associated data and a fixed nonce).  The inner value of a XOR of planes is the
    XOR of their inner values (plus the inner value of a zero plane when the count is
    even), so the tags of computed fragments follow from the hashes of the inputs.
    Inner values are never stored or revealed.

    Outer MAC: the 8 inner values of a payload are authenticated with AES-GMAC under
    ``K_out`` (derived from ``K_f``, fresh every generation) and a nonce unique to the
    (fragment, block); plaintext tags use a key derived from ``K_p`` instead.
    """

    HEADER_BLOCK: Final = (1 << 63) - 1

    def __init__(self, key_material: bytes, n: int) -> None:
        if len(key_material) != KEY_MATERIAL:
            raise ValueError("key material must be 64 bytes")
        self.data_key = key_material[:32]
        self.fragment_key = key_material[32:]
        self.n = n
        derived = _derive(self.data_key, 0, 2)
        self.inner_key = derived[:32]
        """Keys the inner hash, and is the ssms data key of format v2."""
        self._inner = AESGCM(self.inner_key)
        self._plain = AESGCM(derived[32:])
        self._outer = AESGCM(_derive(self.fragment_key, 1, 1))
        self._zero: dict[int, bytes] = {}

    def inner(self, plane: memoryview | bytes) -> bytes:
        """Inner hash of one bit-plane."""
        return self._inner.encrypt(_INNER_NONCE, b"", plane)

    def inner_planes(self, payload: npt.NDArray[np.uint8]) -> list[bytes]:
        """Inner hashes of the 8 planes of a payload."""
        planes = payload.reshape(8, -1)
        return [self.inner(planes[p].data) for p in range(8)]

    def zero(self, plane_bytes: int) -> bytes:
        """Inner hash of an all-zero plane of that length."""
        value = self._zero.get(plane_bytes)
        if value is None:
            value = self._zero[plane_bytes] = self.inner(bytes(plane_bytes))
        return value

    def combine_inner(self, values: Sequence[bytes], plane_bytes: int) -> bytes:
        """Inner hash of the XOR of the planes whose inner hashes are ``values``."""
        acc = 0 if len(values) % 2 else int.from_bytes(self.zero(plane_bytes), "little")
        for v in values:
            acc ^= int.from_bytes(v, "little")
        return acc.to_bytes(16, "little")

    def fragment_tag(self, index: int, block: int, inner8: Sequence[bytes]) -> bytes:
        """Tag of block ``block`` of fragment ``index`` from its 8 inner hashes."""
        return self._outer.encrypt(_nonce(index, block), b"", b"".join(inner8))

    def fragment_tag_raw(self, index: int, block: int, inner8: bytes) -> bytes:
        """:meth:`fragment_tag` from the 8 inner hashes already joined (128 bytes)."""
        return self._outer.encrypt(_nonce(index, block), b"", inner8)

    def plaintext_tag(self, block: int, inner8: Sequence[bytes]) -> bytes:
        """Tag of plaintext block ``block`` (shamir) from its 8 inner hashes."""
        return self.block_tag(block, b"".join(inner8))

    def block_tag(self, block: int, inner: bytes) -> bytes:
        """The last entry of block ``block``'s tag list from inner hashes, joined: the
        plaintext's 8 (shamir) or the ``8k`` of the ciphertext pieces (ssms, v2).
        Keyed from ``K_p``, so it survives shamir refreshes."""
        return self._plain.encrypt(_nonce(0, block), b"", inner)

    def payload_tag(self, index: int, block: int, payload: npt.NDArray[np.uint8]) -> bytes:
        """Tag of a fragment payload computed directly."""
        return self.fragment_tag(index, block, self.inner_planes(payload))

    def header_tag(self, header: FragmentHeader) -> bytes:
        """Tag binding a header's fields and key share."""
        return self._outer.encrypt(
            _nonce(header.index, self.HEADER_BLOCK), b"", header.fields_bytes()
        )


_INNER_NONCE: Final = bytes(12)


def _nonce(index: int, block: int) -> bytes:
    return bytes([1, index]) + block.to_bytes(8, "big") + b"\0\0"


def _derive(key: bytes, slot: int, count: int) -> bytes:
    """``count`` 32-byte subkeys of ``key`` (AES-256-CTR keystream at ``slot``)."""
    nonce = (slot << 64).to_bytes(16, "big")
    return Cipher(algorithms.AES256(key), modes.CTR(nonce)).encryptor().update(bytes(32 * count))
