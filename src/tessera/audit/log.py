"""The append-only Merkle audit log on disk, with signed tree heads.

One log is one folder::

    log.json       {"format": "tessera-audit-log", "version": 2, "records", "origin",
                   "public_key"}
    records.jsonl  one entry per line: "<seq, 12 digits> <compact event record JSON>"
                   (:mod:`tessera.audit.record`; version 1 logs hold the FHIR resource)
    leaves.bin     the RFC 9162 leaf hash of each line (32 bytes each, fixed size)
    heads.jsonl    signed tree heads (ML-DSA-65), one per ``head_every`` entries (or per
                   :meth:`AuditLog.sign_pending` / :meth:`AuditLog.close`)
    frontier.bin   size (8 bytes) and right-edge subtree roots when the last head was
                   signed, so opening a log of millions of entries costs O(log n) plus the
                   unsigned tail, not a rebuild (derived data: checked against the newest
                   signed head when it has that size, rebuilt from leaves.bin when it is
                   missing, damaged or ahead of the leaves)
    lock           advisory lock taken while appending

The leaf data is the whole line without its newline, so verification is a bulk pass:
recompute each line's leaf hash and compare with ``leaves.bin``, check each line's
sequence number, and rebuild the tree from the leaf hashes in one pass, comparing the
root at every signed head.  Editing, deleting or reordering a line is named exactly;
rewriting a line *and* its leaf hash breaks the next signed root, so the first entry that
no valid signature covers is named; truncation is caught by the signed heads (and by
heads other logs witnessed, see :mod:`tessera.audit.witness`).

Head batching: each :meth:`AuditLog.append` writes its entries durably (records and leaf
hashes flushed and ``fdatasync``-ed before it returns) but signs a tree head only once
``head_every`` entries are unsigned; :meth:`AuditLog.sign_pending` (or :meth:`close`)
signs whatever is pending, and ``head_interval_s`` starts a timer that does so that many
seconds after the first unsigned entry.  Entries after the newest head are verified as a
tail (sequence numbers and leaf hashes) and reported as not yet signed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tessera.audit._verify import VerifyReport, verify_log
from tessera.audit.fhir import from_fhir, to_fhir
from tessera.audit.heads import Signer, TreeHead, verify_head
from tessera.audit.record import RECORD_FORMAT, decode, encode
from tessera.core import merkle
from tessera.core.audit_sink import AuditEvent
from tessera.errors import ConfigError, InputError, NotFoundError, UsageError

__all__ = ["AuditLog", "VerifyReport"]

FORMAT = "tessera-audit-log"
VERSION = 2  # entries are compact event records (1: FHIR resources, still read)
_VERSIONS = (1, 2)
_SEQ_DIGITS = 12
_FRONTIER = "frontier.bin"


# What parsing a damaged entry line (JSON, then the FHIR resource) may raise.
_UNREADABLE = (KeyError, TypeError, ValueError, IndexError, AttributeError, RecursionError)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _compact(resource: dict[str, Any]) -> bytes:
    # The stored line itself is the leaf, so no canonical re-serialisation is needed.
    return json.dumps(resource, separators=(",", ":"), ensure_ascii=True).encode()


class AuditLog:
    """An append-only, signed Merkle log of FHIR AuditEvents; also an ``AuditSink``."""

    def __init__(
        self,
        folder: Path,
        *,
        signer: Signer | None = None,
        clock: Callable[[], datetime] = _utcnow,
        head_every: int = 1,
        head_interval_s: float | None = None,
        durable: bool = True,
    ) -> None:
        """Open the log in ``folder`` (see :meth:`create` to make one).

        A head is signed once ``head_every`` entries are unsigned (1: every append),
        and ``head_interval_s`` after the first unsigned entry when set; ``durable``
        syncs every append to disk before it returns.
        """
        if head_every < 1:
            raise UsageError("head_every must be at least 1")
        self.folder = folder
        meta_path = folder / "log.json"
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise NotFoundError(f"no audit log at {folder}") from None
        except (ValueError, UnicodeDecodeError):
            raise InputError(f"{meta_path} is not an audit log description") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise InputError(f"{meta_path} is not an audit log description")
        if meta.get("version") not in _VERSIONS:
            raise InputError(f"audit log version {meta.get('version')} is not supported")
        try:
            self.origin = str(meta["origin"])
            self.public_key = bytes.fromhex(str(meta["public_key"]))
        except (KeyError, ValueError):
            raise InputError(f"{meta_path} lacks a valid origin or public key") from None
        self.version = int(meta["version"])
        self._identity = _identity(meta_path)
        self._signer = signer
        self._clock = clock
        self._builder = merkle.TreeBuilder()
        self._batch: list[AuditEvent] | None = None
        self.head_every = head_every
        self.head_interval_s = head_interval_s
        self.durable = durable
        self._mutex = threading.RLock()
        self._timer: threading.Timer | None = None

    @classmethod
    def create(
        cls,
        folder: Path,
        origin: str,
        public_key: bytes,
        *,
        signer: Signer | None = None,
        clock: Callable[[], datetime] = _utcnow,
        **options: Any,
    ) -> AuditLog:
        """Make an empty log named ``origin`` whose heads ``public_key`` verifies
        (``options``: the batching and durability keywords of the constructor)."""
        if not origin or any(c in origin for c in "\n\r"):
            raise UsageError("a log origin is one non-empty line")
        if (folder / "log.json").exists():
            raise ConfigError(f"{folder} already holds an audit log")
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("records.jsonl", "leaves.bin", "heads.jsonl"):
            (folder / name).touch()
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "records": RECORD_FORMAT,
            "origin": origin,
            "algorithm": "ML-DSA-65",
            "public_key": public_key.hex(),
        }
        tmp = folder / "log.json.tmp"
        tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, folder / "log.json")
        return cls(folder, signer=signer, clock=clock, **options)

    # -- appending -------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Entries stored (as the leaf index says)."""
        return (self.folder / "leaves.bin").stat().st_size // merkle.HASH_SIZE

    def emit(self, event: AuditEvent) -> None:
        """AuditSink: record one event (signed now, or at the end of :meth:`batch`)."""
        if self._batch is not None:
            self._batch.append(event)
        else:
            self.append([event])

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Collect :meth:`emit` calls and append them under one signed tree head."""
        if self._batch is not None:
            raise UsageError("audit batches do not nest")
        self._batch = []
        try:
            yield
        finally:
            events, self._batch = self._batch, None
            if events:
                self.append(events)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.folder / "lock", "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _check_same_log(self) -> None:
        """ConfigError when ``log.json`` was replaced since this log was opened (a new
        log in the same folder: this instance's key must never sign it)."""
        if _identity(self.folder / "log.json") != self._identity:
            raise ConfigError(f"the audit log at {self.folder} was replaced since it was opened")

    def _sync_builder(self) -> None:
        self._check_same_log()
        size = self.size
        if self._builder.size == size:
            return
        builder = self._saved_frontier(size)
        start = 0 if builder is None else builder.size
        if builder is None:
            builder = merkle.TreeBuilder()
        step = merkle.HASH_SIZE
        with open(self.folder / "leaves.bin", "rb") as fh:
            fh.seek(start * step)
            data = fh.read((size - start) * step)
        builder.extend(data[i : i + step] for i in range(0, len(data) - step + 1, step))
        self._builder = builder

    def _saved_frontier(self, size: int) -> merkle.TreeBuilder | None:
        """The builder saved when the last head was signed, if it is for at most ``size``
        entries (the unsigned tail is added from ``leaves.bin``) and, when the newest
        signed head has its size, its root is that head's."""
        try:
            raw = (self.folder / _FRONTIER).read_bytes()
            stored = int.from_bytes(raw[:8], "big")
            step = merkle.HASH_SIZE
            hashes = [raw[i : i + step] for i in range(8, len(raw), step)]
            builder = merkle.TreeBuilder.from_frontier(stored, hashes)
            head = self.latest_head()
        except (OSError, ValueError, InputError):
            return None
        if stored > size or (head is not None and head.size > stored):
            return None
        if (
            head is not None
            and head.size == stored
            and (builder.root() != head.root or not verify_head(head, self.public_key))
        ):
            return None
        return builder

    def _save_frontier(self) -> None:
        data = self._builder.size.to_bytes(8, "big") + b"".join(self._builder.frontier())
        tmp = self.folder / (_FRONTIER + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, self.folder / _FRONTIER)

    def _write(self, name: str, data: bytes) -> None:
        with open(self.folder / name, "ab") as fh:
            fh.write(data)
            fh.flush()
            if self.durable:
                os.fdatasync(fh.fileno())

    def append(self, events: Sequence[AuditEvent]) -> TreeHead | None:
        """Append ``events`` in order, durably; the head signed now, if one was due.

        A head is signed when ``head_every`` or more entries are unsigned afterwards
        (always, with the default ``head_every=1``); else :meth:`sign_pending`, the
        interval timer or :meth:`close` signs them later.
        """
        if self._signer is None:
            raise UsageError("this audit log was opened without its signing key")
        with self._mutex, self._locked():
            self._sync_builder()
            start = self._builder.size
            lines: list[bytes] = []
            leaves: list[bytes] = []
            now = self._clock()
            for offset, event in enumerate(events):
                seq = start + offset
                recorded = event.recorded or now
                line = b"%012d " % seq + self._encode(event, seq, recorded)
                leaves.append(hashlib.sha256(b"\x00" + line).digest())
                lines.append(line)
            self._write("records.jsonl", b"".join(line + b"\n" for line in lines))
            self._write("leaves.bin", b"".join(leaves))
            self._builder.extend(leaves)
            latest = self.latest_head()
            unsigned = self._builder.size - (latest.size if latest is not None else 0)
            if unsigned >= self.head_every:
                return self._sign(now)
        self._arm_timer()
        return None

    def _sign(self, now: datetime) -> TreeHead:
        """Sign a head over the current tree (the caller holds the lock)."""
        assert self._signer is not None
        head = TreeHead(
            self.origin, self._builder.size, self._builder.root(), int(now.timestamp() * 1000)
        ).signed(self._signer)
        self._write("heads.jsonl", json.dumps(head.to_json()).encode() + b"\n")
        self._save_frontier()
        return head

    def sign_pending(self) -> TreeHead | None:
        """Sign a head over every entry not yet covered by one (from any writer); the
        new head, or None when the newest head already covers the log."""
        if self._signer is None:
            raise UsageError("this audit log was opened without its signing key")
        with self._mutex, self._locked():
            self._sync_builder()
            latest = self.latest_head()
            if self._builder.size == 0 or (
                latest is not None and latest.size >= self._builder.size
            ):
                return None
            return self._sign(self._clock())

    @property
    def unsigned(self) -> int:
        """Entries after the newest signed head."""
        latest = self.latest_head()
        return max(0, self.size - (latest.size if latest is not None else 0))

    def _arm_timer(self) -> None:
        if self.head_interval_s is None:
            return
        with self._mutex:
            if self._timer is not None and self._timer.is_alive():
                return
            self._timer = threading.Timer(self.head_interval_s, self._timer_fired)
            self._timer.daemon = True
            self._timer.start()

    def _timer_fired(self) -> None:
        with contextlib.suppress(Exception):  # the next append, timer or close retries
            self.sign_pending()

    def close(self, *, sign: bool = True) -> TreeHead | None:
        """Stop the timer and sign what is pending (unless ``sign`` is false; a no-op
        without the signing key or when the log was replaced meanwhile)."""
        with self._mutex:
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        if not sign or self._signer is None:
            return None
        with contextlib.suppress(ConfigError):
            self._check_same_log()
            return self.sign_pending()
        return None

    # -- reading ---------------------------------------------------------------------

    def heads(self) -> list[TreeHead]:
        """Every signed tree head, oldest first (InputError on a malformed line)."""
        text = (self.folder / "heads.jsonl").read_bytes()
        out = []
        for line in text.splitlines():
            if line.strip():
                try:
                    out.append(TreeHead.from_json(json.loads(line)))
                except (ValueError, RecursionError):
                    raise InputError("malformed tree head line") from None
        return out

    def latest_head(self) -> TreeHead | None:
        """The newest signed tree head, if any (reads only the end of the file)."""
        line = _last_line(self.folder / "heads.jsonl")
        if not line:
            return None
        try:
            return TreeHead.from_json(json.loads(line))
        except (ValueError, RecursionError):
            raise InputError("malformed tree head line") from None

    def _encode(self, event: AuditEvent, seq: int, recorded: datetime) -> bytes:
        if self.version == 1:
            return _compact(to_fhir(event, f"{self.origin}.{seq}", recorded))
        return encode(event, recorded)

    def _decode(self, body: bytes) -> AuditEvent:
        if self.version == 1:
            return from_fhir(json.loads(body))
        return decode(body)

    def _raw(self, start: int) -> Iterator[tuple[int, bytes, bytes]]:
        with open(self.folder / "records.jsonl", "rb") as fh:
            for i, raw in enumerate(fh):
                if i >= start:
                    seq_text, _, body = raw.rstrip(b"\n").partition(b" ")
                    yield i, seq_text, body

    def records(self, start: int = 0) -> Iterator[tuple[int, dict[str, Any]]]:
        """(sequence number, FHIR AuditEvent dict) for each stored entry from ``start``
        (made from the stored record in a version-2 log)."""
        for i, seq_text, body in self._raw(start):
            try:
                seq = int(seq_text)
                if self.version == 1:
                    resource = json.loads(body)
                else:
                    event = decode(body)
                    assert event.recorded is not None
                    resource = to_fhir(event, f"{self.origin}.{seq}", event.recorded)
            except _UNREADABLE:
                raise InputError(f"audit entry {i} is not readable") from None
            yield seq, resource

    def tail(self, count: int) -> list[tuple[int, AuditEvent]]:
        """The newest ``count`` entries, newest first, read from the end of the file
        (cost independent of the log's length)."""
        out: list[tuple[int, AuditEvent]] = []
        for raw in _last_lines(self.folder / "records.jsonl", count):
            seq_text, _, body = raw.partition(b" ")
            try:
                seq = int(seq_text)
                out.append((seq, self._decode(body)))
            except _UNREADABLE:
                raise InputError("an audit entry near the end is not readable") from None
        return out

    def events(self, start: int = 0) -> Iterator[tuple[int, AuditEvent]]:
        """(sequence number, AuditEvent) for each stored entry from ``start``."""
        for i, seq_text, body in self._raw(start):
            try:
                seq = int(seq_text)
                event = self._decode(body)
            except _UNREADABLE:
                raise InputError(f"audit entry {i} is not a Tessera AuditEvent") from None
            yield seq, event

    def _leaf_hashes(self, size: int) -> list[bytes]:
        data = (self.folder / "leaves.bin").read_bytes()
        if len(data) < size * merkle.HASH_SIZE:
            raise UsageError(f"the log holds fewer than {size} entries")
        step = merkle.HASH_SIZE
        return [data[i : i + step] for i in range(0, size * step, step)]

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """The RFC 9162 inclusion proof of entry ``index`` in the tree of ``size``."""
        return merkle.inclusion_proof(self._leaf_hashes(size), index)

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """The RFC 9162 proof that tree ``old_size`` is a prefix of tree ``new_size``."""
        if old_size == new_size or old_size == 0:
            return []
        return merkle.consistency_proof(self._leaf_hashes(new_size), old_size)

    def root_at(self, size: int) -> bytes:
        """The RFC 9162 root of the first ``size`` entries (from ``leaves.bin``)."""
        if size == 0:
            return merkle.EMPTY_ROOT
        return merkle.root_at(merkle.levels(b"".join(self._leaf_hashes(size))), size)

    # -- verifying -------------------------------------------------------------------

    def verify(
        self,
        *,
        trusted_key: bytes | None = None,
        witnessed: Sequence[TreeHead] = (),
        workers: int | None = None,
    ) -> VerifyReport:
        """Check every entry, leaf hash and signed head; name the first bad entry.

        ``trusted_key`` pins the signing key (else the one in ``log.json`` is used);
        ``witnessed`` are heads of this log that other parties kept, which catch a
        truncation even when the attacker also removed the local heads.  ``workers``
        processes check the records (default: one per CPU for logs over 64 MiB).

        Writers are held off meanwhile (the lock every append takes), so a live log is
        read between two appends, never halfway through one; a folder where the lock
        cannot be taken (read-only) is read as it is.
        """
        with self._mutex, self._reading():
            return verify_log(self, trusted_key, witnessed, workers)

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        try:
            locked = self._locked()
            locked.__enter__()
        except OSError:
            yield
            return
        try:
            yield
        finally:
            locked.__exit__(None, None, None)


def _identity(path: Path) -> tuple[int, int, int]:
    """What tells a file apart from one that replaced it (inode numbers are reused)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return (-1, -1, -1)
    return st.st_ino, st.st_ctime_ns, st.st_mtime_ns


def _last_lines(path: Path, count: int, chunk: int = 1 << 16) -> list[bytes]:
    """The last ``count`` non-empty lines of a file, newest first, read from its end."""
    if count <= 0:
        return []
    with open(path, "rb") as fh:
        pos = fh.seek(0, os.SEEK_END)
        tail = b""
        while pos > 0:
            step = min(chunk, pos)
            pos -= step
            fh.seek(pos)
            tail = fh.read(step) + tail
            lines = [x for x in tail.split(b"\n") if x.strip()]
            # the first piece may be a partial line unless the file's start was reached
            if len(lines) > count or (pos == 0 and lines):
                return lines[::-1][:count]
        return []


def _last_line(path: Path) -> bytes:
    """The last non-empty line of a file, read from its end."""
    found = _last_lines(path, 1)
    return found[0] if found else b""
