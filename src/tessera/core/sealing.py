"""ssms encryption in format v2: AES-256-GCM one bit-plane at a time.

The ssms ciphertext of a block is cut into ``k`` pieces of 8 planes each (the layout
of :mod:`tessera.core.bitslice`).  Fragment tags need the *inner hash* of every plane
(GHASH under the inner key ``H``, see :class:`tessera.core.fragfmt.TagKeys`).  Format
v1 encrypted the block as one GCM message and then hashed the ciphertext planes again;
v2 encrypts each plane as its own GCM message under the inner key itself, and the GCM
tag of plane ``q`` *is* its inner hash up to a known mask:

    inner(C)  = GHASH_H(C || [8L]_64 [0]_64) ^ E(J0 of the inner nonce)
    tag_q     = GHASH_H(C || [0]_64 [8L]_64) ^ E(J0_q)
    inner(C)  = tag_q ^ E(J0_q) ^ E(J0 of the inner nonce) ^ (([8L]_64 [8L]_64) * H)

(the two hashes differ only in the length block, the last block GHASH multiplies by
``H``).  So sealing costs one pass over the data instead of two.  The GCM tags are
never stored; the fragment tags made from the inner hashes authenticate the pieces,
and a *data tag* over all ``8k`` inner hashes authenticates the restored ciphertext
before it is decrypted (encrypt-then-MAC).  Decryption is AES-CTR from ``J0_q + 1``,
exactly GCM's keystream.

Nonces: ``0x02 || q (3 bytes) || block (8 bytes)``; the inner hash uses the all-zero
nonce, so no two messages under the key share one.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["PlaneSealer", "gf128_mul"]

U8 = npt.NDArray[np.uint8]
U64 = npt.NDArray[np.uint64]
TAG = 16
_R = 0xE1 << 120
_ONE = (1).to_bytes(4, "big")
_TWO = (2).to_bytes(4, "big")


def gf128_mul(x: int, y: int) -> int:
    """Product in GCM's GF(2^128) (NIST SP 800-38D, Algorithm 1; blocks as big-endian
    integers, so the field's x^0 is the top bit)."""
    z = 0
    v = y
    for i in range(127, -1, -1):
        if (x >> i) & 1:
            z ^= v
        v = (v >> 1) ^ _R if v & 1 else v >> 1
    return z


class PlaneSealer:
    """Encrypts and decrypts the ssms pieces of blocks under the inner key.

    Not thread-safe (it keeps one AES-CTR context): one sealer per thread or slot.
    """

    def __init__(self, inner_key: bytes) -> None:
        self._key = inner_key
        self._gcm = AESGCM(inner_key)
        # Single blocks, as GCM computes them itself (H and the tag masks E(J0)); no
        # data is ever encrypted in ECB mode.
        self._ecb = Cipher(algorithms.AES256(inner_key), modes.ECB()).encryptor()  # noqa: S305
        h_and_e0 = self._ecb.update(bytes(16) + bytes(12) + _ONE)
        self._h = int.from_bytes(h_and_e0[:16], "big")
        self._e0 = h_and_e0[16:]
        self._terms: dict[int, bytes] = {}
        self._prefix: list[bytes] = []
        self._ctr = Cipher(algorithms.AES256(inner_key), modes.CTR(bytes(16))).decryptor()

    def _length_term(self, plane_bytes: int) -> bytes:
        """``E(J0 of the inner nonce) ^ (length blocks' XOR) * H`` for that length."""
        cached = self._terms.get(plane_bytes)
        if cached is not None:
            return cached
        bits = 8 * plane_bytes
        value = gf128_mul((bits << 64) | bits, self._h)
        out = bytearray(value.to_bytes(16, "big"))
        for i, e in enumerate(self._e0):
            out[i] ^= e
        self._terms[plane_bytes] = bytes(out)
        return self._terms[plane_bytes]

    def _prefixes(self, count: int) -> list[bytes]:
        """Nonce prefixes ``0x02 || q`` (3 bytes) for planes ``0 .. count-1``; the block
        number (8 bytes, big-endian) completes each nonce."""
        if len(self._prefix) < count:
            self._prefix = [b"\x02" + q.to_bytes(3, "big") for q in range(count)]
        return self._prefix

    def masks(self, block: int, count: int, plane_bytes: int) -> U64:
        """``(count, 2)`` masks turning plane q's GCM tag into its inner hash."""
        tail = block.to_bytes(8, "big") + _ONE
        counters = b"".join(p + tail for p in self._prefixes(count)[:count])
        e = np.frombuffer(self._ecb.update(counters), dtype=np.uint64).reshape(count, 2)
        return e ^ np.frombuffer(self._length_term(plane_bytes), dtype=np.uint64)

    def seal(self, block: int, src: U8, dst: U8, count: int) -> U64:
        """Encrypt ``count`` equal planes of ``src`` into ``dst``; return their inner
        hashes as a ``(count, 2)`` uint64 array.

        ``dst`` needs 16 bytes of room past the planes (each plane's tag lands right
        after it before the next plane overwrites it).
        """
        size = src.size
        if size % count or dst.size < size + TAG:
            raise ValueError("seal needs equal planes and 16 bytes of room")
        plane = size // count
        smv, dmv = src.data.cast("B"), dst.data.cast("B")
        encrypt = self._gcm.encrypt_into
        suffix = block.to_bytes(8, "big")
        tags = []
        for q, prefix in enumerate(self._prefixes(count)[:count]):
            lo, hi = q * plane, (q + 1) * plane
            encrypt(prefix + suffix, smv[lo:hi], None, dmv[lo : hi + TAG])
            tags.append(dmv[hi : hi + TAG].tobytes())
        raw = np.frombuffer(b"".join(tags), dtype=np.uint64).reshape(count, 2)
        return raw ^ self.masks(block, count, plane)

    def open(self, block: int, src: U8, dst: U8, count: int) -> None:
        """Decrypt ``count`` planes of ``src`` into ``dst`` (15 bytes of room past the
        planes).  Authenticate the planes before trusting the result."""
        size = src.size
        if size % count or dst.size < size + 15:
            raise ValueError("open needs equal planes and 15 bytes of room")
        plane = size // count
        ctr = self._ctr
        smv, dmv = src.data.cast("B"), dst.data.cast("B")
        tail = block.to_bytes(8, "big") + _TWO
        for q, prefix in enumerate(self._prefixes(count)[:count]):
            lo, hi = q * plane, (q + 1) * plane
            ctr.reset_nonce(prefix + tail)  # no new key schedule per plane
            ctr.update_into(smv[lo:hi], dmv[lo : hi + 15])
