"""Verifying a whole log: entries, leaf hashes, signed heads and witnessed heads.

:meth:`tessera.audit.log.AuditLog.verify` calls :func:`verify_log`; findings are
(0-based entry index, problem) pairs and the first one is reported.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tessera.audit._entries import check_entries
from tessera.audit.heads import TreeHead, verify_head
from tessera.core import merkle
from tessera.errors import InputError

if TYPE_CHECKING:
    from tessera.audit.log import AuditLog

__all__ = ["VerifyReport", "verify_log"]


@dataclass(frozen=True)
class VerifyReport:
    """The outcome of :meth:`AuditLog.verify` (``first_bad`` is a 0-based entry index)."""

    ok: bool
    entries: int
    first_bad: int | None
    problem: str | None
    heads: int
    signed_size: int
    unsigned: int = 0

    def to_json(self) -> dict[str, Any]:
        """The ``audit verify --json`` document."""
        return {
            "ok": self.ok,
            "entries": self.entries,
            "first_bad": self.first_bad,
            "problem": self.problem,
            "heads": self.heads,
            "signed_size": self.signed_size,
            "unsigned": self.unsigned,
        }


def verify_log(
    log: AuditLog,
    trusted_key: bytes | None,
    witnessed: Sequence[TreeHead],
    workers: int | None,
) -> VerifyReport:
    """Check every entry, leaf hash and signed head of ``log`` (see ``AuditLog.verify``)."""
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
        unsigned=max(0, n - covered),
    )
