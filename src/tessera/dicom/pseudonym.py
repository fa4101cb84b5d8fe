"""Keyed pseudonyms: HMAC-SHA256 under a project key.

Everything here is a deterministic function of the key and the original value, so files,
runs and sites that share the key agree.  Pseudonyms carry a short keyed check value, so
a value this key produced is recognised and left as it is: running de-identification on
its own output changes nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import re

__all__ = ["MAX_SHIFT_DAYS", "MIN_SHIFT_DAYS", "Pseudonymizer"]

MIN_SHIFT_DAYS = 1
MAX_SHIFT_DAYS = 3652
_UID_RE = re.compile(r"2\.25\.([1-9][0-9]{0,38})")
_PID_RE = re.compile(r"TS([0-9A-F]{16})([0-9A-F]{4})")


class Pseudonymizer:
    """Pseudonyms, UIDs and date offsets derived from one project key."""

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes) or len(key) < 16:
            raise ValueError("the project key must be at least 16 bytes")
        self._key = key
        self._uids: dict[str, str] = {}

    def _mac(self, label: bytes, value: bytes) -> bytes:
        return hmac.new(self._key, label + b"\x00" + value, hashlib.sha256).digest()

    # UIDs -----------------------------------------------------------------------------
    def uid(self, original: str) -> str:
        """The replacement ``2.25.<int>`` for a UID; our own UIDs map to themselves."""
        original = original.strip().rstrip("\x00").strip()
        cached = self._uids.get(original)
        if cached is not None:
            return cached
        if self.is_our_uid(original):
            new = original
        else:
            body = self._mac(b"uid", original.encode("ascii", "replace"))[:12]
            new = f"2.25.{int.from_bytes(body + self._mac(b'uid-check', body)[:4], 'big')}"
        if len(self._uids) > 100_000:
            self._uids.clear()
        self._uids[original] = new
        return new

    def is_our_uid(self, value: str) -> bool:
        """Whether ``value`` is a UID this key produced."""
        match = _UID_RE.fullmatch(value)
        if match is None:
            return False
        number = int(match.group(1))
        if number >= 1 << 128:
            return False
        raw = number.to_bytes(16, "big")
        return hmac.compare_digest(raw[12:], self._mac(b"uid-check", raw[:12])[:4])

    # patients -------------------------------------------------------------------------
    def patient(self, patient_id: str, issuer: str = "") -> str:
        """The patient pseudonym (``TS`` + 20 hex digits) for an ID and its issuer."""
        if self.is_our_patient(patient_id):
            return patient_id
        body = self._mac(b"patient", f"{issuer}\x00{patient_id}".encode())[:8]
        return f"TS{body.hex().upper()}{self._mac(b'patient-check', body)[:2].hex().upper()}"

    def is_our_patient(self, value: str) -> bool:
        """Whether ``value`` is a patient pseudonym this key produced."""
        match = _PID_RE.fullmatch(value)
        if match is None:
            return False
        body = bytes.fromhex(match.group(1))
        check = self._mac(b"patient-check", body)[:2].hex().upper()
        return hmac.compare_digest(match.group(2), check)

    def date_offset(self, pseudonym: str) -> int:
        """Days to subtract from this patient's dates (1..3652, one per patient)."""
        digest = self._mac(b"date-offset", pseudonym.encode())
        span = MAX_SHIFT_DAYS - MIN_SHIFT_DAYS + 1
        return MIN_SHIFT_DAYS + int.from_bytes(digest[:8], "big") % span
