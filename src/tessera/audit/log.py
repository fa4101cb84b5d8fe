"""The append-only Merkle audit log on disk, with signed tree heads.

One log is one folder::

    log.json       {"format": "tessera-audit-log", "version": 1, "origin", "public_key"}
    records.jsonl  one entry per line: "<seq, 12 digits> <compact FHIR AuditEvent JSON>"
    leaves.bin     the RFC 9162 leaf hash of each line (32 bytes each, fixed size)
    heads.jsonl    signed tree heads (ML-DSA-65), one per append batch
    frontier.bin   size (8 bytes) and right-edge subtree roots after the last append, so
                   opening a log of millions of entries costs O(log n), not a rebuild
                   (derived data: checked against the newest signed head, rebuilt from
                   leaves.bin when it disagrees or is missing)
    lock           advisory lock taken while appending

The leaf data is the whole line without its newline, so verification is a bulk pass:
recompute each line's leaf hash and compare with ``leaves.bin``, check each line's
sequence number, and rebuild the tree from the leaf hashes in one pass, comparing the
root at every signed head.  Editing, deleting or reordering a line is named exactly;
rewriting a line *and* its leaf hash breaks the next signed root, so the first entry that
no valid signature covers is named; truncation is caught by the signed heads (and by
heads other logs witnessed, see :mod:`tessera.audit.witness`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tessera.audit._entries import check_entries
from tessera.audit.fhir import from_fhir, to_fhir
from tessera.audit.heads import Signer, TreeHead, verify_head
from tessera.core import merkle
from tessera.core.audit_sink import AuditEvent
from tessera.errors import ConfigError, InputError, NotFoundError, UsageError

__all__ = ["AuditLog", "VerifyReport"]

FORMAT = "tessera-audit-log"
VERSION = 1
_SEQ_DIGITS = 12
_FRONTIER = "frontier.bin"


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _compact(resource: dict[str, Any]) -> bytes:
    # The stored line itself is the leaf, so no canonical re-serialisation is needed.
    return json.dumps(resource, separators=(",", ":"), ensure_ascii=True).encode()


@dataclass(frozen=True)
class VerifyReport:
    """The outcome of :meth:`AuditLog.verify` (``first_bad`` is a 0-based entry index)."""

    ok: bool
    entries: int
    first_bad: int | None
    problem: str | None
    heads: int
    signed_size: int

    def to_json(self) -> dict[str, Any]:
        """The ``audit verify --json`` document."""
        return {
            "ok": self.ok,
            "entries": self.entries,
            "first_bad": self.first_bad,
            "problem": self.problem,
            "heads": self.heads,
            "signed_size": self.signed_size,
        }


class AuditLog:
    """An append-only, signed Merkle log of FHIR AuditEvents; also an ``AuditSink``."""

    def __init__(
        self,
        folder: Path,
        *,
        signer: Signer | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        """Open the log in ``folder`` (see :meth:`create` to make one)."""
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
        if meta.get("version") != VERSION:
            raise InputError(f"audit log version {meta.get('version')} is not supported")
        try:
            self.origin = str(meta["origin"])
            self.public_key = bytes.fromhex(str(meta["public_key"]))
        except (KeyError, ValueError):
            raise InputError(f"{meta_path} lacks a valid origin or public key") from None
        self._signer = signer
        self._clock = clock
        self._builder = merkle.TreeBuilder()
        self._batch: list[AuditEvent] | None = None

    @classmethod
    def create(
        cls,
        folder: Path,
        origin: str,
        public_key: bytes,
        *,
        signer: Signer | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> AuditLog:
        """Make an empty log named ``origin`` whose heads ``public_key`` verifies."""
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
            "origin": origin,
            "algorithm": "ML-DSA-65",
            "public_key": public_key.hex(),
        }
        tmp = folder / "log.json.tmp"
        tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, folder / "log.json")
        return cls(folder, signer=signer, clock=clock)

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

    def _sync_builder(self) -> None:
        size = self.size
        if self._builder.size == size:
            return
        builder = self._saved_frontier(size)
        if builder is None:
            builder = merkle.TreeBuilder()
            data = (self.folder / "leaves.bin").read_bytes()
            for i in range(0, size * merkle.HASH_SIZE, merkle.HASH_SIZE):
                builder.append(data[i : i + merkle.HASH_SIZE])
        self._builder = builder

    def _saved_frontier(self, size: int) -> merkle.TreeBuilder | None:
        """The builder saved by the last append, if it is for ``size`` entries and its
        root is the one the newest signed head (of that size) signed."""
        try:
            raw = (self.folder / _FRONTIER).read_bytes()
            stored = int.from_bytes(raw[:8], "big")
            step = merkle.HASH_SIZE
            hashes = [raw[i : i + step] for i in range(8, len(raw), step)]
            builder = merkle.TreeBuilder.from_frontier(stored, hashes)
            head = self.latest_head()
        except (OSError, ValueError, InputError):
            return None
        if stored != size or head is None or head.size != size:
            return None
        if builder.root() != head.root or not verify_head(head, self.public_key):
            return None
        return builder

    def _save_frontier(self) -> None:
        data = self._builder.size.to_bytes(8, "big") + b"".join(self._builder.frontier())
        tmp = self.folder / (_FRONTIER + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, self.folder / _FRONTIER)

    def append(self, events: Sequence[AuditEvent]) -> TreeHead:
        """Append ``events`` in order and sign one tree head over the new log."""
        if self._signer is None:
            raise UsageError("this audit log was opened without its signing key")
        with self._locked():
            self._sync_builder()
            start = self._builder.size
            lines: list[bytes] = []
            leaves: list[bytes] = []
            now = self._clock()
            for offset, event in enumerate(events):
                seq = start + offset
                recorded = event.recorded or now
                resource = to_fhir(event, f"{self.origin}.{seq}", recorded)
                line = b"%012d " % seq + _compact(resource)
                leaf = hashlib.sha256(b"\x00" + line).digest()
                lines.append(line)
                leaves.append(leaf)
            with open(self.folder / "records.jsonl", "ab") as fh:
                fh.write(b"".join(line + b"\n" for line in lines))
            with open(self.folder / "leaves.bin", "ab") as fh:
                fh.write(b"".join(leaves))
            self._builder.extend(leaves)
            head = TreeHead(
                self.origin,
                self._builder.size,
                self._builder.root(),
                int(now.timestamp() * 1000),
            ).signed(self._signer)
            with open(self.folder / "heads.jsonl", "ab") as fh:
                fh.write(json.dumps(head.to_json()).encode() + b"\n")
            self._save_frontier()
        return head

    # -- reading ---------------------------------------------------------------------

    def heads(self) -> list[TreeHead]:
        """Every signed tree head, oldest first (InputError on a malformed line)."""
        text = (self.folder / "heads.jsonl").read_text(encoding="utf-8")
        out = []
        for line in text.splitlines():
            if line.strip():
                try:
                    out.append(TreeHead.from_json(json.loads(line)))
                except ValueError:
                    raise InputError("malformed tree head line") from None
        return out

    def latest_head(self) -> TreeHead | None:
        """The newest signed tree head, if any (reads only the end of the file)."""
        line = _last_line(self.folder / "heads.jsonl")
        if not line:
            return None
        try:
            return TreeHead.from_json(json.loads(line))
        except ValueError:
            raise InputError("malformed tree head line") from None

    def records(self, start: int = 0) -> Iterator[tuple[int, dict[str, Any]]]:
        """(sequence number, FHIR AuditEvent dict) for each stored entry from ``start``."""
        with open(self.folder / "records.jsonl", "rb") as fh:
            for i, raw in enumerate(fh):
                if i < start:
                    continue
                seq_text, _, body = raw.rstrip(b"\n").partition(b" ")
                try:
                    yield int(seq_text), json.loads(body)
                except ValueError:
                    raise InputError(f"audit entry {i} is not readable") from None

    def tail(self, count: int) -> list[tuple[int, AuditEvent]]:
        """The newest ``count`` entries, newest first, read from the end of the file
        (cost independent of the log's length)."""
        out: list[tuple[int, AuditEvent]] = []
        for raw in _last_lines(self.folder / "records.jsonl", count):
            seq_text, _, body = raw.partition(b" ")
            try:
                seq = int(seq_text)
                out.append((seq, from_fhir(json.loads(body))))
            except (KeyError, TypeError, ValueError, IndexError):
                raise InputError("an audit entry near the end is not readable") from None
        return out

    def events(self, start: int = 0) -> Iterator[tuple[int, AuditEvent]]:
        """(sequence number, AuditEvent) for each stored entry from ``start``."""
        for seq, resource in self.records(start):
            try:
                yield seq, from_fhir(resource)
            except (KeyError, TypeError, ValueError, IndexError):
                raise InputError(f"audit entry {seq} is not a Tessera AuditEvent") from None

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
        """
        return _verify(self, trusted_key, witnessed, workers)


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


def _verify(
    log: AuditLog,
    trusted_key: bytes | None,
    witnessed: Sequence[TreeHead],
    workers: int | None,
) -> VerifyReport:
    folder = log.folder
    findings: list[tuple[int, str]] = []
    key = log.public_key
    if trusted_key is not None and trusted_key != key:
        findings.append((0, "the log's signing key is not the trusted key"))
        key = trusted_key

    stored = (folder / "leaves.bin").read_bytes()
    n_leaves = len(stored) // merkle.HASH_SIZE
    if len(stored) % merkle.HASH_SIZE:
        findings.append((n_leaves, "the leaf index ends with a partial hash"))
    n, recomputed = check_entries(folder / "records.jsonl", stored, findings, workers)
    if n_leaves != n:
        findings.append((min(n, n_leaves), f"{n} entries but {n_leaves} leaf hashes"))

    # Signed heads, then the tree rebuilt from the leaf hashes the heads commit to.
    try:
        heads = log.heads()
    except InputError:
        heads = []
        findings.append((0, "the tree head file is malformed"))
    checks: list[tuple[TreeHead, bool]] = [(h, True) for h in heads]
    checks += [(h, False) for h in witnessed]
    covered = 0
    last_good = 0
    for head, local in checks:
        if head.origin != log.origin or not verify_head(head, key):
            findings.append(
                (last_good if local else 0, f"tree head for size {head.size} has a bad signature")
            )
        elif local:
            covered = max(covered, head.size)
            last_good = head.size
    if any(h.size < p.size for p, h in itertools.pairwise(heads)):
        findings.append((0, "tree heads go backwards"))
    if covered < n:
        findings.append((covered, f"entries after {covered} are not covered by a signed tree head"))
    wanted = sorted({h.size for h, _ in checks})
    roots: dict[int, list[bytes]] = {}
    for head, _ in checks:
        roots.setdefault(head.size, []).append(head.root)
    leaf_source = stored[: n_leaves * merkle.HASH_SIZE] + recomputed
    total = len(leaf_source) // merkle.HASH_SIZE
    tree = merkle.levels(leaf_source[: total * merkle.HASH_SIZE])
    previous = 0
    for size in wanted:
        if size > total:
            findings.append(
                (total, f"log truncated: a signed head covers {size} entries, {total} remain")
            )
            break
        root = merkle.root_at(tree, size)
        if any(r != root for r in roots[size]):
            findings.append((previous, f"the tree of size {size} does not match its signed head"))
        previous = size

    first = min(findings, key=lambda f: f[0], default=None)
    return VerifyReport(
        ok=not findings,
        entries=n,
        first_bad=None if first is None else first[0],
        problem=None if first is None else first[1],
        heads=len(heads),
        signed_size=covered,
    )
